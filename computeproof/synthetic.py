"""Synthetic signed job lifecycles for benchmarks (`computeproof bench ingest`).

Every synthetic event carries ``"synthetic": true`` in its payload, and `jobs list`
shows it: nothing here can be mistaken for a real job. Values are generated, not
measured, and are never written to a real ledger unless a benchmark asks for it.
"""

from __future__ import annotations

import hashlib
import random
from collections.abc import Iterator

from computeproof.envelope import sign_event
from computeproof.event import new_event
from computeproof.keys import Signer

CLUSTER = "synthetic"
CONTROLLER = "synth-ctl"
ACCOUNTS = ("physics", "biology", "chemistry", "astro")
USERS = ("alice", "bob", "carol", "dave", "erin", "frank")


def host_signers(n_hosts: int) -> dict[str, Signer]:
    """Deterministic synthetic host keys: node hosts synth-n0..n{n-1} and the controller."""
    names = [CONTROLLER] + [f"synth-n{i}" for i in range(n_hosts)]
    return {
        h: Signer.from_seed(hashlib.sha256(f"synthetic host {h}".encode()).digest()) for h in names
    }


def _iso(ts: int) -> str:
    import time

    return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(ts))


def job_events(job_id: int, n_hosts: int, rng: random.Random) -> list[dict[str, object]]:
    """One synthetic job's full lifecycle: scheduled, started/progress/node_done per node,
    completed and final_state."""
    nodes = [f"synth-n{(job_id + i) % n_hosts}" for i in range(1 if rng.random() < 0.8 else 2)]
    gpus_per_node = rng.choice((1, 2, 4))
    gpus = gpus_per_node * len(nodes)
    start = 1_767_225_600 + job_id * 37  # from 2026-01-01
    elapsed = rng.randint(60, 36_000)
    end = start + elapsed
    state = rng.choices(("COMPLETED", "FAILED", "CANCELLED", "TIMEOUT"), (85, 8, 5, 2))[0]
    common = {"synthetic": True}
    job = str(job_id)
    ev = [
        new_event(
            "scheduled",
            CLUSTER,
            job,
            job_id,
            CONTROLLER,
            {
                **common,
                "user": USERS[job_id % len(USERS)],
                "account": ACCOUNTS[job_id % len(ACCOUNTS)],
                "partition": "gpu",
                "nodes": nodes,
                "gpus": gpus,
                "tres_allocated": {"gres/gpu": gpus, "gres/gpu:a100": gpus},
                "submit_time": _iso(start - 30),
                "start_time": _iso(start),
            },
            time=_iso(start),
        )
    ]
    for n in nodes:
        minors = list(range(gpus_per_node))
        ev.append(
            new_event(
                "started",
                CLUSTER,
                job,
                job_id,
                n,
                {
                    **common,
                    "gpus": [
                        {"slurm_index": m, "minor": m, "device": f"/dev/nvidia{m}"} for m in minors
                    ],
                },
                time=_iso(start + 1),
            )
        )
        busy = gpus_per_node * elapsed * 1000 * rng.randint(40, 100) // 100
        measured = gpus_per_node * elapsed * 1000
        totals = {
            "busy_ms": busy,
            "util_weighted_ms": busy * 3 // 4,
            "energy_mj": busy * 250,
            "measured_ms": measured,
            "unmeasured_ms": 0,
            "samples": elapsed // 5,
        }
        half = {k: v // 2 for k, v in totals.items()}
        gpu_list = [{"minor": m, "name": "synthetic-a100"} for m in minors]
        ev.append(
            new_event(
                "progress",
                CLUSTER,
                job,
                job_id,
                n,
                {**common, "totals": half, "gpus": gpu_list},
                seq=1,
                time=_iso(start + elapsed // 2),
            )
        )
        ev.append(
            new_event(
                "node_done",
                CLUSTER,
                job,
                job_id,
                n,
                {
                    **common,
                    "gpu_summary": {"totals": totals, "gpus": gpu_list},
                    "gpu_summary_source": "synthetic",
                },
                time=_iso(end),
            )
        )
    done: dict[str, object] = {
        **common,
        "state": state,
        "exit_code": "0:0" if state == "COMPLETED" else "1:0",
        "start_time": _iso(start),
        "end_time": _iso(end),
        "elapsed_s": elapsed,
        "gpus": gpus,
        "nodes": nodes,
        "gpu_seconds": gpus * elapsed,
    }
    ev.append(new_event("completed", CLUSTER, job, job_id, CONTROLLER, done, time=_iso(end)))
    ev.append(new_event("final_state", CLUSTER, job, job_id, CONTROLLER, done, time=_iso(end + 2)))
    return ev


def signed_jobs(first_job: int, n_jobs: int, n_hosts: int, seed: int = 7) -> Iterator[bytes]:
    """Envelopes of ``n_jobs`` synthetic jobs, each signed by its host's key."""
    signers = host_signers(n_hosts)
    rng = random.Random(seed * 1_000_003 + first_job)
    for job_id in range(first_job, first_job + n_jobs):
        for event in job_events(job_id, n_hosts, rng):
            yield sign_event(event, signers[str(event["host"])])


def _sign_range(args: tuple[int, int, int]) -> list[bytes]:
    return list(signed_jobs(*args))


def signed_jobs_parallel(n_jobs: int, n_hosts: int, workers: int) -> list[bytes]:
    """All envelopes of ``n_jobs`` synthetic jobs, signed on ``workers`` processes."""
    step = 500
    ranges = [(1 + i, min(step, n_jobs - i), n_hosts) for i in range(0, n_jobs, step)]
    if workers <= 1:
        return [e for r in ranges for e in _sign_range(r)]
    from computeproof.workers import process_pool

    with process_pool(workers, preload=[__name__]) as pool:
        return [e for part in pool.map(_sign_range, ranges) for e in part]
