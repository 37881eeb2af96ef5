"""What a job looks like to a reader: the job index row as JSON, per-GPU figures from the
agent's summaries, and a one-line detail per lifecycle event. Shared by the CLI and the
dashboard, so both show the same figures in the same units (computeproof.units)."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from computeproof.store.interface import JobRow
from computeproof.units import gpu_hours, kwh

JOB_SORT_KEYS = ("start", "end", "job", "user", "account", "gpus", "state", "elapsed")
# Slurm's job states (job_state_string in Slurm's source) that a job index row can hold
JOB_STATES = (
    "PENDING", "RUNNING", "SUSPENDED", "COMPLETING", "COMPLETED", "CANCELLED", "FAILED",
    "TIMEOUT", "NODE_FAIL", "PREEMPTED", "BOOT_FAIL", "DEADLINE", "OUT_OF_MEMORY",
    "REQUEUED", "RESIZING", "REVOKED", "SPECIAL_EXIT",
)  # fmt: skip


def job_json(row: JobRow) -> dict[str, Any]:
    """A job index row as JSON (`jobs list --json`)."""
    totals = row.fields.get("gpu_totals") or {}
    assert isinstance(totals, dict)
    return {
        "job_id": row.job,
        "slurm_job_id": row.job_id,
        "run": row.run,
        "cluster": row.cluster,
        "user": row.user,
        "account": row.account,
        "partition": row.partition,
        "state": row.state,
        "gpus": row.gpus,
        "gpu_model": row.gpu_model,
        "nodes": row.nodes.split(",") if row.nodes else [],
        "submit": row.submit,
        "start": row.start,
        "end": row.end,
        "elapsed_s": row.elapsed_s,
        "exit_code": row.exit_code,
        "events": row.events,
        "synthetic": row.synthetic,
        "busy_gpu_hours": gpu_hours(int(totals["busy_gpu_ms"]))
        if "busy_gpu_ms" in totals
        else None,
        "energy_kwh": kwh(int(totals["energy_mj"])) if "energy_mj" in totals else None,
    }


def _maybe(convert: Callable[[int], float], value: object) -> float | None:
    return convert(int(value)) if isinstance(value, int) else None


def sort_jobs(rows: list[dict[str, Any]], key: str, reverse: bool = False) -> None:
    """Sort :func:`job_json` rows in place by one of JOB_SORT_KEYS (unknown values last)."""
    field = "elapsed_s" if key == "elapsed" else "job_id" if key == "job" else key
    rows.sort(
        key=lambda r: (
            r[field] is None,
            str(r[field]).zfill(20) if isinstance(r[field], int) else str(r[field] or ""),
        ),
        reverse=reverse,
    )


def gpu_figures(events: list[tuple[Any, dict[str, Any]]]) -> list[dict[str, Any]]:
    """Per-GPU figures from the job's node_done summaries (the agent's measurements)."""
    out = []
    for _, event in events:
        summary = event["payload"].get("gpu_summary") if event["type"] == "node_done" else None
        if not isinstance(summary, dict):
            continue
        for g in summary.get("gpus") or []:
            if not isinstance(g, dict):
                continue
            measured = _int(g.get("measured_ms"))
            out.append(
                {
                    "node": event["host"],
                    "minor": g.get("minor"),
                    "uuid": g.get("uuid"),
                    "model": g.get("name"),
                    "busy_gpu_hours": gpu_hours(_int(g.get("busy_ms"))),
                    "mean_utilization_percent": (
                        round(_int(g.get("util_percent_ms")) / measured, 1) if measured else None
                    ),
                    "max_memory_bytes": g.get("max_memory_bytes"),
                    "energy_kwh": kwh(_int(g.get("energy_mj"))),
                    "energy_method": g.get("energy_method"),
                    "unmeasured_ms": g.get("unmeasured_ms"),
                }
            )
    return out


def _int(value: object) -> int:
    return value if isinstance(value, int) and not isinstance(value, bool) else 0


def event_detail(etype: str, payload: dict[str, Any]) -> str:
    """One line on what a lifecycle event says (user strings not yet escaped for a
    terminal: the caller does that)."""
    if etype == "started":
        gpus = payload.get("gpus") or []
        minors = ",".join(str(g.get("minor")) for g in gpus if isinstance(g, dict))
        return f"GPUs {minors or 'none'} (minor)"
    if etype in ("completed", "final_state"):
        # completed: the state Slurm showed then (older receipts: at the epilog)
        seen = payload.get("state_seen") or payload.get("state_at_epilog")
        state = payload.get("state") or f"{seen or '?'} (when seen)"
        reason = f" reason {payload['reason']}" if payload.get("reason") else ""
        return (
            f"state {state} exit {payload.get('exit_code', '?')}{reason} "
            f"elapsed {payload.get('elapsed_s', '?')}s GPUs {payload.get('gpus', '?')}"
        )
    if etype == "progress":
        bits = [f"{k}={payload[k]}" for k in ("percent", "epoch", "message") if k in payload]
        return " ".join(bits) or "GPU sample summary"
    if etype == "artifact":
        return "; ".join(
            f"{a.get('path')} sha256 {str(a.get('sha256'))[:16]}... {a.get('size')} bytes"
            for a in payload.get("artifacts") or []
            if isinstance(a, dict)
        )
    if etype == "node_done":
        return f"GPU summary from {payload.get('gpu_summary_source', '?')}"
    if etype == "scheduled":
        return f"partition {payload.get('partition', '?')} nodes {payload.get('nodes', '?')}"
    return ""
