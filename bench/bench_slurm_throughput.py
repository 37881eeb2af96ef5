"""Slurm throughput with the ComputeProof hooks on vs off, on the local test cluster.

Submits N short jobs (default 200) with the four hooks configured, and again with them
removed from slurm.conf (`CP_HOOKS=0 docker-slurm/cluster up` reconfigures the running
cluster), and prints jobs/s for both and their ratio as JSON. Target: hooks on at least
0.9 x hooks off. Run as root with the cluster's packages installed:

    python3 bench/bench_slurm_throughput.py [--jobs 200] [--rounds 1]
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
CLUSTER = REPO / "docker-slurm" / "cluster"


def cluster_env(hooks: bool) -> dict[str, str]:
    """Bring the cluster up with hooks on or off; return the environment to use it."""
    env = dict(os.environ, CP_HOOKS="1" if hooks else "0")
    subprocess.run([str(CLUSTER), "up"], env=env, check=True, stdout=subprocess.DEVNULL)
    out = subprocess.run([str(CLUSTER), "env"], env=env, check=True, capture_output=True,
                         text=True).stdout  # fmt: skip
    for line in out.splitlines():
        name, _, value = line.removeprefix("export ").partition("=")
        env[name] = value.strip("'\"")
    return env


def run_batch(env: dict[str, str], n: int, workdir: str) -> float:
    """Submit n short jobs at once; return seconds until all have left the queue."""
    start = time.monotonic()
    ids = []
    for _ in range(n):
        out = subprocess.run(
            ["sbatch", "--parsable", "-D", workdir, "-o", "/dev/null", "--gres=gpu:1",
             "--wrap", "true"],
            env=env, check=True, capture_output=True, text=True,
        ).stdout  # fmt: skip
        ids.append(out.strip().split(";")[0])
    pending = set(ids)
    while pending:
        out = subprocess.run(["squeue", "-h", "-o", "%i"], env=env, capture_output=True,
                             text=True, check=True).stdout  # fmt: skip
        pending &= set(out.split())
        time.sleep(0.2)
    return time.monotonic() - start


def main() -> None:
    """Measure and print."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--jobs", type=int, default=200)
    parser.add_argument("--rounds", type=int, default=1)
    args = parser.parse_args()
    workdir = tempfile.mkdtemp(prefix="cp-bench-")
    os.chmod(workdir, 0o777)
    results: dict[str, list[float]] = {"off": [], "on": []}
    try:
        for _ in range(args.rounds):
            for mode in ("off", "on"):
                env = cluster_env(hooks=mode == "on")
                time.sleep(2)  # let slurmd pick up the reconfigured hooks
                results[mode].append(args.jobs / run_batch(env, args.jobs, workdir))
    finally:
        cluster_env(hooks=True)
    off, on = max(results["off"]), max(results["on"])
    print(json.dumps({
        "jobs": args.jobs, "rounds": args.rounds,
        "jobs_per_s_hooks_off": round(off, 2), "jobs_per_s_hooks_on": round(on, 2),
        "ratio_on_to_off": round(on / off, 3), "target_ratio": 0.9,
    }))  # fmt: skip


if __name__ == "__main__":
    main()
