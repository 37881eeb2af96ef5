"""The ingest benchmark behind `computeproof bench ingest`: prints the figures the
receipt-library issue sets targets for, measured in one run on this machine.

- verify_ceiling_per_s: Ed25519 verifications per second on all cores (the floor of
  ingest and `ledger verify`: every event's signature must be checked); measured before
  ingest, between ingest and verify, and after verify (``verify_ceilings_per_s``); each
  ratio is taken against the higher of the two measurements around its phase.
- events_per_s: signature check + Merkle append + commit, batched.
- proof_us_median_at_N: inclusion proof build (from the store) + verify, at N leaves.
- ledger_verify_per_s: `ledger verify` over the ingested log.
"""

from __future__ import annotations

import os
import random
import resource
import statistics
import time
from collections.abc import Callable, Sequence

from computeproof import merkle
from computeproof.errors import ReceiptError
from computeproof.ledger import Ledger
from computeproof.store.sqlite import SQLiteStore
from computeproof.synthetic import host_signers, signed_jobs_parallel
from computeproof.workers import process_pool

Say = Callable[[str], None]


def _verify_many(args: tuple[bytes, list[tuple[bytes, bytes]]]) -> int:
    from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey

    public_raw, pairs = args
    key = Ed25519PublicKey.from_public_bytes(public_raw)
    for sig, msg in pairs:
        key.verify(sig, msg)
    return len(pairs)


def verify_ceiling(workers: int, per_worker: int = 4000, rounds: int = 3) -> float:
    """Ed25519 verifications per second on ``workers`` processes (1.2 kB messages): the best
    of ``rounds`` runs, so the ratios printed against it are conservative."""
    signer = host_signers(1)["synth-n0"]
    msgs = [os.urandom(1200) for _ in range(500)]
    pairs = [(signer.sign(m), m) for m in msgs]
    work = [(signer.public_raw, pairs * (per_worker // len(pairs))) for _ in range(workers)]
    with process_pool(workers, preload=[__name__]) as pool:
        list(pool.map(_verify_many, [(signer.public_raw, pairs[:50])] * workers))  # warm up
        best = 0.0
        for _ in range(rounds):
            start = time.perf_counter()
            done = sum(pool.map(_verify_many, work))
            best = max(best, done / (time.perf_counter() - start))
        return best


def _fill_proof_store(path: str, size: int, say: Say) -> SQLiteStore:
    store = SQLiteStore(path)
    have = store.size()
    rng = random.Random(size)
    n = have
    frontier = [store.read_nodes([k])[k] for k in merkle.frontier_keys(n)] if n else []
    while n < size:
        step = min(50_000, size - n)
        hashes = [rng.randbytes(32) for _ in range(step)]
        nodes, frontier = merkle.nodes_to_store(n, hashes, frontier)
        store.db.execute("BEGIN")
        store.db.executemany(
            "INSERT OR REPLACE INTO nodes (level, idx, hash) VALUES (?, ?, ?)",
            [(k[0], k[1], h) for k, h in nodes],
        )
        store.db.execute("COMMIT")
        n += step
        if n % 200_000 == 0 or n == size:
            say(f"  proof store: {n}/{size} leaves")
    return store


def proof_median_us(store: SQLiteStore, size: int, samples: int = 1000) -> float:
    """Median microseconds to build an inclusion proof from the store and verify it."""
    rng = random.Random(1)
    root = merkle.root(size, store.read_nodes)
    times = []
    for _ in range(samples):
        index = rng.randrange(size)
        start = time.perf_counter()
        leaf = store.read_nodes([(0, index)])[(0, index)]
        proof = merkle.inclusion_proof(index, size, store.read_nodes)
        merkle.verify_inclusion(leaf, index, size, proof, root)
        times.append(time.perf_counter() - start)
    return statistics.median(times) * 1e6


def run_ingest_bench(
    db_path: str, n_jobs: int, n_hosts: int, proof_sizes: Sequence[int], say: Say
) -> dict[str, object]:
    """Run the whole benchmark; return the figures."""
    if os.path.exists(db_path):
        raise ReceiptError(f"{db_path} exists; the benchmark needs a new database file")
    workers = os.cpu_count() or 1
    say(f"signing {n_jobs} synthetic jobs")
    envelopes = signed_jobs_parallel(n_jobs, n_hosts, workers)
    ledger = Ledger(
        SQLiteStore(db_path), "computeproof.bench.ledger", db_path + ".ledger.key", workers=workers
    )
    for host, signer in host_signers(n_hosts).items():
        ledger.enroll(signer.public_raw, [host])
    # The ceiling is measured right before and right after each timed phase (best of three
    # each time) and each phase is compared with the higher of its two: a VM's speed drifts
    # over a run, and this keeps every ratio conservative.
    say(f"measuring the Ed25519 verify ceiling on {workers} cores")
    ceilings = [verify_ceiling(workers)]
    say(f"ingesting {len(envelopes)} events")
    batch = 8192
    start = time.perf_counter()
    batches = ((envelopes[i : i + batch], None) for i in range(0, len(envelopes), batch))
    for result in ledger.append_stream(batches):
        if result.rejected:
            raise ReceiptError(f"benchmark event rejected: {result.rejected[0][1]}")
    ingest_s = time.perf_counter() - start
    ledger.checkpoint()
    say("measuring the verify ceiling again")
    ceilings.append(verify_ceiling(workers))
    say("verifying the whole ledger")
    start = time.perf_counter()
    report = ledger.verify()
    verify_s = time.perf_counter() - start
    say("measuring the verify ceiling again")
    ceilings.append(verify_ceiling(workers))
    ingest_ceiling = max(ceilings[0], ceilings[1])
    verify_ceiling_ = max(ceilings[1], ceilings[2])
    if not report.ok:
        raise ReceiptError(f"benchmark ledger failed verification: {report.problems[:1]}")
    size = ledger.size()
    out: dict[str, object] = {
        "jobs": n_jobs,
        "events": size,
        "cores": workers,
        "verify_ceiling_per_s": round(max(ceilings)),
        "verify_ceilings_per_s": [round(c) for c in ceilings],
        "events_per_s": round(size / ingest_s),
        "ingest_ratio_to_ceiling": round(size / ingest_s / ingest_ceiling, 3),
        "ledger_verify_per_s": round(size / verify_s),
        "ledger_verify_ratio_to_ceiling": round(size / verify_s / verify_ceiling_, 3),
        "proof_us_median_at_ledger_size": round(proof_median_us(ledger.store, size), 1),  # type: ignore[arg-type]
    }
    ledger.close()
    for n in proof_sizes:
        say(f"building a {n}-leaf tree for the inclusion-proof timing")
        store = _fill_proof_store(f"{db_path}.proofs-{n}", n, say)
        out[f"proof_us_median_at_{n}"] = round(proof_median_us(store, n), 1)
        store.close()
    if proof_sizes:
        out["proof_us_median"] = out[f"proof_us_median_at_{max(proof_sizes)}"]
    out["peak_rss_mib"] = round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1)
    return out
