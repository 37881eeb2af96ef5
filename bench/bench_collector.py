"""Benchmark the collector: signed events from 4 concurrent forwarders over loopback HTTPS
into `computeproof serve` on PostgreSQL, against the in-process SQLite ingest of the same
events in the same run.

Prints one JSON object: ``http_events_per_s`` (4 forwarder processes posting their
host's pre-signed envelopes in batches, with the collector's TLS, request signatures,
per-envelope checks and PostgreSQL commits), ``local_events_per_s`` (the same envelopes
appended by a Ledger over a SQLite file in this process, the one-host path),
``ratio`` (target >= 0.5), the p50/p99 latency of one 100-event batch (a single
forwarder, sequential requests of new events, the collector otherwise idle), and how long
an accepted event waits for a checkpoint that covers it (the checkpoint loop signs at
most once a second).

PostgreSQL is started from Debian's packages as the tests start it (tests/pgharness.py),
unless ``--postgres URL`` names one. Run from the repository root:

    PYTHONPATH=. python3 bench/bench_collector.py [--events-per-host 5000] [--processes 2]
"""

from __future__ import annotations

import argparse
import json
import multiprocessing
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "tests"))

HOSTS = ("node1", "node2", "node3", "node4")
ORIGIN = "computeproof.bench.ledger"


def _signer(i: int):  # type: ignore[no-untyped-def]
    from computeproof.keys import Signer

    return Signer.from_seed(bytes([0x50 + i]) * 32)


def envelopes(host_index: int, count: int, first_job: int) -> list[bytes]:
    """``count`` signed progress events of one host, 50 to a job."""
    from computeproof.envelope import sign_event
    from computeproof.event import new_event

    host, signer = HOSTS[host_index], _signer(host_index)
    out = []
    for i in range(count):
        job = first_job + 10_000 * host_index + i // 50
        event = new_event(
            "progress",
            "bench",
            str(job),
            job,
            host,
            {"percent": i % 100},
            seq=i % 50,
            time=f"2026-03-01T10:{i // 3600 % 60:02d}:{i % 60:02d}Z",
        )
        out.append(sign_event(event, signer))
    return out


def forwarder(args: tuple[int, list[bytes], str, str, int, object]) -> tuple[float, float]:
    """One forwarder process: post ``envs`` in batches; (start, end) wall times."""
    index, envs, url, ca, batch, barrier = args
    from computeproof.httpsink import HttpSink

    with HttpSink(url, _signer(index), ca, retry_for=120) as sink:
        barrier.wait()  # type: ignore[attr-defined]
        started = time.time()
        for i in range(0, len(envs), batch):
            result = sink.append(envs[i : i + batch])
            assert len(result.accepted) + len(result.duplicates) == len(envs[i : i + batch]), (
                result.rejected[:3],
                result.untrusted[:3],
            )
        return started, time.time()


def local_ingest(path: str, batches: list[list[bytes]]) -> float:
    """Events a second of the in-process SQLite ledger over the same envelopes."""
    from computeproof.ledger import Ledger
    from computeproof.store.sqlite import SQLiteStore

    ledger = Ledger(SQLiteStore(path), ORIGIN, None)
    for i in range(len(HOSTS)):
        ledger.enroll(_signer(i).public_raw, [HOSTS[i]])
    total = sum(len(b) for b in batches)
    started = time.perf_counter()
    for _ in ledger.append_stream((b, None) for b in batches):
        pass
    elapsed = time.perf_counter() - started
    assert ledger.size() == total
    ledger.close()
    return total / elapsed


def main() -> None:
    """Run both ingests and the latency probe; print the figures."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--events-per-host", type=int, default=5000)
    parser.add_argument("--batch", type=int, default=1000, help="envelopes a request")
    parser.add_argument("--processes", type=int, default=2, help="collector processes")
    parser.add_argument("--latency-batches", type=int, default=200)
    parser.add_argument("--freshness-samples", type=int, default=20)
    parser.add_argument("--postgres", default=None, help="an existing PostgreSQL URL")
    args = parser.parse_args()

    import httpx
    from tlsharness import CollectorProcess, free_port, make_ca

    from computeproof.ledger import Ledger
    from computeproof.store import open_store

    ctx = multiprocessing.get_context("spawn")
    with tempfile.TemporaryDirectory(prefix="cp-bench-collector-") as tmp_dir:
        tmp = Path(tmp_dir)
        print("signing events...", file=sys.stderr)
        per_host = [envelopes(i, args.events_per_host, 100_000) for i in range(len(HOSTS))]
        probe = envelopes(0, 100 * args.latency_batches, 900_000)
        total = sum(len(e) for e in per_host)

        # the one-host path: the same envelopes, in the order forwarders would interleave
        batches = [
            envs[i : i + args.batch] for envs in per_host for i in range(0, len(envs), args.batch)
        ]
        print("in-process SQLite ingest...", file=sys.stderr)
        local = local_ingest(str(tmp / "local.db"), batches)

        pg = None
        url = args.postgres
        if url is None:
            from pgharness import PostgresServer, find_bindir

            bindir = find_bindir()
            if bindir is None:
                sys.exit("PostgreSQL is not installed (apt-get install postgresql)")
            pg = PostgresServer(bindir)
            pg.start()
            url = pg.new_url("bench")
        collector = None
        try:
            with Ledger(open_store(url), ORIGIN, str(tmp / "ledger.key"), workers=1) as ledger:
                for i in range(len(HOSTS)):
                    ledger.enroll(_signer(i).public_raw, [HOSTS[i]])
            ca = make_ca(tmp / "tls")
            port = free_port()
            config = tmp / "collector.toml"
            config.write_text(
                f'db = "{url}"\nledger_key = "{tmp / "ledger.key"}"\n'
                f'ledger_origin = "{ORIGIN}"\nserve_tls_cert = "{ca.cert}"\n'
                f'serve_tls_key = "{ca.key}"\nserve_rate_limit = 0\n'
            )
            collector = CollectorProcess(config, port, ca, tmp / "collector.log", args.processes)
            collector.start()
            print(f"{len(HOSTS)} forwarders over HTTPS into PostgreSQL...", file=sys.stderr)
            barrier = ctx.Manager().Barrier(len(HOSTS))
            with ctx.Pool(len(HOSTS)) as pool:
                spans = pool.map(
                    forwarder,
                    [
                        (i, per_host[i], collector.url, str(ca.ca), args.batch, barrier)
                        for i in range(len(HOSTS))
                    ],
                )
            http = total / (max(e for _, e in spans) - min(s for s, _ in spans))

            print("latency of 100-event batches...", file=sys.stderr)
            from computeproof.httpsink import HttpSink

            latencies = []
            with HttpSink(collector.url, _signer(0), str(ca.ca)) as sink:
                for i in range(0, len(probe), 100):
                    t0 = time.perf_counter()
                    result = sink.append(probe[i : i + 100])
                    latencies.append(time.perf_counter() - t0)
                    assert len(result.accepted) == 100
            print("time from an accepted event to a checkpoint that covers it...", file=sys.stderr)
            fresh = envelopes(1, args.freshness_samples, 950_000)
            delays = []
            with HttpSink(collector.url, _signer(1), str(ca.ca)) as sink:
                for env in fresh:
                    ((_, _, leaf),) = sink.append([env]).accepted
                    t0 = time.perf_counter()
                    while True:
                        note = httpx.get(f"{collector.url}/v1/checkpoint", verify=str(ca.ca)).text
                        if int(note.splitlines()[1]) > leaf:
                            break
                        time.sleep(0.005)
                    delays.append(time.perf_counter() - t0)
            health = httpx.get(f"{collector.url}/healthz", verify=str(ca.ca)).json()
            assert health["log_size"] == total + len(probe) + len(fresh)
        finally:
            if collector is not None:
                collector.stop()
            if pg is not None:
                pg.stop()
    q = statistics.quantiles(latencies, n=100)
    print(
        json.dumps(
            {
                "events": total,
                "forwarders": len(HOSTS),
                "batch": args.batch,
                "collector_processes": args.processes,
                "cores": os.cpu_count(),
                "http_events_per_s": round(http),
                "local_events_per_s": round(local),
                "ratio": round(http / local, 3),
                "target_ratio": 0.5,
                "batch100_latency_p50_ms": round(statistics.median(latencies) * 1000, 1),
                "batch100_latency_p99_ms": round(q[98] * 1000, 1),
                "latency_batches": len(latencies),
                "checkpoint_interval_ms": 1000,
                "accepted_to_checkpoint_p50_ms": round(statistics.median(delays) * 1000),
                "accepted_to_checkpoint_max_ms": round(max(delays) * 1000),
                "checkpoint_samples": len(delays),
            },
            indent=2,
        )
    )


if __name__ == "__main__":
    main()
