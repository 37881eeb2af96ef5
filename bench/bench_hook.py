#!/usr/bin/env python3
"""Benchmark the node Prolog as Slurm runs it, against the bare interpreter's start.

Runs prolog.d/computeproof-prolog N times with a real Slurm 22.05 Prolog environment
(captured from the test cluster), no PATH, a temporary config, spool, run dir and
gres.conf with fake GPU character devices (root: mknod), interleaved with
``<interpreter> -S -c pass`` of the interpreter named in the hook's shebang. Prints JSON:
median wall ms of each, their ratio (target <= 2.0) and the hook's peak RSS (target
< 30 MiB), and the CPU (user + system) each took. Per-child figures come from os.wait4,
so the parent's own size never counts. ``--agent`` serves a GPU summary on node c1's
agent socket, as the test cluster's agent does, so the Epilog reads and parses an answer.

    python3 bench/bench_hook.py [-n 200] [--hook prolog|epilog] [--agent] [--python PATH]
"""

from __future__ import annotations

import argparse
import json
import os
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
ENV_DUMP = REPO / "tests" / "unit" / "slurm_hooks" / "fixtures" / "envdump"
HOOKS = {
    "prolog": (REPO / "prolog.d" / "computeproof-prolog", "prolog.9"),
    "epilog": (REPO / "epilog.d" / "computeproof-epilog", "epilog.9"),
}


def shebang(path: Path) -> list[str]:
    """The interpreter and flags of an executable script's #! line."""
    first = path.read_text().splitlines()[0]
    return first[2:].split()


def spawn(argv: list[str], env: dict[str, str]) -> tuple[float, int, int, float]:
    """Run argv; return (wall seconds, exit status, peak RSS in KiB, CPU seconds) for that
    child alone."""
    start = time.perf_counter()
    pid = os.posix_spawn(argv[0], argv, env)
    _, status, usage = os.wait4(pid, 0)
    wall = time.perf_counter() - start
    cpu = usage.ru_utime + usage.ru_stime
    return wall, os.waitstatus_to_exitcode(status), usage.ru_maxrss, cpu


# What the agent answers for a job: a summary recorded from the test cluster's agent.
AGENT_SUMMARY_FILE = ENV_DUMP.parent / "agent_summary.1008.json"


def serve_agent(path: Path) -> None:
    """Answer every connection on ``path`` with AGENT_SUMMARY (a daemon thread)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    server = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    server.bind(str(path))
    server.listen(16)
    summary = json.loads(AGENT_SUMMARY_FILE.read_text())
    answer = json.dumps({"ok": True, "summary": summary}, separators=(",", ":")).encode() + b"\n"

    def loop() -> None:
        while True:
            conn, _ = server.accept()
            with conn:
                conn.recv(4096)
                conn.sendall(answer)

    threading.Thread(target=loop, daemon=True).start()


def make_site(root: Path) -> dict[str, str]:
    """Config, slurm.conf, gres.conf and /dev/nvidia* char devices under ``root``."""
    etc, dev = root / "etc", root / "dev"
    etc.mkdir()
    dev.mkdir()
    (etc / "slurm.conf").write_text("ClusterName=bench\n")
    (etc / "gres.conf").write_text(
        f"NodeName=c1 Name=gpu Type=a100 File={dev}/nvidia[0-3]\n"
        f"NodeName=c2 Name=gpu Type=a100 File={dev}/nvidia[4-7]\n"
    )
    if os.geteuid() == 0:
        for minor in range(8):
            os.mknod(dev / f"nvidia{minor}", 0o600 | 0o020000, os.makedev(195, minor))
    config = root / "config.toml"
    config.write_text(f'cluster = "bench"\nspool_dir = "{root}/spool"\nrun_dir = "{root}/run"\n')
    return {"COMPUTEPROOF_CONFIG": str(config), "SLURM_CONF": str(etc / "slurm.conf")}


def main() -> int:
    """Run the benchmark and print its figures as JSON."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("-n", type=int, default=200, help="runs of each (default 200)")
    parser.add_argument("--hook", choices=sorted(HOOKS), default="prolog")
    parser.add_argument("--dir", help="work directory (default: a temporary one)")
    parser.add_argument("--agent", action="store_true", help="an agent answers on node c1")
    parser.add_argument(
        "--python",
        help="run the hook with this interpreter and the shebang's flags, as a site install "
        "whose #! names it (default: the interpreter in the hook's #! line)",
    )
    args = parser.parse_args()
    exe, dump = HOOKS[args.hook]
    interpreter, *flags = shebang(exe)
    if args.python:
        interpreter = args.python
    argv = [interpreter, *flags, str(exe)]
    version = subprocess.run(
        [interpreter, "-S", "-c", "import sys; print(sys.version.split()[0])"],
        capture_output=True,
        text=True,
        check=True,
    ).stdout.strip()
    with tempfile.TemporaryDirectory(dir=args.dir) as tmp:
        root = Path(tmp)
        site = make_site(root)
        text = (ENV_DUMP / f"{dump}.env").read_text()
        base_env = dict(line.split("=", 1) for line in text.splitlines() if "=" in line)
        base_env.update(site)
        if args.agent:
            serve_agent(root / "run" / "c1" / "agent.sock")
        hook_ms, pass_ms, rss, hook_cpu, pass_cpu = [], [], [], [], []
        failed = 0
        for i in range(args.n + 5):
            # A fresh job id per run, as on a real node; the first runs warm the caches.
            env = dict(base_env, SLURM_JOB_ID=str(1000 + i), SLURM_JOBID=str(1000 + i))
            wall, code, maxrss, cpu = spawn(argv, env)
            failed += code != 0
            p_wall, _, _, p_cpu = spawn([interpreter, "-S", "-c", "pass"], {})
            if i >= 5:
                hook_ms.append(wall * 1000)
                pass_ms.append(p_wall * 1000)
                rss.append(maxrss)
                hook_cpu.append(cpu * 1000)
                pass_cpu.append(p_cpu * 1000)
        spooled = [json.loads(p.read_bytes()) for p in (root / "spool" / "new").glob("*.json")]
        events = len(spooled)
        from_agent = sum(e["payload"].get("gpu_summary_source") == "agent" for e in spooled)
        failures_file = root / "spool" / "hook-failures"
        hook_failures = int(failures_file.read_text()) if failures_file.exists() else 0
    median_hook = statistics.median(hook_ms)
    median_pass = statistics.median(pass_ms)
    result = {
        "hook": str(exe.relative_to(REPO)),
        "interpreter": interpreter,
        "python": version,
        "runs": args.n,
        "median_hook_ms": round(median_hook, 2),
        "median_python_S_pass_ms": round(median_pass, 2),
        "ratio": round(median_hook / median_pass, 2),
        "p90_hook_ms": round(sorted(hook_ms)[int(len(hook_ms) * 0.9)], 2),
        "peak_rss_mib": round(max(rss) / 1024, 1),
        "median_hook_cpu_ms": round(statistics.median(hook_cpu), 2),
        "median_python_S_pass_cpu_ms": round(statistics.median(pass_cpu), 2),
        "events_with_agent_summary": from_agent,
        "events_written": events,
        "nonzero_exits": failed,
        "hook_failures": hook_failures,
        "target": {"ratio_max": 2.0, "rss_mib_max": 30},
    }
    print(json.dumps(result, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
