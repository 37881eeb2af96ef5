"""Report benchmark: `computeproof report` over ledgers of N synthetic jobs (100k and 1M).

Ledger build (not the measured thing): each synthetic job is one or two real signed events
(`final_state`, optionally `completed`), carrying every field the job index reads, so a
1M-job ledger takes 1M-2M Ed25519 signatures instead of `bench ingest`'s ~7M. The events are
signed on all cores and appended through Ledger.append (signature checked, Merkle log, job
index), exactly as `computeproof forward` does.

Measured: the report's wall time and peak RSS, in a fresh child process per run:
build_report (checkpoint checks, job index scan, exact aggregation, receipt checks) + JSON
rendering with every counted job's leaf indices. Printed for --check sample (the default
for very large reports) and, at the smaller size, --check receipts (every receipt verified).

    python3 bench/bench_report.py --jobs 100000,1000000 --dir /tmp/cp-bench
"""

from __future__ import annotations

import argparse
import os
import random
import subprocess
import sys
import time
from concurrent.futures import ProcessPoolExecutor

from computeproof.envelope import sign_event
from computeproof.event import new_event
from computeproof.ledger import Ledger
from computeproof.store.sqlite import SQLiteStore
from computeproof.synthetic import ACCOUNTS, CLUSTER, CONTROLLER, USERS, host_signers

ORIGIN = "computeproof.bench.report"


def _iso(ts: int) -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(ts))


def _sign(args: tuple[int, int, int]) -> list[bytes]:
    first, n, events_per_job = args
    signer = host_signers(0)[CONTROLLER]
    rng = random.Random(first)
    out = []
    for job_id in range(first, first + n):
        start = 1_767_225_600 + job_id * 30  # from 2026-01-01, 1M jobs span ~1 year
        elapsed = rng.randint(60, 36_000)
        gpus = rng.choice((1, 2, 4, 8))
        state = rng.choices(("COMPLETED", "FAILED", "CANCELLED", "TIMEOUT"), (85, 8, 5, 2))[0]
        payload: dict[str, object] = {
            "synthetic": True,
            "user": USERS[job_id % len(USERS)],
            "account": ACCOUNTS[job_id % len(ACCOUNTS)],
            "partition": "gpu",
            "gpu_model": "a100",
            "gpus": gpus,
            "nodes": ["synth-n0"],
            "state": state,
            "exit_code": "0:0",
            "start_time": _iso(start),
            "end_time": _iso(start + elapsed),
            "elapsed_s": elapsed,
        }
        types = ("completed", "final_state")[2 - events_per_job :]
        for t in types:
            out.append(
                sign_event(
                    new_event(
                        t,
                        CLUSTER,
                        str(job_id),
                        job_id,
                        CONTROLLER,
                        payload,
                        time=_iso(start + elapsed),
                    ),
                    signer,
                )
            )
    return out


def build_ledger(path: str, n_jobs: int, events_per_job: int) -> float:
    """Create a ledger of ``n_jobs`` synthetic jobs; return seconds taken."""
    t0 = time.perf_counter()
    workers = os.cpu_count() or 1
    ledger = Ledger(SQLiteStore(path), ORIGIN, path + ".key", workers=workers)
    ledger.enroll(host_signers(0)[CONTROLLER].public_raw, [CONTROLLER])
    step = 20_000
    ranges = [(1 + i, min(step, n_jobs - i), events_per_job) for i in range(0, n_jobs, step)]
    with ProcessPoolExecutor(workers) as pool:
        for envelopes in pool.map(_sign, ranges):
            for i in range(0, len(envelopes), 8192):
                r = ledger.append(envelopes[i : i + 8192])
                if r.rejected:
                    raise SystemExit(f"rejected: {r.rejected[0]}")
    ledger.checkpoint()
    # fold the WAL into the database so every measured report starts from the same state
    ledger.store.db.execute("PRAGMA wal_checkpoint(TRUNCATE)")  # type: ignore[attr-defined]
    ledger.close()
    return time.perf_counter() - t0


_CHILD = """
import sys, time
from computeproof.ledger import Ledger
from computeproof.store.sqlite import SQLiteStore
from computeproof.reports.build import build_report
from computeproof.reports.render import render_json
from computeproof.reports.usage import ReportParams
path, check, out = sys.argv[1], sys.argv[2], sys.argv[3]
t0 = time.perf_counter()
ledger = Ledger(SQLiteStore(path), ORIGIN_TEXT, path + ".key")
params = ReportParams(from_ms=1767225600000, to_ms=1830297600000, include_synthetic=True,
                      group_by=("account", "month"))
doc = build_report(ledger, params, check=check)
with open(out, "w") as f:
    f.write(render_json(doc))
import resource
print(time.perf_counter() - t0, doc["totals"]["jobs"], doc["ledger_check"]["envelopes_checked"],
      resource.getrusage(resource.RUSAGE_SELF).ru_maxrss)
""".replace("ORIGIN_TEXT", repr(ORIGIN))


def measure(path: str, check: str) -> tuple[float, float, int, int]:
    """(wall s, peak RSS MiB, jobs counted, envelopes checked) of one report in a child."""
    proc = subprocess.run(
        [sys.executable, "-c", _CHILD, path, check, path + ".report.json"],
        capture_output=True,
        text=True,
        check=True,
    )
    # the child's own peak: RUSAGE_CHILDREN would include the ledger-building workers
    wall, jobs, envelopes, rss_kib = proc.stdout.split()
    return float(wall), int(rss_kib) / 1024, int(jobs), int(envelopes)


def main() -> None:
    """Build the ledgers and print the report figures."""
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--jobs", default="100000,1000000")
    ap.add_argument("--dir", default="/tmp/computeproof-bench-report")
    ap.add_argument("--events-per-job", type=int, choices=(1, 2), default=1)
    ap.add_argument(
        "--full-check-max",
        type=int,
        default=100_000,
        help="also time --check receipts up to this many jobs",
    )
    args = ap.parse_args()
    os.makedirs(args.dir, exist_ok=True)
    print(f"cores: {os.cpu_count()}")
    for n in (int(x) for x in args.jobs.split(",")):
        path = os.path.join(args.dir, f"report-{n}-{args.events_per_job}.db")
        if not os.path.exists(path):
            print(
                f"building a ledger of {n} jobs ({args.events_per_job} signed events each)...",
                flush=True,
            )
            print(f"  built in {build_ledger(path, n, args.events_per_job):.1f} s", flush=True)
        for check in ("sample", "receipts") if n <= args.full_check_max else ("sample",):
            wall, rss, jobs, env = measure(path, check)
            size = os.path.getsize(path + ".report.json") / 2**20
            print(
                f"jobs={n} check={check}: report wall {wall:.2f} s, peak RSS {rss:.0f} MiB, "
                f"{jobs} jobs counted, {env} receipts verified, JSON {size:.0f} MiB",
                flush=True,
            )


if __name__ == "__main__":
    main()
