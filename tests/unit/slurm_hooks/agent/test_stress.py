"""A bounded stress test of the agent process (issue 13): a few thousand hostile requests.

The agent runs as `computeproof agent run` over the fake NVML, sampling two jobs every
second. Against it: 300 idle connections at once, then ~2,500 failing requests from eight
threads (over 64 KiB with descriptors, nested 60,000 deep, not JSON with descriptors,
from outside any job, unknown ops). Watched from /proc: the agent's descriptors, threads
and RSS stay bounded and come back, its log stays small, and the two jobs are sampled
every second throughout (no unmeasured time, no missed pass). Everything stops by itself.
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path

from conftest import REPO, Script, bind
from fakenvml.build import gpu_line

from computeproof.config import Config
from slurm_hooks.agent import server as server_module
from slurm_hooks.agent.client import request

CLI = [sys.executable, "-c", "from slurm_hooks.cli import main; main()"]
IDLE_CLIENTS = 300
WORKERS = 8
ROUNDS = 60  # x 8 workers x 5 kinds = 2,400 requests


def proc_status(pid: int) -> dict[str, int]:
    """Descriptors, threads and RSS (KiB) of process ``pid``."""
    out = {"fds": len(os.listdir(f"/proc/{pid}/fd"))}
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith("Threads:"):
                out["threads"] = int(line.split()[1])
            elif line.startswith("VmRSS:"):
                out["rss_kib"] = int(line.split()[1])
    return out


def send(path: str, payload: bytes, fds: list[int] | None = None) -> bytes:
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as sock:
        sock.settimeout(30)
        sock.connect(path)
        try:
            if fds:
                socket.send_fds(sock, [payload[:1]], fds)
                sock.sendall(payload[1:])
            else:
                sock.sendall(payload)
            data = b""
            while b"\n" not in data:
                chunk = sock.recv(65536)
                if not chunk:
                    break
                data += chunk
            return data
        except OSError:
            return b""


def test_agent_stays_bounded_under_a_request_flood(
    config: Config, script: Script, tmp_path: Path, subprocess_env: dict[str, str]
) -> None:
    script.write(gpu_line(0, 0, util=60, energy=0, energy_rate=200_000) + gpu_line(1, 1, util=0))
    bind(config, "c1", 501, [0])
    bind(config, "c1", 502, [1])
    cfg_path = tmp_path / "config.toml"
    cfg_path.write_text(
        f'cluster = "{config.cluster}"\nrun_dir = "{config.run_dir}"\n'
        f'spool_dir = "{config.spool_dir}"\nsample_interval = 1\nprogress_interval = 3600\n'
        "orphan_check_interval = 0\n"
    )
    env = dict(subprocess_env, COMPUTEPROOF_CONFIG=str(cfg_path), FAKE_NVML_SCRIPT=script.path)
    log_path = tmp_path / "agent.log"
    with open(log_path, "wb") as log:
        agent = subprocess.Popen(
            [*CLI, "agent", "run", "--node", "c1"], env=env, stderr=log, cwd=REPO
        )
    path = config.agent_socket_path("c1")
    victim = tmp_path / "victim"
    victim.write_bytes(b"v")
    fds = [os.open(victim, os.O_RDONLY) for _ in range(4)]
    peaks: dict[str, int] = {}
    stop_watch = threading.Event()
    try:
        deadline = time.monotonic() + 30
        while not os.path.exists(path) and time.monotonic() < deadline:
            time.sleep(0.1)
        first = request(path, {"op": "summary", "job_id": 501}, timeout=5, retry_s=10)
        time.sleep(1.5)
        baseline = proc_status(agent.pid)

        def watch() -> None:
            while not stop_watch.is_set():
                try:
                    now = proc_status(agent.pid)
                except OSError:
                    return
                for k, v in now.items():
                    peaks[k] = max(peaks.get(k, 0), v)
                stop_watch.wait(0.1)

        watcher = threading.Thread(target=watch)
        watcher.start()
        started = time.monotonic()

        # 1. idle clients: a few hold threads, the rest are refused at once
        idle = []
        for _ in range(IDLE_CLIENTS):
            s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
            s.connect(path)
            idle.append(s)
        time.sleep(1.0)
        during_idle = proc_status(agent.pid)
        for s in idle:
            s.close()

        # 2. a flood of failing requests, eight at a time
        kinds = [
            (b"x" * (70 * 1024), True),
            (b"[" * 60_000 + b"\n", False),
            (b"{not json\n", True),
            (b'{"op": "progress", "percent": 5}\n', False),  # from outside any job
            (b'{"op": "\\u001b[2J\\nforged"}\n', False),
        ]
        answered = [0]
        lock = threading.Lock()

        def worker() -> None:
            for _ in range(ROUNDS):
                for payload, with_fds in kinds:
                    if send(path, payload, fds if with_fds else None).endswith(b"\n"):
                        with lock:
                            answered[0] += 1

        workers = [threading.Thread(target=worker) for _ in range(WORKERS)]
        for w in workers:
            w.start()
        for w in workers:
            w.join(300)
        flood_s = time.monotonic() - started
        time.sleep(2.5)  # two more passes after the flood
        after = proc_status(agent.pid)
        last = request(path, {"op": "summary", "job_id": 501}, timeout=5)
        elapsed_s = time.monotonic() - started
    finally:
        stop_watch.set()
        for fd in fds:
            os.close(fd)
        agent.send_signal(signal.SIGTERM)
        agent.wait(timeout=30)

    total = WORKERS * ROUNDS * len(kinds)
    assert answered[0] == total, f"{total - answered[0]} requests got no one-line answer"
    # threads: a connection cap's worth of handlers, never one per client
    cap = server_module.MAX_ROOT_CONNECTIONS if os.getuid() == 0 else (
        server_module.MAX_CONNECTIONS_PER_UID
    )  # fmt: skip
    assert during_idle["threads"] <= baseline["threads"] + cap + 2, (baseline, during_idle)
    assert peaks["threads"] <= baseline["threads"] + cap + 4, (baseline, peaks)
    # descriptors: bounded while it lasts, all given back after
    assert peaks["fds"] <= baseline["fds"] + cap * (server_module.MAX_FDS + 1), peaks
    assert after["fds"] <= baseline["fds"] + 2, (baseline, after)
    assert after["threads"] <= baseline["threads"] + 2, (baseline, after)
    # memory: no growth per request
    assert after["rss_kib"] - baseline["rss_kib"] < 20 * 1024, (baseline, after)
    # logs: rate-limited per cause, no tracebacks
    text = log_path.read_text(errors="replace")
    assert "Traceback" not in text and len(text) < 64 * 1024, text[-2000:]
    # sampling kept its period for the jobs: every second measured, none lost
    g0, g1 = first["summary"]["gpus"][0], last["summary"]["gpus"][0]  # type: ignore[index]
    assert g1["unmeasured_ms"] == g0["unmeasured_ms"] == 0
    assert g1["samples"] - g0["samples"] >= int(elapsed_s) - 2, (g0["samples"], g1["samples"])
    print(
        f"\nstress: {total} requests + {IDLE_CLIENTS} idle clients in {flood_s:.1f} s; "
        f"agent baseline {baseline}, peak {peaks}, after {after}; "
        f"samples {g1['samples'] - g0['samples']} in {elapsed_s:.1f} s; log {len(text)} bytes"
    )
