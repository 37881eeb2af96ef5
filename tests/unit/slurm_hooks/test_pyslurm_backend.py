"""The pyslurm adapter over a stub module (no libslurm for 22.05 exists on PyPI)."""

from __future__ import annotations

import types
from pathlib import Path

import pytest

from computeproof.errors import SlurmError
from slurm_hooks import pyslurm_backend


class RPCError(Exception):
    pass


def stub(version: str = "22.05.3") -> types.ModuleType:
    db_job = types.SimpleNamespace(
        id=101,
        array_id=100,
        array_task_id=4,
        het_job_id=0,
        het_job_offset=0,
        user_name="alice",
        account="lab",
        partition="gpu",
        qos="normal",
        name="train",
        state="TIMEOUT",
        state_reason="TimeLimit",
        exit_code="0:15",
        submit_time=90,
        start_time=100,
        end_time=160,
        elapsed_time=60,
        nodelist="c[1-2]",
        tres_alloc_str="cpu=2,mem=1G,gres/gpu=2",
        restart_cnt=0,
    )
    filters: list[dict[str, object]] = []

    class Jobs:
        @staticmethod
        def load(f: dict[str, object]) -> dict[int, object]:
            filters.append(f)
            return {101: db_job}

    def job_filter(**kw: object) -> dict[str, object]:
        return kw

    class Job:
        @staticmethod
        def load(job_id: int) -> object:
            if job_id != 101:
                raise RPCError("Invalid job id specified")
            return types.SimpleNamespace(
                id=101, state="RUNNING", het_job_id=200, het_job_offset=1, exit_code=0
            )

    mod = types.ModuleType("pyslurm")
    mod.__version__ = version  # type: ignore[attr-defined]
    mod.db = types.SimpleNamespace(Jobs=Jobs, JobFilter=job_filter)  # type: ignore[attr-defined]
    mod.Job = Job  # type: ignore[attr-defined]
    mod.filters = filters  # type: ignore[attr-defined]
    return mod


@pytest.fixture
def slurm_bin(tmp_path: Path) -> str:
    script = tmp_path / "scontrol"
    script.write_text("#!/bin/sh\necho 'slurm 22.05.8'\n")
    script.chmod(0o755)
    return str(tmp_path)


def test_version_must_match(slurm_bin: str) -> None:
    assert pyslurm_backend.load_pyslurm(slurm_bin, stub("25.11.0")) is None
    assert pyslurm_backend.load_pyslurm(slurm_bin, stub("22.05.3")) is not None


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
    assert rec["start_time"] == "1970-01-01T00:01:40Z" and rec["elapsed_s"] == 60


def test_live_and_state(slurm_bin: str) -> None:
    backend = pyslurm_backend.PySlurm(stub())
    live = backend.job_live(101)
    assert live is not None and live["job"] == "200+1"
    assert backend.job_state(101) == "RUNNING"
    assert backend.job_live(5) is None
    assert backend.job_accounting(101) is not None


def test_other_errors_become_slurm_errors() -> None:
    mod = stub()

    def boom(job_id: int) -> object:
        raise RPCError("Unable to contact slurm controller")

    mod.Job.load = staticmethod(boom)  # type: ignore[attr-defined]
    with pytest.raises(SlurmError, match="pyslurm"):
        pyslurm_backend.PySlurm(mod).job_live(1)


def test_no_pyslurm_means_cli(slurm_bin: str) -> None:
    from computeproof.config import Config
    from slurm_hooks.jobinfo import job_info
    from slurm_hooks.slurmcli import SlurmCli

    assert isinstance(job_info(Config(slurm_bin=slurm_bin)), SlurmCli)
