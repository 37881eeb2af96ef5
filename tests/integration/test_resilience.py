"""Events survive a ledger that cannot be written and a forwarder killed mid-batch.

Fifty short jobs run through the real hooks while nothing can reach the ledger: every job
still completes, forwarding fails with one clear line and exit 2, and the events wait in the
spool. Once the ledger is back, one forward lands every event exactly once. A forwarder
killed with SIGKILL at random points leaves nothing lost and nothing twice, and the whole
ledger still verifies.
"""

from __future__ import annotations

import collections
import json
import random
import signal
import sqlite3
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from computeproof.spool import is_spooled, read_events

SlurmCluster = Any  # tests/integration/conftest.py: the session's cluster handle

pytestmark = pytest.mark.slurm

CLI = [sys.executable, "-m", "slurm_hooks"]
REPO = Path(__file__).resolve().parents[2]
N_JOBS = 50
# A one-node job's lifecycle: each of these exactly once (agent progress events may add more).
LIFECYCLE = {"scheduled": 1, "started": 1, "node_done": 1, "completed": 1, "final_state": 1}
FINAL = {"COMPLETED", "FAILED", "CANCELLED", "TIMEOUT", "NODE_FAIL", "OUT_OF_MEMORY"}


def cli(
    cluster: SlurmCluster, *args: str, check: bool = True, timeout: float = 300
) -> subprocess.CompletedProcess[str]:
    """Run `computeproof ARGS` against the cluster's config and ledger."""
    proc = subprocess.run(
        [*CLI, *args], capture_output=True, text=True, env=cluster.env, cwd=REPO, timeout=timeout
    )
    if check and proc.returncode != 0:
        raise AssertionError(
            f"computeproof {' '.join(args)} exited {proc.returncode}: {proc.stdout}{proc.stderr}"
        )
    return proc


@pytest.fixture
def job_dir() -> Iterator[Path]:
    path = Path(tempfile.mkdtemp(prefix="cp-resil-", dir="/tmp"))
    path.chmod(0o777)
    try:
        yield path
    finally:
        subprocess.run(["rm", "-rf", str(path)], check=False)


def submit_jobs(cluster: SlurmCluster, job_dir: Path) -> list[int]:
    """N_JOBS `true` jobs, every fifth with one GPU."""
    common = ["-D", str(job_dir), "-o", f"{job_dir}/slurm-%j.out"]
    return [
        cluster.sbatch(*common, *(["--gres=gpu:1"] if i % 5 == 0 else []), "--wrap", "true")
        for i in range(N_JOBS)
    ]


def wait_completed(cluster: SlurmCluster, ids: list[int], timeout: float = 150) -> dict[int, str]:
    """Poll sacct until every job is in a final state; return job id -> state."""
    deadline = time.monotonic() + timeout
    states: dict[int, str] = {}
    while time.monotonic() < deadline:
        out = cluster.run(
            "sacct", "-X", "-n", "-P", "-o", "JobIDRaw,State", "-j", ",".join(map(str, ids))
        ).stdout
        states = {}
        for line in out.splitlines():
            raw, _, state = line.partition("|")
            if raw.isdigit():
                states[int(raw)] = state.split()[0] if state else ""
        if len(states) == len(ids) and all(s in FINAL for s in states.values()):
            return states
        time.sleep(1)
    raise AssertionError(f"jobs not finished after {timeout}s: {states}")


def spool_events(cluster: SlurmCluster, sub: str = "new") -> list[dict[str, Any]]:
    """The events in the spool's new/ (or failed/) directory."""
    out = []
    for path in (cluster.dir / "computeproof" / "spool" / sub).iterdir():
        if not is_spooled(path.name):  # single events, and the collector's batches
            continue
        try:
            out.extend(json.loads(e) for e in read_events(str(path)))
        except (FileNotFoundError, ValueError):
            continue  # forwarded meanwhile, or being written
    return out


def wait_spooled(
    cluster: SlurmCluster, ids: list[int], timeout: float = 90
) -> list[dict[str, Any]]:
    """Poll the spool until every job has its whole lifecycle there; return their events."""
    wanted = set(ids)
    deadline = time.monotonic() + timeout
    missing: dict[int, set[str]] = {}
    while time.monotonic() < deadline:
        events = [e for e in spool_events(cluster) if e["job_id"] in wanted]
        have: dict[int, set[str]] = collections.defaultdict(set)
        for e in events:
            have[e["job_id"]].add(e["type"])
        missing = {j: set(LIFECYCLE) - have[j] for j in ids if set(LIFECYCLE) - have[j]}
        if not missing:
            return events
        time.sleep(1)
    raise AssertionError(f"events not spooled after {timeout}s: {missing}")


def ledger_leaves(cluster: SlurmCluster, ids: list[int]) -> list[tuple[str, str, str, str]]:
    """(job_key, type, host, event_id) of the jobs' leaves, read from the ledger read-only."""
    cfg = cluster.env.get("COMPUTEPROOF_CLUSTER") or "cptest"
    keys = [f"{cfg}/{j}#0" for j in ids]
    db = sqlite3.connect(f"file:{cluster.dir / 'computeproof' / 'ledger.db'}?mode=ro", uri=True)
    try:
        return db.execute(
            "SELECT job_key, type, host, event_id FROM leaves WHERE job_key IN "
            f"({', '.join('?' * len(keys))})",
            keys,
        ).fetchall()
    finally:
        db.close()


def check_exactly_once(cluster: SlurmCluster, ids: list[int], spooled: set[str]) -> None:
    """Every spooled event is a leaf once, every job has its lifecycle once, none left over."""
    leaves = ledger_leaves(cluster, ids)
    event_ids = [leaf[3] for leaf in leaves]
    dupes = [e for e, n in collections.Counter(event_ids).items() if n > 1]
    assert not dupes, f"event ids in the ledger more than once: {dupes}"
    assert spooled <= set(event_ids), f"{len(spooled - set(event_ids))} spooled events lost"
    per_job: dict[str, collections.Counter[str]] = collections.defaultdict(collections.Counter)
    for key, etype, _host, _eid in leaves:
        if etype != "progress":
            per_job[key][etype] += 1
    bad = {key: dict(c) for key, c in per_job.items() if dict(c) != LIFECYCLE}
    assert len(per_job) == len(ids), f"{len(ids) - len(per_job)} jobs have no leaves"
    assert not bad, f"jobs whose lifecycle is not exactly once each: {bad}"
    wanted = set(ids)
    left = [e["id"] for e in spool_events(cluster) if e["job_id"] in wanted]
    assert not left, f"{len(left)} events of these jobs still wait in the spool"
    failed = [e["id"] for e in spool_events(cluster, "failed") if e["job_id"] in wanted]
    assert not failed, f"events of these jobs were rejected: {failed}"


def one_error_line(proc: subprocess.CompletedProcess[str]) -> str:
    """The single `computeproof: error: ...` line a failing command must print."""
    lines = [line for line in proc.stderr.splitlines() if line.strip()]
    assert len(lines) == 1, f"expected one error line, got:\n{proc.stderr}"
    assert lines[0].startswith("computeproof: error: "), lines[0]
    assert "Traceback" not in proc.stderr + proc.stdout
    return lines[0]


def test_ledger_unreachable_while_jobs_run(slurm_cluster: SlurmCluster, job_dir: Path) -> None:
    """Jobs complete while the ledger is locked or missing; their events wait, then land once."""
    c = slurm_cluster
    ledger = c.dir / "computeproof" / "ledger.db"
    # Another writer holds the ledger for the whole run (BEGIN EXCLUSIVE).
    locker = subprocess.Popen(
        [sys.executable, "-c",
         "import sqlite3, sys\n"
         f"db = sqlite3.connect({str(ledger)!r}, isolation_level=None)\n"
         "db.execute('BEGIN EXCLUSIVE')\nprint('locked', flush=True)\nsys.stdin.read()\n"],
        stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True,
    )  # fmt: skip
    try:
        assert locker.stdout is not None and locker.stdout.readline().strip() == "locked"
        ids = submit_jobs(c, job_dir)
        # a forward started while the jobs run (with events to append) waits out the
        # lock (30 s), then gives up
        wanted = set(ids)
        deadline = time.monotonic() + 60
        while not any(e["job_id"] in wanted for e in spool_events(c)):
            assert time.monotonic() < deadline, "no event spooled for the jobs"
            time.sleep(0.2)
        blocked = subprocess.Popen(
            [*CLI, "forward"], env=c.env, cwd=REPO, text=True,
            stdout=subprocess.PIPE, stderr=subprocess.PIPE,
        )  # fmt: skip
        states = wait_completed(c, ids)
        spooled = wait_spooled(c, ids)
        out, err = blocked.communicate(timeout=90)
        proc = subprocess.CompletedProcess(blocked.args, blocked.returncode, out, err)
    finally:
        locker.kill()
        locker.wait()
    assert set(states.values()) == {"COMPLETED"}, states
    assert proc.returncode == 2, proc.stdout + proc.stderr
    assert "database is locked" in one_error_line(proc)

    # the ledger's directory cannot even be created
    bad_parent = job_dir / "not-a-directory"
    bad_parent.write_text("")
    proc = cli(c, "--db", str(bad_parent / "ledger.db"), "forward", check=False)
    assert proc.returncode == 2, proc.stdout + proc.stderr
    assert str(bad_parent) in one_error_line(proc)

    status = json.loads(cli(c, "spool", "status", "--json").stdout)
    assert status["waiting"] >= len(spooled) > 0, status
    # nothing was lost while the ledger was away: every job's lifecycle is still there
    still = {e["id"] for e in spool_events(c)}
    assert {e["id"] for e in spooled} <= still

    forwarded = json.loads(cli(c, "forward", "--json").stdout)
    assert forwarded["forwarded"] >= len(spooled), forwarded
    assert forwarded["failed"] == 0 and forwarded["untrusted"] == 0, forwarded
    check_exactly_once(c, ids, {e["id"] for e in spooled})


def test_forwarder_killed_mid_batch(slurm_cluster: SlurmCluster, job_dir: Path) -> None:
    """SIGKILLed forwarders at random points: every event ends in the ledger exactly once."""
    c = slurm_cluster
    ids = submit_jobs(c, job_dir)  # nothing forwards while they run
    assert set(wait_completed(c, ids).values()) == {"COMPLETED"}
    spooled = {e["id"] for e in wait_spooled(c, ids)}
    size_before = int(json.loads(cli(c, "ledger", "verify", "--json").stdout)["size"])
    rng = random.Random()
    killed_running = 0
    for attempt in range(5):
        proc = subprocess.Popen(
            [*CLI, "forward"], env=c.env, cwd=REPO,
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
        )  # fmt: skip
        # from inside the interpreter's start to the middle of the pass and beyond
        time.sleep(rng.uniform(0.05, 0.15) + 0.1 * attempt)
        if proc.poll() is None:
            killed_running += 1
            proc.send_signal(signal.SIGKILL)
        proc.wait(timeout=30)
    final = json.loads(cli(c, "forward", "--json").stdout)
    assert final["failed"] == 0 and final["untrusted"] == 0, final
    check_exactly_once(c, ids, spooled)
    verify = json.loads(cli(c, "ledger", "verify", "--json").stdout)
    assert verify["ok"], verify["problems"]
    assert verify["size"] >= size_before + len(spooled)
    assert killed_running >= 1, "no forwarder was still running when the kill came"
