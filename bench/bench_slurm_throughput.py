"""Slurm throughput with ComputeProof on vs off, on the local test cluster.

Three modes (``--mode``):

``controller`` (issue 17's measure): the node Prolog and Epilog are /bin/true in both runs
(``CP_HOOKS=node-noop``, no controller hooks), and only the controller's collector
(``computeproof controller run``) is on or off. Prints jobs/s on vs off (target >= 0.95)
and the controller side's CPU a job: the collector's own (its process and the squeue and
sacct it runs; target <= 1 ms amortized at the bench's job rate), and the extra CPU of
slurmctld, slurmdbd and MariaDB while it runs. The collector's CPU is counted from the
first submission until it has written every job's final_state.

``cluster`` (the whole-cluster comparison, no target here): ComputeProof's node hooks and
collector (``CP_HOOKS=1``) against a baseline (``--baseline``):
- ``noop`` (default): the four hook slots set to /bin/true (``CP_HOOKS=noop``);
- ``epilog``: a node ``Epilog=/bin/true`` alone (``CP_HOOKS=epilog-noop``), as most sites have;
- ``none``: no hooks at all (``CP_HOOKS=0``); with no Epilog configured slurmctld starts
  jobs in bursts about once a second, which flatters the hooks.
Also printed per round: the CPU the whole machine spent per job, and its busy cores.

``poll`` (issue 17's "CPU per poll does not grow with finished jobs"): runs the collector
in this process against the cluster (its service stopped) and prints its CPU per poll
(including the squeue it runs, and slurmctld's share) with no jobs, with ``--queued``
(default 1000) held jobs pending, and with those jobs ended and still held by slurmctld
(MinJobAge), plus the cost of one structured read and one accounting read of them.

Run as root with the cluster's packages installed:

    python3 bench/bench_slurm_throughput.py --mode controller [--jobs 200] [--rounds 2]
    python3 bench/bench_slurm_throughput.py --mode cluster [--baseline noop]
    python3 bench/bench_slurm_throughput.py --mode poll [--queued 1000]
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
CLUSTER = REPO / "docker-slurm" / "cluster"
BASELINES = {"noop": "noop", "epilog": "epilog-noop", "none": "0"}  # --baseline -> CP_HOOKS
HZ = os.sysconf("SC_CLK_TCK")


def cluster_env(hooks: str, collector: bool) -> dict[str, str]:
    """Bring the cluster up with CP_HOOKS=hooks and the collector on or off; return its
    environment. A restart, not `scontrol reconfigure`: slurmctld does not pick up changed
    controller hooks on reconfigure."""
    env = dict(os.environ, CP_HOOKS=hooks, CP_CTLD_HOOKS="0", CP_COLLECTOR=str(int(collector)))
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


def process_cpu(pid: int, children: bool = True) -> float:
    """CPU seconds of a process (and of its waited-for children) so far."""
    with open(f"/proc/{pid}/stat") as f:
        fields = f.read().rsplit(")", 1)[1].split()
    ticks = int(fields[11]) + int(fields[12])
    if children:
        ticks += int(fields[13]) + int(fields[14])
    return ticks / HZ


def pid_of(env: dict[str, str], name: str) -> int | None:
    try:
        return int(Path(env["CP_CLUSTER_DIR"], "run", f"{name}.pid").read_text().strip())
    except (OSError, ValueError):
        return None


def daemons_cpu(env: dict[str, str]) -> float:
    """CPU seconds so far of slurmctld, slurmdbd and MariaDB (the controller's daemons)."""
    total = 0.0
    for name in ("slurmctld", "slurmdbd", "mariadbd"):
        pid = pid_of(env, name)
        if pid is not None:
            total += process_cpu(pid, children=False)
    return total


def submit(env: dict[str, str], n: int, workdir: str, hold: bool = False) -> list[str]:
    ids = []
    for _ in range(n):
        out = subprocess.run(
            ["sbatch", "--parsable", "-D", workdir, "-o", "/dev/null", "--gres=gpu:1",
             *(["-H"] if hold else []), "--wrap", "true"],
            env=env, check=True, capture_output=True, text=True,
        ).stdout  # fmt: skip
        ids.append(out.strip().split(";")[0])
    return ids


def run_batch(env: dict[str, str], n: int, workdir: str) -> tuple[float, list[str]]:
    """Submit n short jobs at once; return seconds until all have left the queue, and ids."""
    start = time.monotonic()
    ids = submit(env, n, workdir)
    pending = set(ids)
    while pending:
        out = subprocess.run(["squeue", "-h", "-o", "%i"], env=env, capture_output=True,
                             text=True, check=True).stdout  # fmt: skip
        pending &= set(out.split())
        # Each poll is a squeue process and an RPC: 5 a second cost a CPU-bound run 6 % of
        # the machine. Poll once a second while many jobs remain, every 0.1 s near the end.
        time.sleep(min(1.0, max(0.1, len(pending) / 40)))
    return time.monotonic() - start, ids


def idle(env: dict[str, str], limit: float = 90.0) -> None:
    """Wait until slurmctld holds no job (the last round's ended ones purged)."""
    deadline = time.monotonic() + limit
    while time.monotonic() < deadline:
        out = subprocess.run(["squeue", "-h", "-t", "all", "-o", "%i"], env=env,
                             capture_output=True, text=True, check=True).stdout  # fmt: skip
        if not out.split():
            return
        time.sleep(2)
    raise SystemExit(f"slurmctld still holds jobs after {limit:g} s; is MinJobAge long?")


def finals_written(env: dict[str, str], ids: list[str]) -> bool:
    """Whether the collector has written every job's final_state (its state file)."""
    path = Path(env["CP_CLUSTER_DIR"], "computeproof", "spool", "controller", "state.json")
    try:
        runs = json.loads(path.read_text())["runs"]
    except (OSError, ValueError, KeyError):
        return False
    done = {str(r[0]) for r in runs if "final_state" in r[3]}
    return set(ids) <= done


def spool_write_cost(spool_parent: str, n: int = 300, batch: int = 60) -> dict[str, float]:
    """CPU ms one event costs to write to a spool on this filesystem: as its own file
    (tmp, fsync, rename, fsync of new/; the hooks), and in a batch of ``batch`` (one file
    a poll; the collector, three events a job)."""
    sys.path.insert(0, str(REPO))
    from computeproof.event import new_event
    from computeproof.spool import Spool

    out: dict[str, float] = {}
    events = [new_event("completed", "c", str(i), i, "h",
                        {"user": "u", "nodes": ["c1"], "gpus": 1, "tres_allocated": {"cpu": 1}})
              for i in range(n)]  # fmt: skip
    for kind in ("single", "batch"):
        spool = Spool(tempfile.mkdtemp(prefix="cp-bench-spool-", dir=spool_parent))
        spool.ensure()
        r0 = resource.getrusage(resource.RUSAGE_SELF)
        if kind == "single":
            for event in events:
                spool.write(event)
        else:
            for i in range(0, n, batch):
                spool.write_batch(events[i : i + batch])
        r1 = resource.getrusage(resource.RUSAGE_SELF)
        subprocess.run(["rm", "-rf", spool.path], check=False)
        out[kind] = (r1.ru_utime + r1.ru_stime - r0.ru_utime - r0.ru_stime) / n * 1000
    return out


def controller_mode(args: argparse.Namespace, workdir: str) -> dict[str, object]:
    rates: dict[str, list[float]] = {"off": [], "on": []}
    collector_ms: list[float] = []
    daemons_ms: dict[str, list[float]] = {"off": [], "on": []}
    machine_ms: dict[str, list[float]] = {"off": [], "on": []}
    for _ in range(args.rounds):
        for mode in ("off", "on"):
            env = cluster_env("node-noop", collector=mode == "on")
            # slurmctld keeps the last round's ended jobs (MinJobAge, across its restart):
            # a collector would record them inside this round's window and count them
            # as this round's jobs
            idle(env)
            time.sleep(2)
            collector = pid_of(env, "controller") if mode == "on" else None
            c0 = process_cpu(collector) if collector else 0.0
            d0, (_, b0) = daemons_cpu(env), busy_jiffies()
            seconds, ids = run_batch(env, args.jobs, workdir)
            rates[mode].append(args.jobs / seconds)
            if collector:
                deadline = time.monotonic() + 90
                while not finals_written(env, ids) and time.monotonic() < deadline:
                    time.sleep(0.5)
                collector_ms.append((process_cpu(collector) - c0) / args.jobs * 1000)
            else:
                time.sleep(5)  # the same settling time for the daemons' accounting
            daemons_ms[mode].append((daemons_cpu(env) - d0) / args.jobs * 1000)
            machine_ms[mode].append((busy_jiffies()[1] - b0) / HZ / args.jobs * 1000)
    off, on = max(rates["off"]), max(rates["on"])
    extra = statistics.median(daemons_ms["on"]) - statistics.median(daemons_ms["off"])
    write_ms = spool_write_cost(str(Path(env["CP_CLUSTER_DIR"], "computeproof")))
    return {
        "mode": "controller",
        "spool_write_cpu_ms_per_event_own_file": round(write_ms["single"], 3),
        "spool_write_cpu_ms_per_event_in_a_batch_of_60": round(write_ms["batch"], 3),
        "jobs": args.jobs, "rounds": args.rounds,
        "node_hooks": "/bin/true (both runs)",
        "jobs_per_s_collector_off": round(off, 2), "jobs_per_s_collector_on": round(on, 2),
        "ratio_on_to_off": round(on / off, 3), "target_ratio": 0.95,
        "ratio_of_medians": round(statistics.median(rates["on"])
                                  / statistics.median(rates["off"]), 3),
        "collector_cpu_ms_per_job": round(statistics.median(collector_ms), 3),
        "target_collector_cpu_ms_per_job": 1.0,
        "controller_daemons_extra_cpu_ms_per_job": round(extra, 3),
        "rounds_jobs_per_s": {m: [round(x, 2) for x in v] for m, v in rates.items()},
        "rounds_collector_cpu_ms_per_job": [round(x, 3) for x in collector_ms],
        "rounds_daemons_cpu_ms_per_job": {m: [round(x, 2) for x in v]
                                          for m, v in daemons_ms.items()},
        "rounds_machine_cpu_ms_per_job": {m: [round(x, 1) for x in v]
                                          for m, v in machine_ms.items()},
        "cores": os.cpu_count(),
    }  # fmt: skip


def cluster_mode(args: argparse.Namespace, workdir: str) -> dict[str, object]:
    results: dict[str, list[float]] = {"off": [], "on": []}
    cpu_ms: dict[str, list[float]] = {"off": [], "on": []}
    busy_cores: dict[str, list[float]] = {"off": [], "on": []}
    for _ in range(args.rounds):
        for mode in ("off", "on"):
            on = mode == "on"
            env = cluster_env("1" if on else BASELINES[args.baseline], collector=on)
            time.sleep(2)  # let slurmd pick up the reconfigured hooks
            all0, busy0 = busy_jiffies()
            seconds, _ = run_batch(env, args.jobs, workdir)
            all1, busy1 = busy_jiffies()
            results[mode].append(args.jobs / seconds)
            # CPU the whole machine spent per job (cluster, hooks, collector, agents and
            # this script's sbatch/squeue calls), and how many of its cores were busy
            cpu_ms[mode].append((busy1 - busy0) / HZ / args.jobs * 1000)
            busy_cores[mode].append((busy1 - busy0) / max(1, all1 - all0) * (os.cpu_count() or 1))
    off, on_rate = max(results["off"]), max(results["on"])
    return {
        "mode": "cluster", "jobs": args.jobs, "rounds": args.rounds, "baseline": args.baseline,
        "jobs_per_s_hooks_off": round(off, 2), "jobs_per_s_hooks_on": round(on_rate, 2),
        "ratio_on_to_off": round(on_rate / off, 3),
        "ratio_of_medians": round(statistics.median(results["on"])
                                  / statistics.median(results["off"]), 3),
        "rounds_jobs_per_s": {m: [round(x, 2) for x in v] for m, v in results.items()},
        "rounds_cpu_ms_per_job": {m: [round(x, 1) for x in v] for m, v in cpu_ms.items()},
        "rounds_busy_cores": {m: [round(x, 2) for x in v] for m, v in busy_cores.items()},
        "cores": os.cpu_count(),
    }  # fmt: skip


def poll_mode(args: argparse.Namespace, workdir: str) -> dict[str, object]:
    env = cluster_env("node-noop", collector=False)
    os.environ.update({k: env[k] for k in ("SLURM_CONF", "COMPUTEPROOF_CONFIG")})
    sys.path.insert(0, str(REPO))
    from computeproof.config import load_config
    from slurm_hooks.controller import Collector
    from slurm_hooks.slurmcli import SlurmCli

    spool = tempfile.mkdtemp(prefix="cp-bench-spool-")
    config = load_config(env["COMPUTEPROOF_CONFIG"], environ={"COMPUTEPROOF_SPOOL": spool})
    info = SlurmCli(config.slurm_bin)
    ctld = pid_of(env, "slurmctld")

    def cost(work: object, n: int) -> dict[str, float]:
        self0 = resource.getrusage(resource.RUSAGE_SELF)
        kids0 = resource.getrusage(resource.RUSAGE_CHILDREN)
        c0 = process_cpu(ctld, children=False) if ctld else 0.0
        for _ in range(n):
            work()  # type: ignore[operator]
        self1 = resource.getrusage(resource.RUSAGE_SELF)
        kids1 = resource.getrusage(resource.RUSAGE_CHILDREN)
        c1 = process_cpu(ctld, children=False) if ctld else 0.0
        ours = (self1.ru_utime + self1.ru_stime - self0.ru_utime - self0.ru_stime
                + kids1.ru_utime + kids1.ru_stime - kids0.ru_utime - kids0.ru_stime)  # fmt: skip
        return {"ms": round(ours / n * 1000, 2), "slurmctld_ms": round((c1 - c0) / n * 1000, 2)}

    collector = Collector(config, info, sweep_interval=1e9)
    collector.poll()  # the first poll's sweep and reads
    out: dict[str, object] = {"mode": "poll", "queued": args.queued}
    out["poll_no_jobs"] = cost(collector.poll, args.polls)
    ids = submit(env, args.queued, workdir, hold=True)
    collector.poll()
    out[f"poll_{args.queued}_pending"] = cost(collector.poll, args.polls)
    subprocess.run(["scancel", *ids], env=env, check=True)
    time.sleep(3)
    collector.detail_interval = collector.accounting_interval = 0.0
    out[f"poll_with_{args.queued}_just_ended_first"] = cost(collector.poll, 1)
    deadline = time.monotonic() + 60
    while any(not r.done for r in collector.state.runs.values()) and time.monotonic() < deadline:
        time.sleep(1)
        collector.poll()
    # within MinJobAge (30 s on the test cluster) slurmctld still holds the ended jobs
    out["jobs_held_by_slurmctld"] = len(info.live_jobs())
    out[f"poll_{args.queued}_ended_in_memory_recorded"] = cost(collector.poll, args.polls)
    out["read_squeue_safe_all"] = cost(lambda: info.live_jobs(), args.polls)
    out["read_squeue_json_all"] = cost(lambda: info.live_jobs(detail=True), 3)
    out[f"read_sacct_json_{args.queued}_ids"] = cost(
        lambda: info.jobs_accounting([int(i) for i in ids]), 1
    )
    out[f"read_sacct_text_{args.queued}_ids"] = cost(  # the collector's final_state read
        lambda: info.jobs_accounting([int(i) for i in ids], detail=False), 1
    )
    out["events_written"] = collector.written
    return out


def main() -> None:
    """Measure and print."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--mode", choices=("controller", "cluster", "poll"), default="controller")
    parser.add_argument("--jobs", type=int, default=200)
    parser.add_argument("--rounds", type=int, default=1)
    parser.add_argument("--queued", type=int, default=1000)
    parser.add_argument("--polls", type=int, default=10)
    parser.add_argument(
        "--baseline",
        choices=tuple(BASELINES),
        default="noop",
        help="cluster mode: off = four /bin/true hooks (default), a /bin/true Epilog alone, "
        "or no hooks",
    )
    args = parser.parse_args()
    workdir = tempfile.mkdtemp(prefix="cp-bench-")
    os.chmod(workdir, 0o777)
    modes = {"controller": controller_mode, "cluster": cluster_mode, "poll": poll_mode}
    try:
        result = modes[args.mode](args, workdir)
    finally:
        cluster_env("1", collector=True)
    print(json.dumps(result))


if __name__ == "__main__":
    main()
