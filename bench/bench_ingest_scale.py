"""Ingest as the ledger grows: events/s and the committing process's CPU per event, for
each step of leaves, from an empty ledger to about a million leaves by default.

A cost that grows with the log shows here and not in `bench ingest` (99k events). Signs
``--jobs`` synthetic jobs (about 6.6 events a job), ingests them in 8,192-event batches
with worker processes on every core, and prints one JSON object: a row per step of
``--step`` leaves (leaves so far, events/s over the step, main-process CPU microseconds
an event over the step) and the whole run's events/s. Needs about 2.5 GiB of memory and
2 GiB of disk (under ``--dir``) for the default million leaves.

    PYTHONPATH=. python3 bench/bench_ingest_scale.py [--jobs 150000] [--step 100000]
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time

from computeproof.ledger import Ledger
from computeproof.store.sqlite import SQLiteStore
from computeproof.synthetic import host_signers, signed_jobs_parallel

BATCH = 8192  # as `bench ingest`


def main() -> None:
    """Measure and print the rows."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--jobs", type=int, default=150_000)
    parser.add_argument("--hosts", type=int, default=8)
    parser.add_argument("--step", type=int, default=100_000)
    parser.add_argument("--dir", default="/var/tmp", help="where the ledger file goes")
    args = parser.parse_args()
    cores = os.cpu_count() or 1
    print(f"signing {args.jobs} synthetic jobs", file=sys.stderr)
    envelopes = signed_jobs_parallel(args.jobs, args.hosts, cores)
    rows: list[dict[str, float | int]] = []
    with tempfile.TemporaryDirectory(prefix="cp-scale-", dir=args.dir) as tmp:
        ledger = Ledger(SQLiteStore(f"{tmp}/ledger.db"), "bench.scale", None, workers=cores)
        for host, signer in host_signers(args.hosts).items():
            ledger.enroll(signer.public_raw, [host])
        batches = ((envelopes[i : i + BATCH], None) for i in range(0, len(envelopes), BATCH))
        start = last_wall = time.perf_counter()
        last_cpu, last_n, n = time.process_time(), 0, 0
        for result in ledger.append_stream(batches):
            n += len(result.accepted)
            if n - last_n >= args.step or n == len(envelopes):
                wall, cpu = time.perf_counter(), time.process_time()
                rows.append({
                    "leaves": n,
                    "events_per_s": round((n - last_n) / (wall - last_wall)),
                    "main_cpu_us_per_event": round((cpu - last_cpu) / (n - last_n) * 1e6, 1),
                })  # fmt: skip
                print(f"  {rows[-1]}", file=sys.stderr)
                last_wall, last_cpu, last_n = wall, cpu, n
        total_s = time.perf_counter() - start
        ledger.close()
    print(json.dumps({"events": n, "cores": cores, "events_per_s": round(n / total_s),
                      "steps": rows}, indent=2))  # fmt: skip


if __name__ == "__main__":
    main()
