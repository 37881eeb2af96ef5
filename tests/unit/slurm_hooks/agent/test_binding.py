"""Bindings from the Prolog, and a process's job from /proc."""

from __future__ import annotations

from pathlib import Path

import pytest
from conftest import bind

from computeproof.config import Config
from slurm_hooks.agent.binding import BindingError, jobs_by_minor, load_bindings, parse_binding
from slurm_hooks.agent.procs import ProcessTable


def test_load_bindings_and_minors(config: Config) -> None:
    bind(config, "c2", 101, [6, 4], job="100_4")
    bind(config, "c2", 102, [4])
    with open(config.binding_path("c2", 103), "w") as f:
        f.write("{not json")
    bindings, problems = load_bindings(config, "c2")
    assert sorted(bindings) == [101, 102]
    assert bindings[101].job == "100_4" and bindings[101].minors == (6, 4)
    assert len(problems) == 1 and "103.json is not valid JSON" in problems[0]
    assert jobs_by_minor(bindings) == {6: [101], 4: [101, 102]}
    assert load_bindings(config, "nowhere") == ({}, [])


def test_parse_binding_rejects_bad_minor() -> None:
    with pytest.raises(BindingError, match="'minor' must be a non-negative integer"):
        parse_binding({"job_id": 1, "uid": 0, "gpus": [{"slurm_index": 0, "minor": "4"}]})


def fake_proc(
    root: Path, pid: int, ppid: int, uid: int, cmdline: bytes, cgroup: str = "0::/user.slice\n"
) -> None:
    d = root / str(pid)
    d.mkdir(parents=True)
    (d / "status").write_text(f"Name:\tx\nPPid:\t{ppid}\nUid:\t{uid}\t{uid}\t{uid}\t{uid}\n")
    (d / "cmdline").write_bytes(cmdline)
    (d / "cgroup").write_text(cgroup)


def test_job_of_by_ancestry_cgroup_and_trust(tmp_path: Path) -> None:
    fake_proc(tmp_path, 10, 1, 0, b"slurmstepd: [300.batch]\x00")
    fake_proc(tmp_path, 11, 10, 1000, b"python\x00train.py\x00")
    fake_proc(tmp_path, 12, 11, 1000, b"python\x00worker\x00")
    # a user renaming their own process does not make it a job's
    fake_proc(tmp_path, 20, 1, 1000, b"slurmstepd: [300.0]\x00")
    fake_proc(tmp_path, 21, 20, 1000, b"sh\x00")
    fake_proc(
        tmp_path,
        30,
        1,
        1000,
        b"x\x00",
        cgroup="0::/system.slice/slurmstepd.scope/job_412/step_0/user/task_0\n",
    )
    table = ProcessTable(str(tmp_path))
    assert table.job_of(12) == 300
    assert table.job_of(21) is None
    assert table.job_of(30) == 412
    assert table.job_of(99) is None
