"""The final_state collector: one poller per controller, batched sacct calls, no lost runs."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest
from squeue_text import squeue_line

from slurm_hooks import finalstate
from slurm_hooks.hookconfig import load_hook_config
from slurm_hooks.slurmcli import SQUEUE_FORMAT

FIXTURES = Path(__file__).parent / "fixtures"


def _site(tmp_path: Path) -> tuple[object, Path]:
    """A hook config whose slurm_bin holds a stub sacct that logs each call."""
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    calls = tmp_path / "calls.log"
    fixture = FIXTURES / "sacct_18_19_22.json"
    sacct = bin_dir / "sacct"
    sacct.write_text(
        "#!/bin/sh\n"
        f'echo "$*" >> {calls}\n'
        f'case "$*" in *--json*) cat {fixture};; *) echo "18|2026-11-25T16:18:39|3:0";; esac\n'
    )
    sacct.chmod(0o755)
    squeue = bin_dir / "squeue"
    squeue.write_text("#!/bin/sh\necho '{\"jobs\": []}'\n")
    squeue.chmod(0o755)
    cfg = tmp_path / "config.toml"
    cfg.write_text(
        f'cluster = "cptest"\nspool_dir = "{tmp_path}/spool"\nslurm_bin = "{bin_dir}"\n'
        'host = "ctl"\n'
    )
    return load_hook_config({"COMPUTEPROOF_CONFIG": str(cfg)}), calls


def _marker(config: object, job_id: int, deadline: int = 2**40) -> None:
    directory = finalstate.pending_dir(config)  # type: ignore[arg-type]
    os.makedirs(directory, exist_ok=True)
    with open(os.path.join(directory, f"{job_id}.0.json"), "w") as f:
        json.dump({"job": str(job_id), "job_id": job_id, "run": 0, "start": None,
                   "deadline": deadline}, f)  # fmt: skip


def _events(config: object) -> list[dict[str, object]]:
    new = Path(config.spool_dir) / "new"  # type: ignore[attr-defined]
    return [json.loads(p.read_text()) for p in sorted(new.glob("*.json"))]


def test_one_sacct_call_per_pass_for_all_pending_jobs(tmp_path: Path) -> None:
    config, calls = _site(tmp_path)
    for job_id in (18, 19, 22):
        _marker(config, job_id)
    written = finalstate.collect(config, poll_s=0.01, idle_exit_s=0.05)  # type: ignore[arg-type]
    assert written == 3
    states = {e["job_id"]: e["payload"]["state"] for e in _events(config)}  # type: ignore[index]
    assert states == {18: "FAILED", 19: "COMPLETED", 22: "CANCELLED"}
    json_calls = [c for c in calls.read_text().splitlines() if "--json" in c]
    assert len(json_calls) == 1 and "-j 18,19,22" in json_calls[0]
    assert not list(Path(finalstate.pending_dir(config)).glob("*.json"))  # type: ignore[arg-type]
    assert all(e["type"] == "final_state" and e["host"] == "ctl" for e in _events(config))


def test_a_second_collector_defers_to_the_running_one(tmp_path: Path) -> None:
    config, calls = _site(tmp_path)
    _marker(config, 19)
    lock = finalstate._try_lock(finalstate.pending_dir(config))  # type: ignore[arg-type]
    assert lock is not None
    try:
        assert finalstate.collect(config, poll_s=0.01, idle_exit_s=0.05) == 0  # type: ignore[arg-type]
        assert not calls.exists()  # it did not poll Slurm at all
    finally:
        os.close(lock)
    assert finalstate.collect(config, poll_s=0.01, idle_exit_s=0.05) == 1  # type: ignore[arg-type]


def test_an_epilog_does_not_fork_while_a_collector_runs(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """With the collector's lock held, queue_final_state only leaves its marker (no fork
    per job in a burst); with the lock free it starts a collector."""
    config, _ = _site(tmp_path)
    spawned: list[object] = []
    monkeypatch.setattr(finalstate, "_spawn_collector", spawned.append)
    directory = finalstate.pending_dir(config)  # type: ignore[arg-type]
    os.makedirs(directory, exist_ok=True)
    lock = finalstate._try_lock(directory)
    try:
        finalstate.queue_final_state(config, "19", 19, 0)  # type: ignore[arg-type]
        assert spawned == [] and (Path(directory) / "19.0.json").exists()
    finally:
        os.close(lock)  # type: ignore[arg-type]
    finalstate.queue_final_state(config, "22", 22, 0)  # type: ignore[arg-type]
    assert spawned == [config]
    assert finalstate.collect(config, poll_s=0.01, idle_exit_s=0.05) == 2  # type: ignore[arg-type]


def test_unknown_job_past_its_deadline_is_counted_not_invented(tmp_path: Path) -> None:
    config, _ = _site(tmp_path)
    _marker(config, 77, deadline=0)  # sacct and squeue know nothing of job 77
    assert finalstate.collect(config, poll_s=0.01, idle_exit_s=0.05) == 0  # type: ignore[arg-type]
    assert _events(config) == []
    counter = Path(config.spool_dir) / "hook-failures"  # type: ignore[attr-defined]
    assert counter.read_text().strip() == "1"
    assert not list(Path(finalstate.pending_dir(config)).glob("*.json"))  # type: ignore[arg-type]


def test_requeued_runs_without_start_time_are_told_apart_by_run_number(tmp_path: Path) -> None:
    """When EpilogSlurmctld had no start time, run N takes sacct's N-th record of the job."""
    import copy

    config, _ = _site(tmp_path)
    data = json.loads((FIXTURES / "sacct_18_19_22.json").read_text())
    rec = next(j for j in data["jobs"] if j["job_id"] == 19)
    first = copy.deepcopy(rec)
    first["state"]["current"] = "REQUEUED"
    first["time"]["start"] -= 100
    first["time"]["end"] = first["time"]["start"] + 10
    data["jobs"] = [first, rec]
    two_runs = tmp_path / "two_runs.json"
    two_runs.write_text(json.dumps(data))
    sacct = Path(config.slurm_bin) / "sacct"  # type: ignore[attr-defined]
    sacct.write_text(f'#!/bin/sh\ncase "$*" in *--json*) cat {two_runs};; esac\n')
    for run in (0, 1):
        directory = finalstate.pending_dir(config)  # type: ignore[arg-type]
        os.makedirs(directory, exist_ok=True)
        with open(os.path.join(directory, f"19.{run}.json"), "w") as f:
            json.dump({"job": "19", "job_id": 19, "run": run, "start": None,
                       "deadline": 2**40}, f)  # fmt: skip
    assert finalstate.collect(config, poll_s=0.01, idle_exit_s=0.05) == 2  # type: ignore[arg-type]
    states = {e["run"]: e["payload"]["state"] for e in _events(config)}  # type: ignore[index]
    assert states == {0: "REQUEUED", 1: "COMPLETED"}


def test_batch_job_waits_for_its_batch_step(tmp_path: Path) -> None:
    """A batch job is final in accounting only once its batch step ended (with the exit
    code and signal); until then the collector keeps polling."""
    import copy

    config, _ = _site(tmp_path)
    data = json.loads((FIXTURES / "sacct_18_19_22.json").read_text())
    rec = next(j for j in data["jobs"] if j["job_id"] == 19)
    early = copy.deepcopy(rec)
    early["steps"] = []  # slurmdbd has the job's end but not yet its batch step
    state = tmp_path / "sacct.json"
    state.write_text(json.dumps({**data, "jobs": [early]}))
    sacct = Path(config.slurm_bin) / "sacct"  # type: ignore[attr-defined]
    sacct.write_text(f'#!/bin/sh\ncase "$*" in *--json*) cat {state};; esac\n')
    directory = finalstate.pending_dir(config)  # type: ignore[arg-type]
    os.makedirs(directory, exist_ok=True)
    marker = os.path.join(directory, "19.0.json")
    with open(marker, "w") as f:
        json.dump({"job": "19", "job_id": 19, "run": 0, "start": None, "batch": True,
                   "deadline": 2**40}, f)  # fmt: skip
    markers = finalstate._markers(directory)
    assert finalstate._collect_once(config, markers) == 0  # type: ignore[arg-type]
    assert os.path.exists(marker) and _events(config) == []
    state.write_text(json.dumps({**data, "jobs": [rec]}))  # the batch step arrived
    assert finalstate._collect_once(config, finalstate._markers(directory)) == 1  # type: ignore[arg-type]
    assert not os.path.exists(marker)


def _owed_marker(config: object, job_id: int, deadline: int = 2**40, exit2: str = "0:0") -> None:
    """A marker as EpilogSlurmctld leaves it: owed a completed event."""
    directory = finalstate.pending_dir(config)  # type: ignore[arg-type]
    os.makedirs(directory, exist_ok=True)
    completed = {"time": "2026-11-25T16:18:40.000001Z", "run_source": "prolog",
                 "ids": {"array_job_id": None, "array_task_id": None},
                 "env": {"SLURM_JOB_EXIT_CODE2": exit2, "SLURM_JOB_USER": "alice",
                         "SLURM_JOB_NODELIST": "c[1-2]"}}  # fmt: skip
    with open(os.path.join(directory, f"{job_id}.0.json"), "w") as f:
        json.dump({"job": str(job_id), "job_id": job_id, "run": 0, "start": None,
                   "batch": None, "deadline": deadline, "completed": completed}, f)  # fmt: skip


def test_completed_comes_from_one_squeue_call_for_every_ended_job(tmp_path: Path) -> None:
    config, calls = _site(tmp_path)
    lines = [
        squeue_line(JobID=18, State="COMPLETING", exit_code=768, StartTime="2026-11-25T16:58:39",
                    EndTime="2026-11-25T16:58:41", NodeList="c[1-2]", NumNodes=2, restartcnt=0,
                    BatchFlag=0, tres_alloc="cpu=2,gres/gpu=4,gres/gpu:a100=4", ArrayJobID=18),
        squeue_line(JobID=19, State="COMPLETING", exit_code=15, StartTime="2026-11-25T16:58:39",
                    EndTime="2026-11-25T16:58:40", NodeList="c1", NumNodes=1, restartcnt=0,
                    tres_alloc="cpu=1,gres/gpu=1", ArrayJobID=19),
    ]  # fmt: skip
    (tmp_path / "squeue.txt").write_text("\n".join(lines) + "\n")
    squeue = Path(config.slurm_bin) / "squeue"  # type: ignore[attr-defined]
    squeue.write_text(f'#!/bin/sh\necho "squeue $*" >> {calls}\ncat {tmp_path / "squeue.txt"}\n')
    _owed_marker(config, 18, exit2="3:0")
    _owed_marker(config, 19)
    _owed_marker(config, 22)  # squeue no longer shows it: sacct's record fills it
    written = finalstate.collect(config, poll_s=0.01, idle_exit_s=0.05)  # type: ignore[arg-type]
    assert written == 6
    squeue_calls = [c for c in calls.read_text().splitlines() if c.startswith("squeue")]
    assert squeue_calls == [f"squeue -h -t all -O {SQUEUE_FORMAT} -j 18,19,22"]
    done = {e["job_id"]: e for e in _events(config) if e["type"] == "completed"}
    assert all(e["time"] == "2026-11-25T16:18:40.000001Z" for e in done.values())
    p18, p19, p22 = (done[j]["payload"] for j in (18, 19, 22))
    assert (p18["exit_code"], p18["signal"], p18["gpus"], p18["elapsed_s"]) == (3, 0, 4, 2)  # type: ignore[index]
    assert p18["gpu_seconds"] == 8 and p18["slurm_record"] == "squeue"  # type: ignore[index]
    # the environment reads 0:0 for a signalled job: squeue's signal wins
    assert (p19["exit_code"], p19["signal"], p19["exit_code_env"]) == (0, 15, "0:0")  # type: ignore[index]
    assert p22["slurm_record"] == "sacct" and p22["state_seen"] == "CANCELLED"  # type: ignore[index]
    finals = {e["job_id"]: e["payload"]["state"] for e in _events(config)  # type: ignore[index]
              if e["type"] == "final_state"}  # fmt: skip
    assert finals == {18: "FAILED", 19: "COMPLETED", 22: "CANCELLED"}
    assert not list(Path(finalstate.pending_dir(config)).glob("*.json"))  # type: ignore[arg-type]


def test_completed_from_the_environment_alone_when_slurm_never_reports(tmp_path: Path) -> None:
    config, _ = _site(tmp_path)
    _owed_marker(config, 77, deadline=0, exit2="3:0")  # sacct and squeue know nothing of it
    assert finalstate.collect(config, poll_s=0.01, idle_exit_s=0.05) == 1  # type: ignore[arg-type]
    (event,) = _events(config)
    p = event["payload"]
    assert event["type"] == "completed" and p["slurm_record"].startswith("unavailable")  # type: ignore[index,union-attr]
    assert (p["exit_code"], p["signal"], p["user"]) == (3, 0, "alice")  # type: ignore[index]
    assert p["gpus"] is None and p["tres_allocated"] is None and p["elapsed_s"] is None  # type: ignore[index]
    assert p["nodes"] == ["c1", "c2"]  # type: ignore[index]
    counter = Path(config.spool_dir) / "hook-failures"  # type: ignore[attr-defined]
    assert counter.read_text().strip() == "1"  # the final state, never reported, is counted
