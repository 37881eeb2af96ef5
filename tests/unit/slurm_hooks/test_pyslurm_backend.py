"""The pyslurm adapter over stand-ins of pyslurm 25.11.2's classes (pyslurm.Job, Jobs,
db.Jobs, db.JobFilter, db.TrackableResources, GPU): no libslurm 25.11 is installed here.
The attribute names are pyslurm's (read from its source, PySlurm/pyslurm v25.11.2)."""

from __future__ import annotations

import types
from pathlib import Path

import pytest

from computeproof.errors import SlurmError
from slurm_hooks import pyslurm_backend


class RPCError(Exception):
    pass


class Resource:
    """pyslurm.db.TrackableResource / GPU: a count."""

    def __init__(self, count: int) -> None:
        self.count = count


class Tres:
    """pyslurm.db.TrackableResources as from_cstr builds it (mem in MiB)."""

    def __init__(self, cpu: int, mem_mib: int, gpus: int) -> None:
        self.cpu, self.mem, self.node = Resource(cpu), Resource(mem_mib), Resource(1)
        self.energy = self.billing = self.vmem = self.pages = None
        self.gres = {"gpu": Resource(gpus), "gpu:a100": Resource(gpus)}
        self.license: dict[str, Resource] = {}
        self.fs: dict[str, Resource] = {}
        self.interconnect: dict[str, Resource] = {}


class Undecodable:
    """An attribute pyslurm decodes as strict UTF-8 (a name that is not): it raises."""

    def __get__(self, obj: object, owner: type) -> str:
        raise UnicodeDecodeError("utf-8", b"\xff", 0, 1, "invalid start byte")


class LiveJob:
    """pyslurm.Job's attributes for a running het component."""

    id = 101
    state = "RUNNING"
    state_reason = None
    heterogeneous_id = 200
    heterogeneous_offset = 1
    array_id = None
    array_task_id = None
    user_name, user_id, group_id, group_name = "alice", 1000, 1000, "alice"
    account, partition, qos = "lab", "gpu", "normal"
    name = Undecodable()
    working_directory = "/home/alice"
    exit_code, exit_code_signal = 0, 0
    submit_time, eligible_time, start_time, end_time = 90, 90, 100, None
    time_limit = 60
    allocated_nodes = "c1"
    num_nodes, cpus = 1, 2
    allocated_tres = Tres(2, 1024, 1)
    requested_tres = Tres(2, 1024, 1)
    requeue_count = 0
    is_batch_job = True


def stub(version: str = "25.11.2") -> types.ModuleType:
    db_job = types.SimpleNamespace(
        id=101,
        array_id=100,
        array_task_id=4,
        heterogeneous_id=None,
        heterogeneous_offset=None,
        user_name="alice",
        user_id=1000,
        group_id=1000,
        group_name="alice",
        account="lab",
        partition="gpu",
        qos="normal",
        name="train",
        working_directory="/home/alice",
        state="TIMEOUT",
        state_reason="TimeLimit",
        exit_code=0,
        exit_code_signal=15,
        submit_time=90,
        eligible_time=90,
        start_time=100,
        end_time=160,
        elapsed_time=60,
        time_limit=1,
        nodelist="c[1-2]",
        num_nodes=2,
        cpus=2,
        allocated_tres=Tres(2, 1024, 2),
        requested_tres=Tres(2, 1024, 2),
        requeue_count=0,
    )
    filters: list[dict[str, object]] = []

    class MultiClusterMap(dict[str, dict[int, object]]):
        """pyslurm's collections: keyed by cluster, then id; values() yields the jobs."""

        def values(self):  # type: ignore[override]
            return [job for cluster in dict.values(self) for job in cluster.values()]

    class DbJobs:
        @staticmethod
        def load(f: dict[str, object]) -> MultiClusterMap:
            filters.append(f)
            return MultiClusterMap({"cptest": {101: db_job}})

    def job_filter(**kw: object) -> dict[str, object]:
        return kw

    class Job:
        @staticmethod
        def load(job_id: int) -> object:
            if job_id != 101:
                raise RPCError("Invalid job id specified")
            return LiveJob()

    class Jobs:
        @staticmethod
        def load() -> MultiClusterMap:
            return MultiClusterMap({"cptest": {101: LiveJob()}})

    mod = types.ModuleType("pyslurm")
    mod.__version__ = version  # type: ignore[attr-defined]
    mod.db = types.SimpleNamespace(Jobs=DbJobs, JobFilter=job_filter)  # type: ignore[attr-defined]
    mod.Job = Job  # type: ignore[attr-defined]
    mod.Jobs = Jobs  # type: ignore[attr-defined]
    mod.filters = filters  # type: ignore[attr-defined]
    return mod


@pytest.fixture
def slurm_bin(tmp_path: Path) -> str:
    script = tmp_path / "scontrol"
    script.write_text("#!/bin/sh\necho 'slurm 25.11.7'\n")
    script.chmod(0o755)
    return str(tmp_path)


def test_version_must_match(slurm_bin: str) -> None:
    assert pyslurm_backend.load_pyslurm(slurm_bin, stub("24.11.0")) is None
    assert pyslurm_backend.load_pyslurm(slurm_bin, stub("25.11.2")) is not None


def test_a_pyslurm_that_does_not_import_is_no_backend(slurm_bin: str) -> None:
    """The child that imports pyslurm died (libslurm's fatal) or found none: CLI instead."""
    assert pyslurm_backend.load_pyslurm(slurm_bin, probe=lambda: None) is None


def test_accounting_records(slurm_bin: str) -> None:
    mod = stub()
    backend = pyslurm_backend.load_pyslurm(slurm_bin, mod)
    assert backend is not None
    (rec,) = backend.accounting(50, 200)
    assert mod.filters == [{"start_time": 50, "end_time": 200}]  # type: ignore[attr-defined]
    assert rec["job"] == "100_4"
    assert (rec["state"], rec["exit_code"], rec["signal"]) == ("TIMEOUT", 0, 15)
    assert rec["nodes"] == ["c1", "c2"] and rec["gpus"] == 2
    assert rec["tres_allocated"]["mem"] == 1 << 30
    assert rec["tres_allocated"]["gres/gpu:a100"] == 2
    assert rec["start_time"] == "1970-01-01T00:01:40Z" and rec["elapsed_s"] == 60
    assert (rec["job_name"], rec["time_limit_s"]) == ("train", 60)
    assert backend.accounting(50, 200, ("COMPLETED",)) == []  # filtered here, not by pyslurm
    assert [r["job_id"] for r in backend.jobs_accounting([101, 7])] == [101]


def test_live_reads(slurm_bin: str) -> None:
    backend = pyslurm_backend.PySlurm(stub())
    live = backend.job_live(101)
    assert live is not None and live["job"] == "200+1"
    assert live["job_name"] is None  # pyslurm cannot decode it: None, not a failed read
    assert live["end_epoch"] is None and live["elapsed_s"] is None and live["batch"] is True
    assert (live["gpus"], live["tres_allocated"]["cpu"], live["nodes"]) == (1, 2, ["c1"])
    assert backend.job_state(101) == "RUNNING"
    assert backend.job_live(5) is None
    assert backend.job_accounting(101) is not None
    (every,) = backend.live_jobs(detail=True)
    assert every["job_id"] == 101 and every["work_dir"] == "/home/alice"


def test_other_errors_become_slurm_errors() -> None:
    mod = stub()

    def boom(job_id: int) -> object:
        raise RPCError("Unable to contact slurm controller")

    mod.Job.load = staticmethod(boom)  # type: ignore[attr-defined]
    with pytest.raises(SlurmError, match="pyslurm"):
        pyslurm_backend.PySlurm(mod).job_live(1)


def test_no_pyslurm_means_cli(slurm_bin: str) -> None:
    from computeproof.config import Config
    from slurm_hooks.backend import job_info
    from slurm_hooks.slurmcli import SlurmCli

    assert isinstance(job_info(Config(slurm_bin=slurm_bin)), SlurmCli)


def test_unset_text_reads_as_none_as_from_the_command_line() -> None:
    """pyslurm hands over Slurm's own spellings of "no value" (a real libslurm 25.11 gave
    the reason "None"): read as unset, as the command-line backend reads them."""
    job = LiveJob()
    job.state_reason = "None"  # type: ignore[assignment]
    job.qos = "(null)"
    job.allocated_nodes = "None assigned"
    rec = pyslurm_backend.to_record(job, live=True)
    assert (rec["reason"], rec["qos"], rec["nodes"]) == (None, None, [])


def test_array_task_zero_is_a_task_not_a_plain_job() -> None:
    """pyslurm 25.11 reads Slurm's array_task_id 0 as unset (u32_parse, zero as no value):
    on a real libslurm task 0 of array 4 came back as plain job 5."""
    job = LiveJob()
    job.id, job.heterogeneous_id = 5, None  # type: ignore[assignment]
    job.array_id, job.array_task_id = 4, None  # type: ignore[assignment]
    assert pyslurm_backend.to_record(job, live=True)["job"] == "4_0"
    job.array_tasks_waiting = "1-3"  # type: ignore[attr-defined]  # the array's pending rest
    assert pyslurm_backend.to_record(job, live=True)["array_task_id"] is None
    job.array_id = None
    assert pyslurm_backend.to_record(job, live=True)["job"] == "5"


def test_the_batch_step_of_an_accounting_record(slurm_bin: str) -> None:
    """As from sacct: the batch step's end and exit code, and a record that settles only
    once accounting has that step's end."""
    from slurm_hooks.finalstate import settled

    mod = stub()
    backend = pyslurm_backend.PySlurm(mod)
    (rec,) = backend.jobs_accounting([101])
    assert rec["batch"] is None and "batch_step_end" not in rec  # no steps listed
    db_job = mod.db.Jobs.load({})["cptest"][101]  # type: ignore[attr-defined]
    batch = types.SimpleNamespace(id="batch", end_time=None, exit_code=None, exit_code_signal=None)
    db_job.steps = {"batch": batch, 0: types.SimpleNamespace(id=0)}
    (rec,) = backend.jobs_accounting([101])
    assert rec["batch"] is True and not settled(rec)  # slurmdbd has not the step's end yet
    batch.end_time, batch.exit_code, batch.exit_code_signal = 161, 3, 0
    (rec,) = backend.jobs_accounting([101])
    assert (rec["batch_step_end"], rec["batch_exit_code"], rec["batch_signal"]) == (161, 3, 0)
    assert settled(rec)


class CommandLine:
    """The command-line backend's side of the contract: records, and who asked for what."""

    def __init__(self) -> None:
        self.asked: list[tuple[str, object]] = []

    def record(self, job_id: int, run: int) -> dict[str, object]:
        return {"job_id": job_id, "job": str(job_id), "restarts": run, "start_epoch": 100 + run,
                "job_name": {"non_utf8": "/w=="}}  # fmt: skip

    def jobs_accounting(self, job_ids: list[int]) -> list[dict[str, object]]:
        self.asked.append(("jobs_accounting", list(job_ids)))
        return [self.record(j, run) for j in job_ids for run in (0, 1)]

    def live_jobs(self, detail: bool = False, job_ids: object = ()) -> list[dict[str, object]]:
        self.asked.append(("live_jobs", (detail, job_ids)))
        return [self.record(101, 0)]

    def job_live(self, job_id: int) -> dict[str, object]:
        self.asked.append(("job_live", job_id))
        return self.record(job_id, 0)


def test_jobs_pyslurm_cannot_read_whole_come_from_the_command_line() -> None:
    """Found by the 25.11 pyslurm pass on a real libslurm: a requeued job's earlier runs
    (pyslurm's database view keeps one record a job id) and a name that is not UTF-8
    (pyslurm cannot decode it) are the command line's to give, exactly."""
    mod = stub()
    cli = CommandLine()
    backend = pyslurm_backend.PySlurm(mod, cli)  # type: ignore[arg-type]
    (rec,) = backend.jobs_accounting([101])  # decodes, never requeued: pyslurm's own
    assert rec["job"] == "100_4" and cli.asked == []
    mod.db.Jobs.load({})["cptest"][101].requeue_count = 1  # type: ignore[attr-defined]
    runs = backend.jobs_accounting([101])
    assert [r["restarts"] for r in runs] == [0, 1]
    assert cli.asked == [("jobs_accounting", [101])]
    (live,) = backend.live_jobs()  # LiveJob's name cannot be decoded
    assert live["job_name"] == {"non_utf8": "/w=="}
    assert cli.asked[-1] == ("live_jobs", (True, [101]))
    assert backend.job_live(101) == cli.record(101, 0)
    assert pyslurm_backend.undecodable(LiveJob()) is True
