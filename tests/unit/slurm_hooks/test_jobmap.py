"""jobmap.py: jobstats' gpustat files and dcgm-exporter's job mapping files (issue 20).

Formats as their readers take them: jobstats' exporter (nvidia_gpu_prometheus_exporter)
reads ``<dir>/<UUID>``, else ``<dir>/<NVML index>``, holding "JOBID UID"; dcgm-exporter's
hpc mapper reads every file of its directory whose name is an integer (the GPU id) and
takes each line as a job id.
"""

from __future__ import annotations

import os
import stat
from pathlib import Path

import pytest
from test_hook_entrypoints import EPILOG, PROLOG, Site, run

from slurm_hooks import jobmap


def agent_map(run: Path, node: str, lines: str) -> None:
    (run / node).mkdir(parents=True, exist_ok=True)
    (run / node / "gpus").write_text(lines)


def driver_listing(root: Path, gpus: dict[str, tuple[int, str]]) -> str:
    """A /proc/driver/nvidia/gpus look-alike: bus id -> (minor, UUID)."""
    for bus, (minor, uuid) in gpus.items():
        d = root / bus
        d.mkdir(parents=True)
        (d / "information").write_text(
            f"Model: \t\t NVIDIA H200\nIRQ:   \t\t 42\nGPU UUID: \t {uuid}\n"
            f"Bus Location: \t {bus}\nDevice Minor: \t {minor}\nGPU Excluded:\t No\n"
        )
    return str(root)


def test_identities_from_the_agent_else_the_driver(tmp_path: Path) -> None:
    run = tmp_path / "run"
    agent_map(run, "c1", "4 1 GPU-aaaa\n6 0 GPU-bbbb\nnonsense\n")
    assert jobmap.gpu_identities(str(run), "c1", "/nonexistent") == {
        4: (1, "GPU-aaaa"),
        6: (0, "GPU-bbbb"),
    }
    driver = driver_listing(
        tmp_path / "driver",
        {"0000:c1:00.0": (0, "GPU-late"), "0000:17:00.0": (3, "GPU-early")},
    )
    # NVML numbers GPUs in PCI bus id order, whatever their minor numbers
    assert jobmap.gpu_identities(str(run), "c2", driver) == {
        3: (0, "GPU-early"),
        0: (1, "GPU-late"),
    }
    assert jobmap.gpu_identities(str(run), "c2", "/nonexistent") == {}


def test_jobstats_files_for_the_exporter(tmp_path: Path) -> None:
    run = tmp_path / "run"
    agent_map(run, "c1", "0 0 GPU-zero\n1 1 GPU-one\n2 2 GPU-two\n")
    gpustat = tmp_path / "gpustat"
    assert jobmap.job_started(str(run), "c1", str(gpustat), "", 4242, 1000, [0, 2]) == []
    files = {p.name: p.read_text() for p in gpustat.iterdir() if not p.name.startswith(".")}
    assert files == {
        "GPU-zero": "4242 1000\n",
        "0": "4242 1000\n",
        "GPU-two": "4242 1000\n",
        "2": "4242 1000\n",
    }
    for name in files:
        assert stat.S_IMODE(os.stat(gpustat / name).st_mode) == 0o644  # the exporter reads
    assert stat.S_IMODE(os.stat(gpustat).st_mode) == 0o755
    jobmap.job_started(str(run), "c1", str(gpustat), "", 4243, 1001, [1])
    assert jobmap.job_ended(str(gpustat), "", 4242) == []
    left = {p.name: p.read_text() for p in gpustat.iterdir() if not p.name.startswith(".")}
    assert left == {"GPU-one": "4243 1001\n", "1": "4243 1001\n"}


def test_dcgm_mapping_files_with_a_shared_gpu(tmp_path: Path) -> None:
    run = tmp_path / "run"
    agent_map(run, "c1", "7 0 GPU-a\n5 1 GPU-b\n")
    dcgm = tmp_path / "dcgm"
    jobmap.job_started(str(run), "c1", "", str(dcgm), 10, 1000, [7, 5])
    jobmap.job_started(str(run), "c1", "", str(dcgm), 11, 1001, [5])  # shares GPU minor 5
    jobmap.job_started(str(run), "c1", "", str(dcgm), 11, 1001, [5])  # a re-run Prolog
    named = {p.name: p.read_text() for p in dcgm.iterdir() if p.name.isdigit()}
    assert named == {"0": "10\n", "1": "10\n11\n"}  # by NVML index, not minor
    jobmap.job_ended("", str(dcgm), 10)
    named = {p.name: p.read_text() for p in dcgm.iterdir() if p.name.isdigit()}
    assert named == {"1": "11\n"}
    jobmap.job_ended("", str(dcgm), 11)
    assert not [p for p in dcgm.iterdir() if p.name.isdigit()]


def test_problems_are_returned_never_raised(tmp_path: Path) -> None:
    run = tmp_path / "run"
    problems = jobmap.job_started(
        str(run), "c1", str(tmp_path / "g"), "", 1, 0, [0], driver_gpus="/nonexistent"
    )
    assert len(problems) == 1 and "no NVML index or UUID known for GPU minor(s) [0]" in problems[0]
    agent_map(run, "c1", "0 0 GPU-x\n")
    blocker = tmp_path / "file"
    blocker.write_text("")
    problems = jobmap.job_started(str(run), "c1", str(blocker / "sub"), str(blocker), 1, 0, [0])
    assert len(problems) == 2 and all("cannot write" in p for p in problems)
    assert jobmap.job_ended(str(tmp_path / "none"), str(tmp_path / "none2"), 1) == []
    assert jobmap.job_started(str(run), "c1", "", "", 1, 0, [0]) == []  # not enabled


@pytest.mark.skipif(os.geteuid() != 0, reason="mknod needs root")
def test_prolog_and_epilog_keep_the_files_from_the_binding(tmp_path: Path) -> None:
    """The real hooks, with both directories configured: GPUs 1,2 of job 9 on node c2 are
    /dev/nvidia5 and 6 in gres.conf; the agent's map names their NVML index and UUID."""
    gpustat, dcgm = tmp_path / "gpustat", tmp_path / "dcgm"
    (tmp_path / "site").mkdir()
    site = Site(
        tmp_path / "site",
        f'jobstats_gpustat_dir = "{gpustat}"\ndcgm_job_mapping_dir = "{dcgm}"\n',
    )
    agent_map(site.run, "c2", "".join(f"{m} {m - 4} GPU-{m:04d}\n" for m in range(4, 8)))
    env = site.env("prolog.9")
    result = run(PROLOG, env)
    assert result.returncode == 0 and result.stderr == "", result.stderr
    binding = (site.run / "c2" / "jobs" / "9.json").read_text()
    assert '"account":"root"' in binding  # SLURM_JOB_ACCOUNT, for the metrics' labels
    files = {p.name: p.read_text() for p in gpustat.iterdir() if not p.name.startswith(".")}
    assert files == {"GPU-0005": "9 0\n", "1": "9 0\n", "GPU-0006": "9 0\n", "2": "9 0\n"}
    assert {p.name: p.read_text() for p in dcgm.iterdir() if p.name.isdigit()} == {
        "1": "9\n",
        "2": "9\n",
    }
    result = run(EPILOG, site.env("epilog.9"))
    assert result.returncode == 0, result.stderr
    assert not [p for p in gpustat.iterdir() if not p.name.startswith(".")]
    assert not [p for p in dcgm.iterdir() if p.name.isdigit()]
