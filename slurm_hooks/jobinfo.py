"""Job information from Slurm: the interface every backend implements, and its record.

    JobInfo (Protocol)
    ├── slurmcli.SlurmCli        squeue/sacct: JSON, and text of fields no user sets (default)
    └── pyslurm_backend.PySlurm  pyslurm, only when it imports and matches the running Slurm

backend.job_info(config) picks one. Used by the controller's collector, the agent's orphan
check and reconcile. Records are plain dicts of integers and strings (canonical JSON, no
floats): times as epoch seconds and RFC 3339 strings, memory in bytes. Strings from Slurm
that are not valid UTF-8 (a job name is any bytes) keep their bytes as lone surrogates
(surrogateescape); event.text_value records them losslessly.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Protocol, TypedDict


class AccountingRecord(TypedDict, total=False):
    """One run of a job, as accounting (sacct) or the controller (squeue) reports it.

    Keys a source does not give are absent. ``job_name``, ``work_dir`` and
    ``gpu_indices`` come only from structured reads (JSON, pyslurm): the text reads ask
    for no field a job's user could set."""

    job_id: int
    job: str
    array_job_id: int | None
    array_task_id: int | None
    het_job_id: int | None
    het_job_offset: int | None
    user: str | None
    uid: int | None
    gid: int | None
    group: str | None
    account: str | None
    partition: str | None
    qos: str | None
    job_name: str | None
    work_dir: str | None
    state: str
    state_flags: list[str]
    reason: str | None
    exit_code: int | None
    signal: int | None
    submit_epoch: int | None
    eligible_epoch: int | None
    start_epoch: int | None
    end_epoch: int | None
    start_time: str | None
    end_time: str | None
    elapsed_s: int | None
    time_limit_s: int | None
    nodes: list[str]
    num_nodes: int | None
    num_cpus: int | None
    gpus: int
    gpu_indices: dict[str, list[int]]  # node -> Slurm GPU indices (live JSON only)
    tres_allocated: dict[str, int]
    tres_requested: dict[str, int]
    tres_per_node: str | None
    restarts: int | None
    batch: bool | None  # whether it is a batch job (has a batch step)
    batch_step_end: int | None  # sacct only: end of the "batch" step, None until recorded
    batch_exit_code: int | None  # sacct only: the batch step's exit code and signal
    batch_signal: int | None


class JobInfo(Protocol):
    """What the rest of ComputeProof asks Slurm about jobs."""

    def accounting(
        self, since: int, until: int, states: Sequence[str] = ()
    ) -> list[AccountingRecord]:
        """Every run active between ``since`` and ``until`` (epoch seconds), from
        accounting, a requeued job's runs oldest first; with ``states`` (COMPLETED, FAILED,
        ...) only the runs in one of them during that time."""
        ...

    def jobs_accounting(
        self, job_ids: Sequence[int], detail: bool = True
    ) -> list[AccountingRecord]:
        """The accounting records of every run of ``job_ids``, in one read; without
        ``detail`` they may lack the job's name and work dir (a cheaper read)."""
        ...

    def live_jobs(
        self, detail: bool = False, job_ids: Sequence[int] = ()
    ) -> list[AccountingRecord]:
        """Every job the controller holds now (ended ones until MinJobAge), in one read.
        ``detail`` asks for the fields a user sets and the GPU indices as well, where the
        backend's cheap read leaves them out; ``job_ids`` lets it read only those jobs
        (it may return others too)."""
        ...

    def job_live(self, job_id: int) -> AccountingRecord | None:
        """The job as the controller sees it now, None once purged."""
        ...

    def job_accounting(self, job_id: int, start: int | None = None) -> AccountingRecord | None:
        """The record of the run of ``job_id`` that started at ``start`` (default: latest)."""
        ...

    def job_state(self, job_id: int) -> str | None:
        """The job's current state (RUNNING, COMPLETED, TIMEOUT...), None if Slurm forgot it."""
        ...


def pick_run(records: Sequence[AccountingRecord], start: int | None) -> AccountingRecord | None:
    """The record of the run that started at ``start``; the last one if no start is given.

    Accounting lists a requeued job once per run, oldest first, all under one job id.
    """
    if start is None:
        return records[-1] if records else None
    for rec in records:
        if rec.get("start_epoch") == start:
            return rec
    return None


def job_state(info: JobInfo, job_id: int) -> str | None:
    """The job's state: the controller's while it knows the job, else accounting's."""
    live = info.job_live(job_id)
    if live is not None:
        return live["state"]
    rec = info.job_accounting(job_id)
    return rec["state"] if rec is not None else None
