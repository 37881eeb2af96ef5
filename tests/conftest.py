"""Fixtures shared by the unit tests: deterministic host keys, job lifecycles, a ledger."""

from __future__ import annotations

import os
from collections.abc import Callable, Iterator, Sequence

import pytest

from computeproof.envelope import sign_event
from computeproof.event import new_event
from computeproof.keys import Signer
from computeproof.ledger import Ledger
from computeproof.store.sqlite import SQLiteStore

TEST_ORIGIN = "computeproof.test.ledger"
TEST_HOSTS = ("ctl", "node1", "node2")

Lifecycle = Callable[..., list[dict[str, object]]]


def lifecycle(
    job: str = "100",
    cluster: str = "c1",
    run: int = 0,
    nodes: Sequence[str] = ("node1",),
    progress: int = 1,
    user: str = "alice",
    state: str = "COMPLETED",
) -> list[dict[str, object]]:
    """One job run's events in log order, with fixed times (deterministic ids and bytes)."""
    job_id = int(job.split("_")[0].split("+")[0])
    day = f"2026-01-{1 + job_id % 28:02d}"
    start, end = f"{day}T10:00:00", f"{day}T11:00:00"
    events = [
        new_event(
            "scheduled",
            cluster,
            job,
            job_id,
            "ctl",
            {
                "user": user,
                "account": "physics",
                "partition": "gpu",
                "nodes": list(nodes),
                "gpus": 2 * len(nodes),
                "gpu_model": "a100",
                "submit_time": f"{day}T09:59:00",
                "start_time": start,
            },
            run=run,
            time=f"{start}.000001Z",
        ),
    ]
    for n in nodes:
        events.append(
            new_event(
                "started",
                cluster,
                job,
                job_id,
                n,
                {"gpus": [{"minor": 0, "uuid": f"GPU-{n}-0"}, {"minor": 1, "uuid": f"GPU-{n}-1"}]},
                run=run,
                time=f"{start}.000002Z",
            )
        )
        for seq in range(progress):
            events.append(
                new_event(
                    "progress",
                    cluster,
                    job,
                    job_id,
                    n,
                    {"percent": 10 * seq},
                    seq=seq,
                    run=run,
                    time=f"{day}T10:{10 + seq:02d}:00.0Z",
                )
            )
        events.append(
            new_event(
                "node_done",
                cluster,
                job,
                job_id,
                n,
                {
                    "gpu_summary": {
                        "totals": {"busy_ms": 3_600_000, "energy_mj": 900_000_000},
                        "gpus": [{"name": "NVIDIA A100"}],
                    }
                },
                run=run,
                time=f"{end}.000001Z",
            )
        )
    events.append(
        new_event(
            "completed",
            cluster,
            job,
            job_id,
            "ctl",
            {
                "state": state,
                "exit_code": "0:0",
                "start_time": start,
                "end_time": end,
                "elapsed_s": 3600,
                "gpus": 2 * len(nodes),
            },
            run=run,
            time=f"{end}.000002Z",
        )
    )
    return events


@pytest.fixture(scope="session")
def host_signer() -> Signer:
    """The enrolled host key of the test ledger (for hosts ctl, node1, node2)."""
    return Signer.from_seed(bytes([1]) * 32)


@pytest.fixture(scope="session")
def other_signer() -> Signer:
    """A second deterministic key, enrolled nowhere unless a test does it."""
    return Signer.from_seed(bytes([2]) * 32)


@pytest.fixture(scope="session")
def make_lifecycle() -> Lifecycle:
    """:func:`lifecycle` as a fixture."""
    return lifecycle


@pytest.fixture
def sign_all(host_signer: Signer) -> Callable[..., list[bytes]]:
    """Sign a list of events (with the host key unless another signer is given)."""

    def sign(events: Sequence[dict[str, object]], signer: Signer | None = None) -> list[bytes]:
        return [sign_event(e, signer or host_signer) for e in events]

    return sign


@pytest.fixture
def ledger(tmp_path: os.PathLike[str], host_signer: Signer) -> Iterator[Ledger]:
    """An empty SQLite ledger (one worker) trusting ``host_signer`` for the test hosts."""
    led = Ledger(
        SQLiteStore(os.path.join(tmp_path, "ledger.db")),
        TEST_ORIGIN,
        os.path.join(tmp_path, "ledger.key"),
        workers=1,
    )
    led.enroll(host_signer.public_raw, TEST_HOSTS)
    yield led
    led.close()
