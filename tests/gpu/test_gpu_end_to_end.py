"""A job's GPU use end to end, no Slurm needed (issue 14, 7).

The real Prolog (a gres.conf naming the GPU's /dev/nvidiaN) writes the binding, the agent
(`computeproof agent run`, 1 s interval) samples, a workload with a known busy/idle
profile runs, the real Epilog records node_done, `computeproof forward` signs it into the
ledger, `receipt export` and `receipt verify --ledger-key` check the receipt. Meanwhile an
independent NVML sampler (another process, every 0.1 s) watches the same GPU, and the
receipt's figures are held against it: busy seconds within one sample interval + 1 s, max
memory equal to NVML's, energy equal to the counter's delta over the agent's window
(within what the GPU can draw in the sampler's 0.1 s steps at each end).

Two backends, one test:
- ``real-gpu`` (marker ``gpu``): NVIDIA driver and GPU, workload in torch; skips, saying
  why, where either is missing. Run it where a GPU is lent: ``pytest -m gpu tests/gpu``.
- ``fake-nvml``: the fake libnvidia-ml.so.1 (tests/fakenvml), the workload a script that
  rewrites its readings on the same profile. It runs everywhere (no marker) and proves the
  plumbing the real run relies on.
"""

from __future__ import annotations

import itertools
import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

REPO = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(REPO / "tests"))

from fakenvml import build as fakenvml  # noqa: E402

PROLOG = REPO / "prolog.d" / "computeproof-prolog"
EPILOG = REPO / "epilog.d" / "computeproof-epilog"
CLI = [sys.executable, "-m", "slurm_hooks"]
JOB_ID = 7001
NODE = "n1"
INTERVAL_S = 1
# the workload's profile: (phase, seconds)
PROFILE = [("idle", 2.0), ("busy", 6.0), ("idle", 3.0), ("busy", 4.0), ("idle", 2.0)]
WORKLOAD_BYTES = 2 * 2**30

SAMPLER = r"""
import json, os, sys, time
import pynvml
minor, out_path, stop = int(sys.argv[1]), sys.argv[2], sys.argv[3]
pynvml.nvmlInit()
handle = None
for i in range(pynvml.nvmlDeviceGetCount()):
    h = pynvml.nvmlDeviceGetHandleByIndex(i)
    if pynvml.nvmlDeviceGetMinorNumber(h) == minor:
        handle = h
with open(out_path, "w") as out:
    while not os.path.exists(stop):
        t = time.time_ns() // 1_000_000
        u = pynvml.nvmlDeviceGetUtilizationRates(handle).gpu
        m = pynvml.nvmlDeviceGetMemoryInfo(handle).used
        e = pynvml.nvmlDeviceGetTotalEnergyConsumption(handle)
        p = pynvml.nvmlDeviceGetPowerUsage(handle)
        out.write(json.dumps([t, u, m, e, p]) + "\n")
        out.flush()
        time.sleep(0.1)
"""

TORCH_WORKLOAD = r"""
import json, sys, time
import torch
profile, nbytes = json.loads(sys.argv[1]), int(sys.argv[2])
dev = torch.device("cuda:0")
hold = torch.empty(nbytes, dtype=torch.uint8, device=dev)
a = torch.randn(8192, 8192, device=dev)
torch.cuda.synchronize()
for phase, seconds in profile:
    end = time.monotonic() + seconds
    if phase == "busy":
        while time.monotonic() < end:
            a = a @ a
            a = a / a.norm()
            torch.cuda.synchronize()
    else:
        time.sleep(seconds)
del hold
"""

FAKE_WORKLOAD = r"""
import json, os, sys, time
sys.path.insert(0, sys.argv[4])
from fakenvml.build import gpu_line, write_script
profile, nbytes, script = json.loads(sys.argv[1]), int(sys.argv[2]), sys.argv[3]
minor, energy = int(sys.argv[5]), int(sys.argv[6])
last = time.monotonic()
for phase, seconds in profile:
    end = time.monotonic() + seconds
    while time.monotonic() < end:
        now = time.monotonic()
        busy = phase == "busy"
        power = 300_000 if busy else 60_000
        energy += int(power * (now - last))  # mW x s = mJ
        last = now
        write_script(script, "driver 550.54.15\n" + gpu_line(
            0, minor, util=100 if busy else 0, mem_used=nbytes + 500 * 2**20, power=power,
            energy=energy, temp=50))
        time.sleep(0.1)
write_script(script, "driver 550.54.15\n" + gpu_line(
    0, minor, util=0, mem_used=0, power=60_000, energy=energy, temp=45))
"""


def _real_gpu_reason() -> str | None:
    """Why the real backend cannot run here (None: it can). Probed in a child process."""
    probe = (
        "import pynvml\n"
        "try:\n"
        "    pynvml.nvmlInit()\n"
        "except pynvml.NVMLError as e:\n"
        "    print(f'no NVIDIA driver/GPU here (nvmlInit: {e})'); raise SystemExit\n"
        "if not pynvml.nvmlDeviceGetCount(): print('NVML reports no GPUs'); raise SystemExit\n"
        "try:\n"
        "    import torch\n"
        "except ImportError:\n"
        "    print('torch is not installed (the workload needs it)'); raise SystemExit\n"
        "print('' if torch.cuda.is_available() else 'torch sees no CUDA device')\n"
    )
    env = {k: v for k, v in os.environ.items() if k not in ("LD_LIBRARY_PATH", "FAKE_NVML_SCRIPT")}
    try:
        proc = subprocess.run(
            [sys.executable, "-c", probe], capture_output=True, text=True, env=env, timeout=120
        )
    except subprocess.TimeoutExpired:
        return "probing NVML/torch timed out"
    if proc.returncode != 0:
        return "nvidia-ml-py is not installed" if "pynvml" in proc.stderr else proc.stderr[-200:]
    return proc.stdout.strip() or None


@dataclass
class Backend:
    """Where NVML comes from and how the workload runs."""

    name: str
    root: Path
    env: dict[str, str]
    minor: int
    device: str
    script: str = ""
    fake_dir: str = ""
    notes: list[str] = field(default_factory=list)

    def workload(self) -> list[str]:
        profile = json.dumps(PROFILE)
        if self.name == "real":
            return [sys.executable, "-c", TORCH_WORKLOAD, profile, str(WORKLOAD_BYTES)]
        return [
            sys.executable, "-c", FAKE_WORKLOAD, profile, str(WORKLOAD_BYTES), self.script,
            str(REPO / "tests"), str(self.minor), "1000000",
        ]  # fmt: skip


def _real_backend(root: Path) -> Backend:
    env = {k: v for k, v in os.environ.items() if k not in ("LD_LIBRARY_PATH", "FAKE_NVML_SCRIPT")}
    minor = subprocess.run(
        [sys.executable, "-c", "import pynvml; pynvml.nvmlInit(); "
         "print(pynvml.nvmlDeviceGetMinorNumber(pynvml.nvmlDeviceGetHandleByIndex(0)))"],
        capture_output=True, text=True, env=env, check=True, timeout=60,
    ).stdout.strip()  # fmt: skip
    # torch's device 0 must be NVML's index 0: both in PCI bus order
    env.update(CUDA_DEVICE_ORDER="PCI_BUS_ID", CUDA_VISIBLE_DEVICES="0")
    return Backend("real", root, env, int(minor), f"/dev/nvidia{minor}")


def _fake_backend(root: Path) -> Backend:
    fake_dir = root / "fakenvml"
    fake_dir.mkdir()
    fakenvml.build(str(fake_dir))
    script = str(root / "nvml.script")
    if os.geteuid() == 0:  # a character device like the driver's: /dev/nvidia0 is (195, 0)
        dev = root / "dev"
        dev.mkdir()
        os.mknod(dev / "nvidia0", 0o600 | 0o020000, os.makedev(195, 0))
        device, minor = str(dev / "nvidia0"), 0
    else:  # any character device gives the Prolog a minor number: /dev/null is (1, 3)
        device, minor = "/dev/null", os.minor(os.stat("/dev/null").st_rdev)
    fakenvml.write_script(
        script,
        "driver 550.54.15\n"
        + fakenvml.gpu_line(0, minor, util=0, mem_used=0, power=60_000, energy=1_000_000, temp=45),
    )
    env = dict(os.environ, LD_LIBRARY_PATH=str(fake_dir), FAKE_NVML_SCRIPT=script)
    return Backend("fake", root, env, minor, device, script=script, fake_dir=str(fake_dir))


REAL_REASON: str | None = None


def _skip_reason() -> str | None:
    global REAL_REASON
    if REAL_REASON is None:
        REAL_REASON = _real_gpu_reason() or ""
    return REAL_REASON or None


@pytest.fixture(
    params=[
        pytest.param("fake", id="fake-nvml"),
        pytest.param("real", id="real-gpu", marks=pytest.mark.gpu),
    ]
)
def backend(request: pytest.FixtureRequest) -> Iterator[Backend]:
    root = Path(tempfile.mkdtemp(prefix="cp-gpu-e2e-"))
    try:
        if request.param == "real":
            reason = _skip_reason()
            if reason is not None:
                pytest.skip(f"no real GPU: {reason}")
            yield _real_backend(root)
        else:
            yield _fake_backend(root)
    finally:
        shutil.rmtree(root, ignore_errors=True)


def _site(b: Backend) -> str:
    """Config file, slurm.conf + gres.conf naming the GPU's device, a ledger that trusts
    the host key; return the config's path."""
    from computeproof.config import load_config
    from computeproof.keys import Signer, write_key
    from computeproof.ledger import open_ledger

    etc = b.root / "etc"
    etc.mkdir()
    (etc / "slurm.conf").write_text("ClusterName=e2e\n")
    (etc / "gres.conf").write_text(f"NodeName={NODE} Name=gpu File={b.device}\n")
    config = b.root / "config.toml"
    config.write_text(
        f'cluster = "e2e"\nspool_dir = "{b.root / "spool"}"\nrun_dir = "{b.root / "run"}"\n'
        f'db = "{b.root / "ledger.db"}"\nhost_key = "{b.root / "host.key"}"\n'
        f'ledger_key = "{b.root / "ledger.key"}"\nhost = "{NODE}"\n'
        f"sample_interval = {INTERVAL_S}\nprogress_interval = 300\norphan_check_interval = 0\n"
    )
    cfg = load_config(str(config))
    signer = Signer.generate()
    write_key(cfg.host_key, signer)
    with open_ledger(cfg, create=True) as ledger:
        ledger.enroll(signer.public_raw, ["*"])
    return str(config)


def _ledger_key(config: str) -> str:
    """The ledger's public key, as --ledger-key takes it (the receipt's trust root)."""
    from computeproof.config import load_config
    from computeproof.keys import format_public_key
    from computeproof.ledger import open_ledger

    with open_ledger(load_config(config)) as ledger:
        key = ledger.ledger_public_key()
    assert key is not None
    return format_public_key(key)


def _hook(path: Path, b: Backend, config: str, **more: str) -> None:
    env = {
        "SLURM_JOB_ID": str(JOB_ID), "SLURMD_NODENAME": NODE, "SLURM_JOB_UID": str(os.getuid()),
        "SLURM_JOB_USER": "e2e", "SLURM_JOB_GPUS": "0",
        "SLURM_CONF": str(b.root / "etc" / "slurm.conf"), "COMPUTEPROOF_CONFIG": config, **more,
    }  # fmt: skip
    done = subprocess.run([str(path)], env=env, capture_output=True, text=True, timeout=60)
    assert done.returncode == 0 and not done.stderr, done.stderr


def _cli(b: Backend, config: str, *args: str) -> subprocess.CompletedProcess[str]:
    env = dict(b.env, COMPUTEPROOF_CONFIG=config, PYTHONPATH=str(REPO))
    return subprocess.run(
        [*CLI, *args], env=env, capture_output=True, text=True, timeout=120, cwd=REPO
    )


def _busy_ms(rows: list[list[int]], start_ms: int, end_ms: int) -> int:
    """Busy time as the independent sampler saw it in (start, end]: each interval between
    two of its readings counts when the later one shows utilization above zero (NVML's
    utilization is over the period just past), as the agent counts its own intervals."""
    busy = 0
    for (t0, *_), (t1, util, *_) in itertools.pairwise(rows):
        lo, hi = max(t0, start_ms), min(t1, end_ms)
        if hi > lo and util > 0:
            busy += hi - lo
    return busy


def _nearest(rows: list[list[int]], t_ms: int) -> list[int]:
    return min(rows, key=lambda r: abs(r[0] - t_ms))


def test_job_gpu_use_end_to_end(backend: Backend) -> None:
    b = backend
    config = _site(b)
    out = b.root / "sampler.jsonl"
    stop = b.root / "stop"
    env = dict(b.env, PYTHONPATH=str(REPO), COMPUTEPROOF_CONFIG=config)
    sampler = subprocess.Popen(
        [sys.executable, "-c", SAMPLER, str(b.minor), str(out), str(stop)], env=env
    )
    agent = subprocess.Popen(
        [*CLI, "agent", "run", "--node", NODE], env=env, cwd=REPO,
        stderr=subprocess.PIPE, text=True,
    )  # fmt: skip
    socket_path = b.root / "run" / NODE / "agent.sock"
    try:
        deadline = time.monotonic() + 60
        while not socket_path.exists():
            assert time.monotonic() < deadline and agent.poll() is None, "agent did not start"
            time.sleep(0.1)
        _hook(PROLOG, b, config)
        binding = json.loads((b.root / "run" / NODE / "jobs" / f"{JOB_ID}.json").read_text())
        assert [g["minor"] for g in binding["gpus"]] == [b.minor]
        from slurm_hooks.agent.client import request

        while True:  # the agent's first pass over the new binding
            try:
                reply = request(str(socket_path), {"op": "summary", "job_id": JOB_ID}, timeout=2)
                if reply["summary"]["first_sample_ms"] is not None:  # type: ignore[index]
                    break
            except Exception:
                pass
            assert time.monotonic() < deadline + 30, "the agent never sampled the job"
            time.sleep(0.2)
        work = subprocess.run(b.workload(), env=env, capture_output=True, text=True, timeout=300)
        assert work.returncode == 0, work.stderr
        time.sleep(INTERVAL_S + 0.5)  # a pass after the workload, as a job's last seconds
        _hook(EPILOG, b, config, SLURM_JOB_EXIT_CODE2="0:0")
    finally:
        stop.write_text("")
        sampler.wait(timeout=30)
        agent.send_signal(signal.SIGTERM)
        _, agent_err = agent.communicate(timeout=30)
    assert agent.returncode == 0, agent_err[-2000:]
    assert "Traceback" not in agent_err, agent_err[-2000:]

    forwarded = _cli(b, config, "forward")
    assert forwarded.returncode == 0, forwarded.stderr
    checkpoint = _cli(b, config, "ledger", "checkpoint")
    assert checkpoint.returncode == 0, checkpoint.stderr
    ledger_key = _ledger_key(config)
    receipt = b.root / "receipt.json"
    exported = _cli(b, config, "receipt", "export", str(JOB_ID), "-o", str(receipt))
    assert exported.returncode == 0, exported.stderr
    verified = _cli(b, config, "receipt", "verify", str(receipt), "--ledger-key", ledger_key)
    assert verified.returncode == 0, verified.stdout + verified.stderr

    from computeproof.bundle import verify_bundle
    from computeproof.keys import parse_public_key

    report = verify_bundle(receipt.read_bytes(), parse_public_key(ledger_key))
    types = [e["type"] for e in report.events]
    assert "started" in types and "node_done" in types, types
    node_done: dict[str, Any] = next(e for e in report.events if e["type"] == "node_done")
    summary = node_done["payload"]["gpu_summary"]
    assert node_done["payload"]["gpu_summary_source"] == "agent"
    (gpu,) = summary["gpus"]
    assert gpu["minor"] == b.minor and gpu["unmeasured_ms"] == 0

    rows = [json.loads(line) for line in out.read_text().splitlines() if line.strip()]
    start_ms, end_ms = summary["first_sample_ms"], summary["last_sample_ms"]
    seen = [r for r in rows if start_ms <= r[0] <= end_ms]
    indep_busy = _busy_ms(rows, start_ms, end_ms)
    indep_max_memory = max(r[2] for r in seen)
    energy_end_ms = gpu["energy_counter_ms"]
    energy_start_ms = energy_end_ms - gpu["energy_measured_ms"]
    first, last = _nearest(rows, energy_start_ms), _nearest(rows, energy_end_ms)
    indep_energy = last[3] - first[3]
    slack_ms = abs(first[0] - energy_start_ms) + abs(last[0] - energy_end_ms)
    max_power_mw = max(r[4] for r in rows)
    figures = {
        "backend": b.name,
        "busy_s": {"agent": gpu["busy_ms"] / 1000, "independent": indep_busy / 1000,
                   "profile": sum(s for p, s in PROFILE if p == "busy")},
        "max_memory_bytes": {"agent": gpu["max_memory_bytes"], "independent": indep_max_memory},
        "energy_j": {"agent": gpu["energy_mj"] / 1000, "counter_delta": indep_energy / 1000,
                     "slack": max_power_mw * slack_ms / 1e6},
    }  # fmt: skip
    print("\ngpu end-to-end: " + json.dumps(figures))
    assert abs(gpu["busy_ms"] - indep_busy) <= INTERVAL_S * 1000 + 1000, figures
    assert gpu["max_memory_bytes"] == indep_max_memory, figures
    assert abs(gpu["energy_mj"] - indep_energy) <= max_power_mw * slack_ms / 1000 + 1000, figures
    assert gpu["busy_ms"] > 0 and gpu["energy_mj"] > 0
