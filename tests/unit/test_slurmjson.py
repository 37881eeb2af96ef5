"""tests/slurmjson.py, the integration tests' reading of Slurm's JSON across releases."""

from __future__ import annotations

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from slurmjson import expand_nodes, slurm_json


def test_a_24_11_record_reads_as_22_05_prints_it() -> None:
    text = (
        '{"jobs": [{"job_id": 7, "state": {"current": ["PENDING", "REQUEUED"], "reason": "x"},'
        ' "array": {"task_id": {"set": false, "infinite": false, "number": 0}},'
        ' "exit_code": {"status": ["EXITED"], "return_code": {"set": true, "number": 3}},'
        ' "time": {"limit": {"set": true, "infinite": true, "number": 0}, "end": 5},'
        ' "steps": [{"state": ["COMPLETED"], "step": {"name": "batch"}}],'
        ' "nodes": ["c1", "c2"]}]}'
    )
    (job,) = slurm_json(text)["jobs"]
    assert job["state"] == {"current": "REQUEUED", "reason": "x"}  # as 22.05 names it
    assert job["array"]["task_id"] is None
    assert job["exit_code"] == {"status": "EXITED", "return_code": 3}
    assert job["time"] == {"limit": None, "end": 5}
    assert job["steps"][0]["state"] == "COMPLETED"
    assert job["nodes"] == ["c1", "c2"]  # a list of names, not a state: kept


def test_a_22_05_record_is_unchanged() -> None:
    text = (
        '{"jobs": [{"job_id": 7, "job_state": "RUNNING", "array": {"task_id": 3},'
        ' "exit_code": {"status": "COMPLETED", "return_code": 0}}]}'
    )
    assert slurm_json(text) == {
        "jobs": [
            {
                "job_id": 7,
                "job_state": "RUNNING",
                "array": {"task_id": 3},
                "exit_code": {"status": "COMPLETED", "return_code": 0},
            }
        ]
    }


def test_node_lists_expand() -> None:
    assert expand_nodes("c[1-2]") == ["c1", "c2"]
    assert expand_nodes("c2,c1") == ["c1", "c2"]
    assert expand_nodes("c[1,3-4]") == ["c1", "c3", "c4"]
