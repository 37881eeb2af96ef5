"""The controller's collector over real captured Slurm output: one cheap read a poll,
batched structured reads, every job's scheduled/completed/final_state written once."""

from __future__ import annotations

import base64
import json
from pathlib import Path

import pytest
from fakeslurm import PHASED, VERSIONS, calls, install, manifest, roles

from computeproof.config import Config
from computeproof.errors import SlurmError
from computeproof.event import check_event
from computeproof.spool import Spool, is_spooled, read_events
from slurm_hooks import controller
from slurm_hooks.controller import Collector, Run, run_numbers
from slurm_hooks.jobinfo import AccountingRecord
from slurm_hooks.slurmcli import SlurmCli
from slurm_hooks.slurmtext import SAFE_FORMAT


class Clock:
    """A clock the test moves; it starts after the captures' jobs ended."""

    def __init__(self, now: float = 1_796_500_000.0) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now


def site(tmp_path: Path) -> Config:
    return Config(
        cluster="cptest",
        spool_dir=str(tmp_path / "spool"),
        run_dir=str(tmp_path / "run"),
        slurm_bin=str(tmp_path / "bin"),
        host="ctl",
    )


def spooled(directory: Path) -> list[bytes]:
    """The events of a spool directory's files (a poll's batch holds several)."""
    files = sorted(directory.iterdir()) if directory.is_dir() else []
    return [e for p in files if is_spooled(p.name) for e in read_events(str(p))]


def events(config: Config) -> list[dict[str, object]]:
    return [check_event(json.loads(e)) for e in spooled(Path(config.spool_dir) / "new")]


def by_key(config: Config) -> dict[tuple[int, int, str], dict[str, object]]:
    out: dict[tuple[int, int, str], dict[str, object]] = {}
    for e in events(config):
        key = (int(e["job_id"]), int(e["run"]), str(e["type"]))  # type: ignore[call-overload]
        assert key not in out, f"two events for {key}"
        out[key] = e
    return out


def payload(event: dict[str, object]) -> dict[str, object]:
    p = event["payload"]
    assert isinstance(p, dict)
    return p


def hostile(version: str, key: str) -> bytes:
    return base64.b64decode(str(manifest(version)["hostile"][key]))  # type: ignore[index]


def run_through(tmp_path: Path, version: str) -> tuple[Config, Clock, Path]:
    """Poll while the jobs run, once they ended, and once accounting has them: at each
    moment twice, a second apart (a structured read waits while runs are being
    allocated: for the poll after)."""
    config, clock, log = site(tmp_path), Clock(), tmp_path / "log"
    install(Path(config.slurm_bin), version, "running", log)
    collector = Collector(config, SlurmCli(config.slurm_bin, timeout=10), clock=clock)
    collector.poll()
    assert collector.written == 0  # new allocations: the structured read waits a poll
    for moment in ("running", "ended", "late"):
        install(Path(config.slurm_bin), version, moment, log)
        if moment != "running":
            clock.now += 10
            collector.poll()
        clock.now += 1
        collector.poll()
    return config, clock, log


@pytest.mark.parametrize("version", PHASED)
def test_every_job_recorded_once_with_slurms_values(tmp_path: Path, version: str) -> None:
    config, _, log = run_through(tmp_path, version)
    ids = roles(version)
    got = by_key(config)
    victim = payload(got[(ids["victim"], 0, "scheduled")])
    assert (victim["user"], victim["account"], victim["job_name"]) == ("cpbob", "biology", "victim")
    assert (victim["gpus"], victim["nodes"], victim["source"]) == (1, ["c1"], "squeue --json")
    assert victim["gpus_per_node"] == {"c1": 1} and victim["recorded_by"] == "collector"
    done = payload(got[(ids["victim"], 0, "completed")])
    assert (done["exit_code"], done["signal"], done["gpus"]) == (0, 0, 1)
    assert done["gpu_seconds"] == done["elapsed_s"] and done["source"] == "squeue"
    final = payload(got[(ids["victim"], 0, "final_state")])
    assert (final["state"], final["exit_code"], final["source"]) == ("COMPLETED", 0, "sacct")
    # the attacker's bytes are recorded exactly (not UTF-8: base64 in an object) and
    # change nothing else of any event
    attacker = payload(got[(ids["attacker"], 0, "scheduled")])
    assert base64.b64decode(attacker["job_name"]["non_utf8"]) == hostile(version, "name")  # type: ignore[index]
    assert base64.b64decode(attacker["work_dir"]["non_utf8"]) == hostile(version, "work_dir")  # type: ignore[index]
    assert (attacker["user"], attacker["gpus"], attacker["qos"]) == ("cpalice", 1, "normal")
    failed = payload(got[(ids["attacker"], 0, "completed")])
    assert (failed["exit_code"], failed["signal"], failed["reason"]) == (3, 0, "NonZeroExitCode")
    assert payload(got[(ids["attacker"], 0, "final_state")])["state"] == "FAILED"
    assert (payload(got[(ids["attacker"], 0, "final_state")])["exit_code"]) == 3  # text merged
    cancelled = payload(got[(ids["cancelled"], 0, "completed")])
    assert (cancelled["exit_code"], cancelled["signal"]) == (0, 15)
    cancelled_final = payload(got[(ids["cancelled"], 0, "final_state")])
    assert (cancelled_final["state"], cancelled_final["batch_signal"]) == ("CANCELLED", 15)
    # a requeued job: run 0 was requeued between two polls (never seen running), run 1 ran
    requeued = ids["requeued"]
    assert payload(got[(requeued, 0, "final_state")])["state"] == "REQUEUED"
    assert payload(got[(requeued, 0, "completed")])["source"] == "sacct"
    assert payload(got[(requeued, 1, "final_state")])["state"] == "COMPLETED"
    assert payload(got[(requeued, 1, "completed")])["source"] == "squeue"
    # het: the second component ends without a batch step of its own, and settles
    het_finals = [
        e
        for (j, _, t), e in got.items()
        if t == "final_state" and str(e["job"]).startswith(f"{ids['het']}+")
    ]
    assert sorted(str(e["job"]) for e in het_finals) == [f"{ids['het']}+0", f"{ids['het']}+1"]
    assert all(payload(e)["source"] == "sacct" for e in het_finals)
    # the held job never ran: nothing yet
    assert not [k for k in got if k[0] == ids["held"]]
    # one cheap read a poll, at most one structured read, accounting batched
    squeue = calls(log, "squeue")
    assert [c for c in squeue if SAFE_FORMAT in c] and len(squeue) <= 6 + 2
    assert len([c for c in squeue if "--json" in c]) <= 2
    # accounting batched: a poll reads the settled records of every run owed one as text
    # of fields no user sets (the runs, their batch steps); the structured read (JSON +
    # exit-code text) only for a run no poll saw allocated (the requeued job's first),
    # whose scheduled only accounting can give
    sacct = calls(log, "sacct")
    assert len([c for c in sacct if "--noconvert" in c]) <= 2 * 3
    assert any(f"{ids['victim']},{ids['attacker']}" in c for c in sacct if "--noconvert" in c)
    assert {c.split(" -j ")[1] for c in sacct if "--json" in c} <= {str(requeued)}
    assert len([c for c in sacct if "--helpformat" in c]) == 1  # once: does it print Restarts
    for e in events(config):
        assert e["host"] == "ctl" and e["cluster"] == "cptest"
        assert str(e["time"]).endswith(".000000Z")  # Slurm's time: rewritten alike


@pytest.mark.parametrize("version", PHASED)
def test_a_restarted_collector_writes_nothing_twice(tmp_path: Path, version: str) -> None:
    config, clock, _ = run_through(tmp_path, version)
    before = {e["id"] for e in events(config)}
    again = Collector(config, SlurmCli(config.slurm_bin, timeout=10), clock=clock)
    for _ in range(3):
        clock.now += 10
        again.poll()
    assert again.written == 0
    assert {e["id"] for e in events(config)} == before


@pytest.mark.parametrize("version", VERSIONS)
def test_the_sweep_catches_up_on_jobs_ended_while_down(tmp_path: Path, version: str) -> None:
    """Started after the jobs ran and were purged: accounting alone records them."""
    config, clock, log = site(tmp_path), Clock(), tmp_path / "log"
    install(Path(config.slurm_bin), version, "late", log)
    # accounting's window read is what the sweep asks for
    sacct = Path(config.slurm_bin) / "sacct"
    window = Path(__file__).parent / "fixtures" / f"slurm-{version}"
    sacct.write_text(
        sacct.read_text()
        .replace("sacct.json", "sacct_window.json")
        .replace("sacct_exit.txt", "sacct_window_exit.txt")
    )
    assert (window / "sacct_window.json").exists()
    # and slurmctld holds none of them any more (purged after MinJobAge)
    (Path(config.slurm_bin) / "squeue").write_text(
        '#!/bin/sh\ncase "$*" in *--json*) echo \'{"jobs": []}\';; esac\n'
    )
    collector = Collector(config, SlurmCli(config.slurm_bin, timeout=10), clock=clock)
    collector.state.cursor = 1_796_400_000  # before the captured jobs ran
    collector.poll()
    ids = roles(version)
    got = by_key(config)
    first = payload(got[(ids["requeued"], 0, "final_state")])
    assert first["state"] == "REQUEUED"
    assert payload(got[(ids["requeued"], 1, "final_state")])["state"] == "COMPLETED"
    scheduled = payload(got[(ids["victim"], 0, "scheduled")])
    assert scheduled["source"] == "sacct --json" and scheduled["job_name"] == "victim"
    assert payload(got[(ids["timeout"], 0, "final_state")])["state"] == "TIMEOUT"
    assert any("-s CANCELLED,COMPLETED" in c for c in calls(log, "sacct"))


def test_run_numbers_of_accounting_without_restart_counts() -> None:
    """22.05's accounting has no restart count: runs are counted from the ones the
    controller numbered, by start time."""
    recs: list[AccountingRecord] = [
        {"job_id": 9, "start_epoch": 100},
        {"job_id": 9, "start_epoch": 200},
        {"job_id": 9, "start_epoch": 300},
    ]
    assert run_numbers(recs, []) == [0, 1, 2]
    assert run_numbers(recs, [Run(9, 2, "9", start=300)]) == [0, 1, None]
    assert run_numbers(recs[:2], [Run(9, 5, "9", start=400)]) == [3, 4]
    assert run_numbers(recs[1:], [Run(9, 0, "9", start=100)]) == [1, 2]
    assert run_numbers([{"job_id": 9, "restarts": 4}], []) == [4]


class Unreachable:
    """A backend whose every read fails as Slurm down would."""

    def __getattr__(self, name: str) -> object:
        def fail(*args: object, **kwargs: object) -> object:
            raise SlurmError("squeue failed: Unable to contact slurm controller")

        return fail


def test_slurm_down_is_logged_not_fatal(tmp_path: Path) -> None:
    config = site(tmp_path)
    collector = Collector(config, Unreachable(), clock=Clock())  # type: ignore[arg-type]
    assert collector.poll() == 0  # no exception, nothing invented


def test_no_final_state_is_counted_where_admins_look(tmp_path: Path) -> None:
    config, clock, log = site(tmp_path), Clock(), tmp_path / "log"
    install(Path(config.slurm_bin), "22.05", "ended", log)
    # accounting never learns of any job
    (Path(config.slurm_bin) / "sacct").write_text("#!/bin/sh\necho '{\"jobs\": []}'\n")
    collector = Collector(config, SlurmCli(config.slurm_bin, timeout=10), clock=clock)
    collector.poll()
    clock.now += controller.FINAL_DEADLINE + 1
    collector.poll()
    assert not [e for e in events(config) if e["type"] == "final_state"]
    for counter in (Path(config.spool_dir), Path(config.run_dir)):
        assert int((counter / "hook-failures").read_text()) >= 1
        last = (counter / "hook-failures.last").read_text()
        assert "no final state" in last or "no scheduled record" in last, last


def test_the_lock_admits_one_collector(tmp_path: Path) -> None:
    import os

    from computeproof.errors import ComputeProofError

    config = site(tmp_path)
    fd = controller.lock(config)
    try:
        with pytest.raises(ComputeProofError, match="another collector"):
            controller.lock(config)
    finally:
        os.close(fd)
    os.close(controller.lock(config))


def test_a_damaged_state_file_is_one_clear_error(tmp_path: Path) -> None:
    from computeproof.errors import ComputeProofError

    config = site(tmp_path)
    path = Path(config.spool_dir) / "controller" / "state.json"
    path.parent.mkdir(parents=True)
    path.write_text("{not json")
    with pytest.raises(ComputeProofError, match="move it away"):
        Collector(config, Unreachable(), clock=Clock())  # type: ignore[arg-type]


class Backend:
    """Slurm as fixed lists of records (captured ones, edited per test)."""

    def __init__(self, live: list[AccountingRecord], accounted: list[AccountingRecord]) -> None:
        self.live, self.accounted = live, accounted

    def live_jobs(self, detail: bool = False, job_ids: object = ()) -> list[AccountingRecord]:
        return self.live

    def jobs_accounting(self, job_ids: object, detail: bool = True) -> list[AccountingRecord]:
        return self.accounted

    def accounting(self, since: int, until: int, states: object = ()) -> list[AccountingRecord]:
        return []


class NoStructuredRead(Backend):
    """Slurm whose ``squeue --json`` fails (the cheap read and accounting work)."""

    def live_jobs(self, detail: bool = False, job_ids: object = ()) -> list[AccountingRecord]:
        if detail:
            raise SlurmError("squeue --json failed: Socket timed out")
        return self.live


@pytest.mark.parametrize("version", PHASED)
def test_a_run_settled_before_its_structured_read_still_gets_scheduled(
    tmp_path: Path, version: str
) -> None:
    """Accounting settled the run while slurmctld still held it, but no structured read
    succeeded before slurmctld let it go: its scheduled comes from accounting's JSON
    (a run is done only with scheduled and final_state)."""
    from slurm_hooks.slurmcli import decode_json, parse_sacct_json

    victim = roles(version)["victim"]
    raw = (Path(__file__).parent / "fixtures" / f"slurm-{version}" / "sacct.json").read_bytes()
    (accounted,) = [r for r in parse_sacct_json(decode_json(raw, "t")) if r["job_id"] == victim]
    config, clock = site(tmp_path), Clock()
    backend = NoStructuredRead([dict(accounted)], [accounted])  # type: ignore[list-item]
    collector = Collector(config, backend, clock=clock)  # type: ignore[arg-type]
    collector.poll()  # ended: completed
    clock.now += 10
    collector.poll()  # the structured read fails; accounting settles it: final_state
    assert sorted(t for (j, _, t) in by_key(config) if j == victim) == ["completed", "final_state"]
    backend.live = []  # slurmctld purged it
    clock.now += 10
    collector.poll()
    got = by_key(config)
    assert sorted(t for (j, _, t) in got if j == victim) == [
        "completed",
        "final_state",
        "scheduled",
    ]
    scheduled = payload(got[(victim, 0, "scheduled")])
    assert (scheduled["source"], scheduled["job_name"]) == ("sacct --json", "victim")
    run = collector.state.runs.get((victim, 0))
    assert run is None or run.done  # done, and forgotten once behind the sweep's cursor


@pytest.mark.parametrize("version", ["22.05", "24.11"])
def test_a_job_cancelled_before_it_ran_gets_its_final_state(tmp_path: Path, version: str) -> None:
    """Accounting shows such a job's cancel time as its start, on no nodes: its record is
    whole as it is (no node list or batch step will follow), while the same record of a
    job that ran means its nodes have not reached slurmdbd yet."""
    import copy

    from fakeslurm import fixture_dir

    from slurm_hooks.slurmcli import parse_sacct_json

    held = roles(version)["held"]
    raw = json.loads((fixture_dir(version) / "sacct.json").read_bytes().decode())
    (job,) = [j for j in raw["jobs"] if j["job_id"] == held]
    job["state"]["current"] = ["CANCELLED"] if version != "22.05" else "CANCELLED"
    job["time"]["start"] = job["time"]["end"] = 1_796_415_017
    (accounted,) = parse_sacct_json({"jobs": [job]})
    assert accounted["nodes"] == [] and accounted["start_epoch"] == 1_796_415_017
    live: AccountingRecord = {**copy.deepcopy(accounted), "state": "CANCELLED", "start_epoch": None}
    config, clock = site(tmp_path), Clock()
    collector = Collector(config, Backend([live], [accounted]), clock=clock)  # type: ignore[arg-type]
    collector.poll()
    clock.now += 10
    collector.poll()
    got = by_key(config)
    assert sorted(t for (j, _, t) in got if j == held) == ["completed", "final_state"]
    final = payload(got[(held, 0, "final_state")])
    assert (final["state"], final["start_epoch"], final["nodes"]) == ("CANCELLED", None, [])


@pytest.mark.parametrize("version", VERSIONS)
def test_every_release_every_job_once_in_accountings_state(tmp_path: Path, version: str) -> None:
    """Over any capture: each job that ran gets scheduled, completed and final_state once,
    and final_state says what accounting says."""
    from fakeslurm import fixture_dir

    from slurm_hooks.slurmcli import decode_json, parse_sacct_json

    config, _, _ = run_through(tmp_path, version)
    got = by_key(config)
    accounted = parse_sacct_json(
        decode_json((fixture_dir(version) / "sacct.json").read_bytes(), "t")
    )
    finals = {(j, r): payload(e)["state"] for (j, r, t), e in got.items() if t == "final_state"}
    assert finals
    by_job: dict[int, list[AccountingRecord]] = {}
    for rec in accounted:
        by_job.setdefault(rec["job_id"], []).append(rec)
    for (job_id, run_no), state in finals.items():
        runs = by_job[job_id]
        assert state == run_numbers_state(runs, run_no), (job_id, run_no)
        if runs[min(run_no, len(runs) - 1)]["start_epoch"] is not None:
            assert (job_id, run_no, "scheduled") in got and (job_id, run_no, "completed") in got


def run_numbers_state(runs: list[AccountingRecord], run_no: int) -> str:
    """Accounting's state of run ``run_no`` of a job (its records oldest first)."""
    numbers = run_numbers(runs, [])
    return next(r["state"] for r, n in zip(runs, numbers, strict=True) if n == run_no)


@pytest.mark.parametrize("version", PHASED[:1])
def test_events_the_spool_refused_are_written_at_the_next_poll(
    tmp_path: Path, version: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A poll's events go to the spool as one batch file; when the spool refuses it
    (disk full), none of them counts as written and the next poll writes them all."""
    from computeproof.errors import SpoolError
    from computeproof.spool import Spool

    config, clock, log = site(tmp_path), Clock(), tmp_path / "log"
    install(Path(config.slurm_bin), version, "running", log)
    collector = Collector(config, SlurmCli(config.slurm_bin, timeout=10), clock=clock)
    real = Spool.write_batch, Spool.write_many

    def full(self: Spool, batch: list[dict[str, object]], name: str = "") -> list[str]:
        raise SpoolError(f"cannot write event to spool {self.path}: No space left on device")

    collector.poll()  # runs allocated: their structured read waits a poll
    clock.now += 1
    monkeypatch.setattr(Spool, "write_batch", full)
    monkeypatch.setattr(Spool, "write_many", full)
    with pytest.raises(SpoolError):
        collector.poll()
    assert events(config) == [] and collector.written == 0
    monkeypatch.setattr(Spool, "write_batch", real[0])
    monkeypatch.setattr(Spool, "write_many", real[1])
    clock.now += 10
    assert collector.poll() > 0
    assert {(k[2]) for k in by_key(config)} >= {"scheduled"}


def test_write_many_leaves_each_event_whole_or_absent(tmp_path: Path) -> None:
    from computeproof.errors import SpoolError
    from computeproof.event import new_event
    from computeproof.spool import Spool

    spool = Spool(str(tmp_path / "spool"))
    batch = [new_event("progress", "c", "1", 1, "n", {"i": i}, seq=i) for i in range(50)]
    paths = spool.write_many(batch)
    assert len(paths) == 50 and spool.count_pending() == 50
    bad = [new_event("progress", "c", "2", 2, "n", {"i": 1}), {"id": "x", "payload": 1.5}]
    with pytest.raises(Exception):  # noqa: B017 - a float is refused before anything lands
        spool.write_many(bad)
    assert spool.count_pending() == 50 and not list((tmp_path / "spool" / "tmp").iterdir())
    (tmp_path / "spool" / "new").chmod(0o500)  # the renames fail: root ignores modes, so
    try:  # make new/ a file instead
        (tmp_path / "spool" / "new").chmod(0o700)
        (tmp_path / "spool" / "new").rename(tmp_path / "spool" / "new.saved")
        (tmp_path / "spool" / "new").write_text("not a directory")
        with pytest.raises(SpoolError):
            spool.write_many([new_event("progress", "c", "3", 3, "n", {})])
        assert not list((tmp_path / "spool" / "tmp").iterdir())
    finally:
        (tmp_path / "spool" / "new").unlink()
        (tmp_path / "spool" / "new.saved").rename(tmp_path / "spool" / "new")


def test_a_requeue_seen_completing_is_the_end_of_the_run_before(tmp_path: Path) -> None:
    """Slurm 22.05 counts the restart the moment a job is requeued, while the run that was
    requeued is still COMPLETING on its node (its start time): a poll landing then must not
    take that record for the next run, whose final state accounting (no restart counts
    there) is matched by start time. Seen on a loaded CI run: run 1's final state REQUEUED."""
    from fakeslurm import fixture_dir

    from slurm_hooks.slurmcli import decode_json, parse_sacct_json

    requeued = roles("22.05")["requeued"]
    raw = decode_json((fixture_dir("22.05") / "sacct.json").read_bytes(), "t")
    first, second = [r for r in parse_sacct_json(raw) if r["job_id"] == requeued]

    def live(rec: AccountingRecord, **change: object) -> AccountingRecord:
        return {**rec, "restarts": 0, **change}  # type: ignore[typeddict-item]

    views = [
        [live(first, state="RUNNING", end_epoch=None)],
        [live(first, state="COMPLETING", restarts=1, end_epoch=None)],  # requeued just now
        [live(first, state="PENDING", restarts=1, start_epoch=None, end_epoch=None, nodes=[])],
        [live(second, state="RUNNING", restarts=1, end_epoch=None)],
        [live(second, state="COMPLETED", restarts=1)],
        [],
    ]
    config, clock = site(tmp_path), Clock(float(first["start_epoch"] or 0) + 1)
    backend = Backend(views[0], [first, second])
    collector = Collector(config, backend, clock=clock)  # type: ignore[arg-type]
    for view in [*views, [], []]:
        backend.live = view
        collector.poll()
        clock.now += 15
    got = by_key(config)
    assert payload(got[(requeued, 0, "final_state")])["state"] == "REQUEUED"
    assert payload(got[(requeued, 1, "final_state")])["state"] == "COMPLETED"
    done = payload(got[(requeued, 1, "completed")])
    assert done["start_epoch"] == second["start_epoch"]


@pytest.mark.parametrize("version", PHASED)
@pytest.mark.parametrize("then", ["CANCELLED", "COMPLETING"])
def test_a_cancelled_run_seen_completing_gets_its_signal(
    tmp_path: Path, version: str, then: str
) -> None:
    """scancel marks a job CANCELLED|COMPLETING at once, and slurmctld reads 0:0 until the
    batch step reports that SIGTERM ended it (0:15): a poll landing between must not
    record completed as 0:0 (seen on CI: a compose cluster's completed said signal 0).
    The signal comes from the COMPLETING record that has it, or from the final one."""
    from fakeslurm import fixture_dir

    from slurm_hooks.slurmcli import decode_json, parse_sacct_json

    cancelled = roles(version)["cancelled"]
    raw = decode_json((fixture_dir(version) / "sacct.json").read_bytes(), "t")
    acct = [r for r in parse_sacct_json(raw) if r["job_id"] == cancelled]
    (rec,) = acct
    assert rec["nodes"]

    def live(**change: object) -> AccountingRecord:
        return {**rec, "restarts": 0, **change}  # type: ignore[typeddict-item]

    views = [
        [live(state="RUNNING", end_epoch=None, exit_code=0, signal=0)],
        [live(state="COMPLETING", exit_code=0, signal=0)],  # scancel: the step not yet told
        [live(state="COMPLETING", exit_code=0, signal=0, nodes=[])],  # still not
        [live(state=then, exit_code=0, signal=15)],
    ]
    config, clock = site(tmp_path), Clock(float(rec["start_epoch"] or 0) + 1)
    collector = Collector(config, Backend(views[0], acct), clock=clock)  # type: ignore[arg-type]
    for view in views:
        collector.info.live = view  # type: ignore[attr-defined]
        collector.poll()
        clock.now += 1
    done = payload(by_key(config)[(cancelled, 0, "completed")])
    assert (done["exit_code"], done["signal"], done["nodes"]) == (0, 15, rec["nodes"])


def test_a_run_completing_past_the_deadline_is_completed_with_what_is_known(
    tmp_path: Path,
) -> None:
    """A run COMPLETING (0:0) longer than COMPLETING_DEADLINE, a node's epilog hung: its
    completed is written from the COMPLETING record with the nodes seen while it ran, not
    held until slurmctld lets the job go; not before."""
    from fakeslurm import fixture_dir

    from slurm_hooks.slurmcli import decode_json, parse_sacct_json

    job = roles("22.05")["victim"]
    raw = decode_json((fixture_dir("22.05") / "sacct.json").read_bytes(), "t")
    (rec,) = [r for r in parse_sacct_json(raw) if r["job_id"] == job]
    running: AccountingRecord = {**rec, "state": "RUNNING", "end_epoch": None, "restarts": 0}
    completing: AccountingRecord = {**rec, "state": "COMPLETING", "restarts": 0, "nodes": []}
    config, clock = site(tmp_path), Clock(float(rec["start_epoch"] or 0) + 1)
    backend = Backend([running], [])
    collector = Collector(config, backend, clock=clock)  # type: ignore[arg-type]
    collector.poll()
    backend.live = [completing]
    collector.poll()
    clock.now += controller.COMPLETING_DEADLINE - 1
    collector.poll()
    assert (job, 0, "completed") not in by_key(config)
    clock.now += 1
    collector.poll()
    done = payload(by_key(config)[(job, 0, "completed")])
    assert done["state_seen"] == "COMPLETING" and done["nodes"] == rec["nodes"]


def test_the_collector_forwards_what_a_poll_wrote_at_once(tmp_path: Path) -> None:
    """forward_interval > 0: a poll that wrote events wakes the forwarding thread, which
    takes them into the ledger long before its interval (an hour here) is up."""
    import dataclasses
    import threading
    import time

    from computeproof.keys import Signer, write_key
    from computeproof.ledger import open_ledger

    config = dataclasses.replace(
        site(tmp_path),
        db=str(tmp_path / "ledger.db"),
        host_key=str(tmp_path / "host.key"),
        ledger_key=str(tmp_path / "ledger.key"),
        forward_interval=3600,
    )
    signer = Signer.generate()
    write_key(config.host_key, signer)
    with open_ledger(config, create=True) as ledger:
        ledger.enroll(signer.public_raw, ["*"])
    version = PHASED[0]
    install(Path(config.slurm_bin), version, "ended", tmp_path / "log")
    collector = Collector(config, SlurmCli(config.slurm_bin, timeout=10))
    stop, wrote = threading.Event(), threading.Event()
    forwarding = threading.Thread(target=controller.forward_loop, args=(config, stop, wrote))
    forwarding.start()
    polling = threading.Thread(target=collector.run, args=(stop, 3600, wrote))
    polling.start()
    try:
        deadline = time.monotonic() + 30
        forwarded: set[str] = set()
        while time.monotonic() < deadline:
            with open_ledger(config) as ledger:
                forwarded = {leaf.event_id for leaf in ledger.store.leaves()}
            if forwarded and not Spool(config.spool_dir).count_pending():
                break
            time.sleep(0.1)
    finally:
        stop.set()
        wrote.set()
        polling.join(30)
        forwarding.join(30)
    written = {str(e["id"]) for e in events_forwarded(config)}
    assert collector.written > 0 and forwarded == written


def events_forwarded(config: Config) -> list[dict[str, object]]:
    return [json.loads(e) for e in spooled(Path(config.spool_dir) / "forwarded")]
