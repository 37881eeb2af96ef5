"""Fixtures for report tests: ledgers of real signed job lifecycles with chosen figures."""

from __future__ import annotations

from collections.abc import Callable

import pytest

from computeproof.envelope import sign_event
from computeproof.event import new_event
from computeproof.keys import Signer
from computeproof.ledger import Ledger

AddJob = Callable[..., list[int]]


def job_events(
    job_id: int,
    start: str,
    end: str,
    gpus: int = 2,
    account: str = "physics",
    user: str = "alice",
    state: str = "COMPLETED",
    busy_ms: int | None = None,
    energy_mj: int | None = None,
    partition: str = "gpu",
    gpu_model: str = "a100",
    cluster: str = "c1",
) -> list[dict[str, object]]:
    """A job's lifecycle (scheduled, started, node_done?, completed, final_state)."""
    import datetime as dt

    s = dt.datetime.fromisoformat(start.rstrip("Z"))
    e = dt.datetime.fromisoformat(end.rstrip("Z"))
    elapsed = int((e - s).total_seconds())
    job = str(job_id)
    events = [
        new_event(
            "scheduled",
            cluster,
            job,
            job_id,
            "ctl",
            {
                "user": user,
                "account": account,
                "partition": partition,
                "nodes": ["node1"],
                "gpus": gpus,
                "gpu_model": gpu_model,
                "submit_time": start,
                "start_time": start,
            },
            time=start,
        )
    ]
    events.append(
        new_event(
            "started",
            cluster,
            job,
            job_id,
            "node1",
            {"gpus": [{"minor": i} for i in range(gpus)]},
            time=start,
        )
    )
    if busy_ms is not None or energy_mj is not None:
        totals: dict[str, object] = {}
        if busy_ms is not None:
            totals["busy_ms"] = busy_ms
        if energy_mj is not None:
            totals["energy_mj"] = energy_mj
        summary = {"totals": totals, "gpus": [{"name": "NVIDIA A100-SXM4-40GB"}]}
        events.append(
            new_event(
                "node_done", cluster, job, job_id, "node1", {"gpu_summary": summary}, time=end
            )
        )
    done = {
        "state": state,
        "exit_code": "0:0",
        "start_time": start,
        "end_time": end,
        "elapsed_s": elapsed,
        "gpus": gpus,
    }
    events.append(new_event("completed", cluster, job, job_id, "ctl", done, time=end))
    events.append(new_event("final_state", cluster, job, job_id, "ctl", done, time=end))
    return events


@pytest.fixture
def add_job(ledger: Ledger, host_signer: Signer) -> AddJob:
    """Append one signed job lifecycle to the test ledger; returns its leaf indices."""

    def add(*args: object, **kwargs: object) -> list[int]:
        events = job_events(*args, **kwargs)  # type: ignore[arg-type]
        result = ledger.append([sign_event(e, host_signer) for e in events])
        assert not result.rejected, result.rejected
        return [leaf for _, _, leaf in result.accepted]

    return add
