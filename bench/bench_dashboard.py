"""Server time of the dashboard's jobs page (HTML) and jobs JSON (/ui/jobs) over a ledger of
``--jobs`` synthetic jobs (100,000 by default): p50 and p95 per kind of request and over
all of them; the target is p95 < 200 ms.

Requests go to the ASGI app in this process (Starlette's test client: no socket, no
browser), each timed from send to the whole body received, over a mix that a site's users
make: the newest page, pages deep in the ledger (keyset cursors taken from rows spread
over the whole ledger), filters (state, user, account, node, a date range), job id
search, and the same through the JSON. The filter menus' distinct values are cached for
a minute; the first request's time (a cold cache) is printed on its own. Prints one JSON
object.

    PYTHONPATH=. python3 bench/bench_dashboard.py [--jobs 100000] [--db LEDGER.db]

``--db`` reuses a ledger `computeproof bench ingest --db LEDGER.db` made (its key beside
it, LEDGER.db.ledger.key), or makes one there first (about 4 minutes on 2 cores).
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import random
import statistics
import sys
import tempfile
import time
import warnings
from collections.abc import Callable, Iterator

from computeproof.ledger import Ledger
from computeproof.store.interface import JobCursor, JobFilter
from computeproof.store.sqlite import SQLiteStore

TOKEN = "bench-dashboard-admin-token"
ORIGIN = "computeproof.bench.ledger"


def make_ledger(path: str, n_jobs: int) -> None:
    """Sign and ingest ``n_jobs`` synthetic jobs into a new ledger at ``path``."""
    from computeproof.synthetic import host_signers, signed_jobs_parallel

    cores = os.cpu_count() or 1
    print(f"signing {n_jobs} synthetic jobs", file=sys.stderr)
    envelopes = signed_jobs_parallel(n_jobs, 8, cores)
    with Ledger(SQLiteStore(path), ORIGIN, path + ".ledger.key", workers=cores) as led:
        for host, signer in host_signers(8).items():
            led.enroll(signer.public_raw, [host])
        print(f"ingesting {len(envelopes)} events", file=sys.stderr)
        for i in range(0, len(envelopes), 8192):
            led.append(envelopes[i : i + 8192])
        led.checkpoint()


def opener(path: str) -> Callable[[], contextlib.AbstractContextManager[Ledger]]:
    """The dashboard's ``open_ledger``: one ledger a request, as the dev server does."""

    @contextlib.contextmanager
    def opened() -> Iterator[Ledger]:
        with Ledger(SQLiteStore(path, create=False), None, path + ".ledger.key", workers=1) as led:
            yield led

    return opened


def requests(path: str, rng: random.Random) -> list[tuple[str, str]]:
    """(kind, URL path and query) of the mix, in a shuffled order."""
    from computeproof.server.dashboard.queries import encode_cursor

    store = SQLiteStore(path, create=False)
    try:
        rows = store.jobs_page(JobFilter(), None, 1_000_000, newest_first=True)
        facets = store.job_facets(JobFilter())
    finally:
        store.close()
    deep = [encode_cursor(JobCursor.of(rows[rng.randrange(len(rows))])) for _ in range(40)]
    days = sorted({(r.start or "")[:10] for r in rows if r.start})
    out: list[tuple[str, str]] = []
    for prefix, kind in (("/", "page"), ("/ui/jobs", "json")):
        out += [(f"{kind} newest", prefix)] * 20
        out += [(f"{kind} deep page", f"{prefix}?after={c}") for c in deep[:20]]
        out += [(f"{kind} older page", f"{prefix}?before={c}") for c in deep[20:]]
        for state in facets.states:
            out += [(f"{kind} state filter", f"{prefix}?state={state}")] * 5
        for user in facets.users[:6]:
            query = f"{prefix}?user={user}&account={facets.accounts[0]}"
            out += [(f"{kind} user filter", query)] * 3
        for node in facets.nodes[:6]:
            out += [(f"{kind} node filter", f"{prefix}?node={node}&state=FAILED")] * 3
        for _ in range(15):
            day = days[rng.randrange(len(days))]
            out.append((f"{kind} date range", f"{prefix}?from={day}&to={day}"))
        for _ in range(15):
            job_id = rows[rng.randrange(len(rows))].job_id
            out.append((f"{kind} job id search", f"{prefix}?q={job_id}"))
    rng.shuffle(out)
    return out


def pct(values: list[float], p: float) -> float:
    """The p-th percentile (nearest rank), in ms."""
    ordered = sorted(values)
    return round(ordered[min(len(ordered) - 1, max(0, round(p / 100 * len(ordered)) - 1))], 2)


def main() -> None:
    """Build or open the ledger, time the requests, print the figures."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--jobs", type=int, default=100_000)
    parser.add_argument("--db", default=None, help="ledger to reuse or create")
    parser.add_argument("--seed", type=int, default=1)
    args = parser.parse_args()
    warnings.simplefilter("ignore", DeprecationWarning)
    from fastapi.testclient import TestClient

    from computeproof.server.dashboard import DashboardSettings
    from computeproof.server.dashboard.app import create_app

    with tempfile.TemporaryDirectory(prefix="bench-dashboard-") as tmp:
        path = args.db or os.path.join(tmp, "ledger.db")
        if not os.path.exists(path):
            make_ledger(path, args.jobs)
        store = SQLiteStore(path, create=False)
        jobs, leaves = store.count_jobs(JobFilter()), store.size()
        store.close()
        app = create_app(DashboardSettings(admin_token=TOKEN), opener(path))
        client = TestClient(app, headers={"Authorization": f"Bearer {TOKEN}"})
        rng = random.Random(args.seed)
        mix = requests(path, rng)
        t = time.perf_counter()
        first = client.get("/")
        cold_ms = round((time.perf_counter() - t) * 1000, 2)
        assert first.status_code == 200, first.text[:200]
        times: dict[str, list[float]] = {}
        print(f"timing {len(mix)} requests over {jobs} jobs", file=sys.stderr)
        for kind, url in mix:
            t = time.perf_counter()
            r = client.get(url)
            ms = (time.perf_counter() - t) * 1000
            assert r.status_code == 200, (url, r.status_code, r.text[:200])
            times.setdefault(kind, []).append(ms)
        page = [v for k, vs in times.items() if k.startswith("page") for v in vs]
        data = [v for k, vs in times.items() if k.startswith("json") for v in vs]
        out = {
            "jobs": jobs,
            "leaves": leaves,
            "requests": len(mix),
            "cold_first_page_ms": cold_ms,
            "page_p50_ms": pct(page, 50),
            "page_p95_ms": pct(page, 95),
            "json_p50_ms": pct(data, 50),
            "json_p95_ms": pct(data, 95),
            "target_p95_ms": 200,
            "by_kind": {
                k: {
                    "n": len(v),
                    "p50_ms": pct(v, 50),
                    "p95_ms": pct(v, 95),
                    "mean_ms": round(statistics.fmean(v), 2),
                }
                for k, v in sorted(times.items())
            },
            "cores": os.cpu_count(),
            "command": "PYTHONPATH=. python3 bench/bench_dashboard.py " + " ".join(sys.argv[1:]),
        }
        print(json.dumps(out, indent=1))


if __name__ == "__main__":
    main()
