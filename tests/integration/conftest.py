"""The real Slurm test cluster from docker-slurm/, as a session fixture.

``slurm_cluster`` runs ``docker-slurm/cluster up`` unless the cluster is already up, and never
tears it down: other test modules share it, and ``make test`` runs ``cluster down`` at the end.
Set ``CP_HOOKS=0`` to bring it up without the ComputeProof hooks in slurm.conf.
"""

from __future__ import annotations

import os
import shlex
import shutil
import subprocess
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

from tests.slurmjson import slurm_json

REPO = Path(__file__).resolve().parents[2]
# The native cluster's script, or another with its status/up/env commands: a compose
# cluster's harness (docker-slurm/compose-cluster test sets it).
CLUSTER_SCRIPT = Path(os.environ.get("CP_CLUSTER_SCRIPT") or REPO / "docker-slurm" / "cluster")
NODES = ("c1", "c2")
# sacct states after which a job will not change again.
FINAL_STATES = frozenset(
    {
        "COMPLETED",
        "FAILED",
        "CANCELLED",
        "TIMEOUT",
        "NODE_FAIL",
        "OUT_OF_MEMORY",
        "PREEMPTED",
        "BOOT_FAIL",
        "DEADLINE",
    }
)


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """Every test under tests/integration/ that uses the cluster carries the ``slurm`` marker."""
    for item in items:
        if "slurm_cluster" in getattr(item, "fixturenames", ()):
            item.add_marker(pytest.mark.slurm)


@dataclass(frozen=True)
class SlurmCluster:
    """The running test cluster: where it lives and how to talk to it."""

    dir: Path
    script: Path
    slurm_conf: Path
    computeproof_config: Path
    nodes: tuple[str, ...]
    env: dict[str, str] = field(repr=False)

    def run(
        self, *args: str, check: bool = True, timeout: float = 60
    ) -> subprocess.CompletedProcess[str]:
        """Run a command (a Slurm client, usually) with the cluster's environment."""
        proc = subprocess.run(
            args, env=self.env, capture_output=True, text=True, timeout=timeout, check=False
        )
        if check and proc.returncode != 0:
            raise AssertionError(
                f"{' '.join(args)} exited {proc.returncode}\nstdout: {proc.stdout}\n"
                f"stderr: {proc.stderr}"
            )
        return proc

    def sbatch(self, *args: str) -> int:
        """Submit a batch job; return its job id."""
        out = self.run("sbatch", "--parsable", *args).stdout.strip()
        return int(out.split(";")[0])

    def sacct_job(self, job_id: int) -> dict[str, Any] | None:
        """The job's record from ``sacct --json``, or None while accounting has none."""
        out = self.run("sacct", "--json", "-j", str(job_id)).stdout
        jobs = [j for j in slurm_json(out)["jobs"] if j["job_id"] == job_id]
        return jobs[0] if jobs else None

    def wait_job(self, job_id: int, timeout: float = 90) -> dict[str, Any]:
        """Poll ``sacct --json`` until the job's final record is complete; return it."""
        deadline = time.monotonic() + timeout
        job = None
        while time.monotonic() < deadline:
            job = self.sacct_job(job_id)
            if job is not None and _settled(job):
                return job
            time.sleep(0.5)
        queue = self.run("squeue", "-j", str(job_id), check=False).stdout
        raise AssertionError(
            f"job {job_id} not finished after {timeout}s; sacct: "
            f"{job and job['state']}; squeue: {queue}"
        )


def _settled(job: dict[str, Any]) -> bool:
    """Whether slurmdbd holds the whole final record: slurmctld sends a job's start, step and
    end records separately, so a final state may show before the nodes or steps do."""
    if job["state"]["current"] not in FINAL_STATES or not job["time"]["end"]:
        return False
    if not job["time"]["start"]:
        return True  # never ran: no nodes, no steps
    has_batch = any(step["step"]["name"] == "batch" for step in job["steps"])
    return job["allocation_nodes"] > 0 and has_batch


def _cluster_env() -> dict[str, str]:
    out = subprocess.run(
        [str(CLUSTER_SCRIPT), "env"], capture_output=True, text=True, check=True, timeout=30
    ).stdout
    env = dict(os.environ)
    for line in out.splitlines():
        name, _, value = line.removeprefix("export ").partition("=")
        env[name] = shlex.split(value)[0]  # `cluster env` quotes with printf %q
    return env


@pytest.fixture(scope="session")
def slurm_cluster() -> SlurmCluster:
    """Bring the native Slurm test cluster up (if it is not up yet) and describe it."""
    if os.geteuid() != 0:
        pytest.fail("the Slurm test cluster runs its daemons as root; run the slurm tests as root")
    status = subprocess.run(
        [str(CLUSTER_SCRIPT), "status"], capture_output=True, text=True, timeout=60, check=False
    )
    if status.returncode != 0:
        up = subprocess.run(
            [str(CLUSTER_SCRIPT), "up"], capture_output=True, text=True, timeout=600, check=False
        )
        if up.returncode != 0:
            pytest.fail(
                f"docker-slurm/cluster up failed (exit {up.returncode}):\n{up.stdout}{up.stderr}"
            )
    env = _cluster_env()
    return SlurmCluster(
        dir=Path(env["CP_CLUSTER_DIR"]),
        script=CLUSTER_SCRIPT,
        slurm_conf=Path(env["SLURM_CONF"]),
        computeproof_config=Path(env["COMPUTEPROOF_CONFIG"]),
        nodes=NODES,
        env=env,
    )


@pytest.fixture
def job_dir() -> Iterator[Path]:
    """A scratch directory every test user can write job output to."""
    path = Path(tempfile.mkdtemp(prefix="cp-jobs-", dir="/tmp"))
    path.chmod(0o1777)
    try:
        yield path
    finally:
        shutil.rmtree(path, ignore_errors=True)
