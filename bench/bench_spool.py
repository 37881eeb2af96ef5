"""Spool writes: one event at a time (a hook) against a batch (the controller's collector,
which writes three events a job), in CPU and wall time an event.

    PYTHONPATH=. python3 bench/bench_spool.py [--events 600] [--batch 60] [--dir DIR]

DIR should be on the filesystem of the real spool (/var/spool); the default is a new
directory under /var/tmp.
"""

from __future__ import annotations

import argparse
import json
import os
import tempfile
import time

from computeproof.event import new_event
from computeproof.spool import Spool


def _events(n: int, tag: str) -> list[dict[str, object]]:
    return [
        new_event("completed", "bench", tag, 1, "ctl", {"exit_code": 0, "i": i}, seq=i)
        for i in range(n)
    ]


def _time(write: object, events: list[dict[str, object]], batch: int) -> tuple[float, float]:
    cpu0, wall0 = time.process_time(), time.perf_counter()
    for i in range(0, len(events), batch):
        write(events[i : i + batch])  # type: ignore[operator]
    return time.process_time() - cpu0, time.perf_counter() - wall0


def main() -> None:
    """Print both ways' cost an event, as JSON."""
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--events", type=int, default=600)
    ap.add_argument("--batch", type=int, default=60)
    ap.add_argument("--dir", default=None)
    args = ap.parse_args()
    root = args.dir or tempfile.mkdtemp(prefix="cp-bench-spool-", dir="/var/tmp")
    spool = Spool(os.path.join(root, "spool"))
    spool.ensure()
    n = args.events
    one = _time(lambda b: [spool.write(e) for e in b], _events(n, "1"), 1)
    many = _time(spool.write_many, _events(n, "2"), args.batch)
    out = {
        "events": n,
        "batch": args.batch,
        "one_at_a_time_cpu_us_per_event": round(one[0] / n * 1e6, 1),
        "one_at_a_time_wall_us_per_event": round(one[1] / n * 1e6, 1),
        "batched_cpu_us_per_event": round(many[0] / n * 1e6, 1),
        "batched_wall_us_per_event": round(many[1] / n * 1e6, 1),
        "cpu_ratio_batched_to_single": round(many[0] / one[0], 3) if one[0] else None,
    }
    print(json.dumps(out, indent=2))


if __name__ == "__main__":
    main()
