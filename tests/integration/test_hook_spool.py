"""Real jobs on the test cluster: the hooks' events in the spool match Slurm's accounting.

A forwarder may drain the spool's new/ directory while these tests run, so a watcher
thread copies every event file it sees there (every 5 ms) and the tests read the copies.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from computeproof.event import check_event
from computeproof.spool import is_spooled, read_events
from slurm_hooks.hookconfig import read_config_file
from tests.slurmjson import slurm_json

pytestmark = pytest.mark.slurm


class SpoolWatcher:
    """Copies event files (single events, and the collector's batches) out of
    ``<spool>/new`` until stopped."""

    def __init__(self, new_dir: Path, into: Path) -> None:
        self.new_dir, self.into = new_dir, into
        self.stop = threading.Event()
        self.thread = threading.Thread(target=self._loop, daemon=True)
        self.thread.start()

    def _loop(self) -> None:
        while not self.stop.is_set():
            try:
                names = os.listdir(self.new_dir)
            except OSError:
                names = []
            for name in names:
                target = self.into / name
                if is_spooled(name) and not target.exists():  # events, batches too
                    # Forwarded between listdir and copy: that one is missed.
                    with contextlib.suppress(OSError):
                        shutil.copyfile(self.new_dir / name, target)
            time.sleep(0.005)

    def events(self, job_id: int) -> list[dict[str, Any]]:
        out = []
        for path in self.into.iterdir():
            if not is_spooled(path.name):
                continue
            for data in read_events(str(path)):  # one event, or a poll's batch
                try:
                    event = check_event(json.loads(data))
                except ValueError:
                    continue
                if event["job_id"] == job_id:
                    out.append(event)
        return out

    def wait(self, job_id: int, types: set[str], timeout: float = 90) -> dict[str, Any]:
        """Events of ``job_id`` by (type, host) once every type in ``types`` is present."""
        deadline = time.monotonic() + timeout
        while True:
            got = {(e["type"], e["host"]): e for e in self.events(job_id)}
            if types <= {t for t, _ in got} or time.monotonic() > deadline:
                return got
            time.sleep(0.2)


@pytest.fixture
def spool(slurm_cluster: Any, tmp_path: Path) -> Iterator[SpoolWatcher]:
    config = read_config_file(str(slurm_cluster.computeproof_config))
    watcher = SpoolWatcher(Path(str(config["spool_dir"])) / "new", tmp_path)
    try:
        yield watcher
    finally:
        watcher.stop.set()
        watcher.thread.join(5)


ALL = {"scheduled", "started", "node_done", "completed", "final_state"}


def _by_type(events: dict[tuple[str, str], dict[str, Any]], type: str) -> list[dict[str, Any]]:
    return [e for (t, _), e in sorted(events.items()) if t == type]


def test_two_node_gpu_job_failing(slurm_cluster: Any, spool: SpoolWatcher, job_dir: Path) -> None:
    job_id = slurm_cluster.sbatch(
        "-N2", "--gres=gpu:2", "-J", "cp-two", "-o", f"{job_dir}/%j.out",
        "--wrap", "sleep 2; exit 3",
    )  # fmt: skip
    acct = slurm_cluster.wait_job(job_id)
    events = spool.wait(job_id, ALL)
    assert {t for t, _ in events} == ALL, sorted(events)
    (scheduled,) = _by_type(events, "scheduled")
    (completed,) = _by_type(events, "completed")
    (final,) = _by_type(events, "final_state")
    started = _by_type(events, "started")
    done = _by_type(events, "node_done")
    assert sorted(e["host"] for e in started) == sorted(e["host"] for e in done) == ["c1", "c2"]
    assert all(e["cluster"] == "cptest" and e["run"] == 0 for e in events.values())

    sp = scheduled["payload"]
    # the collector's structured read, or (CP_CTLD_HOOKS=1) PrologSlurmctld's, whichever
    # the spool kept: the same event id
    assert sp["source"] in ("squeue --json", "squeue"), sp["source"]
    assert sp["job_name"] == "cp-two" == acct["name"]
    assert sp["submit_epoch"] == acct["time"]["submission"]
    assert sp["start_epoch"] == acct["time"]["start"]
    assert sp["gpus"] == 4 and sp["nodes"] == ["c1", "c2"]
    assert sp["user"] == acct["user"] and sp["account"] == acct["account"]

    for event in started:
        gpus = event["payload"]["gpus"]
        assert len(gpus) == 2 and all(g["minor"] is not None for g in gpus)
        # c1 owns /dev/nvidia0-3, c2 /dev/nvidia4-7 (docker-slurm's gres.conf).
        low = 0 if event["host"] == "c1" else 4
        assert all(low <= g["minor"] < low + 4 for g in gpus)
        if sp["gpu_indices"]:  # the structured read saw the job running (not so the hook)
            assert sp["gpu_indices"][event["host"]] == [g["slurm_index"] for g in gpus]

    cp = completed["payload"]
    assert (cp["exit_code"], cp["signal"]) == (3, 0)
    assert cp["elapsed_s"] == acct["time"]["elapsed"]
    assert cp["gpu_seconds"] == 4 * acct["time"]["elapsed"]

    fp = final["payload"]
    assert fp["state"] == acct["state"]["current"] == "FAILED"
    assert fp["exit_code"] == 3
    assert (fp["start_epoch"], fp["end_epoch"]) == (acct["time"]["start"], acct["time"]["end"])
    assert fp["gpus"] == 4 and fp["nodes"] == ["c1", "c2"]
    for event in done:
        assert event["payload"]["gpu_summary_source"] in ("agent", "agent_file", "none")


def test_array_task_identity(slurm_cluster: Any, spool: SpoolWatcher, job_dir: Path) -> None:
    first = slurm_cluster.sbatch(
        "--array=3-4", "--gres=gpu:1", "-o", f"{job_dir}/%A_%a.out", "--wrap", "true"
    )
    deadline = time.monotonic() + 60
    tasks: dict[int, int] = {}
    while len(tasks) < 2 and time.monotonic() < deadline:
        time.sleep(0.5)  # tasks get their own job ids once they are scheduled
        out = slurm_cluster.run("sacct", "--json", "-j", str(first)).stdout
        tasks = {
            j["job_id"]: j["array"]["task_id"]
            for j in slurm_json(out)["jobs"]
            if j["array"]["task_id"] is not None
        }
    assert sorted(tasks.values()) == [3, 4]
    for job_id, task in tasks.items():
        slurm_cluster.wait_job(job_id)
        events = spool.wait(job_id, ALL)
        assert _by_type(events, "scheduled")[0]["job"] == f"{first}_{task}"
        assert _by_type(events, "final_state")[0]["job"] == f"{first}_{task}"
        # Node hooks get no array ids from Slurm 22.05: the numeric id.
        assert _by_type(events, "started")[0]["job"] == str(job_id)


# a job that takes 3 s to die of SIGTERM: slurmctld holds it CANCELLED|COMPLETING at 0:0
# that long, over several of the collector's polls, before the batch step reports 0:15
SLOW_TO_DIE = "trap 'trap - TERM; sleep 3; kill -TERM $$' TERM; echo up; sleep 300 & wait"


@pytest.mark.parametrize(
    "script", ["echo up; sleep 300", SLOW_TO_DIE], ids=["plain", "slow-to-die"]
)
def test_cancelled_job_signal(
    slurm_cluster: Any, spool: SpoolWatcher, job_dir: Path, script: str
) -> None:
    job_id = slurm_cluster.sbatch("-o", f"{job_dir}/%j.out", "--wrap", script)
    spool.wait(job_id, {"started"}, timeout=30)
    # cancelled before its batch script runs, a job's batch step has no exit, or 0:9 (seen
    # on CI's 25.11 cluster): cancel once the script has said it runs
    out, deadline = job_dir / f"{job_id}.out", time.monotonic() + 30
    while time.monotonic() < deadline and not (out.exists() and b"up" in out.read_bytes()):
        time.sleep(0.1)
    assert b"up" in out.read_bytes(), "the batch script did not start within 30 s"
    slurm_cluster.run("scancel", str(job_id))
    acct = slurm_cluster.wait_job(job_id)
    events = spool.wait(job_id, ALL)
    cp = _by_type(events, "completed")[0]["payload"]
    # Slurm's hook environment hides the signal of a cancelled job (0:0); squeue has it
    assert cp["source"] == "squeue" and (cp["exit_code"], cp["signal"]) == (0, 15)
    final = _by_type(events, "final_state")[0]["payload"]
    assert final["state"] == acct["state"]["current"]
    # Slurm accounts a cancelled job as 0:0 and its batch step as 0:15; both are recorded
    assert (final["exit_code"], final["signal"]) == (0, 0)
    assert final["batch_signal"] == 15
    assert acct["state"]["current"] == "CANCELLED"


def test_requeued_job_has_two_runs(slurm_cluster: Any, spool: SpoolWatcher, job_dir: Path) -> None:
    job_id = slurm_cluster.sbatch(
        "--requeue", "--gres=gpu:1", "-o", f"{job_dir}/%j.out", "--wrap", "sleep 3"
    )
    spool.wait(job_id, {"started"}, timeout=30)
    slurm_cluster.run("scontrol", "requeue", str(job_id))
    time.sleep(2)
    # A requeued job waits for its begin time; start it again now.
    slurm_cluster.run("scontrol", "update", f"jobid={job_id}", "starttime=now", check=False)
    deadline = time.monotonic() + 120
    runs: dict[int, set[str]] = {}
    while time.monotonic() < deadline:
        runs = {}
        for event in spool.events(job_id):
            runs.setdefault(event["run"], set()).add(event["type"])
        if runs.get(0) == ALL and runs.get(1) == ALL:
            break
        time.sleep(0.5)
    assert runs.get(0) == ALL and runs.get(1) == ALL, runs

    def finals() -> dict[int, str]:
        return {e["run"]: e["payload"]["state"] for e in spool.events(job_id)
                if e["type"] == "final_state"}  # fmt: skip

    # Slurm may requeue the second run too (a launch that fails on a loaded node): then the
    # run after it completes. Each run's final state is accounting's for that run.
    while time.monotonic() < deadline and "COMPLETED" not in finals().values():
        time.sleep(0.5)
    got = finals()
    out = slurm_cluster.run("sacct", "--json", "-D", "-j", str(job_id)).stdout
    records = [j for j in slurm_json(out)["jobs"] if j["job_id"] == job_id]
    assert got == {run: rec["state"]["current"] for run, rec in enumerate(records)}, records
    assert got[0] == "REQUEUED" and got[len(got) - 1] == "COMPLETED", got
