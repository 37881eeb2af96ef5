"""Real sbatch jobs on the test cluster end with receipts that match Slurm's accounting.

Each job kind the Slurm issue names runs through the real hooks (Prolog/Epilog on the
slurmd nodes, PrologSlurmctld/EpilogSlurmctld on the controller), the spool, the forwarder
and the ledger; its exported receipt must verify offline and agree with `sacct --json`:
state, exit code, nodes, GPU count, and start/end within Slurm's one-second resolution.
"""

from __future__ import annotations

import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import pytest

from tests.slurmjson import expand_nodes, slurm_json

SlurmCluster = Any  # tests/integration/conftest.py: the session's cluster handle

pytestmark = pytest.mark.slurm

CLI = [sys.executable, "-m", "slurm_hooks"]
REPO = Path(__file__).resolve().parents[2]


def cli(cluster: SlurmCluster, *args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
    """Run `computeproof ARGS` against the cluster's config and ledger."""
    proc = subprocess.run(
        [*CLI, *args], capture_output=True, text=True, env=cluster.env, cwd=REPO, timeout=300
    )
    if check and proc.returncode != 0:
        raise AssertionError(f"computeproof {' '.join(args)} exited {proc.returncode}: "
                             f"{proc.stdout}{proc.stderr}")  # fmt: skip
    return proc


def sacct_gpus(job: dict[str, Any]) -> int:
    """Allocated GPUs in Slurm's accounting record."""
    return sum(
        int(t["count"] or 0)
        for t in job["tres"]["allocated"]
        if t["type"] == "gres" and t["name"] == "gpu"
    )


def sacct_exit_code(cluster: SlurmCluster, job_id: int) -> tuple[int, int]:
    """(exit code, signal) from sacct's text ExitCode: Slurm 22.05's `sacct --json` reports
    return_code 0 for a batch script that exited 3, so the JSON field cannot be trusted."""
    out = cluster.run("sacct", "-X", "-n", "-P", "-o", "ExitCode", "-j", str(job_id)).stdout
    code, _, signal = out.strip().splitlines()[0].partition(":")
    return int(code), int(signal)


def epoch(text: str) -> int:
    """RFC 3339 UTC -> epoch seconds."""
    import calendar

    return calendar.timegm(time.strptime(text[:19], "%Y-%m-%dT%H:%M:%S"))


def events_of(show: dict[str, Any], kind: str) -> list[dict[str, Any]]:
    """The events of one type in a `jobs show --json` result."""
    return [e for e in show["events"] if e["type"] == kind]


def forward_until(cluster: SlurmCluster, jobs: list[str], want: str, timeout: float) -> None:
    """Forward the spool until every job in ``jobs`` has a ``want`` event in the ledger."""
    deadline = time.monotonic() + timeout
    missing = list(jobs)
    while time.monotonic() < deadline:
        cli(cluster, "forward")
        missing = []
        for job in jobs:
            show = cli(cluster, "jobs", "show", job, "--json", check=False)
            if show.returncode != 0 or not events_of(json.loads(show.stdout), want):
                missing.append(job)
        if not missing:
            return
        time.sleep(2)
    raise AssertionError(f"no {want} event after {timeout}s for jobs {missing}")


@pytest.fixture(scope="module")
def finished_jobs(
    slurm_cluster: SlurmCluster, tmp_path_factory: pytest.TempPathFactory
) -> dict[str, dict[str, Any]]:
    """Submit every job kind at once, wait for all, forward their events."""
    c = slurm_cluster
    # the jobs run as the cluster's test users: pytest's own temp dirs are root-only
    job_dir = Path(tempfile.mkdtemp(prefix="cp-jobs-", dir="/tmp"))
    job_dir.chmod(0o777)
    common = ["-D", str(job_dir), "-o", f"{job_dir}/slurm-%j.out"]
    ids: dict[str, int] = {
        "single_gpu": c.sbatch(*common, "--gres=gpu:a100:1", "-A", "physics",
                               "--uid=cpalice", "--wrap", "sleep 3"),
        "multi_gpu": c.sbatch(*common, "--gres=gpu:a100:3", "-A", "biology",
                              "--uid=cpbob", "--wrap", "sleep 3"),
        "two_node": c.sbatch(*common, "-N2", "--gres=gpu:1", "-A", "physics",
                             "--wrap", "srun hostname; sleep 2"),
        "cpu_only": c.sbatch(*common, "-p", "cpu", "-A", "chemistry", "--uid=cpcarol",
                             "--wrap", "sleep 1"),
        "failing": c.sbatch(*common, "--gres=gpu:1", "--wrap", "sleep 1; exit 3"),
        "cancelled": c.sbatch(*common, "--gres=gpu:1", "--wrap", "sleep 300"),
        "timeout": c.sbatch(*common, "--gres=gpu:1", "--time=1", "--wrap", "sleep 300"),
    }  # fmt: skip
    array_id = c.sbatch(*common, "--gres=gpu:1", "--array=0-2", "--wrap", "sleep 2")
    # cancel once it runs, so the receipt has a start
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        state = c.run("squeue", "-h", "-j", str(ids["cancelled"]), "-o", "%T").stdout.strip()
        if state == "RUNNING":
            break
        time.sleep(0.5)
    time.sleep(2)
    c.run("scancel", str(ids["cancelled"]))
    records: dict[str, dict[str, Any]] = {}
    for name, job_id in ids.items():
        records[name] = c.wait_job(job_id, timeout=200)
    for task in range(3):
        out = c.run("sacct", "--json", "-j", f"{array_id}_{task}").stdout
        task_jobs = [j for j in slurm_json(out)["jobs"] if j["array"]["task_id"] == task]
        assert task_jobs, f"sacct has no record of array task {array_id}_{task}"
        records[f"array_{task}"] = c.wait_job(task_jobs[0]["job_id"], timeout=120)
    names = {name: display_id(rec) for name, rec in records.items()}
    forward_until(c, list(names.values()), "final_state", timeout=120)
    return {name: {"sacct": rec, "job": names[name]} for name, rec in records.items()}


def display_id(job: dict[str, Any]) -> str:
    """Slurm's display id: 123, or 100_4 for an array task."""
    task = job["array"]["task_id"]
    if task is not None and job["array"]["job_id"]:
        return f"{job['array']['job_id']}_{task}"
    return str(job["job_id"])


EXPECTED_STATES = {
    "single_gpu": "COMPLETED",
    "multi_gpu": "COMPLETED",
    "two_node": "COMPLETED",
    "cpu_only": "COMPLETED",
    "failing": "FAILED",
    "cancelled": "CANCELLED",
    "timeout": "TIMEOUT",  # --time=1: Slurm ends it after a minute
    "array_0": "COMPLETED",
    "array_1": "COMPLETED",
    "array_2": "COMPLETED",
}


@pytest.mark.parametrize("kind", sorted(EXPECTED_STATES))
def test_receipt_matches_sacct(
    kind: str, finished_jobs: dict[str, dict[str, Any]], slurm_cluster: SlurmCluster,
    tmp_path: Path,
) -> None:  # fmt: skip
    """The job's receipt verifies offline and says what Slurm's accounting says."""
    rec = finished_jobs[kind]["sacct"]
    job = finished_jobs[kind]["job"]
    show = json.loads(cli(slurm_cluster, "jobs", "show", job, "--json").stdout)
    assert show["verification"]["ok"], show["verification"]
    assert rec["state"]["current"] == EXPECTED_STATES[kind], rec["state"]

    final = events_of(show, "final_state")
    assert len(final) == 1
    fs = final[0]["payload"]
    assert fs["state"] == rec["state"]["current"]
    assert (fs["exit_code"], fs["signal"]) == sacct_exit_code(slurm_cluster, rec["job_id"])
    assert fs["gpus"] == sacct_gpus(rec)
    assert sorted(fs["nodes"]) == expand_nodes(rec["nodes"])
    assert abs(epoch(fs["start_time"]) - rec["time"]["start"]) <= 1
    assert abs(epoch(fs["end_time"]) - rec["time"]["end"]) <= 1
    assert fs["gpu_seconds"] == fs["gpus"] * fs["elapsed_s"]

    scheduled = events_of(show, "scheduled")
    assert len(scheduled) == 1
    assert scheduled[0]["payload"]["user"] == rec["user"]
    assert scheduled[0]["payload"]["account"] == rec["account"]
    assert scheduled[0]["payload"]["partition"] == rec["partition"]

    completed = events_of(show, "completed")
    assert len(completed) == 1
    assert abs(epoch(completed[0]["payload"]["end_time"]) - rec["time"]["end"]) <= 1

    nodes = expand_nodes(rec["nodes"])
    started = events_of(show, "started")
    assert sorted(e["host"] for e in started) == nodes
    bound = sum(len(e["payload"]["gpus"]) for e in started)
    assert bound == sacct_gpus(rec)
    for e in started:  # c1 holds minors 0-3, c2 minors 4-7: bound by minor, never by index
        base = 4 * (int(e["host"][1:]) - 1)
        assert all(base <= g["minor"] < base + 4 for g in e["payload"]["gpus"]), e
    assert sorted(e["host"] for e in events_of(show, "node_done")) == nodes

    summary = show["summary"]
    assert summary["state"] == rec["state"]["current"]
    assert summary["gpus"] == sacct_gpus(rec)

    receipt = tmp_path / f"{job}.json"
    cli(slurm_cluster, "receipt", "export", job, "-o", str(receipt))
    # the ledger's key, from the ledger (the trust root), not from the receipt
    key = json.loads(cli(slurm_cluster, "ledger", "checkpoint", "--json").stdout)["ledger_key"]
    verify = subprocess.run(
        [*CLI, "receipt", "verify", str(receipt), "--json", "--ledger-key", key],
        capture_output=True, text=True, cwd=tmp_path, timeout=60,
        env={"PATH": "/usr/bin:/bin", "PYTHONPATH": str(REPO), "HOME": str(tmp_path)},
    )  # fmt: skip
    assert verify.returncode == 0, verify.stdout + verify.stderr
    assert json.loads(verify.stdout)["valid"] is True


def test_array_tasks_keep_their_ids(finished_jobs: dict[str, dict[str, Any]]) -> None:
    """Array tasks are recorded as ARRAYID_TASK, each with its own receipt."""
    ids = [finished_jobs[f"array_{t}"]["job"] for t in range(3)]
    base = ids[0].split("_")[0]
    assert ids == [f"{base}_{t}" for t in range(3)]


def test_receipt_edit_is_detected(
    finished_jobs: dict[str, dict[str, Any]], slurm_cluster: SlurmCluster, tmp_path: Path
) -> None:
    """Changing the exit code inside an exported receipt makes verification fail."""
    job = finished_jobs["failing"]["job"]
    receipt = tmp_path / "r.json"
    cli(slurm_cluster, "receipt", "export", job, "-o", str(receipt))
    bundle = json.loads(receipt.read_text())
    entry = bundle["entries"][-1]
    entry["envelope"] = entry["envelope"].replace('"payload":"', '"payload":"A', 1)
    receipt.write_text(json.dumps(bundle))
    proc = cli(slurm_cluster, "receipt", "verify", str(receipt), check=False)
    assert proc.returncode == 1
    assert "INVALID" in proc.stdout and "leaf" in proc.stdout
