"""Where ingest's CPU goes, per event: the figures behind the ingest target's shortfall.

Ingest at the target rate (0.7 x the verify ceiling on all cores) leaves, per event,
``cores / (0.7 * ceiling)`` microseconds of CPU for everything: the signature check
and all the rest. This script measures each part on the same synthetic jobs as
`computeproof bench ingest`, then the real pipeline, and prints one JSON object:

- ``verify_us``: one bare Ed25519 verification of an event's signed bytes (one process);
- ``open_us``: the rest of a worker's work on an event: split, base64, parse, prove
  canonical, check the event and its subject, job-index fields, marshalled answer;
- ``commit_us``: the ingesting process's work on an event with no worker hand-off
  (dedupe, Merkle nodes, job index, SQLite inserts and the fsync'd commit), 8,192-event
  batches into a new ledger, as the benchmark does;
- ``pipeline_cpu_us``: the CPU the real ingest (worker processes on every core) spent per
  event, main process and workers together; ``handoff_us`` is what that adds to the three
  parts above (pickling, pipes, the executor's threads, results unpacked);
- ``idle_us``: core time per event no process used (``cores * wall - CPU``);
- ``budget_us``: the CPU per event that 0.7 x the ceiling allows; ``budget_left_us`` is
  that budget minus ``verify_us``, what everything else must fit in;
- ``besides_verify_us``: ``open_us + commit_us``, the work besides the signature check
  with no hand-off and no idle core: above ``budget_left_us``, no scheduling of the same
  work can reach the target.

    PYTHONPATH=. python3 bench/bench_ingest_breakdown.py [--jobs 15000]
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import sys
import tempfile
import time

from computeproof.envelope import open_envelope
from computeproof.keys import _public_key
from computeproof.ledger import CHUNK, Ledger, _check_packed, _unpack
from computeproof.store.sqlite import SQLiteStore
from computeproof.synthetic import host_signers, signed_jobs_parallel
from computeproof.throughput import verify_ceiling

BATCH = 8192  # as `bench ingest`
TARGET = 0.7


def _cpu_us(seconds: float, events: int) -> float:
    return round(seconds / events * 1e6, 1)


def _children_cpu() -> float:
    r = resource.getrusage(resource.RUSAGE_CHILDREN)
    return r.ru_utime + r.ru_stime


def say(text: str) -> None:
    """Progress, on stderr (stdout is the JSON)."""
    print(text, file=sys.stderr)


def _ledger(tmp: str, name: str, workers: int, n_hosts: int) -> Ledger:
    ledger = Ledger(SQLiteStore(f"{tmp}/{name}.db"), "bench.breakdown", None, workers=workers)
    for host, signer in host_signers(n_hosts).items():
        ledger.enroll(signer.public_raw, [host])
    return ledger


def main() -> None:
    """Measure and print the breakdown."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--jobs", type=int, default=15000)
    parser.add_argument("--hosts", type=int, default=4)
    args = parser.parse_args()
    cores = os.cpu_count() or 1
    say(f"signing {args.jobs} synthetic jobs")
    envelopes = signed_jobs_parallel(args.jobs, args.hosts, cores)
    n = len(envelopes)
    keys = {s.key_id: s.public_raw for s in host_signers(args.hosts).values()}
    say(f"measuring the verify ceiling on {cores} cores")
    ceiling = verify_ceiling(cores)

    say("timing the parts, one process")
    sample = envelopes[: min(n, 20_000)]
    opened = [open_envelope(e) for e in sample]
    start = time.process_time()
    for o in opened:
        _public_key(keys[o.key_id]).verify(o.signature, o.signed)
    verify_us = _cpu_us(time.process_time() - start, len(sample))
    start = time.process_time()
    for i in range(0, len(sample), CHUNK):
        _check_packed(sample[i : i + CHUNK], keys)
    worker_us = _cpu_us(time.process_time() - start, len(sample))
    blobs = [_check_packed(envelopes[i : i + CHUNK], keys) for i in range(0, n, CHUNK)]

    with tempfile.TemporaryDirectory(prefix="cp-breakdown-") as tmp:
        say(f"committing {n} checked events with no workers")
        ledger = _ledger(tmp, "commit", 1, args.hosts)
        per_batch = BATCH // CHUNK
        start = time.process_time()
        for b, i in enumerate(range(0, n, BATCH)):
            parts = map(_unpack, blobs[b * per_batch : (b + 1) * per_batch])
            ledger._complete(envelopes[i : i + BATCH], None, ledger.store.enrolled(), parts)
        commit_us = _cpu_us(time.process_time() - start, n)
        ledger.close()

        say(f"ingesting {n} events with {cores} workers")
        ledger = _ledger(tmp, "pipeline", cores, args.hosts)
        children, own, wall = _children_cpu(), time.process_time(), time.perf_counter()
        for _ in ledger.append_stream((envelopes[i : i + BATCH], None) for i in range(0, n, BATCH)):
            pass
        wall = time.perf_counter() - wall
        own = time.process_time() - own
        ledger.close()  # waits for the workers, so their CPU is counted below
        workers = _children_cpu() - children

    pipeline_us = _cpu_us(own + workers, n)
    open_us = round(worker_us - verify_us, 1)
    budget_us = round(cores / (TARGET * ceiling) * 1e6, 1)
    out = {
        "events": n,
        "cores": cores,
        "verify_ceiling_per_s": round(ceiling),
        "events_per_s": round(n / wall),
        "ratio_to_ceiling": round(n / wall / ceiling, 3),
        "verify_us": verify_us,
        "open_us": open_us,
        "commit_us": commit_us,
        "pipeline_cpu_us": pipeline_us,
        "pipeline_main_us": _cpu_us(own, n),
        "pipeline_workers_us": _cpu_us(workers, n),
        "handoff_us": round(pipeline_us - worker_us - commit_us, 1),
        "idle_us": round(cores * wall / n * 1e6 - pipeline_us, 1),
        "budget_us": budget_us,
        "budget_left_us": round(budget_us - verify_us, 1),
        "besides_verify_us": round(open_us + commit_us, 1),
    }
    print(json.dumps(out, indent=2))


if __name__ == "__main__":
    main()
