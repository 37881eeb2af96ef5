"""sacct --json and squeue -O parsing over output captured from the test cluster (22.05.8)."""

from __future__ import annotations

import json
import os
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from squeue_text import squeue_line

from computeproof.errors import SlurmError
from slurm_hooks import slurmcli

FIXTURES = Path(__file__).parent / "fixtures"


def load(name: str) -> object:
    return json.loads((FIXTURES / name).read_text())


def by_id(records: list[slurmcli.AccountingRecord]) -> dict[int, slurmcli.AccountingRecord]:
    return {r["job_id"]: r for r in records}


def test_sacct_records() -> None:
    recs = by_id(slurmcli.parse_sacct_json(load("sacct_18_19_22.json")))
    failed = recs[18]
    assert failed["job"] == "18"
    assert failed["state"] == "FAILED"
    assert failed["nodes"] == ["c1", "c2"]
    assert failed["gpus"] == 4
    assert failed["tres_allocated"]["mem"] == 1000 << 20
    assert failed["tres_allocated"]["gres/gpu:a100"] == 4
    assert (failed["start_epoch"], failed["end_epoch"], failed["elapsed_s"]) == (
        1795625919,
        1795625921,
        2,
    )
    assert failed["start_time"] == "2026-11-25T16:58:39Z"
    assert failed["user"] == "root" and failed["account"] == "root"
    assert failed["array_job_id"] is None and failed["het_job_id"] is None
    # The 22.05 JSON bug: the job record says 0 although the job exited 3.
    assert failed["exit_code"] == 0
    assert recs[19]["job"] == "19_2" and recs[23]["job"] == "19_1"
    cancelled = recs[22]
    assert cancelled["state"] == "CANCELLED"
    assert cancelled["nodes"] == [] and cancelled["gpus"] == 0
    assert cancelled["start_epoch"] is None


def utc(epoch: int) -> str:
    """Epoch seconds as sacct prints them when run with TZ=UTC (no zone)."""
    return time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(epoch))


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


def test_sacct_exit_codes_from_text() -> None:
    text = f"18|{utc(1000)}|3:0\n18|{utc(2000)}|0:0\n22|None|0:9\nbad\n23|x|1:0\n"
    assert slurmcli.parse_sacct_exit_codes(text) == {
        (18, 1000): (3, 0),
        (18, 2000): (0, 0),
        (22, None): (0, 9),
    }


def test_requeued_job_runs_are_picked_by_start() -> None:
    runs: list[slurmcli.AccountingRecord] = [
        {"job_id": 85, "state": "REQUEUED", "start_epoch": 100},
        {"job_id": 85, "state": "COMPLETED", "start_epoch": 200},
    ]
    assert slurmcli.pick_run(runs, 100) == runs[0]
    assert slurmcli.pick_run(runs, None) == runs[1]
    assert slurmcli.pick_run(runs, 150) is None
    assert slurmcli.pick_run([], None) is None


def test_squeue_text_records() -> None:
    """Captured from the test cluster: `TZ=UTC squeue -h -t all -O SQUEUE_FORMAT`."""
    recs = by_id(slurmcli.parse_squeue_text((FIXTURES / "squeue_utc.txt").read_text()))
    assert len(recs) == 9
    failed = recs[30415]
    assert (failed["state"], failed["reason"]) == ("FAILED", "NonZeroExitCode")
    assert (failed["exit_code"], failed["signal"]) == (3, 0)  # wait status 768
    assert failed["gpus"] == 4 and failed["elapsed_s"] == 1 and failed["nodes"] == ["c2"]
    assert failed["start_epoch"] == 1795648265 and failed["start_time"] == "2026-11-25T23:11:05Z"
    assert failed["user"] == "root" and failed["batch"] is True and failed["restarts"] == 0
    cancelled = recs[30419]
    assert (cancelled["state"], cancelled["exit_code"], cancelled["signal"]) == ("CANCELLED", 0, 15)
    assert recs[30422]["job"] == "30416_0" and recs[30416]["job"] == "30416_1"
    assert (recs[30416]["array_job_id"], recs[30416]["array_task_id"]) == (30416, 1)
    assert recs[30417]["job"] == "30417+0" and recs[30418]["job"] == "30417+1"
    two = recs[30420]
    assert two["job_name"] == "two|nodes" and two["nodes"] == ["c1", "c2"]
    assert two["num_nodes"] == 2 and two["gpus"] == 4 and two["array_job_id"] is None
    running = recs[30406]  # no time limit: no end yet ("NONE")
    assert running["state"] == "RUNNING" and running["end_epoch"] is None
    held = recs[30421]  # pending: squeue prints the request as tres-alloc; nothing is allocated
    assert held["state"] == "PENDING" and held["tres_allocated"] == {} and held["gpus"] == 0
    assert held["start_epoch"] is None and held["reason"] == "JobHeldUser"


def test_squeue_text_skips_what_is_not_a_record() -> None:
    assert slurmcli.parse_squeue_text("squeue: error: bad\n\n12|RUNNING\n") == []


def test_newer_integer_wrappers() -> None:
    data = {
        "jobs": [
            {
                "job_id": 7,
                "array": {"job_id": 0, "task_id": {"set": False, "number": 0}},
                "het": {"job_id": 0, "job_offset": {"set": False, "number": 0}},
                "state": {"current": ["TIMEOUT"], "reason": "None"},
                "exit_code": {
                    "status": ["SIGNALED"],
                    "return_code": {"set": True, "number": 0},
                    "signal": {"id": {"set": True, "number": 15}, "name": "TERM"},
                },
                "time": {"start": 100, "end": 160, "elapsed": 60, "submission": 90},
                "nodes": "c1",
                "tres": {"allocated": [{"type": "gres", "name": "gpu", "count": 1}]},
            }
        ]
    }
    (rec,) = slurmcli.parse_sacct_json(data)
    assert rec["state"] == "TIMEOUT"
    assert rec["array_task_id"] is None
    assert rec["gpus"] == 1 and rec["elapsed_s"] == 60


def test_not_sacct_output() -> None:
    with pytest.raises(SlurmError):
        slurmcli.parse_sacct_json({"errors": []})


def test_missing_binary_is_slurm_error(tmp_path: Path) -> None:
    cli = slurmcli.SlurmCli(str(tmp_path), timeout=1)
    with pytest.raises(SlurmError):
        cli.job_live(1)


def _fake_bin(tmp_path: Path, name: str, script: str) -> None:
    path = tmp_path / name
    path.write_text("#!/bin/sh\n" + script)
    path.chmod(0o755)


def test_cli_merges_text_exit_codes(tmp_path: Path) -> None:
    fixture = FIXTURES / "sacct_18_19_22.json"
    _fake_bin(
        tmp_path,
        "sacct",
        f'case "$*" in *--json*) cat {fixture};; *) echo "18|{utc(1795625919)}|3:0";; esac\n',
    )
    cli = slurmcli.SlurmCli(str(tmp_path), timeout=5)
    rec = cli.job_accounting(18)
    assert rec is not None and (rec["exit_code"], rec["signal"]) == (3, 0)
    assert cli.job_accounting(999) is None


def test_cli_purged_job_is_none(tmp_path: Path) -> None:
    _fake_bin(
        tmp_path, "squeue", 'echo "slurm_load_jobs error: Invalid job id specified" >&2; exit 1\n'
    )
    _fake_bin(tmp_path, "sacct", 'case "$*" in *--json*) echo \'{"jobs": []}\';; esac\n')
    cli = slurmcli.SlurmCli(str(tmp_path), timeout=5)
    assert cli.job_live(5) is None
    assert cli.job_state(5) is None


@pytest.mark.usefixtures("new_york")  # the caller's zone must not matter
def test_jobs_live_asks_squeue_in_utc_for_the_given_ids(tmp_path: Path) -> None:
    line = squeue_line(JobID=7, State="COMPLETING", exit_code=15, StartTime="2026-11-01T05:30:00",
                       EndTime="2026-11-01T05:31:00", NodeList="c1", ArrayJobID=7)  # fmt: skip
    other = squeue_line(JobID=8, State="RUNNING", ArrayJobID=8)
    _fake_bin(
        tmp_path, "squeue", f'echo "$TZ $*" > {tmp_path}/args\nprintf "%s\\n" "{line}" "{other}"\n'
    )
    cli = slurmcli.SlurmCli(str(tmp_path), timeout=5)
    (rec,) = cli.jobs_live([7, 9])
    assert (rec["job_id"], rec["start_epoch"], rec["elapsed_s"], rec["signal"]) == (
        7,
        1793511000,
        60,
        15,
    )
    assert (tmp_path / "args").read_text().split() == [
        "UTC", "-h", "-t", "all", "-O", slurmcli.SQUEUE_FORMAT, "-j", "7,9"
    ]  # fmt: skip


@pytest.mark.usefixtures("new_york")
def test_sacct_runs_in_utc_whatever_the_callers_zone(tmp_path: Path) -> None:
    fixture = FIXTURES / "sacct_18_19_22.json"
    script = (
        f'echo "$TZ $*" >> {tmp_path}/args\n'
        f'case "$*" in *--json*) cat {fixture};; *) echo "18|{utc(1795625919)}|3:0";; esac\n'
    )
    _fake_bin(tmp_path, "sacct", script)
    cli = slurmcli.SlurmCli(str(tmp_path), timeout=5)
    # 01:30 New York time on the day its clocks go back is 05:30 or 06:30 UTC: not in UTC
    assert cli.accounting(1793511000, 1793514600) != []
    rec = cli.job_accounting(18)
    assert rec is not None and (rec["exit_code"], rec["signal"]) == (3, 0)  # text merged
    calls = (tmp_path / "args").read_text().splitlines()
    assert all(c.startswith("UTC ") for c in calls), calls
    assert "-S 2026-11-01T05:30:00 -E 2026-11-01T06:30:00" in calls[0]
