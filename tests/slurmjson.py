"""Slurm's ``--json`` output (sacct, squeue) in the shape Slurm 22.05 prints, whatever the
release, and its node lists expanded, so the integration tests read every release the same
way. Independent of the project's own parsers (slurm_hooks.slurmcli), which these tests
check against Slurm.

From 23.02 on, integers come wrapped as ``{"set": bool, "infinite": bool, "number": n}``
(unset or infinite: None here) and states are lists of a base state and flags
(``["PENDING", "REQUEUED"]``: here the one word Slurm's job_state_string gives, REQUEUED,
through slurm_hooks.finalstate.state_name, which mirrors it).
"""

from __future__ import annotations

import json
from typing import Any

from slurm_hooks.finalstate import state_name

STATE_KEYS = frozenset({"current", "job_state", "state", "status"})
NUMBER_KEYS = frozenset({"set", "infinite", "number"})


def slurm_json(text: str | bytes) -> Any:
    """Parse Slurm's JSON output and unwrap it to the 22.05 shape."""
    return plain(json.loads(text))


def plain(value: Any, key: str = "") -> Any:
    """``value`` with wrapped numbers unwrapped and state lists reduced to their base state."""
    if isinstance(value, dict):
        if "number" in value and "set" in value and set(value) <= NUMBER_KEYS:
            return value["number"] if value["set"] and not value.get("infinite") else None
        return {k: plain(v, k) for k, v in value.items()}
    if isinstance(value, list):
        if key in STATE_KEYS and all(isinstance(v, str) for v in value):
            return state_name(
                value
            )  # one word, as 22.05 printed it: ["PENDING", "REQUEUED"] -> REQUEUED
        return [plain(v) for v in value]
    return value


def expand_nodes(text: str) -> list[str]:
    """c[1-2] / c1,c2 / c1 -> ['c1', 'c2'] (the test cluster's node names only)."""
    if "[" not in text:
        return sorted(n for n in text.split(",") if n)
    prefix, _, rest = text.partition("[")
    out = []
    for part in rest.rstrip("]").split(","):
        lo, _, hi = part.partition("-")
        out += [f"{prefix}{i}" for i in range(int(lo), int(hi or lo) + 1)]
    return sorted(out)
