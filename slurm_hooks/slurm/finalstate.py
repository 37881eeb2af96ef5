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
# States that are not final yet: the watcher keeps polling while it sees one.
NOT_FINAL = frozenset(
    {"PENDING", "RUNNING", "COMPLETING", "CONFIGURING", "SUSPENDED", "REQUEUED",
     "RESIZING", "STAGE_OUT", "SIGNALING", "STOPPED", "REQUEUE_FED", "REQUEUE_HOLD",
     "SPECIAL_EXIT", "RESV_DEL_HOLD", "UNKNOWN", ""}
)


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
    deadline_s: float = WATCH_SECONDS,
    poll_s: float = POLL_SECONDS,
) -> dict[str, object]:
    """Poll until the job's state is final, write the final_state event and return it."""
    from slurm_hooks.slurm.slurmcli import SlurmCli

    info = SlurmCli(config.slurm_bin)
    deadline = time.monotonic() + deadline_s
    from_squeue: AccountingRecord | None = None
    last_error = "no final state reported"
    while True:
        try:
            record = info.job_accounting(job_id)
            if record is not None and record.get("state") not in NOT_FINAL:
                return _record(config, job, job_id, run, final_payload(record, "sacct"))
        except SlurmError as e:
            last_error = str(e)
        try:
            live = info.job_live(job_id)
            if live is not None and live.get("state") not in NOT_FINAL:
                from_squeue = live
        except SlurmError as e:
            last_error = str(e)
        if time.monotonic() + poll_s > deadline:
            break
        time.sleep(poll_s)
    if from_squeue is not None:
        # slurmdbd lagged: squeue's view is Slurm's own report of the final state too.
        return _record(config, job, job_id, run, final_payload(from_squeue, "squeue"))
    raise SlurmError(f"no final state for job {job_id} within {deadline_s:g} s: {last_error}")


def _record(
    config: HookConfig, job: str, job_id: int, run: int, payload: dict[str, object]
) -> dict[str, object]:
    event = new_event("final_state", config.cluster, job, job_id, config.host, payload, run=run)
    Spool(config.spool_dir).write(event)
    return event


def spawn_watcher(config: HookConfig, job: str, job_id: int, run: int) -> None:
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
        import _signal

        _signal.alarm(int(WATCH_SECONDS) + 30)  # backstop for a hung Slurm command
        try:
            watch(config, job, job_id, run)
        except ComputeProofError as e:
            from slurm_hooks.slurm.hooks import count_failure, log

            log("final_state", str(e), job_id)
            count_failure(config.spool_dir)
        except Exception as e:  # a bug must not leave a traceback on slurmctld's pipes
            from slurm_hooks.slurm.hooks import count_failure, log

            log("final_state", f"{type(e).__name__}: {e}", job_id)
            count_failure(config.spool_dir)
    finally:
        os._exit(0)


def _detach() -> None:
    """Drop the inherited descriptors so slurmctld is not kept waiting on its pipes."""
    devnull = os.open("/dev/null", os.O_RDWR)
    for fd in (0, 1, 2):
        os.dup2(devnull, fd)
    os.closerange(3, 65536)
    os.chdir("/")
