"""The agent as a subprocess: `agent run`, `agent sample`, `gpus`, NVML missing."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

from conftest import REPO, Script, bind
from fakenvml.build import gpu_line

from computeproof.config import Config
from slurm_hooks.agent.client import request

CLI = [sys.executable, "-c", "from slurm_hooks.cli import main; main()"]


def env_for(
    config: Config,
    tmp_path: Path,
    base: dict[str, str],
    script: str | None,
    sample_interval: int = 5,
    extra: str = "",
) -> dict[str, str]:
    path = tmp_path / "config.toml"
    path.write_text(
        f'cluster = "{config.cluster}"\nrun_dir = "{config.run_dir}"\n'
        f'spool_dir = "{config.spool_dir}"\nsample_interval = {sample_interval}\n' + extra
    )
    env = dict(base, COMPUTEPROOF_CONFIG=str(path))
    if script:
        env["FAKE_NVML_SCRIPT"] = script
    return env


def test_gpus_json_by_minor(
    config: Config, script: Script, tmp_path: Path, subprocess_env: dict[str, str]
) -> None:
    script.write(gpu_line(0, 6) + gpu_line(1, 4))
    bind(config, "c2", 77, [4])
    env = env_for(config, tmp_path, subprocess_env, script.path)
    done = subprocess.run(
        [*CLI, "gpus", "--json", "--node", "c2"],
        env=env,
        capture_output=True,
        text=True,
        timeout=30,
    )
    assert done.returncode == 0, done.stderr
    assert json.loads(done.stdout) == [
        {
            "index": 0,
            "minor": 6,
            "uuid": "GPU-fake-0006",
            "name": "Fake-H100",
            "pci_bus_id": "00000000:1D:00.0",
            "memory_total": 85899345920,
            "job_id": None,
        },
        {
            "index": 1,
            "minor": 4,
            "uuid": "GPU-fake-0004",
            "name": "Fake-H100",
            "pci_bus_id": "00000000:1B:00.0",
            "memory_total": 85899345920,
            "job_id": 77,
        },
    ]


def test_library_missing(config: Config, tmp_path: Path) -> None:
    base = {k: v for k, v in os.environ.items() if k != "LD_LIBRARY_PATH"}
    base["PYTHONPATH"] = str(REPO)
    env = env_for(config, tmp_path, base, None)
    done = subprocess.run(
        [*CLI, "agent", "sample", "--once", "--json", "--node", "c1"],
        env=env,
        capture_output=True,
        text=True,
        timeout=30,
    )
    assert done.returncode == 0, done.stderr
    result = json.loads(done.stdout)
    assert result["gpus"] == [] and "libnvidia-ml.so.1 not found" in result["error"]
    done = subprocess.run(
        [*CLI, "gpus", "--node", "c1"], env=env, capture_output=True, text=True, timeout=30
    )
    assert done.returncode == 2
    assert done.stderr.strip() == ("computeproof: error: NVML library libnvidia-ml.so.1 not found")


def test_agent_run_serves_and_stops(
    config: Config, script: Script, tmp_path: Path, subprocess_env: dict[str, str]
) -> None:
    script.write(gpu_line(0, 0, util=30, energy=0, energy_rate=100000))
    bind(config, "c1", 9, [0])
    # energy read every pass: a summary asked for by a user (not root) is not read afresh
    env = env_for(
        config, tmp_path, subprocess_env, script.path, sample_interval=1,
        extra="energy_interval = 0\n",
    )  # fmt: skip
    proc = subprocess.Popen(
        [*CLI, "agent", "run", "--node", "c1"], env=env, stderr=subprocess.PIPE, text=True
    )
    try:
        sock = config.agent_socket_path("c1")
        deadline = time.monotonic() + 15
        summary: dict[str, object] = {}
        while time.monotonic() < deadline:
            if os.path.exists(sock):
                summary = request(sock, {"op": "summary", "job_id": 9}, timeout=1.0)["summary"]  # type: ignore[assignment]
                if summary["gpus"][0]["samples"] >= 2:  # type: ignore[index]
                    break
            time.sleep(0.1)
        g = summary["gpus"][0]  # type: ignore[index]
        assert g["samples"] >= 2 and g["energy_method"] == "counter" and g["energy_mj"] > 0
        assert g["util_percent_ms"] == 30 * g["measured_ms"]
        # `agent summary`: from the running agent, for a terminal and as JSON
        shown = subprocess.run([*CLI, "agent", "summary", "9", "--node", "c1"], env=env,
                               capture_output=True, text=True, timeout=30)  # fmt: skip
        assert shown.returncode == 0, shown.stderr
        head, gpu = shown.stdout.splitlines()
        assert head.startswith("job 9 (run 0) on c1: ") and "(counter)" in head, head
        assert gpu.startswith("  GPU 0 (minor 0, GPU-fake-0000): "), gpu
    finally:
        proc.send_signal(signal.SIGTERM)
        _, err = proc.communicate(timeout=15)
    assert proc.returncode == 0, err
    assert not os.path.exists(sock)
    # the agent is gone: its persisted summary answers
    shown = subprocess.run([*CLI, "agent", "summary", "9", "--node", "c1", "--json"], env=env,
                           capture_output=True, text=True, timeout=30)  # fmt: skip
    assert shown.returncode == 0, shown.stderr
    persisted = json.loads(shown.stdout)
    assert persisted["job_id"] == 9 and persisted["gpus"][0]["samples"] >= g["samples"]
