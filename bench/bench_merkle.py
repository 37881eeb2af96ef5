"""Benchmark the storage-backed Merkle tree: append rate, and inclusion proof + verification.

Fills a dict-backed node store (``MemoryNodes``) with random leaf hashes through
``nodes_to_store`` in batches, then times ``inclusion_proof`` + ``verify_inclusion`` for
random leaves. Prints one JSON object. Run from the repository root (or after
``pip install -e .``): ``PYTHONPATH=. python3 bench/bench_merkle.py [sizes...]``.
"""

from __future__ import annotations

import json
import os
import random
import statistics
import sys
import time

from computeproof.merkle import MemoryNodes, inclusion_proof, verify_inclusion

BATCH = 10_000
SAMPLES = 1_000


def bench(size: int, rng: random.Random) -> dict[str, float | int]:
    """Fill a store with ``size`` leaves and time proofs at that size."""
    store = MemoryNodes()
    append_s = 0.0
    for start in range(0, size, BATCH):
        leaves = [os.urandom(32) for _ in range(min(BATCH, size - start))]
        t0 = time.perf_counter()
        store.append(leaves)
        append_s += time.perf_counter() - t0
    root = store.root()
    timings = []
    for _ in range(SAMPLES):
        index = rng.randrange(size)
        leaf = store.nodes[(0, index)]
        t0 = time.perf_counter()
        proof = inclusion_proof(index, size, store.read)
        verify_inclusion(leaf, index, size, proof, root)
        timings.append(time.perf_counter() - t0)
    return {
        "leaves": size,
        "append_leaves_per_s": round(size / append_s),
        "stored_nodes": len(store.nodes),
        "proof_hashes_max": max(len(inclusion_proof(i, size, store.read)) for i in (0, size - 1)),
        "inclusion_prove_verify_median_us": round(statistics.median(timings) * 1e6, 1),
    }


def main() -> None:
    """Run the benchmark at each size given (default 10,000 and 1,000,000) and print JSON."""
    sizes = [int(a) for a in sys.argv[1:]] or [10_000, 1_000_000]
    rng = random.Random(9162)
    print(json.dumps({"python": sys.version.split()[0], "results": [bench(n, rng) for n in sizes]}))


if __name__ == "__main__":
    main()
