"""Bindings from the Prolog, and a process's job from /proc."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
from conftest import bind

from computeproof.config import Config
from slurm_hooks.agent.binding import BindingError, jobs_by_minor, load_bindings, parse_binding
from slurm_hooks.agent.procs import ProcessTable, cgroup_mounts


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
    cgroupfs = tmp_path / "cgroup"
    (cgroupfs / "system.slice/slurmstepd.scope/job_412/step_0/user/task_0").mkdir(parents=True)
    table = ProcessTable(
        str(tmp_path),
        trusted_uids=frozenset({0, os.getuid()}),
        mounts=[(frozenset(), "/", str(cgroupfs))],
    )
    assert table.job_of(12) == 300
    assert table.job_of(21) is None
    assert table.job_of(30) == 412
    assert table.job_of(99) is None


def untrusted_dir(path: Path) -> int:
    """Make ``path`` (a directory) owned by a uid that is not trusted; return that uid."""
    if os.getuid() == 0:
        os.chown(path, 4321, 4321)
        return 4321
    return os.getuid()


def test_a_cgroup_a_user_created_proves_nothing(tmp_path: Path) -> None:
    """Regression (issue 13, 5): a cgroup named job_N under a user's delegated subtree
    (systemd's user@UID.service) was taken as proof of membership of job N."""
    user_cg = "/user.slice/user-1000.slice/user@1000.service/job_412"
    fake_proc(tmp_path, 40, 1, 1000, b"x\x00", cgroup=f"0::{user_cg}\n")
    cgroupfs = tmp_path / "cgroup"
    (cgroupfs / user_cg.lstrip("/")).mkdir(parents=True)
    owner = untrusted_dir(cgroupfs / "user.slice/user-1000.slice/user@1000.service")
    untrusted_dir(cgroupfs / user_cg.lstrip("/"))
    trusted = frozenset({0, os.getuid()} - {owner})
    assert ProcessTable(str(tmp_path), trusted_uids=trusted).job_of(40) is None
    table = ProcessTable(
        str(tmp_path), trusted_uids=trusted, mounts=[(frozenset(), "/", str(cgroupfs))]
    )
    assert table.job_of(40) is None
    # a cgroup that is not mounted where the agent can look proves nothing either
    fake_proc(tmp_path, 41, 1, 1000, b"x\x00", cgroup="0::/slurm/job_77/step_0\n")
    assert table.job_of(41) is None
    # cgroup v1: the hierarchy holding the named controller is the one checked
    v1 = tmp_path / "freezer"
    (v1 / "slurm/uid_1000/job_78/step_0").mkdir(parents=True)
    fake_proc(
        tmp_path, 42, 1, 1000, b"x\x00",
        cgroup="5:freezer:/slurm/uid_1000/job_78/step_0\n0::/user.slice\n",
    )  # fmt: skip
    table_v1 = ProcessTable(
        str(tmp_path),
        trusted_uids=frozenset({0, os.getuid()}),
        mounts=[(frozenset({"freezer"}), "/", str(v1)), (frozenset(), "/", str(cgroupfs))],
    )
    assert table_v1.job_of(42) == 78


def test_cgroup_mounts_from_mountinfo(tmp_path: Path) -> None:
    info = tmp_path / "mountinfo"
    info.write_text(
        "31 23 0:28 / /sys/fs/cgroup rw,relatime - tmpfs tmpfs rw,mode=755\n"
        "32 31 0:29 / /sys/fs/cgroup/cpu,cpuacct rw,relatime - cgroup cgroup rw,cpu,cpuacct\n"
        "40 31 0:37 / /sys/fs/cgroup/systemd rw,relatime - cgroup cgroup rw,xattr,name=systemd\n"
        "41 31 0:38 / /sys/fs/cgroup/unified rw,relatime - cgroup2 cgroup2 rw,nsdelegate\n"
        "42 31 0:39 /x /mnt/with\\040space rw - cgroup2 cgroup2 rw\n"
    )
    assert cgroup_mounts(str(info)) == [
        (frozenset({"cpu", "cpuacct"}), "/", "/sys/fs/cgroup/cpu,cpuacct"),
        (frozenset({"name=systemd"}), "/", "/sys/fs/cgroup/systemd"),
        (frozenset(), "/", "/sys/fs/cgroup/unified"),
        (frozenset(), "/x", "/mnt/with space"),
    ]
