"""Agent overhead: 1 sample/s on 8 fake GPUs with 8 jobs bound; prints one JSON line.

    python3 bench/bench_agent.py [--seconds 60]

Figures: CPU-seconds per hour of wall time, CPU % of one core, peak RSS (MiB) of the
`computeproof agent run` process. Targets: under 1 % of a core, RSS under 60 MiB.
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import subprocess
import sys
import tempfile
import time

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, os.path.join(REPO, "tests"))

from fakenvml import build as fakenvml  # noqa: E402


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


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--seconds", type=int, default=60)
    parser.add_argument("--warmup", type=int, default=3)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        fakenvml.build(tmp)
        script = os.path.join(tmp, "nvml.script")
        lines = "".join(
            fakenvml.gpu_line(
                i,
                7 - i,
                util=10 * i + 5,
                mem_used=2**30 * i,
                power=250000,
                energy=0,
                energy_rate=250000,
            )
            for i in range(8)
        )
        fakenvml.write_script(script, "driver 550.54.15\n" + lines)
        run_dir = os.path.join(tmp, "run")
        os.makedirs(os.path.join(run_dir, "c1", "jobs"))
        for job_id in range(8):
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
        config = os.path.join(tmp, "config.toml")
        with open(config, "w") as f:
            f.write(
                f'cluster = "bench"\nrun_dir = "{run_dir}"\n'
                f'spool_dir = "{os.path.join(tmp, "spool")}"\n'
                "sample_interval = 1\nprogress_interval = 30\n"
                # the bindings are made up: Slurm is not to be asked about them
                "orphan_check_interval = 0\n"
            )
        env = dict(
            os.environ,
            LD_LIBRARY_PATH=tmp,
            FAKE_NVML_SCRIPT=script,
            COMPUTEPROOF_CONFIG=config,
            PYTHONPATH=REPO,
        )
        proc = subprocess.Popen(
            [
                sys.executable,
                "-c",
                "from slurm_hooks.cli import main; main()",
                "agent",
                "run",
                "--node",
                "c1",
            ],
            env=env,
            stderr=subprocess.DEVNULL,
        )
        try:
            time.sleep(args.warmup)  # start-up (imports, NVML init) is not steady state
            cpu0, wall0 = cpu_seconds(proc.pid), time.monotonic()
            time.sleep(args.seconds)
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
                    "gpus": 8,
                    "jobs": 8,
                    "sample_interval_s": 1,
                    "wall_s": round(wall, 1),
                    "cpu_s_per_hour": round(cpu / wall * 3600, 1),
                    "cpu_percent_of_core": round(cpu / wall * 100, 3),
                    "peak_rss_mib": round(rss, 1),
                    "agent_exit": proc.returncode,
                }
            )
        )


if __name__ == "__main__":
    main()
