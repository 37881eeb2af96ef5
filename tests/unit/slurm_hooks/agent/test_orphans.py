"""Jobs whose Epilog never removed their binding: the agent asks Slurm, then lets them go.

The agent talks to a scripted JobInfo here (the real one is `squeue`; the integration
test in tests/integration/test_agent_cluster.py runs it against the test cluster).
"""

from __future__ import annotations

import dataclasses
import json
import logging
import os
import threading
import time
from pathlib import Path

import pytest
from conftest import Clock, Script, bind
from fakenvml.build import gpu_line

from computeproof.config import Config
from computeproof.errors import SlurmError
from slurm_hooks.agent.daemon import Agent, ended_here
from slurm_hooks.agent.procs import ProcessTable
from slurm_hooks.agent.sampler import Sampler
from slurm_hooks.agent.state import read_summary, summary_path
from slurm_hooks.jobinfo import AccountingRecord

CHECK_S = 10


class ScriptedSlurm:
    """job_live answers from a dict; a job id missing from it is purged (None)."""

    def __init__(self, records: dict[int, AccountingRecord | Exception]) -> None:
        self.records = records
        self.asked: list[int] = []

    def job_live(self, job_id: int) -> AccountingRecord | None:
        self.asked.append(job_id)
        rec = self.records.get(job_id)
        if isinstance(rec, Exception):
            raise rec
        return rec


def running(node: str = "c1", restarts: int = 0, state: str = "RUNNING") -> AccountingRecord:
    return {"job_id": 0, "state": state, "nodes": [node], "restarts": restarts}


def fake_stepd(root: Path, pid: int, job_id: int, uid: int = 0) -> None:
    d = root / str(pid)
    d.mkdir(parents=True)
    d.joinpath("status").write_text(f"Name:\tslurmstepd\nPPid:\t1\nUid:\t{uid}\t{uid}\t{uid}\n")
    d.joinpath("cmdline").write_bytes(f"slurmstepd: [{job_id}.batch]\x00".encode())
    d.joinpath("cgroup").write_text("0::/system.slice\n")


@pytest.fixture
def proc_root(tmp_path: Path) -> Path:
    root = tmp_path / "proc"
    root.mkdir()
    return root


def make_agent(config: Config, clock: Clock, proc_root: Path, slurm: ScriptedSlurm) -> Agent:
    return Agent(
        dataclasses.replace(config, orphan_check_interval=CHECK_S),
        "c1",
        sampler=Sampler(timeout_s=2.0, clock=clock),
        clock=clock,
        processes=ProcessTable(str(proc_root)),
        job_info=slurm,  # type: ignore[arg-type]
    )


def spooled_jobs(config: Config) -> list[int]:
    new = Path(config.spool_dir) / "new"
    return [json.loads(p.read_bytes())["job_id"] for p in new.glob("*.json")]


def run_passes(agent: Agent, clock: Clock, script: Script, seconds: int) -> None:
    for t in range(0, seconds * 1000 + 1, 5000):
        script.write(gpu_line(0, 0, util=50, energy=100 + t) + gpu_line(1, 1, util=50, energy=t))
        clock.at(t)
        agent.pass_once()
        agent.join_orphan_check(10)  # it runs in a thread of its own


def test_an_ended_job_left_bound_is_let_go(
    config: Config, script: Script, clock: Clock, proc_root: Path, caplog: pytest.LogCaptureFixture
) -> None:
    gone = bind(config, "c1", 101, [0])  # Slurm: COMPLETED, Epilog never ran
    live = bind(config, "c1", 102, [1])  # Slurm: RUNNING here, between steps (no slurmstepd)
    slurm = ScriptedSlurm({101: running(state="COMPLETED"), 102: running()})
    agent = make_agent(config, clock, proc_root, slurm)
    with caplog.at_level(logging.WARNING, "computeproof.agent"):
        run_passes(agent, clock, script, 25)
    assert sorted(agent.jobs) == [102]
    assert not os.path.exists(gone) and os.path.exists(live)
    # asked once per check interval, and only about jobs sampled that long
    assert slurm.asked == [101, 102, 102]
    (line,) = [r.getMessage() for r in caplog.records if "101" in r.getMessage()]
    assert "Slurm shows it COMPLETED" in line and "removed" in line
    # the final figures stay for a late Epilog, durable
    summary = read_summary(summary_path(config, "c1", 101))
    assert summary is not None and summary["gpus"][0]["samples"] == 3  # type: ignore[index]
    assert agent.summary(101)["job_id"] == 101
    # progress events (every 10 s) stopped for the ended job, went on for the live one
    assert spooled_jobs(config).count(101) == 1
    assert spooled_jobs(config).count(102) == 2


def test_a_job_with_a_slurmstepd_is_not_asked_about(
    config: Config, script: Script, clock: Clock, proc_root: Path
) -> None:
    bind(config, "c1", 201, [0])
    fake_stepd(proc_root, 4000, 201)
    fake_stepd(proc_root, 4001, 202, uid=1000)  # a user's process titled like a stepd: no
    bind(config, "c1", 202, [1])
    slurm = ScriptedSlurm({202: running()})
    agent = make_agent(config, clock, proc_root, slurm)
    run_passes(agent, clock, script, 15)
    assert slurm.asked == [202]
    assert sorted(agent.jobs) == [201, 202]


def test_slurm_unreachable_keeps_sampling(
    config: Config, script: Script, clock: Clock, proc_root: Path, caplog: pytest.LogCaptureFixture
) -> None:
    path = bind(config, "c1", 301, [0])
    slurm = ScriptedSlurm({301: SlurmError("squeue timed out after 10 s")})
    agent = make_agent(config, clock, proc_root, slurm)
    with caplog.at_level(logging.WARNING, "computeproof.agent"):
        run_passes(agent, clock, script, 15)
    assert sorted(agent.jobs) == [301] and os.path.exists(path)
    assert any("cannot ask Slurm" in r.getMessage() for r in caplog.records)


def test_purged_and_unremovable_bindings_are_not_sampled_again(
    config: Config, script: Script, clock: Clock, proc_root: Path
) -> None:
    path = bind(config, "c1", 401, [0])
    slurm = ScriptedSlurm({})  # purged: Slurm no longer knows job 401
    agent = make_agent(config, clock, proc_root, slurm)
    os.chmod(os.path.dirname(path), 0o500)  # the binding cannot be removed
    try:
        run_passes(agent, clock, script, 25)
    finally:
        os.chmod(os.path.dirname(path), 0o700)
    if os.geteuid() != 0:  # root removes it anyway
        assert os.path.exists(path)
    assert agent.jobs == {} and slurm.asked == [401]
    # a new run of the job is sampled again
    bind(config, "c1", 401, [0], run=1)
    clock.at(30_000)
    agent.pass_once()
    agent.join_orphan_check(10)
    assert sorted(agent.jobs) == [401] and agent.jobs[401].binding.run == 1


def test_a_slow_slurm_does_not_hold_up_sampling(
    config: Config, script: Script, clock: Clock, proc_root: Path
) -> None:
    bind(config, "c1", 501, [0])
    release = threading.Event()
    order: list[str] = []

    class SlowSlurm:
        def job_live(self, job_id: int) -> AccountingRecord | None:
            order.append("asked")
            release.wait(10)
            order.append("answered")
            return running()

    agent = make_agent(config, clock, proc_root, SlowSlurm())  # type: ignore[arg-type]
    for t in (0, 5000, 10000):  # the check at 10 s asks, and waits on Slurm
        script.write(gpu_line(0, 0, util=50, energy=t))
        clock.at(t)
        agent.pass_once()
    for _ in range(100):
        if order:
            break
        time.sleep(0.05)
    clock.at(15000)
    assert agent.pass_once().error is None  # sampling goes on meanwhile
    order.append("sampled")
    release.set()
    agent.join_orphan_check(10)
    assert order == ["asked", "sampled", "answered"]
    assert sorted(agent.jobs) == [501]


@pytest.mark.parametrize(
    ("record", "expected"),
    [
        (None, "Slurm no longer knows the job"),
        (running(restarts=1), "Slurm requeued it (run 1 now)"),
        (running(state="PENDING"), "Slurm shows it PENDING"),
        (running(state="TIMEOUT"), "Slurm shows it TIMEOUT"),
        (running(node="c2"), "Slurm runs it on c2, not c1"),
        (running(), None),
        (running(state="COMPLETING"), None),  # the Epilog is about to run
        (running(state="SUSPENDED"), None),
        ({"job_id": 0, "state": "RUNNING", "nodes": [], "restarts": None}, None),
    ],
)
def test_ended_here(record: AccountingRecord | None, expected: str | None) -> None:
    assert ended_here(record, "c1", 0) == expected
