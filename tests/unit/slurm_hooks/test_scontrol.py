"""Parsing of `scontrol show job -o -d` lines captured from the test cluster."""

from __future__ import annotations

import calendar
import os
import time
from datetime import datetime
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

from computeproof.errors import SlurmError
from slurm_hooks import scontrol

FIXTURES = Path(__file__).parent / "fixtures"


def line(name: str, job_id: int) -> str:
    for text in (FIXTURES / name).read_text().splitlines():
        if text.startswith(f"JobId={job_id} "):
            return text
    raise AssertionError(f"no JobId={job_id} in {name}")


def test_two_node_gpu_job() -> None:
    fields, nodes = scontrol.parse_show_job(line("scontrol_2node_gpu.txt", 9))
    assert fields["JobId"] == "9"
    assert fields["JobName"] == "gpu2"
    assert fields["Restarts"] == "0"
    assert fields["AllocNode:Sid"] == "localhost:5341"
    assert fields["CPUs/Task"] == "1"
    assert scontrol.parse_user(fields["UserId"]) == ("root", 0)
    tres = scontrol.parse_tres(fields["TRES"])
    assert tres == {
        "cpu": 2,
        "mem": 1000 << 20,
        "node": 2,
        "billing": 2,
        "gres/gpu": 4,
        "gres/gpu:a100": 4,
    }
    assert scontrol.gpu_count(tres) == 4
    assert nodes == [
        {"Nodes": "c[1-2]", "CPU_IDs": "1", "Mem": "500", "GRES": "gpu:a100:2(IDX:1-2)"}
    ]
    assert scontrol.parse_gres_indices(nodes[0]["GRES"]) == [1, 2]
    # Keys after the node group are the job's again.
    assert fields["WorkDir"] == "/tmp"
    assert fields["TresPerNode"] == "gres:gpu:2"


def test_array_and_het_ids() -> None:
    fields, _ = scontrol.parse_show_job(line("scontrol_array.txt", 19))
    assert (fields["ArrayJobId"], fields["ArrayTaskId"]) == ("19", "2")
    het, _ = scontrol.parse_show_job(line("scontrol_het.txt", 21))
    assert (het["HetJobId"], het["HetJobOffset"]) == ("20", "1")
    assert scontrol.unset(het["StartTime"])
    assert scontrol.parse_time(het["StartTime"]) is None


def test_values_with_spaces_continue() -> None:
    fields, _ = scontrol.parse_show_job("JobId=5 JobName=my job name UserId=a(1) Command=/x -v")
    assert fields["JobName"] == "my job name"
    assert fields["Command"] == "/x -v"


def test_no_job_id() -> None:
    with pytest.raises(SlurmError):
        scontrol.parse_show_job("slurm_load_jobs error: Invalid job id specified")


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
