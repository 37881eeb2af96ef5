"""Agent overhead: 8 fake GPUs with 8 jobs bound, NVML latencies of a real H200; prints JSON.

    python3 bench/bench_agent.py [--seconds 120] [--interval 5] [--latency h200|none]
                                 [--exporter on|off] [--agent-pythonpath DIR]

The fake NVML library (tests/fakenvml) answers each call after the latency measured on an
H200 (issue 14: the total-energy counter p50 2.85 ms, p90 5.7 ms, max 18.7 ms; the other
fields microseconds), burning CPU as the driver does, so the figures are those of a real
node, not of a library that answers in 40 us (``--latency none`` shows that flattering
case). With the exporter on (the default), the bench scrapes /metrics every 15 s as a
Prometheus server would. ``--agent-pythonpath`` runs another checkout's agent (before and
after figures).

Figures: CPU-seconds per hour of wall time, CPU % of one core, peak RSS (MiB) of the
`computeproof agent run` process. Targets (issue 14): under 1 % of a core and under 60 MiB
for 8 GPUs at the default sample interval (5 s).
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, os.path.join(REPO, "tests"))

from fakenvml import build as fakenvml  # noqa: E402

TARGET_CPU_PERCENT = 1.0
TARGET_RSS_MIB = 60.0


def cpu_seconds(pid: int) -> float:
    with open(f"/proc/{pid}/stat") as f:
        fields = f.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def peak_rss_mib(pid: int) -> float:
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024
    return 0.0


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--seconds", type=int, default=120)
    parser.add_argument("--warmup", type=int, default=5)
    parser.add_argument("--interval", type=int, default=5, help="sample_interval (default 5)")
    parser.add_argument("--gpus", type=int, default=8)
    parser.add_argument("--latency", choices=("h200", "none"), default="h200")
    parser.add_argument("--exporter", choices=("on", "off"), default="on")
    parser.add_argument("--scrape-every", type=float, default=15.0)
    parser.add_argument("--agent-pythonpath", default=REPO, help="code the agent runs")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        fakenvml.build(tmp)
        script = os.path.join(tmp, "nvml.script")
        lines = "".join(
            fakenvml.gpu_line(
                i, args.gpus - 1 - i, util=10 * i + 5, mem_used=2**30 * i, power=250000,
                energy=0, energy_rate=250000, temp=40 + i,
                procs=f"{100000 + i}:{2**30 * i}",
            )
            for i in range(args.gpus)
        )  # fmt: skip
        latency = "latency_profile h200\n" if args.latency == "h200" else ""
        fakenvml.write_script(script, "driver 550.54.15\n" + latency + lines)
        run_dir = os.path.join(tmp, "run")
        os.makedirs(os.path.join(run_dir, "c1", "jobs"))
        for job_id in range(args.gpus):
            binding = {
                "cluster": "bench",
                "job": str(1000 + job_id),
                "job_id": 1000 + job_id,
                "run": 0,
                "uid": os.getuid(),
                "user": "bench",
                "node": "c1",
                "time": "2026-01-01T00:00:00Z",
                "gpus": [{"slurm_index": 0, "minor": job_id, "device": f"/dev/nvidia{job_id}"}],
            }
            with open(os.path.join(run_dir, "c1", "jobs", f"{1000 + job_id}.json"), "w") as f:
                json.dump(binding, f)
        port = free_port() if args.exporter == "on" else 0
        config = os.path.join(tmp, "config.toml")
        with open(config, "w") as f:
            f.write(
                f'cluster = "bench"\nrun_dir = "{run_dir}"\n'
                f'spool_dir = "{os.path.join(tmp, "spool")}"\n'
                f"sample_interval = {args.interval}\nprogress_interval = 300\n"
                # the bindings are made up: Slurm is not to be asked about them
                f"orphan_check_interval = 0\nprometheus_port = {port}\n"
            )
        env = dict(
            os.environ,
            LD_LIBRARY_PATH=tmp,
            FAKE_NVML_SCRIPT=script,
            COMPUTEPROOF_CONFIG=config,
            PYTHONPATH=args.agent_pythonpath,
        )
        proc = subprocess.Popen(
            [sys.executable, "-c", "from slurm_hooks.cli import main; main()",
             "agent", "run", "--node", "c1"],
            env=env, stderr=subprocess.DEVNULL, cwd=tmp,  # not the checkout: PYTHONPATH decides
        )  # fmt: skip
        scrapes = 0
        scraped_bytes = 0

        def scrape() -> None:
            nonlocal scrapes, scraped_bytes
            try:
                url = f"http://127.0.0.1:{port}/metrics"
                with urllib.request.urlopen(url, timeout=10) as r:
                    scraped_bytes = len(r.read())
                scrapes += 1
            except OSError:
                pass

        try:
            time.sleep(args.warmup)  # start-up (imports, NVML init) is not steady state
            cpu0, wall0 = cpu_seconds(proc.pid), time.monotonic()
            end = wall0 + args.seconds
            next_scrape = wall0
            while time.monotonic() < end:
                if port and time.monotonic() >= next_scrape:
                    scrape()
                    next_scrape += args.scrape_every
                time.sleep(max(0.0, min(end, next_scrape if port else end) - time.monotonic()))
            cpu1, wall1 = cpu_seconds(proc.pid), time.monotonic()
            rss = peak_rss_mib(proc.pid)
        finally:
            proc.send_signal(signal.SIGTERM)
            proc.wait(timeout=30)
        wall = wall1 - wall0
        cpu = cpu1 - cpu0
        print(
            json.dumps(
                {
                    "bench": "agent",
                    "command": " ".join(sys.argv),
                    "agent_code": args.agent_pythonpath,
                    "gpus": args.gpus,
                    "jobs": args.gpus,
                    "sample_interval_s": args.interval,
                    "nvml_latency": args.latency,
                    "exporter": args.exporter,
                    "scrapes": scrapes,
                    "scrape_bytes": scraped_bytes,
                    "wall_s": round(wall, 1),
                    "cpu_s_per_hour": round(cpu / wall * 3600, 1),
                    "cpu_percent_of_core": round(cpu / wall * 100, 3),
                    "peak_rss_mib": round(rss, 1),
                    "target": f"< {TARGET_CPU_PERCENT} % of a core, < {TARGET_RSS_MIB:g} MiB",
                    "meets_target": cpu / wall * 100 < TARGET_CPU_PERCENT and rss < TARGET_RSS_MIB,
                    "agent_exit": proc.returncode,
                }
            )
        )


if __name__ == "__main__":
    main()
