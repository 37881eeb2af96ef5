"""Job information from Slurm behind one small interface, with two backends.

    JobInfo (Protocol)
    ├── slurmcli.SlurmCli        squeue -O, sacct --json, scontrol show job (default)
    └── pyslurm_backend.PySlurm  pyslurm, only when it imports and matches the running Slurm

Used by the final_state watcher and later by reconcile and usage reports. Records are
plain dicts of integers and strings (canonical JSON, no floats): times as epoch seconds
and RFC 3339 strings, memory in bytes.
"""

from __future__ import annotations

from typing import Protocol, TypedDict

from computeproof.errors import SlurmError

TYPE_CHECKING = False
if TYPE_CHECKING:
    from computeproof.config import Config


class AccountingRecord(TypedDict, total=False):
    """One job as Slurm accounts it (sacct), or as squeue shows it before it is purged."""

    job_id: int
    job: str
    array_job_id: int | None
    array_task_id: int | None
    het_job_id: int | None
    het_job_offset: int | None
    user: str | None
    account: str | None
    partition: str | None
    qos: str | None
    job_name: str | None
    state: str
    reason: str | None
    exit_code: int | None
    signal: int | None
    submit_epoch: int | None
    start_epoch: int | None
    end_epoch: int | None
    start_time: str | None
    end_time: str | None
    elapsed_s: int | None
    nodes: list[str]
    num_nodes: int | None
    gpus: int
    tres_allocated: dict[str, int]
    restarts: int | None
    batch: bool | None  # squeue only: whether it is a batch job (has a batch step)
    batch_step_end: int | None  # sacct only: end of the "batch" step, None until recorded
    batch_exit_code: int | None  # sacct only: the batch step's exit code and signal
    batch_signal: int | None


class JobInfo(Protocol):
    """What the rest of ComputeProof asks Slurm about jobs."""

    def accounting(self, since: int, until: int) -> list[AccountingRecord]:
        """Jobs that ran between ``since`` and ``until`` (epoch seconds), from accounting."""
        ...

    def job_state(self, job_id: int) -> str | None:
        """The job's current state (RUNNING, COMPLETED, TIMEOUT...), None if Slurm forgot it."""
        ...

    def job_accounting(self, job_id: int, start: int | None = None) -> AccountingRecord | None:
        """The record of the run of ``job_id`` that started at ``start`` (default: latest)."""
        ...

    def job_live(self, job_id: int) -> AccountingRecord | None:
        """The job as the controller sees it now (squeue), None once purged."""
        ...


def job_info(config: Config) -> JobInfo:
    """The pyslurm backend when usable, else the Slurm CLI backend."""
    from slurm_hooks.pyslurm_backend import load_pyslurm
    from slurm_hooks.slurmcli import SlurmCli

    try:
        backend = load_pyslurm(config.slurm_bin)
    except SlurmError:
        backend = None
    return backend if backend is not None else SlurmCli(config.slurm_bin)
