"""The docker-slurm test cluster itself: daemons, fake GPUs, accounting, accounts and users."""

from __future__ import annotations

import os
import re
import stat
import subprocess
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pytest

from computeproof.config import load_config
from tests.slurmjson import slurm_json

if TYPE_CHECKING:
    from conftest import SlurmCluster

pytestmark = pytest.mark.slurm

NVIDIA_MAJOR = 195
# c1 owns minors 0-3 and c2 minors 4-7, so a minor number names one GPU on the cluster.
EXPECTED_MINORS = {"c1": {0, 1, 2, 3}, "c2": {4, 5, 6, 7}}


def allocated(job: dict[str, Any]) -> dict[str, int]:
    """The job's allocated TRES from ``sacct --json``, as {"cpu": 1, "gres/gpu:a100": 2, ...}."""
    out = {}
    for tres in job["tres"]["allocated"]:
        # an unnamed TRES has name null up to 22.05, "" from 23.02 on
        key = f"{tres['type']}/{tres['name']}" if tres["name"] else tres["type"]
        out[key] = tres["count"]
    return out


def gpu_indices(value: str) -> list[int]:
    """Parse a CUDA_VISIBLE_DEVICES value such as ``0,1``."""
    return [int(x) for x in value.split(",")]


def assert_completed(job: dict[str, Any]) -> None:
    assert job["state"]["current"] == "COMPLETED", job["state"]
    assert job["exit_code"]["return_code"] == 0, job["exit_code"]


def test_status_reports_every_daemon_running(slurm_cluster: SlurmCluster) -> None:
    proc = subprocess.run(
        [str(slurm_cluster.script), "status"],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr
    for daemon in ("munged", "mariadbd", "slurmdbd", "slurmctld", "slurmd-c1", "slurmd-c2",
                   "controller"):  # fmt: skip
        assert re.search(rf"^{daemon}\s+running \(pid \d+\)$", proc.stdout, re.M), proc.stdout


def test_second_up_is_a_no_op(slurm_cluster: SlurmCluster) -> None:
    before = slurm_cluster.run("sinfo", "-h", "-N", "-o", "%N %t").stdout
    # Same hooks setting as the running cluster, or `up` would reconfigure it.
    text = slurm_cluster.slurm_conf.read_text()
    hooks_on = re.search(r"^Prolog=", text, re.M) is not None
    ctld_on = re.search(r"^PrologSlurmctld=", text, re.M) is not None
    env = {**os.environ, "CP_HOOKS": "1" if hooks_on else "0",
           "CP_CTLD_HOOKS": "1" if ctld_on else "0"}  # fmt: skip
    proc = subprocess.run(
        [str(slurm_cluster.script), "up"],
        capture_output=True, text=True, timeout=120, check=False, env=env,
    )  # fmt: skip
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "already up" in proc.stdout
    assert "nothing to do" in proc.stdout
    assert slurm_cluster.run("sinfo", "-h", "-N", "-o", "%N %t").stdout == before


def test_nodes_and_partitions(slurm_cluster: SlurmCluster) -> None:
    out = slurm_cluster.run("sinfo", "-h", "-N", "-o", "%N|%P|%G|%t").stdout
    rows = [line.split("|") for line in out.splitlines()]
    for node in slurm_cluster.nodes:
        partitions = {p for n, p, gres, state in rows if n == node and gres == "gpu:a100:4"}
        assert partitions == {"gpu*", "cpu"}, rows  # gpu is the default partition
        assert {state for n, _, _, state in rows if n == node} <= {"idle", "mix", "alloc", "comp"}


def test_computeproof_config_matches_cluster(slurm_cluster: SlurmCluster) -> None:
    config = load_config(str(slurm_cluster.computeproof_config), environ={})
    show = slurm_cluster.run("scontrol", "show", "config").stdout
    cluster_name = re.search(r"^ClusterName\s*=\s*(\S+)", show, re.M)
    assert cluster_name is not None
    assert config.cluster == cluster_name.group(1) == "cptest"
    cp_dir = slurm_cluster.dir / "computeproof"
    assert config.db == str(cp_dir / "ledger.db")
    assert config.spool_dir == str(cp_dir / "spool")
    assert config.slurm_bin == "/usr/bin"
    path_file = (cp_dir / "config-path").read_text().strip()
    assert path_file == str(slurm_cluster.computeproof_config)
    etc = Path("/etc/computeproof/config.toml")
    if etc.is_symlink():
        assert etc.resolve() == slurm_cluster.computeproof_config.resolve()


def test_fake_gpus_have_distinct_minor_numbers(slurm_cluster: SlurmCluster) -> None:
    seen: dict[str, set[int]] = {}
    for node in slurm_cluster.nodes:
        # slurmd -G prints the node's GRES configuration as slurmd parses gres.conf.
        proc = slurm_cluster.run("slurmd", "-G", "-N", node)
        match = re.search(r"Name=gpu Type=a100 Count=4 .*File=(\S+)\[(\d+)-(\d+)\]", proc.stderr)
        assert match, proc.stderr
        prefix, lo, hi = match.group(1), int(match.group(2)), int(match.group(3))
        minors = set()
        for n in range(lo, hi + 1):
            st = os.stat(f"{prefix}{n}")
            assert stat.S_ISCHR(st.st_mode)
            assert os.major(st.st_rdev) == NVIDIA_MAJOR
            minors.add(os.minor(st.st_rdev))
        seen[node] = minors
    assert seen == EXPECTED_MINORS


def test_gpu_job_gets_two_gpus_on_one_node(slurm_cluster: SlurmCluster, job_dir: Path) -> None:
    out = job_dir / "gpu2.out"
    job_id = slurm_cluster.sbatch(
        f"--chdir={job_dir}", f"--output={out}", "--gres=gpu:a100:2",
        "--wrap", 'echo "$SLURMD_NODENAME $CUDA_VISIBLE_DEVICES"',
    )  # fmt: skip
    job = slurm_cluster.wait_job(job_id)
    assert_completed(job)
    assert job["user"] == "root"
    assert job["partition"] == "gpu"
    assert job["allocation_nodes"] == 1
    assert job["nodes"] in slurm_cluster.nodes
    tres = allocated(job)
    assert tres["gres/gpu"] == 2
    assert tres["gres/gpu:a100"] == 2
    node, visible = out.read_text().split()
    assert node == job["nodes"]
    indices = gpu_indices(visible)
    # Slurm's GPU index restarts at 0 on every node: two distinct indices out of 0-3.
    assert len(set(indices)) == 2
    assert set(indices) <= {0, 1, 2, 3}


def test_two_node_job_gets_one_gpu_per_node(slurm_cluster: SlurmCluster, job_dir: Path) -> None:
    out = job_dir / "n2.out"
    job_id = slurm_cluster.sbatch(
        f"--chdir={job_dir}", f"--output={out}", "-N2", "--gres=gpu:1",
        "--wrap", 'srun bash -c \'echo "$SLURMD_NODENAME $CUDA_VISIBLE_DEVICES"\'',
    )  # fmt: skip
    job = slurm_cluster.wait_job(job_id)
    assert_completed(job)
    assert job["allocation_nodes"] == 2
    assert job["nodes"] == "c[1-2]"
    tres = allocated(job)
    assert tres["node"] == 2
    assert tres["gres/gpu"] == 2
    lines = dict(line.split() for line in out.read_text().splitlines())
    assert set(lines) == {"c1", "c2"}
    for visible in lines.values():
        assert len(gpu_indices(visible)) == 1
    step_nodes = {
        node for step in job["steps"] if step["step"]["name"] == "bash"
        for node in step["nodes"]["list"]
    }  # fmt: skip
    assert step_nodes == {"c1", "c2"}


def test_cpu_job_as_user_under_account(slurm_cluster: SlurmCluster, job_dir: Path) -> None:
    out = job_dir / "alice.out"
    job_id = slurm_cluster.sbatch(
        "--uid=cpalice", "--account=physics", "--partition=cpu",
        f"--chdir={job_dir}", f"--output={out}",
        "--wrap", 'id -un; echo "$SLURM_JOB_ACCOUNT"',
    )  # fmt: skip
    job = slurm_cluster.wait_job(job_id)
    assert_completed(job)
    assert job["user"] == "cpalice"
    assert job["account"] == "physics"
    assert job["partition"] == "cpu"
    tres = allocated(job)
    assert tres["cpu"] == 1
    assert not any(key.startswith("gres/") for key in tres)
    assert out.read_text().split() == ["cpalice", "physics"]
    assert out.stat().st_uid == int(
        subprocess.run(["id", "-u", "cpalice"], capture_output=True, text=True).stdout
    )


def test_associations_are_enforced(slurm_cluster: SlurmCluster, job_dir: Path) -> None:
    # cpbob belongs to biology only: physics is refused at submission.
    proc = slurm_cluster.run(
        "sbatch", "--uid=cpbob", "--account=physics", f"--chdir={job_dir}",
        "--output=/dev/null", "--wrap", "true",
        check=False,
    )  # fmt: skip
    assert proc.returncode != 0
    assert "Invalid account" in proc.stderr


def test_squeue_json_lists_a_running_job(slurm_cluster: SlurmCluster, job_dir: Path) -> None:
    job_id = slurm_cluster.sbatch(
        "--uid=cpcarol", "--account=chemistry", f"--chdir={job_dir}", "--output=/dev/null",
        "--gres=gpu:a100:1", "--wrap", "sleep 30",
    )  # fmt: skip
    try:
        deadline = time.monotonic() + 30
        state = None
        while time.monotonic() < deadline:
            jobs = slurm_json(slurm_cluster.run("squeue", "--json").stdout)["jobs"]
            mine = [j for j in jobs if j["job_id"] == job_id]
            state = mine[0]["job_state"] if mine else None
            if state == "RUNNING":
                break
            time.sleep(0.3)
        assert state == "RUNNING"
        assert mine[0]["user_name"] == "cpcarol"
        assert mine[0]["account"] == "chemistry"
    finally:
        slurm_cluster.run("scancel", str(job_id))
    job = slurm_cluster.wait_job(job_id)
    assert job["state"]["current"] == "CANCELLED"
