"""Slurm throughput with the ComputeProof hooks on vs off, on the local test cluster.

Submits N short GPU jobs (default 200) with the four ComputeProof hooks configured, and
again without them ("off"), and prints jobs/s for both and their ratio as JSON. Target:
hooks on at least 0.9 x hooks off. Rounds alternate off and on.

What "off" is matters more than anything the hooks do, because which hooks slurm.conf
configures changes *when* slurmctld starts the next job (measured on the test cluster,
200 `true` jobs, 8 GPUs):
- `--baseline noop` (default): the same four hook slots set to /bin/true (`CP_HOOKS=noop`),
  so that only our hooks' cost differs: 31-39 jobs/s.
- `--baseline epilog`: a node `Epilog=/bin/true` alone (`CP_HOOKS=epilog-noop`), as most
  sites have: slurmctld schedules as each job's epilog completes, 40-52 jobs/s.
- `--baseline none`: no hooks at all (`CP_HOOKS=0`): with no Epilog configured, jobs start
  in bursts of about 8 (the GPU count) about once a second, as if only slurmctld's
  periodic pass (sched_interval=1) started them: 10-21 jobs/s. This baseline flatters
  the hooks.
Also printed per round: jobs/s, the CPU the whole machine spent per job, and how many of
its cores were busy (hooks on is CPU-bound on a small machine; hooks off is not).
Run as root with the cluster's packages installed:

    python3 bench/bench_slurm_throughput.py [--jobs 200] [--rounds 1]
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
CLUSTER = REPO / "docker-slurm" / "cluster"
BASELINES = {"noop": "noop", "epilog": "epilog-noop", "none": "0"}  # --baseline -> CP_HOOKS


def cluster_env(hooks: str) -> dict[str, str]:
    """Bring the cluster up with CP_HOOKS=hooks (1, noop or 0); return its environment.

    A restart, not `scontrol reconfigure`: slurmctld does not pick up changed controller
    hooks on reconfigure."""
    env = dict(os.environ, CP_HOOKS=hooks)
    subprocess.run([str(CLUSTER), "down"], env=env, check=True, stdout=subprocess.DEVNULL)
    subprocess.run([str(CLUSTER), "up"], env=env, check=True, stdout=subprocess.DEVNULL)
    out = subprocess.run([str(CLUSTER), "env"], env=env, check=True, capture_output=True,
                         text=True).stdout  # fmt: skip
    for line in out.splitlines():
        name, _, value = line.removeprefix("export ").partition("=")
        env[name] = value.strip("'\"")
    return env


def busy_jiffies() -> tuple[int, int]:
    """(all, busy) CPU jiffies of the whole machine so far, from /proc/stat."""
    with open("/proc/stat") as f:
        fields = [int(x) for x in f.readline().split()[1:]]
    return sum(fields), sum(fields) - fields[3] - fields[4]  # minus idle and iowait


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
        # Each poll is a squeue process and an RPC: 5 a second cost a CPU-bound run 6 % of
        # the machine. Poll once a second while many jobs remain, every 0.1 s near the end.
        time.sleep(min(1.0, max(0.1, len(pending) / 40)))
    return time.monotonic() - start


def main() -> None:
    """Measure and print."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--jobs", type=int, default=200)
    parser.add_argument("--rounds", type=int, default=1)
    parser.add_argument(
        "--baseline",
        choices=tuple(BASELINES),
        default="noop",
        help="off = four /bin/true hooks (default), a /bin/true Epilog alone, or no hooks",
    )
    args = parser.parse_args()
    workdir = tempfile.mkdtemp(prefix="cp-bench-")
    os.chmod(workdir, 0o777)
    results: dict[str, list[float]] = {"off": [], "on": []}
    cpu_ms: dict[str, list[float]] = {"off": [], "on": []}
    busy_cores: dict[str, list[float]] = {"off": [], "on": []}
    try:
        for _ in range(args.rounds):
            for mode in ("off", "on"):
                env = cluster_env("1" if mode == "on" else BASELINES[args.baseline])
                time.sleep(2)  # let slurmd pick up the reconfigured hooks
                all0, busy0 = busy_jiffies()
                seconds = run_batch(env, args.jobs, workdir)
                all1, busy1 = busy_jiffies()
                results[mode].append(args.jobs / seconds)
                # CPU the whole machine spent per job (cluster, hooks, agents, ledger and
                # this script's sbatch/squeue calls), and how many of its cores were busy
                hz = os.sysconf("SC_CLK_TCK")
                cpu_ms[mode].append((busy1 - busy0) / hz / args.jobs * 1000)
                busy_cores[mode].append((busy1 - busy0) / max(1, all1 - all0) * os.cpu_count())  # type: ignore[operator]
    finally:
        cluster_env("1")
    off, on = max(results["off"]), max(results["on"])
    print(json.dumps({
        "jobs": args.jobs, "rounds": args.rounds, "baseline": args.baseline,
        "jobs_per_s_hooks_off": round(off, 2), "jobs_per_s_hooks_on": round(on, 2),
        "ratio_on_to_off": round(on / off, 3), "target_ratio": 0.9,
        "ratio_of_medians": round(statistics.median(results["on"])
                                  / statistics.median(results["off"]), 3),
        "rounds_jobs_per_s": {m: [round(x, 2) for x in v] for m, v in results.items()},
        "rounds_cpu_ms_per_job": {m: [round(x, 1) for x in v] for m, v in cpu_ms.items()},
        "rounds_busy_cores": {m: [round(x, 2) for x in v] for m, v in busy_cores.items()},
        "cores": os.cpu_count(),
    }))  # fmt: skip


if __name__ == "__main__":
    main()
