"""The agent over a real NVIDIA GPU and driver (marker `gpu`).

Run where a GPU is present (`pytest -m gpu tests/gpu`); everywhere else every test skips
and says why. The same checks the fake-NVML tests make, against the real library: GPUs
are found with their device minor numbers and UUIDs, readings are integers in base units,
the total-energy counter only grows, and `computeproof gpus --json` lists them.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest

pytestmark = pytest.mark.gpu
REPO = Path(__file__).resolve().parents[2]


def _real_nvml_reason() -> str | None:
    # probed in a child process: loading the real libnvidia-ml here would shadow the fake
    # library the agent's unit tests load into this process by the same soname
    probe = (
        "import pynvml\n"
        "try:\n"
        "    pynvml.nvmlInit()\n"
        "except pynvml.NVMLError as e:\n"
        "    print(f'no NVIDIA driver/GPU here (nvmlInit: {e})'); raise SystemExit\n"
        "print('' if pynvml.nvmlDeviceGetCount() else 'NVML reports no GPUs')\n"
    )
    env = {k: v for k, v in os.environ.items() if k not in ("LD_LIBRARY_PATH", "FAKE_NVML_SCRIPT")}
    proc = subprocess.run(
        [sys.executable, "-c", probe], capture_output=True, text=True, env=env, timeout=60
    )
    if proc.returncode != 0:
        return "nvidia-ml-py is not installed" if "pynvml" in proc.stderr else proc.stderr[-200:]
    return proc.stdout.strip() or None


REASON = _real_nvml_reason()
skip_without_gpu = pytest.mark.skipif(REASON is not None, reason=f"no real GPU: {REASON}")


@skip_without_gpu
def test_gpus_have_minor_numbers_and_uuids() -> None:
    """Every GPU NVML lists maps to an existing /dev/nvidiaN and a GPU- UUID."""
    from slurm_hooks.agent.nvml import Nvml

    nvml = Nvml()
    nvml.open()
    try:
        assert nvml.gpus
        minors = [g.minor for g in nvml.gpus]
        assert len(set(minors)) == len(minors)
        for g in nvml.gpus:
            assert g.uuid.startswith("GPU-"), g
            assert g.memory_total > 0
            assert os.path.exists(f"/dev/nvidia{g.minor}") or os.environ.get("CP_NO_DEV")
        assert nvml.driver_version
    finally:
        nvml.close()


@skip_without_gpu
def test_readings_are_integers_and_energy_counter_grows() -> None:
    """Two readings a second apart: integer base units, energy counter non-decreasing."""
    from slurm_hooks.agent.nvml import Nvml

    nvml = Nvml()
    nvml.open()
    try:
        first = nvml.read()
        time.sleep(1.0)
        second = nvml.read()
    finally:
        nvml.close()
    assert set(first) == set(second) and first
    for minor, reading in second.items():
        assert reading.utilization is None or 0 <= reading.utilization <= 100
        assert reading.memory_used is None or isinstance(reading.memory_used, int)
        assert reading.power_mw is None or reading.power_mw > 0
        if reading.energy_mj is not None and first[minor].energy_mj is not None:
            assert reading.energy_mj >= first[minor].energy_mj


@skip_without_gpu
def test_gpus_json_lists_the_real_gpus() -> None:
    """`computeproof gpus --json` reports each GPU with the documented keys."""
    out = subprocess.run(
        [sys.executable, "-m", "slurm_hooks", "gpus", "--json"],
        capture_output=True, text=True, check=True, cwd=REPO, timeout=60,
        env={**os.environ, "PYTHONPATH": str(REPO)},
    ).stdout  # fmt: skip
    gpus = json.loads(out)
    assert gpus
    for g in gpus:
        assert {"index", "minor", "uuid", "name", "pci_bus_id", "memory_total", "job_id"} <= set(g)
        assert g["uuid"].startswith("GPU-") and g["memory_total"] > 0
