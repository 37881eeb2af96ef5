"""Regression tests of issue 13's Slurm-side breaks, over real captured Slurm output.

13.1  a newline in a job name forged another job's signed record (the collector read
      ``squeue -O ...,Name`` text line by line);
13.2  ``Key=Value`` words in a job name injected fields into ``scheduled`` (the
      ``scontrol show job -o`` parser);
13.3  bytes that are not UTF-8 in a job name or work dir made hooks fail (and drain a
      node in strict mode); a hook that could not spool (disk full) was counted only on
      the full disk.

Each drives the hook executables as Slurm runs them, with a job whose name, comment, work
dir and output path carry what capture.py submitted on a real cluster: forged squeue
records in both field orders, scontrol ``Key=Value`` words for every key the old parser
read, CR, '|', escapes and bytes that are not UTF-8. The fake Slurm commands print what
the real ones printed for that job.
"""

from __future__ import annotations

import base64
import json
import os
import subprocess
import time
from pathlib import Path

import pytest
from fakeslurm import install, manifest, roles
from hooksite import EPILOG, EPILOG_CTLD, PROLOG, PROLOG_CTLD, Site, payload, run

VERSIONS = ("22.05", "24.11")


def _n(value: object) -> int | None:
    """A number of Slurm's JSON: plain (22.05) or {"set", "infinite", "number"} (24.11)."""
    if isinstance(value, dict):
        return int(value["number"]) if value.get("set") and not value.get("infinite") else None
    return value if isinstance(value, int) else None


def truth(version: str, moment: str, role: str) -> dict[str, object]:
    """The job as the controller's JSON shows it, read here with plain json, not by the
    code under test."""
    from fakeslurm import fixture_dir

    raw = (fixture_dir(version) / f"squeue_json_filtered.{moment}.json").read_bytes()
    job_id = roles(version)[role]
    (job,) = [
        j
        for j in json.loads(raw.decode("utf-8", "surrogateescape"))["jobs"]
        if j["job_id"] == job_id
    ]
    tres = dict(item.split("=", 1) for item in job["tres_alloc_str"].split(","))
    limit = _n(job["time_limit"])
    start, end = _n(job["start_time"]), _n(job["end_time"])
    return {
        "qos": job["qos"],
        "num_nodes": _n(job["node_count"]),
        "num_cpus": _n(job["cpus"]),
        "time_limit_s": limit * 60 if limit is not None else None,
        "gpus": int(tres["gres/gpu"]),
        "cpu": int(tres["cpu"]),
        "submit_epoch": _n(job["submit_time"]),
        "start_epoch": start,
        "end_epoch": end,
        "elapsed_s": end - start if start and end else None,
        "restarts": _n(job["restart_cnt"]),
        "partition": job["partition"],
        "account": job["account"],
        "user": job["user_name"],
    }


def hostile(version: str, key: str) -> bytes:
    return base64.b64decode(str(manifest(version)["hostile"][key]))  # type: ignore[index]


def controller_env(site: Site, dump: str, version: str, role: str) -> dict[bytes, bytes]:
    """A controller hook's environment for ``role``'s job, user values as raw bytes."""
    job = str(roles(version)[role]).encode()
    user, account = manifest(version)["users"][role]  # type: ignore[index]
    env = {
        k.encode(): v.encode()
        for k, v in site.env(dump).items()
        if not k.startswith("SLURM_ARRAY_")
    }
    env.update(
        {
            b"SLURM_JOB_ID": job,
            b"SLURM_JOBID": job,
            b"SLURM_JOB_NODELIST": b"c1",
            b"SLURM_JOB_USER": user.encode(),
            b"SLURM_JOB_ACCOUNT": account.encode(),
        }
    )
    if role == "attacker":
        env[b"SLURM_JOB_NAME"] = hostile(version, "name")
        env[b"SLURM_JOB_WORK_DIR"] = hostile(version, "work_dir")
        env[b"SLURM_JOB_STDOUT"] = hostile(version, "stdout")
    return env


def wait_events(site: Site, kind: str, timeout: float = 10) -> list[dict[str, object]]:
    """The spool's ``kind`` events once there is one (an older collector wrote them from
    a detached process)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        found = site.events(kind)
        if found:
            return found
        time.sleep(0.05)
    return []


@pytest.mark.parametrize("version", VERSIONS)
def test_13_1_a_name_holding_records_forges_no_other_job(tmp_path: Path, version: str) -> None:
    """The victim's completed event (written by the controller side: EpilogSlurmctld's
    collector before issue 17, the collector service since) says what Slurm says of the
    victim, not what another
    user's job name ("f\\n<a forged record of the victim>") says of it: exit 7, 8 GPUs on
    node c9, from 2020. (The capture's other hostile job is left out of the old text
    format: its own forged lines would hide this one from the old parser.)"""
    site = Site(tmp_path)
    install(site.bin, version, "ended", tmp_path / "slurm.log", drop=("attacker",))
    env = controller_env(site, "epilog_slurmctld.18", version, "victim")
    env[b"SLURM_JOB_EXIT_CODE2"] = b"0:0"
    assert run(EPILOG_CTLD, env).returncode == 0  # before issue 17: queued the collector
    try:  # since issue 17 the collector is a service: one poll of it
        from computeproof.config import Config
        from slurm_hooks.controller import Collector
        from slurm_hooks.slurmcli import SlurmCli
    except ImportError:
        pass
    else:
        config = Config(
            cluster="cptest",
            spool_dir=str(site.spool),
            run_dir=str(site.run),
            slurm_bin=str(site.bin),
            host="ctl",
        )
        Collector(config, SlurmCli(config.slurm_bin, timeout=10)).poll()
    (event,) = [
        e for e in wait_events(site, "completed") if e["job_id"] == roles(version)["victim"]
    ]
    p = payload(event)
    real = truth(version, "ended", "victim")
    assert (p["exit_code"], p["signal"]) == (0, 0)
    assert (p["gpus"], p["tres_allocated"]["cpu"]) == (real["gpus"], real["cpu"])  # type: ignore[index]
    assert (p["start_epoch"], p["end_epoch"]) == (real["start_epoch"], real["end_epoch"])
    assert p["elapsed_s"] == real["elapsed_s"] and p["gpu_seconds"] == real["elapsed_s"]
    assert p["nodes"] == ["c1"] and p["user"] == "cpbob"


@pytest.mark.parametrize("version", VERSIONS)
def test_13_2_key_value_words_in_a_name_inject_nothing(tmp_path: Path, version: str) -> None:
    """scheduled of the attacker's own job: every field is Slurm's; the name and work dir
    are recorded exactly, as bytes that are not UTF-8 are (base64 in an object)."""
    site = Site(tmp_path)
    install(site.bin, version, "running", tmp_path / "slurm.log")
    env = controller_env(site, "prolog_slurmctld.23", version, "attacker")
    result = run(PROLOG_CTLD, env)
    assert result.returncode == 0, result.stderr
    (event,) = site.events("scheduled")
    p = payload(event)
    real = truth(version, "running", "attacker")
    for key in (
        "qos",
        "num_nodes",
        "num_cpus",
        "time_limit_s",
        "gpus",
        "submit_epoch",
        "start_epoch",
        "restarts",
        "partition",
        "account",
        "user",
    ):
        assert p[key] == real[key], key
    assert p["tres_allocated"]["cpu"] == real["cpu"]  # type: ignore[index]
    assert p["nodes"] == ["c1"] and event["job"] == str(roles(version)["attacker"])
    assert base64.b64decode(p["job_name"]["non_utf8"]) == hostile(version, "name")  # type: ignore[index]
    assert base64.b64decode(p["work_dir"]["non_utf8"]) == hostile(version, "work_dir")  # type: ignore[index]
    assert p["array_job_id"] is None and p["array_task_id"] is None


@pytest.mark.parametrize("strict", [False, True])
def test_13_3_bytes_that_are_not_utf8_fail_no_hook(tmp_path: Path, strict: bool) -> None:
    """Prolog, Epilog and both controller hooks, strict or not: exit 0, every event
    written, the user's bytes recorded exactly, nothing counted as a failure."""
    site = Site(tmp_path, extra="strict = true\n" if strict else "")
    version = "22.05"
    install(site.bin, version, "running", tmp_path / "slurm.log")
    name, work = hostile(version, "name"), hostile(version, "work_dir")
    for exe, dump in ((PROLOG, "prolog.9"), (EPILOG, "epilog.9")):
        env = {k.encode(): v.encode() for k, v in site.env(dump).items()}
        env.update(
            {
                b"SLURM_JOB_NAME": name,
                b"SLURM_JOB_WORK_DIR": work,
                b"SLURM_JOB_STDOUT": hostile(version, "stdout"),
                b"SLURM_JOB_GPUS": b"1,2",
            }
        )
        result = run(exe, env)
        assert result.returncode == 0, result.stderr
    result = run(PROLOG_CTLD, controller_env(site, "prolog_slurmctld.23", version, "attacker"))
    assert result.returncode == 0, result.stderr
    result = run(EPILOG_CTLD, controller_env(site, "epilog_slurmctld.18", version, "attacker"))
    assert result.returncode == 0, result.stderr
    assert site.failures() == 0 and site.failures(site.run) == 0
    found = {e["type"]: payload(e) for e in site.events()}
    assert {"started", "node_done", "scheduled"} <= set(found)
    assert base64.b64decode(found["started"]["work_dir"]["non_utf8"]) == work  # type: ignore[index]
    assert base64.b64decode(found["scheduled"]["job_name"]["non_utf8"]) == name  # type: ignore[index]
    # the GPU binding the agent measures by was written: the job's GPU use is not lost
    binding = json.loads((site.run / "c2" / "jobs" / "9.json").read_bytes())
    assert [g["minor"] for g in binding["gpus"]] == [5, 6]


def _tiny_filesystem(path: Path) -> bool:
    """Mount a 64 KiB tmpfs at ``path`` and fill it; False where mounting is not allowed."""
    path.mkdir()
    if os.geteuid() != 0:
        return False
    mounted = subprocess.run(
        ["mount", "-t", "tmpfs", "-o", "size=64k", "tmpfs", str(path)],
        capture_output=True,
        check=False,
    )
    if mounted.returncode != 0:
        return False
    try:
        (path / "spool" / "new").mkdir(parents=True)
        (path / "spool" / "tmp").mkdir()
    except OSError:
        subprocess.run(["umount", str(path)], check=False)
        raise
    fd = os.open(path / "filler", os.O_WRONLY | os.O_CREAT, 0o600)
    try:
        while os.write(fd, b"\0" * 512):
            pass
    except OSError:
        pass  # ENOSPC: full
    finally:
        os.close(fd)
    return True


def test_13_3_a_full_spool_disk_is_counted_on_the_run_dir(tmp_path: Path) -> None:
    """The spool's filesystem is full: the hook still exits 0, and the failure is counted
    in <run_dir>/hook-failures (tmpfs), where `spool status` reads it."""
    disk = tmp_path / "disk"
    if not _tiny_filesystem(disk):
        pytest.skip("needs root and tmpfs mounts to fill a filesystem")
    try:
        site = Site(tmp_path)
        env = site.env("prolog.9", COMPUTEPROOF_SPOOL=str(disk / "spool"))
        result = run(PROLOG, env)
        assert result.returncode == 0
        assert "No space left on device" in result.stderr
        assert site.failures(site.run) == 1
        last = (site.run / "hook-failures.last").read_text()
        assert last.startswith("computeproof prolog: job 9: ") and "No space left" in last
        assert not list((disk / "spool" / "new").iterdir())
    finally:
        subprocess.run(["umount", str(disk)], check=False)
