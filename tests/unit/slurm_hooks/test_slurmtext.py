"""Slurm's value formats, and ``squeue -O`` of the safe fields over real captured output
(fixtures/slurm-22.05 and slurm-24.11, capture.py)."""

from __future__ import annotations

import base64
import calendar
import os
import time
from datetime import datetime

import pytest
from fakeslurm import PHASED, fixture_dir, manifest, roles
from hypothesis import given
from hypothesis import strategies as st

from slurm_hooks import slurmtext as scontrol
from slurm_hooks.slurmtext import SAFE_FIELDS, parse_squeue_safe


def safe(version: str, moment: str) -> dict[int, dict[str, object]]:
    text = (fixture_dir(version) / f"squeue_safe.{moment}.txt").read_bytes().decode()
    return {int(r["job_id"]): r for r in parse_squeue_safe(text)}  # type: ignore[call-overload]


@pytest.mark.parametrize("version", PHASED)
def test_safe_squeue_running(version: str) -> None:
    ids = roles(version)
    recs = safe(version, "running")
    attacker = recs[ids["attacker"]]
    assert (attacker["state"], attacker["nodes"], attacker["gpus"]) == ("RUNNING", ["c1"], 1)
    assert (attacker["user"], attacker["account"], attacker["qos"]) == (
        "cpalice",
        "physics",
        "normal",
    )
    assert attacker["tres_allocated"] == {
        "cpu": 1,
        "mem": 500 << 20,
        "node": 1,
        "billing": 1,
        "gres/gpu": 1,
        "gres/gpu:a100": 1,
    }
    assert attacker["elapsed_s"] is None and attacker["restarts"] == 0 and attacker["batch"]
    assert "job_name" not in attacker and "work_dir" not in attacker
    pending = recs[ids["held"]]
    assert (pending["state"], pending["reason"], pending["nodes"]) == ("PENDING", "JobHeldUser", [])
    assert pending["start_epoch"] is None and pending["tres_allocated"] == {}
    two = recs[ids["two_node"]]
    assert (two["nodes"], two["num_nodes"], two["gpus"]) == (["c1", "c2"], 2, 2)


@pytest.mark.parametrize("version", PHASED)
def test_safe_squeue_ended(version: str) -> None:
    ids = roles(version)
    recs = safe(version, "ended")
    failed = recs[ids["attacker"]]
    assert (failed["state"], failed["exit_code"], failed["signal"]) == ("FAILED", 3, 0)
    assert failed["reason"] == "NonZeroExitCode"
    assert failed["elapsed_s"] == int(failed["end_epoch"]) - int(failed["start_epoch"])  # type: ignore[call-overload]
    # 22.05 prints the wait status (15), 24.11 "0:15": the same signal either way
    cancelled = recs[ids["cancelled"]]
    assert (cancelled["state"], cancelled["exit_code"], cancelled["signal"]) == ("CANCELLED", 0, 15)
    requeued = recs[ids["requeued"]]
    assert (requeued["state"], requeued["restarts"]) == ("COMPLETED", 1)
    array = [r for r in recs.values() if r.get("array_job_id") == ids["array"]]
    assert sorted(str(r["job"]) for r in array) == [f"{ids['array']}_0", f"{ids['array']}_1"]
    het = recs[ids["het"]]
    assert (het["job"], het["het_job_id"], het["het_job_offset"]) == (
        f"{ids['het']}+0",
        ids["het"],
        0,
    )
    assert recs[ids["timeout"]]["state"] == "RUNNING"


@pytest.mark.parametrize("version", PHASED)
def test_a_hostile_name_never_reaches_the_safe_read(version: str) -> None:
    """The captures were taken while a job named with forged records and Key=Value words
    ran: the safe read has exactly one record per job, none of them forged."""
    ids = roles(version)
    name = base64.b64decode(str(manifest(version)["hostile"]["name"]))  # type: ignore[index]
    for moment in ("running", "ended", "late"):
        raw = (fixture_dir(version) / f"squeue_safe.{moment}.txt").read_bytes()
        assert name not in raw and b"2020-01-01" not in raw
        text = raw.decode()
        lines = [ln for ln in text.split("\n") if ln]
        assert len(parse_squeue_safe(text)) == len(lines)
        victim = [r for r in parse_squeue_safe(text) if r["job_id"] == ids["victim"]]
        assert len(victim) <= 1
        for rec in victim:
            assert rec["gpus"] == 1 and rec["nodes"] == ["c1"] and rec["qos"] == "normal"


def test_safe_lines_are_checked_field_by_field() -> None:
    good = "|".join(
        [
            "7",
            "7",
            "N/A",
            "N/A",
            "N/A",
            "RUNNING",
            "0",
            "0",
            "1",
            "2026-01-01T00:00:00",
            "N/A",
            "2026-01-01T00:00:01",
            "NONE",
            "UNLIMITED",
            "c1",
            "1",
            "1",
            "cpu=1",
            "u",
            "5",
            "5",
            "a",
            "p",
            "q",
            "why|ever",
        ]
    )
    (rec,) = parse_squeue_safe(good + "\nsqueue: error: x\n\n12|RUNNING\n")
    assert rec["reason"] == "why|ever" and len(SAFE_FIELDS) == 25
    assert parse_squeue_safe(good.replace("c1", "c[1")) == []  # a node list that is no list


@pytest.mark.parametrize(
    ("text", "want"),
    [
        ("768", (3, 0)),
        ("15", (0, 15)),
        ("0:15", (0, 15)),
        ("3:0", (3, 0)),
        ("", None),
        ("x:1", None),
        ("N/A", None),
    ],
)
def test_exit_status_both_forms(text: str, want: tuple[int, int] | None) -> None:
    assert scontrol.parse_exit_status(text) == want


def test_tres_skips_what_is_not_a_count() -> None:
    assert scontrol.parse_tres("cpu=2,bogus,=3,gres/gpu=x,mem=1G") == {"cpu": 2, "mem": 1 << 30}


def test_local_time_to_epoch(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("TZ", "UTC")
    time.tzset()
    try:
        assert scontrol.parse_time("2026-11-25T16:57:54") == 1795625874
        assert scontrol.rfc3339(1795625874) == "2026-11-25T16:57:54Z"
    finally:
        monkeypatch.delenv("TZ")
        time.tzset()
    assert os.environ.get("TZ") is None


@pytest.mark.parametrize(
    ("text", "want"),
    [("100M", 100 << 20), ("1.5G", 3 << 29), ("4096", 4096 << 20), ("2T", 2 << 40)],
)
def test_sizes(text: str, want: int) -> None:
    assert scontrol.parse_size(text) == want


@pytest.mark.parametrize(
    ("text", "want"),
    [("00:01:00", 60), ("1-00:00:00", 86400), ("05:30", 330), ("10", 600), ("UNLIMITED", None)],
)
def test_durations(text: str, want: int | None) -> None:
    assert scontrol.parse_duration(text) == want


def test_gres_indices_variants() -> None:
    assert scontrol.parse_gres_indices("gpu:a100:2(IDX:0,2),shard:0(IDX:N/A)") == [0, 2]
    assert scontrol.parse_gres_indices("gpu(IDX:3)") == [3]
    assert scontrol.parse_gres_indices("") == []


@given(st.datetimes(min_value=datetime(1, 1, 1), max_value=datetime(9999, 12, 31)))
def test_utc_time_is_calendar_timegm(when: datetime) -> None:
    text = when.strftime("%Y-%m-%dT%H:%M:%S").rjust(19, "0")
    assert scontrol.parse_time(text, utc=True) == calendar.timegm(when.timetuple())


def test_utc_time_ignores_the_local_zone(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("TZ", "America/New_York")
    time.tzset()
    try:
        # 01:30 on the day New York's clocks go back reads twice locally; in UTC it is one time
        assert scontrol.parse_time("2026-11-01T05:30:00", utc=True) == 1793511000
        assert scontrol.parse_time("NONE", utc=True) is None
    finally:
        monkeypatch.delenv("TZ")
        time.tzset()


def test_unchanged_lines_are_not_parsed_again() -> None:
    """The collector reads every job slurmctld holds each second: an ended job's line,
    unchanged since the last read, costs a lookup (CPU does not grow with ended jobs)."""
    text = (fixture_dir("22.05") / "squeue_safe.ended.txt").read_bytes().decode()
    seen: dict[str, dict[str, object]] = {}
    first = parse_squeue_safe(text, seen)
    again = parse_squeue_safe(text, seen)
    assert [id(r) for r in again] == [id(r) for r in first] and len(seen) == len(first)
    changed = text.replace("|RUNNING|", "|COMPLETING|", 1)
    third = parse_squeue_safe(changed, seen)
    assert sum(1 for a, b in zip(first, third, strict=True) if a is not b) == 1
    assert len(seen) == len(first)  # lines gone from the read are forgotten


def test_the_captures_used_the_format_the_collector_reads() -> None:
    """capture.py keeps its own copy of SAFE_FORMAT (it runs with the standard library
    alone, under any release's Python): the copy, and every capture made with it, must be
    what the collector asks squeue for."""
    import importlib.util

    from fakeslurm import FIXTURES

    from slurm_hooks.slurmtext import SAFE_FORMAT

    spec = importlib.util.spec_from_file_location("capture", FIXTURES / "capture.py")
    assert spec is not None and spec.loader is not None
    capture = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(capture)
    assert capture.SAFE_FORMAT == SAFE_FORMAT
    for version in ("22.05", "24.11", "25.11"):
        assert manifest(version)["safe_format"] == SAFE_FORMAT, version
