"""Usage reports and reconciliation over real jobs, checked against Slurm's accounting.

GPU jobs under two accounts and two users run through the hooks into the ledger; the JSON
report for their period, grouped by account, must give the allocated GPU-hours sacct implies
(allocated gres/gpu x elapsed seconds / 3600) and pass `report verify`. Then one more job's
events are deleted from the spool before anything forwards them: `reconcile` must name that
job as lacking receipts and find nothing wrong with the others.
"""

from __future__ import annotations

import collections
import json
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from fractions import Fraction
from pathlib import Path
from typing import Any

import pytest

from computeproof.spool import is_spooled, read_events

SlurmCluster = Any  # tests/integration/conftest.py: the session's cluster handle

pytestmark = pytest.mark.slurm

CLI = [sys.executable, "-m", "slurm_hooks"]
REPO = Path(__file__).resolve().parents[2]
# (user, account, GPUs, seconds)
JOBS = [
    ("cpalice", "physics", 1, 2),
    ("cpalice", "physics", 2, 3),
    ("cpalice", "biology", 2, 2),
    ("cpbob", "biology", 3, 4),
]
LIFECYCLE = {"scheduled", "started", "node_done", "completed", "final_state"}


def cli(
    cluster: SlurmCluster, *args: str, check: bool = True, cwd: Path = REPO
) -> subprocess.CompletedProcess[str]:
    """Run `computeproof ARGS` against the cluster's config and ledger."""
    proc = subprocess.run(
        [*CLI, *args], capture_output=True, text=True, env=cluster.env, cwd=cwd, timeout=300
    )
    if check and proc.returncode != 0:
        raise AssertionError(
            f"computeproof {' '.join(args)} exited {proc.returncode}: {proc.stdout}{proc.stderr}"
        )
    return proc


def utc(epoch: float) -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(epoch))


def sacct_gpus(job: dict[str, Any]) -> int:
    """Allocated GPUs in Slurm's accounting record."""
    return sum(
        int(t["count"] or 0)
        for t in job["tres"]["allocated"]
        if t["type"] == "gres" and t["name"] == "gpu"
    )


def has_final_state(cluster: SlurmCluster, job: int) -> bool:
    proc = cli(cluster, "jobs", "show", str(job), "--json", check=False)
    return proc.returncode == 0 and any(
        e["type"] == "final_state" for e in json.loads(proc.stdout)["events"]
    )


def spooled(cluster: SlurmCluster, job: int) -> dict[tuple[Path, int], str]:
    """The spooled events of one job: (file, line) -> event type (a file is one event, or
    a batch of the collector's, one event a line)."""
    out = {}
    for path in (cluster.dir / "computeproof" / "spool" / "new").iterdir():
        if not is_spooled(path.name):
            continue
        try:
            events = [json.loads(e) for e in read_events(str(path))]
        except (FileNotFoundError, ValueError):
            continue
        for line, event in enumerate(events):
            if event["job_id"] == job:
                out[(path, line)] = event["type"]
    return out


def unspool(found: dict[tuple[Path, int], str]) -> None:
    """Delete these events from the spool: a file whole, or the lines of a batch (the
    batch rewritten, whole, without them; its other jobs' events stay)."""
    by_file: dict[Path, set[int]] = {}
    for path, line in found:
        by_file.setdefault(path, set()).add(line)
    for path, lines in by_file.items():
        events = read_events(str(path))
        rest = [e for i, e in enumerate(events) if i not in lines]
        if not rest:
            path.unlink()
            continue
        tmp = path.with_name(path.name + ".tmp")
        tmp.write_bytes(b"".join(e + b"\n" for e in rest))
        tmp.rename(path)


@pytest.fixture(scope="module")
def work_dir() -> Iterator[Path]:
    path = Path(tempfile.mkdtemp(prefix="cp-reports-", dir="/tmp"))
    path.chmod(0o777)
    try:
        yield path
    finally:
        subprocess.run(["rm", "-rf", str(path)], check=False)


@pytest.fixture(scope="module")
def period_jobs(slurm_cluster: SlurmCluster, work_dir: Path) -> dict[str, Any]:
    """Run the jobs, forward until each has final_state; return ids, sacct records, period."""
    c = slurm_cluster
    start = int(time.time()) - 1
    ids = [
        c.sbatch("-D", str(work_dir), "-o", f"{work_dir}/slurm-%j.out", f"--uid={user}",
                 "-A", account, f"--gres=gpu:a100:{gpus}", "--wrap", f"sleep {secs}")
        for user, account, gpus, secs in JOBS
    ]  # fmt: skip
    records = {job: c.wait_job(job, timeout=120) for job in ids}
    deadline = time.monotonic() + 90
    while True:
        cli(c, "forward")
        missing = [j for j in ids if not has_final_state(c, j)]
        if not missing:
            break
        assert time.monotonic() < deadline, f"no final_state in the ledger for {missing}"
        time.sleep(1)
    end = max(r["time"]["end"] for r in records.values()) + 2
    return {"ids": ids, "sacct": records, "start": start, "end": end}


def test_report_gpu_hours_match_sacct(
    slurm_cluster: SlurmCluster, period_jobs: dict[str, Any], work_dir: Path
) -> None:
    """Allocated GPU-hours per account = sum of sacct's gres/gpu x elapsed / 3600."""
    c = slurm_cluster
    records = period_jobs["sacct"]
    expected: dict[str, Fraction] = collections.defaultdict(Fraction)
    counts: collections.Counter[str] = collections.Counter()
    for rec in records.values():
        assert rec["state"]["current"] == "COMPLETED", rec["state"]
        gpus = sacct_gpus(rec)
        assert gpus >= 1
        expected[rec["account"]] += Fraction(gpus * rec["time"]["elapsed"], 3600)
        counts[rec["account"]] += 1
    assert set(expected) == {"physics", "biology"}
    report = work_dir / "report.json"
    cli(
        c, "report", "--from", utc(period_jobs["start"]), "--to", utc(period_jobs["end"]),
        "--account", "physics", "--account", "biology", "--user", "cpalice", "--user", "cpbob",
        "--group-by", "account", "--format", "json", "-o", str(report),
    )  # fmt: skip
    doc = json.loads(report.read_text())
    assert doc["ledger_check"]["ok"], doc["ledger_check"]
    groups = {g["key"]["account"]: g for g in doc["groups"]}
    assert set(groups) == set(expected), groups
    for account, hours in expected.items():
        got = groups[account]["allocated_gpu_hours"]
        assert abs(Fraction(str(got)) - hours) <= Fraction(1, 10**6), (account, got, hours)
        assert groups[account]["jobs"] == counts[account]
    total = sum(expected.values(), Fraction(0))
    assert abs(Fraction(str(doc["totals"]["allocated_gpu_hours"])) - total) <= Fraction(1, 10**6)
    assert doc["totals"]["jobs"] == len(records)
    key = json.loads(cli(c, "ledger", "checkpoint", "--json").stdout)["ledger_key"]
    verify = cli(c, "report", "verify", str(report), "--ledger-key", key, check=False)
    assert verify.returncode == 0, verify.stdout + verify.stderr


def test_report_verify_detects_an_edit(
    slurm_cluster: SlurmCluster, period_jobs: dict[str, Any], work_dir: Path
) -> None:
    """A report whose figure was changed no longer verifies."""
    c = slurm_cluster
    report = work_dir / "edited.json"
    cli(
        c, "report", "--from", utc(period_jobs["start"]), "--to", utc(period_jobs["end"]),
        "--account", "physics", "--account", "biology", "--group-by", "account",
        "--format", "json", "-o", str(report),
    )  # fmt: skip
    doc = json.loads(report.read_text())
    doc["groups"][0]["allocated_gpu_hours"] += 1
    report.write_text(json.dumps(doc))
    verify = cli(c, "report", "verify", str(report), check=False)
    assert verify.returncode == 1, verify.stdout + verify.stderr


def test_reconcile_names_job_without_receipts(
    slurm_cluster: SlurmCluster, period_jobs: dict[str, Any], work_dir: Path
) -> None:
    """Events deleted from the spool before forwarding: reconcile names exactly that job."""
    c = slurm_cluster
    lost = c.sbatch("-D", str(work_dir), "-o", f"{work_dir}/slurm-%j.out", "--uid=cpbob",
                    "-A", "biology", "--gres=gpu:a100:1", "--wrap", "sleep 2")  # fmt: skip
    assert c.wait_job(lost, timeout=120)["state"]["current"] == "COMPLETED"
    deadline = time.monotonic() + 90
    files = spooled(c, lost)
    while not set(files.values()) >= LIFECYCLE:  # the watcher writes final_state last
        assert time.monotonic() < deadline, f"job {lost}: spooled only {sorted(files.values())}"
        time.sleep(0.5)
        files = spooled(c, lost)
    unspool(files)
    cli(c, "forward")
    assert not spooled(c, lost)
    assert cli(c, "jobs", "show", str(lost), "--json", check=False).returncode != 0

    proc = cli(c, "reconcile", "--since", utc(period_jobs["start"]), "--json", check=False)
    assert proc.returncode == 1, proc.stdout + proc.stderr
    out = json.loads(proc.stdout)
    assert not out["ok"]
    flagged = {
        str(item["job"]): kind
        for kind in ("missing", "incomplete", "mismatched", "unknown_to_slurm")
        for item in out[kind]
    }
    assert flagged.get(str(lost)) in ("missing", "incomplete"), out
    ours = {str(j) for j in period_jobs["ids"]}
    assert not ours & set(flagged), {j: flagged[j] for j in ours & set(flagged)}
