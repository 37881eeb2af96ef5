"""The command-line backend over real captured output of Slurm 22.05, 24.11 and 25.11."""

from __future__ import annotations

import base64
import json
import os
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from fakeslurm import FIXTURES, PHASED, VERSIONS, calls, fixture_dir, install, manifest, roles

from computeproof.errors import SlurmError
from slurm_hooks import slurmcli
from slurm_hooks.controller import run_numbers
from slurm_hooks.jobinfo import AccountingRecord, pick_run
from slurm_hooks.slurmtext import SAFE_FORMAT


def squeue_json(version: str, moment: str) -> dict[int, AccountingRecord]:
    raw = (fixture_dir(version) / f"squeue_json_filtered.{moment}.json").read_bytes()
    return {r["job_id"]: r for r in slurmcli.parse_squeue_json(slurmcli.decode_json(raw, "t"))}


def sacct(version: str) -> list[AccountingRecord]:
    raw = (fixture_dir(version) / "sacct.json").read_bytes()
    return slurmcli.parse_sacct_json(slurmcli.decode_json(raw, "t"))


def hostile(version: str, key: str) -> bytes:
    return base64.b64decode(str(manifest(version)["hostile"][key]))  # type: ignore[index]


def raw(value: object) -> bytes:
    assert isinstance(value, str)
    return value.encode("utf-8", "surrogateescape")


@pytest.mark.parametrize("version", PHASED)
def test_squeue_json_running(version: str) -> None:
    ids = roles(version)
    recs = squeue_json(version, "running")
    victim = recs[ids["victim"]]
    assert (victim["state"], victim["user"], victim["account"]) == ("RUNNING", "cpbob", "biology")
    assert victim["nodes"] == ["c1"] and victim["gpus"] == 1 and victim["job_name"] == "victim"
    assert list(victim["gpu_indices"]) == ["c1"] and len(victim["gpu_indices"]["c1"]) == 1
    assert victim["state_flags"] == ["RUNNING"] and victim["uid"] is not None
    # the hostile values arrive exactly, bytes that are not UTF-8 included
    attacker = recs[ids["attacker"]]
    assert raw(attacker["job_name"]) == hostile(version, "name")
    assert raw(attacker["work_dir"]) == hostile(version, "work_dir")
    assert (attacker["gpus"], attacker["qos"], attacker["num_cpus"]) == (1, "normal", 1)
    held = recs[ids["held"]]
    assert (held["state"], held["nodes"], held["start_epoch"]) == ("PENDING", [], None)
    assert held["tres_requested"]["gres/gpu"] == 1 and held["tres_allocated"] == {}
    two = recs[ids["two_node"]]
    assert (two["nodes"], two["gpus"], two["gpu_indices"]) == (
        ["c1", "c2"],
        2,
        {"c1": two["gpu_indices"]["c1"], "c2": two["gpu_indices"]["c2"]},
    )
    assert all(len(v) == 1 for v in two["gpu_indices"].values())
    timeout = recs[ids["timeout"]]
    assert timeout["time_limit_s"] == 60 and timeout["end_epoch"] is not None


@pytest.mark.parametrize("version", PHASED)
def test_squeue_json_ended(version: str) -> None:
    ids = roles(version)
    recs = squeue_json(version, "ended")
    failed = recs[ids["attacker"]]
    assert (failed["state"], failed["exit_code"], failed["signal"]) == ("FAILED", 3, 0)
    cancelled = recs[ids["cancelled"]]
    assert (cancelled["state"], cancelled["signal"]) == ("CANCELLED", 15)
    requeued = recs[ids["requeued"]]
    assert (requeued["state"], requeued["restarts"]) == ("COMPLETED", 1)
    het = recs[ids["het"]]
    assert het["job"] == f"{ids['het']}+0"
    tasks = sorted(str(r["job"]) for r in recs.values() if r.get("array_job_id") == ids["array"])
    assert tasks == [f"{ids['array']}_0", f"{ids['array']}_1"]


@pytest.mark.parametrize("version", PHASED)
def test_sacct_json(version: str) -> None:
    ids = roles(version)
    records = sacct(version)
    by_job: dict[int, list[AccountingRecord]] = {}
    for rec in records:
        by_job.setdefault(rec["job_id"], []).append(rec)
    # a requeued job: one record per run, the first one REQUEUED whatever its flags say
    # (24.11: ["PENDING", "REQUEUED"]; the first item is not the state)
    first, second = by_job[ids["requeued"]]
    assert (first["state"], second["state"]) == ("REQUEUED", "COMPLETED")
    assert run_numbers(by_job[ids["requeued"]], []) == [0, 1]
    two = by_job[ids["two_node"]][0]
    assert two["nodes"] == ["c1", "c2"] and two["gpus"] == 2 and two["num_nodes"] == 2
    assert two["tres_allocated"]["mem"] == 1000 << 20
    cancelled = by_job[ids["cancelled"]][0]
    assert (cancelled["state"], cancelled["batch_signal"]) == ("CANCELLED", 15)
    assert cancelled["batch"] is True and cancelled["batch_step_end"] is not None
    het_second = [r for r in records if r.get("het_job_id") == ids["het"] and r["het_job_offset"]]
    assert het_second and het_second[0]["batch"] is None  # no batch step of its own
    timeout = by_job[ids["timeout"]][0]
    assert timeout["state"] == "TIMEOUT" and timeout["elapsed_s"] is not None
    held = by_job[ids["held"]][0]
    assert held["start_epoch"] is None and held["nodes"] == []
    failed = by_job[ids["attacker"]][0]
    if version == "22.05":
        assert failed["exit_code"] == 0  # 22.05's JSON bug: the text below is right
    else:
        assert (failed["exit_code"], failed["signal"]) == (3, 0)
    # accounting keeps 255 bytes of a name and stores a byte that is not UTF-8 as '?':
    # the controller's view (squeue --json, the hooks' environment) is the exact one
    assert raw(failed["job_name"]) == hostile(version, "name")[:255]
    assert raw(failed["work_dir"]) == hostile(version, "work_dir").replace(b"\xff\xfe", b"??")


@pytest.mark.parametrize("version", VERSIONS)
def test_the_settled_text_read_gives_what_the_json_gives(tmp_path: Path, version: str) -> None:
    """The collector's final_state read (``sacct -P`` of fields no user sets, and the batch
    steps) gives every run the JSON read gives, with the same values: all a final_state
    carries (not the name and work dir, which it never carries)."""
    ids = roles(version)
    install(tmp_path / "bin", version, "late", tmp_path / "log")
    cli = slurmcli.SlurmCli(str(tmp_path / "bin"), timeout=10)
    wanted = sorted(set(manifest(version)["ids"]))  # type: ignore[arg-type]

    def order(rec: AccountingRecord) -> tuple[int, int]:
        return rec["job_id"], rec.get("start_epoch") or 0

    structured = sorted(cli.jobs_accounting(wanted), key=order)
    text = sorted(cli.jobs_accounting(wanted, detail=False), key=order)
    assert len(text) == len(structured) >= len(ids)
    restarts = "Restarts" in (fixture_dir(version) / "sacct_helpformat.txt").read_text().split()
    for js, tx in zip(structured, text, strict=True):
        assert (tx["job_id"], tx["start_epoch"]) == (js["job_id"], js["start_epoch"])
        assert tx.get("job_name") is None and tx.get("work_dir") is None
        for key, value in js.items():
            if key in ("job_name", "work_dir"):
                continue
            if key == "state_flags" and isinstance(value, list) and len(value) > 1:
                assert tx[key] == [js["state"]]  # text prints the one word
                continue
            if key == "batch_exit_code" and version == "22.05" and tx[key] != value:
                # 22.05's JSON says 0 for a batch step that exited 3; its text is right
                assert (value, tx[key]) == (0, tx["exit_code"]) and tx["state"] == "FAILED"
                continue
            if key == "restarts" and not restarts:
                assert tx[key] is None  # 22.05's sacct prints no restart count
                continue
            assert tx[key] == value, (tx["job"], key)  # type: ignore[literal-required]
    by_job = {r["job_id"]: r for r in text}
    cancelled = by_job[ids["cancelled"]]
    assert (cancelled["state"], cancelled["batch_signal"], cancelled["batch"]) == (
        "CANCELLED", 15, True,
    )  # fmt: skip
    assert (by_job[ids["attacker"]]["exit_code"], by_job[ids["attacker"]]["state"]) == (3, "FAILED")
    # two text reads (the runs, their batch steps) and one of sacct's field names, once
    sacct_calls = calls(tmp_path / "log", "sacct")
    assert len([c for c in sacct_calls if "--noconvert" in c]) == 2
    assert len([c for c in sacct_calls if "--helpformat" in c]) == 1


def test_the_settled_text_read_refuses_lines_it_cannot_trust() -> None:
    from slurm_hooks.slurmtext import SACCT_FIELDS, parse_sacct_safe

    good = "|".join(
        ["41", "41", "COMPLETED", "0:0", "2026-12-05T09:00:00", "2026-12-05T09:00:00",
         "2026-12-05T09:00:01", "2026-12-05T09:00:05", "4", "60", "c[1-2]", "2",
         "billing=2,cpu=2,gres/gpu=2,mem=1000M,node=2", "cpu=2,gres/gpu=2,mem=1000M,node=2",
         "cpalice", "cpalice", "physics", "gpu", "normal", "None"]
    )  # fmt: skip
    assert len(good.split("|")) == len(SACCT_FIELDS)
    steps = "41.batch|2026-12-05T09:00:01|2026-12-05T09:00:04|0:15\n41.extern|x|y|0:0\n"
    (rec,) = parse_sacct_safe(good + "\n" + good[:20] + "\nnot|a|record\n", steps)
    assert rec["nodes"] == ["c1", "c2"] and rec["tres_allocated"]["mem"] == 1000 << 20
    assert (rec["batch"], rec["batch_signal"]) == (True, 15)
    assert (rec["time_limit_s"], rec["gpus"]) == (3600, 2)
    assert rec["end_epoch"] is not None and rec["reason"] is None
    # a '|' in the last field (Slurm's reason text) stays in it
    (rec,) = parse_sacct_safe(good[: -len("None")] + "Held|by x")
    assert rec["reason"] == "Held|by x" and rec["batch"] is None
    # an array task and a het component get their display ids
    arr = good.replace("41|41|", "42|40_3|", 1)
    het = good.replace("41|41|", "44|43+1|", 1)
    a, h = parse_sacct_safe(arr + "\n" + het)
    assert (a["job"], a["array_job_id"], a["array_task_id"]) == ("40_3", 40, 3)
    assert (h["job"], h["het_job_id"], h["het_job_offset"]) == ("43+1", 43, 1)


@pytest.mark.parametrize("version", VERSIONS)
def test_cli_merges_the_text_exit_codes(tmp_path: Path, version: str) -> None:
    ids = roles(version)
    install(tmp_path / "bin", version, "ended", tmp_path / "log")
    cli = slurmcli.SlurmCli(str(tmp_path / "bin"), timeout=10)
    records = {r["job_id"]: r for r in cli.jobs_accounting([ids["attacker"], ids["victim"]])}
    assert set(records) == {ids["attacker"], ids["victim"]}
    assert (records[ids["attacker"]]["exit_code"], records[ids["attacker"]]["signal"]) == (3, 0)
    assert len(calls(tmp_path / "log", "sacct")) == 2  # one JSON read, one text read


@pytest.mark.parametrize("version", PHASED)
def test_cli_live_reads(tmp_path: Path, version: str) -> None:
    ids = roles(version)
    log = tmp_path / "log"
    install(tmp_path / "bin", version, "running", log)
    cli = slurmcli.SlurmCli(str(tmp_path / "bin"), timeout=10)
    cheap = {r["job_id"]: r for r in cli.live_jobs()}
    assert "job_name" not in cheap[ids["attacker"]]
    detail = {r["job_id"]: r for r in cli.live_jobs(detail=True, job_ids=[ids["attacker"]])}
    assert raw(detail[ids["attacker"]]["job_name"]) == hostile(version, "name")
    assert calls(log, "squeue") == [
        f"squeue -h -t all -O {SAFE_FORMAT}",
        f"squeue --json -t all -j {ids['attacker']}",
    ]
    rec = cli.job_live(ids["victim"])
    assert rec is not None and rec["state"] == "RUNNING" and rec["gpus"] == 1


def _fake(tmp_path: Path, name: str, script: str) -> None:
    path = tmp_path / name
    path.write_text("#!/bin/sh\n" + script)
    path.chmod(0o755)


def test_purged_jobs(tmp_path: Path) -> None:
    _fake(
        tmp_path, "squeue", 'echo "slurm_load_jobs error: Invalid job id specified" >&2; exit 1\n'
    )
    _fake(tmp_path, "sacct", 'case "$*" in *--json*) echo \'{"jobs": []}\';; esac\n')
    cli = slurmcli.SlurmCli(str(tmp_path), timeout=5)
    assert cli.job_live(5) is None
    assert cli.job_state(5) is None
    assert cli.live_jobs(detail=True, job_ids=[5]) == []
    with pytest.raises(SlurmError, match="Invalid job id"):
        cli.live_jobs()  # without ids that is no purged job: a real failure


def test_not_json_is_one_error(tmp_path: Path) -> None:
    _fake(tmp_path, "squeue", "echo 'not json'\n")
    with pytest.raises(SlurmError, match="not JSON"):
        slurmcli.SlurmCli(str(tmp_path), timeout=5).live_jobs(detail=True)
    with pytest.raises(SlurmError):
        slurmcli.parse_sacct_json({"errors": []})
    with pytest.raises(SlurmError):
        slurmcli.parse_squeue_json([])


def test_missing_binary_is_slurm_error(tmp_path: Path) -> None:
    with pytest.raises(SlurmError):
        slurmcli.SlurmCli(str(tmp_path), timeout=1).job_live(1)


def test_sacct_22_05_older_capture() -> None:
    """The 22.05 capture the project started from (an array, a failed two-node job)."""
    data = json.loads((FIXTURES / "sacct_18_19_22.json").read_text())
    recs = {r["job_id"]: r for r in slurmcli.parse_sacct_json(data)}
    failed = recs[18]
    assert (failed["state"], failed["nodes"], failed["gpus"]) == ("FAILED", ["c1", "c2"], 4)
    assert failed["start_time"] == "2026-11-25T16:58:39Z" and failed["elapsed_s"] == 2
    assert recs[19]["job"] == "19_2" and recs[23]["job"] == "19_1"
    assert recs[22]["start_epoch"] is None and recs[22]["gpus"] == 0


def test_wrapped_numbers_and_flag_lists() -> None:
    data = {
        "jobs": [
            {
                "job_id": 7,
                "array": {"job_id": 0, "task_id": {"set": False, "number": 0}},
                "het": {"job_id": 0, "job_offset": {"set": False, "number": 0}},
                "state": {"current": ["PENDING", "REQUEUED"], "reason": "None"},
                "exit_code": {
                    "status": ["SIGNALED"],
                    "return_code": {"set": True, "number": 0},
                    "signal": {"id": {"set": True, "number": 15}, "name": "TERM"},
                },
                "time": {
                    "start": 100,
                    "end": 160,
                    "elapsed": 60,
                    "submission": 90,
                    "limit": {"set": True, "infinite": True, "number": 0},
                },
                "nodes": "c1",
                "tres": {"allocated": [{"type": "gres", "name": "gpu", "count": 1}]},
            }
        ]
    }
    (rec,) = slurmcli.parse_sacct_json(data)
    assert rec["state"] == "REQUEUED" and rec["state_flags"] == ["PENDING", "REQUEUED"]
    assert (rec["exit_code"], rec["signal"]) == (0, 15)
    assert rec["array_task_id"] is None and rec["time_limit_s"] is None
    assert rec["gpus"] == 1 and rec["elapsed_s"] == 60


def test_sacct_exit_codes_from_text() -> None:
    def utc(epoch: int) -> str:
        return time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(epoch))

    text = f"18|{utc(1000)}|3:0\n18|{utc(2000)}|0:0\n22|None|0:9\nbad\n23|x|1:0\n"
    assert slurmcli.parse_sacct_exit_codes(text) == {
        (18, 1000): (3, 0),
        (18, 2000): (0, 0),
        (22, None): (0, 9),
    }


def test_runs_are_picked_by_start() -> None:
    runs: list[AccountingRecord] = [
        {"job_id": 85, "state": "REQUEUED", "start_epoch": 100},
        {"job_id": 85, "state": "COMPLETED", "start_epoch": 200},
    ]
    assert pick_run(runs, 100) == runs[0]
    assert pick_run(runs, None) == runs[1]
    assert pick_run(runs, 150) is None
    assert pick_run([], None) is None


@pytest.fixture
def new_york() -> Iterator[None]:
    """This process in New York time (tzset), then back to its own zone."""
    old = os.environ.get("TZ")
    os.environ["TZ"] = "America/New_York"
    time.tzset()
    try:
        yield
    finally:
        if old is None:
            del os.environ["TZ"]
        else:
            os.environ["TZ"] = old
        time.tzset()


@pytest.mark.usefixtures("new_york")  # the caller's zone must not matter
def test_clients_run_in_utc(tmp_path: Path) -> None:
    _fake(tmp_path, "sacct", f'echo "$TZ $*" >> {tmp_path}/args\necho \'{{"jobs": []}}\'\n')
    cli = slurmcli.SlurmCli(str(tmp_path), timeout=5)
    # 01:30 New York time on the day its clocks go back is 05:30 or 06:30 UTC: not in UTC
    assert cli.accounting(1793511000, 1793514600, ("COMPLETED", "FAILED")) == []
    first = (tmp_path / "args").read_text().splitlines()[0]
    assert first.startswith("UTC --json -D -a -S 2026-11-01T05:30:00 -E 2026-11-01T06:30:00")
    assert first.endswith("-s COMPLETED,FAILED")


@pytest.mark.parametrize("version", VERSIONS)
@pytest.mark.parametrize("moment", ["running", "ended", "late"])
def test_the_safe_read_agrees_with_the_json(version: str, moment: str) -> None:
    """The two reads of the same moment (squeue -O of fields no user sets, squeue --json)
    give every job the same fields, in every release's format."""
    from slurm_hooks.slurmtext import parse_squeue_safe

    d = fixture_dir(version)
    text = (d / f"squeue_safe.{moment}.txt").read_bytes().decode()
    safe = {int(r["job_id"]): r for r in parse_squeue_safe(text)}  # type: ignore[call-overload]
    detail = squeue_json(version, moment)
    common = set(safe) & set(detail)
    assert common, "the two reads share no job"
    keys = ("job", "state", "nodes", "num_nodes", "gpus", "tres_allocated", "user", "uid",
            "account", "partition", "qos", "restarts", "submit_epoch", "start_epoch",
            "time_limit_s")  # fmt: skip
    for job in common:
        a, b = safe[job], detail[job]
        for key in keys:
            assert a.get(key) == b.get(key), (version, moment, job, key)  # type: ignore[misc]
        if a["state"] not in ("PENDING", "RUNNING", "CONFIGURING"):
            assert (a["exit_code"], a["signal"]) == (b["exit_code"], b["signal"]), (job, a, b)


@pytest.mark.parametrize("version", VERSIONS)
def test_accounting_of_every_release(version: str) -> None:
    """What holds for any capture: a requeued job's runs oldest first (REQUEUED, then its
    last run), the failed job's exit code 3 (22.05: from the text), a cancelled job's
    signal on its batch step, every state a word Slurm prints."""
    ids = roles(version)
    records = sacct(version)
    words = {"COMPLETED", "FAILED", "CANCELLED", "TIMEOUT", "REQUEUED", "PENDING", "RUNNING"}
    assert {r["state"] for r in records} <= words
    runs = [r for r in records if r["job_id"] == ids["requeued"]]
    assert len(runs) == 2 and runs[0]["state"] == "REQUEUED"
    assert run_numbers(runs, []) == [0, 1]
    text = (fixture_dir(version) / "sacct_exit.txt").read_text()
    codes = slurmcli.parse_sacct_exit_codes(text)
    (failed,) = [r for r in records if r["job_id"] == ids["attacker"]]
    assert codes[(failed["job_id"], failed["start_epoch"])] == (3, 0)
    (cancelled,) = [r for r in records if r["job_id"] == ids["cancelled"]]
    assert (cancelled["state"], cancelled["batch_signal"]) == ("CANCELLED", 15)
    two = next(r for r in records if r["job_id"] == ids["two_node"])
    assert two["nodes"] == ["c1", "c2"] and two["gpus"] == two["tres_allocated"]["gres/gpu"]
