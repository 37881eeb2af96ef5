"""Stand-in Slurm client commands that print real captured output (fixtures/slurm-*/).

The parsers under test read exactly what Slurm printed on a real cluster (capture.py made
the files): the fakes only choose which capture to print for the arguments they get, and
log every call so a test can count reads.
"""

from __future__ import annotations

import json
import shlex
from pathlib import Path

FIXTURES = Path(__file__).parent / "fixtures"
VERSIONS = ("22.05", "24.11", "25.11")
# captured with capture.py's phased job plan (every phase-1 job running at "running"): all
# three since 2026-12-05 (the 25.11 capture came from an earlier version of the script
# before); tests of one moment's exact states use these, checks that hold for any capture
# VERSIONS
PHASED = ("22.05", "24.11", "25.11")


def fixture_dir(version: str) -> Path:
    """The captures of one Slurm release."""
    return FIXTURES / f"slurm-{version}"


def manifest(version: str) -> dict[str, object]:
    """What capture.py recorded about its jobs (roles -> job ids, hostile values)."""
    data: dict[str, object] = json.loads((fixture_dir(version) / "manifest.json").read_text())
    return data


def roles(version: str) -> dict[str, int]:
    """Role name -> job id of the captured jobs."""
    value = manifest(version)["roles"]
    assert isinstance(value, dict)
    return {str(k): int(v) for k, v in value.items()}


def without_record(text: bytes, name: bytes) -> bytes:
    """``squeue -O ...,Name`` output less the record of the job named ``name`` (Name is
    the last field, so the record runs from its line's start to the end of the name):
    what squeue prints when that job is not asked for."""
    at = text.find(name)
    assert at > 0, "the job is not in this capture"
    start = text.rfind(b"\n", 0, at) + 1
    return text[:start] + text[at + len(name) + 1 :]


def install(
    bin_dir: Path, version: str, moment: str, log: Path, drop: tuple[str, ...] = ()
) -> None:
    """Write squeue, sacct and scontrol into ``bin_dir`` serving the ``moment`` capture
    ("running", "ended" or "late") of Slurm ``version``; every call is logged to ``log``.
    ``drop`` leaves those roles' jobs out of the old name-bearing text format."""
    d = fixture_dir(version)
    bin_dir.mkdir(parents=True, exist_ok=True)

    def q(name: str) -> str:
        return shlex.quote(str(d / name))

    old = f"squeue_old.{moment}.txt"
    if drop:
        import base64

        text = (d / old).read_bytes()
        for role in drop:
            hostile = manifest(version)["hostile"]
            assert isinstance(hostile, dict) and role == "attacker"
            text = without_record(text, base64.b64decode(hostile["name"]))
        (bin_dir / old).write_bytes(text)

    def served(name: str) -> str:
        return shlex.quote(str(bin_dir / name)) if drop and name == old else q(name)

    json_file = f"squeue_json_filtered.{moment}.json"
    scripts = {
        "squeue": (
            f'case "$*" in\n'
            f"  *--json*) cat {q(json_file)};;\n"
            f"  *,Name:*) cat {served(old)};;\n"
            f"  *) cat {q(f'squeue_safe.{moment}.txt')};;\n"
            "esac\n"
        ),
        "sacct": (
            f'case "$*" in\n  *--json*) cat {q("sacct.json")};;\n'
            f"  *--helpformat*) cat {q('sacct_helpformat.txt')};;\n"
            f"  *--noconvert*.batch*) cat {q('sacct_batch.txt')};;\n"
            f"  *--noconvert*) cat {q('sacct_safe.txt')};;\n"
            f"  *) cat {q('sacct_exit.txt')};;\nesac\n"
        ),
    }
    ids = roles(version)
    cases = "".join(
        f"  *' {ids[role]}') cat {q(f'scontrol_{role}.{moment}.txt')};;\n"
        for role in ("attacker", "forger", "victim")
        if (d / f"scontrol_{role}.{moment}.txt").exists()
    )
    scripts["scontrol"] = f'case "$*" in\n{cases}  *) exit 1;;\nesac\n'
    for name, body in scripts.items():
        path = bin_dir / name
        path.write_text(f'#!/bin/sh\necho "{name} $*" >> {shlex.quote(str(log))}\n{body}')
        path.chmod(0o755)


def calls(log: Path, command: str) -> list[str]:
    """The logged calls of one command."""
    if not log.exists():
        return []
    return [line for line in log.read_text().splitlines() if line.startswith(command + " ")]
