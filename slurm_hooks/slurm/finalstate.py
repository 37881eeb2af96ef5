"""The final_state watcher: records a job's terminal state once Slurm reports it.

In EpilogSlurmctld the job is still COMPLETING; its final state (COMPLETED, FAILED,
CANCELLED, TIMEOUT, NODE_FAIL, OUT_OF_MEMORY, PREEMPTED...) appears in sacct a moment
later (and in squeue until MinJobAge). The epilog must not wait for it, so it
double-forks a detached watcher (own session, no inherited descriptors) that polls
sacct --json, then squeue --json, for at most WATCH_SECONDS and writes one
``final_state`` event to the spool. Failures are logged and counted like a hook's.
"""

from __future__ import annotations

import os
import time

from slurm_hooks.errors import ComputeProofError, SlurmError
from slurm_hooks.receipts.event import new_event
from slurm_hooks.receipts.spool import Spool

TYPE_CHECKING = False
if TYPE_CHECKING:
    from slurm_hooks.slurm.hookconfig import HookConfig
    from slurm_hooks.slurm.jobinfo import AccountingRecord

WATCH_SECONDS = 60.0
POLL_SECONDS = 1.0
# States that are not final yet: the watcher keeps polling while it sees one. REQUEUED
# is final for a run: the requeued job's next run gets its own events (run + 1).
NOT_FINAL = frozenset(
    {
        "PENDING",
        "RUNNING",
        "COMPLETING",
        "CONFIGURING",
        "SUSPENDED",
        "RESIZING",
        "STAGE_OUT",
        "SIGNALING",
        "STOPPED",
        "REQUEUE_FED",
        "REQUEUE_HOLD",
        "SPECIAL_EXIT",
        "RESV_DEL_HOLD",
        "UNKNOWN",
        "",
    }
)


def settled(record: AccountingRecord) -> bool:
    """Whether a record is final and whole.

    slurmctld sends slurmdbd a job's start, node and end records separately, so sacct can
    show the final state while its node list is still the batch host alone.
    """
    if record.get("state") in NOT_FINAL or record.get("end_epoch") is None:
        return False
    if record.get("start_epoch") is None:
        return True  # never ran: no nodes to wait for
    nodes, count = record.get("nodes") or [], record.get("num_nodes")
    return bool(nodes) and (count is None or len(nodes) == count)


def final_payload(record: AccountingRecord, source: str) -> dict[str, object]:
    """The final_state payload from one accounting record."""
    payload: dict[str, object] = {k: v for k, v in record.items() if k != "job_id"}
    elapsed = record.get("elapsed_s")
    gpus = record.get("gpus")
    payload["gpu_seconds"] = (
        gpus * elapsed if isinstance(gpus, int) and isinstance(elapsed, int) else None
    )
    payload["source"] = source
    return payload


def watch(
    config: HookConfig,
    job: str,
    job_id: int,
    run: int,
    start: int | None = None,
    deadline_s: float = WATCH_SECONDS,
    poll_s: float = POLL_SECONDS,
) -> dict[str, object]:
    """Poll until the run that started at ``start`` is final; write final_state, return it."""
    from slurm_hooks.slurm.slurmcli import SlurmCli

    info = SlurmCli(config.slurm_bin)
    deadline = time.monotonic() + deadline_s
    from_squeue: AccountingRecord | None = None
    partial: AccountingRecord | None = None
    last_error = "no final state reported"
    while True:
        try:
            record = info.job_accounting(job_id, start)
            if record is not None and settled(record):
                return _record(config, job, job_id, run, final_payload(record, "sacct"))
            if record is not None and record.get("state") not in NOT_FINAL:
                partial = record
        except SlurmError as e:
            last_error = str(e)
        try:
            live = info.job_live(job_id)
            if live is not None and settled(live) and start in (None, live.get("start_epoch")):
                from_squeue = live
        except SlurmError as e:
            last_error = str(e)
        if time.monotonic() + poll_s > deadline:
            break
        time.sleep(poll_s)
    # slurmdbd lagged: squeue's view is Slurm's own report of the final state too;
    # failing that, the final state sacct gave before its record was whole.
    if from_squeue is not None:
        return _record(config, job, job_id, run, final_payload(from_squeue, "squeue"))
    if partial is not None:
        return _record(config, job, job_id, run, final_payload(partial, "sacct_partial"))
    raise SlurmError(f"no final state for job {job_id} within {deadline_s:g} s: {last_error}")


def _record(
    config: HookConfig, job: str, job_id: int, run: int, payload: dict[str, object]
) -> dict[str, object]:
    event = new_event("final_state", config.cluster, job, job_id, config.host, payload, run=run)
    Spool(config.spool_dir).write(event)
    return event


def spawn_watcher(
    config: HookConfig, job: str, job_id: int, run: int, start: int | None = None
) -> None:
    """Start ``watch`` in a detached grandchild; return at once (the epilog goes on)."""
    pid = os.fork()
    if pid:
        os.waitpid(pid, 0)  # the middle child exits at once
        return
    try:
        os.setsid()
        if os.fork():
            os._exit(0)
        _detach()
        import _signal  # type: ignore[import-not-found]

        _signal.alarm(int(WATCH_SECONDS) + 30)  # backstop for a hung Slurm command
        try:
            watch(config, job, job_id, run, start)
        except ComputeProofError as e:
            from slurm_hooks.slurm.hooks import count_failure, failure_line, log

            log("final_state", str(e), job_id)
            count_failure(config.spool_dir, failure_line("final_state", str(e), job_id))
        except Exception as e:  # a bug must not leave a traceback on slurmctld's pipes
            from slurm_hooks.slurm.hooks import count_failure, failure_line, log

            what = f"{type(e).__name__}: {e}"
            log("final_state", what, job_id)
            count_failure(config.spool_dir, failure_line("final_state", what, job_id))
    finally:
        os._exit(0)


def _detach() -> None:
    """Drop the inherited descriptors so slurmctld is not kept waiting on its pipes."""
    devnull = os.open("/dev/null", os.O_RDWR)
    for fd in (0, 1, 2):
        os.dup2(devnull, fd)
    os.closerange(3, 65536)
    os.chdir("/")
