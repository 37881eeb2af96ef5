"""The receipt-library benchmark: `computeproof bench ingest` in a temporary directory.

Prints events/s against the Ed25519 verify ceiling measured in the same run, `ledger
verify` speed, and inclusion-proof build+verify medians at 10,000 and 1,000,000 leaves.

    python3 bench/bench_ingest.py [--jobs 20000] [--proof-sizes 10000,1000000]
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]


def main() -> None:
    """Run the CLI benchmark and pass its JSON through."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--jobs", type=int, default=20000)
    parser.add_argument("--proof-sizes", default="10000,1000000")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="cp-bench-") as tmp:
        env = dict(os.environ, PYTHONPATH=str(REPO))
        env.pop("COMPUTEPROOF_CONFIG", None)
        subprocess.run(
            [sys.executable, "-m", "slurm_hooks", "bench", "ingest", "--db",
             f"{tmp}/bench.db", "--jobs", str(args.jobs), "--proof-sizes", args.proof_sizes,
             "--json"],
            check=True, env=env, cwd=tmp,
        )  # fmt: skip


if __name__ == "__main__":
    main()
