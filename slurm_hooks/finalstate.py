"""The controller's collector: writes ``completed`` and ``final_state`` for ended jobs.

In EpilogSlurmctld the job is still COMPLETING; its final state (COMPLETED, FAILED,
CANCELLED, TIMEOUT, NODE_FAIL, OUT_OF_MEMORY, PREEMPTED...) appears in sacct a moment
later (and in squeue until MinJobAge). The epilog must not wait for it, and makes no Slurm
RPC at all: it leaves a marker per job run in <spool>/final-pending/ (with its environment
and time) and starts, unless one is running, the controller's single detached collector
(own session, no inherited descriptors). Every POLL_SECONDS the collector makes one
``squeue`` call for the runs still owed a ``completed`` event (their times, TRES,
exit code and signal, read while slurmctld still holds them) and one ``sacct --json`` call
for all pending runs, falls back to squeue at a run's deadline (WATCH_SECONDS), and writes
``completed`` (stamped with the epilog's time) and then one ``final_state`` per run.
A burst of short jobs costs the controller one query a second, not one per job.
Failures are logged and counted like a hook's.
"""

import posix
import time

from computeproof import posixfs
from computeproof.errors import SlurmError
from computeproof.event import new_event
from computeproof.spool import Spool

TYPE_CHECKING = False
if TYPE_CHECKING:
    from collections.abc import Callable

    from slurm_hooks.hookconfig import HookConfig
    from slurm_hooks.jobinfo import AccountingRecord

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


def settled(record: "AccountingRecord") -> bool:
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


def final_payload(record: "AccountingRecord", source: str) -> dict[str, object]:
    """The final_state payload from one accounting record."""
    payload: dict[str, object] = {k: v for k, v in record.items() if k != "job_id"}
    elapsed = record.get("elapsed_s")
    gpus = record.get("gpus")
    payload["gpu_seconds"] = (
        gpus * elapsed if isinstance(gpus, int) and isinstance(elapsed, int) else None
    )
    payload["source"] = source
    return payload


# EpilogSlurmctld's variables that ``completed`` is built from (with the squeue record)
COMPLETED_ENV = (
    "SLURM_JOB_EXIT_CODE2",
    "SLURM_JOB_DERIVED_EC",
    "SLURM_JOB_NODELIST",
    "SLURM_JOB_USER",
    "SLURM_JOB_ACCOUNT",
    "SLURM_JOB_PARTITION",
)
# states in which a job run has not ended: its record cannot fill ``completed`` yet
NOT_ENDED = frozenset({"PENDING", "RUNNING", "CONFIGURING", "SUSPENDED", "RESIZING", ""})


def ended(record: "AccountingRecord") -> bool:
    """Whether a record shows its run over (COMPLETING counts: its end time is set)."""
    return record.get("state") not in NOT_ENDED and record.get("end_epoch") is not None


def completed_payload(
    env: dict[str, str],
    ids: dict[str, object],
    record: "AccountingRecord | None",
    source: str,
    run_source: str,
) -> dict[str, object]:
    """The ``completed`` payload from EpilogSlurmctld's environment and Slurm's record of
    the run (None when Slurm never reported it: then only what the environment says)."""
    from slurm_hooks.scontrol import rfc3339
    from slurm_hooks.slurmenv import expand_hostlist, parse_exit_code

    rec: AccountingRecord = record or {}
    env_exit = parse_exit_code(env.get("SLURM_JOB_EXIT_CODE2", ""))
    code, sig = rec.get("exit_code"), rec.get("signal")
    slurm_exit = (code, sig) if code is not None and sig is not None else None
    # SLURM_JOB_EXIT_CODE2 reads 0:0 for a cancelled or timed-out job; Slurm's record
    # carries the signal then, so prefer whichever is non-zero.
    exit_code, signal = env_exit or slurm_exit or (None, None)
    if env_exit == (0, 0) and slurm_exit is not None and slurm_exit != (0, 0):
        exit_code, signal = slurm_exit
    start, end = rec.get("start_epoch"), rec.get("end_epoch")
    elapsed = end - start if start is not None and end is not None and end >= start else None
    gpus = rec.get("gpus") if record is not None else None
    nodelist = env.get("SLURM_JOB_NODELIST")
    return {
        "exit_code": exit_code,
        "signal": signal,
        "exit_code_env": env.get("SLURM_JOB_EXIT_CODE2"),
        "exit_code_slurm": f"{code}:{sig}" if slurm_exit is not None else None,
        "derived_exit_code": env.get("SLURM_JOB_DERIVED_EC"),
        "state_seen": rec.get("state"),
        "reason": rec.get("reason"),
        "start_time": rfc3339(start),
        "end_time": rfc3339(end),
        "start_epoch": start,
        "end_epoch": end,
        "elapsed_s": elapsed,
        "nodes": expand_hostlist(nodelist) if nodelist else rec.get("nodes", []),
        "tres_allocated": rec.get("tres_allocated") if record is not None else None,
        "gpus": gpus,
        "gpu_seconds": gpus * elapsed if gpus is not None and elapsed is not None else None,
        "user": env.get("SLURM_JOB_USER") or rec.get("user"),
        "account": env.get("SLURM_JOB_ACCOUNT") or rec.get("account"),
        "partition": env.get("SLURM_JOB_PARTITION") or rec.get("partition"),
        "controller": posix.uname().nodename,
        "slurm_record": source,
        "run_source": run_source,
        **ids,
    }


PENDING_DIR = "final-pending"
LOCK_NAME = ".collector.lock"
IDLE_EXIT_SECONDS = 3.0  # the collector exits after this long with nothing pending
BATCH = 200  # job ids per sacct/squeue call


def pending_dir(config: "HookConfig") -> str:
    """Where EpilogSlurmctld leaves one marker per job run awaiting its final state."""
    return posixfs.join(config.spool_dir, PENDING_DIR)


def queue_final_state(
    config: "HookConfig",
    job: str,
    job_id: int,
    run: int,
    start: int | None = None,
    batch: bool | None = None,
    completed: dict[str, object] | None = None,
) -> None:
    """Leave a marker for this run and make sure one collector is running; return at once.

    One collector per controller polls Slurm for every pending job together (one sacct call
    a second), instead of one poller per job: a burst of short jobs must not turn into a
    burst of sacct processes on the controller. ``completed`` (the epilog's time,
    environment, ids and run source) asks the collector to write that run's ``completed``
    event first.
    """
    directory = pending_dir(config)
    posixfs.make_dirs(directory)
    deadline = int(time.time() + WATCH_SECONDS)
    marker: dict[str, object] = {"job": job, "job_id": job_id, "run": run, "start": start,
                                 "batch": batch, "deadline": deadline}  # fmt: skip
    if completed is not None:
        marker["completed"] = completed
    # written before the lock is tried: see collect()
    _write_marker(posixfs.join(directory, f"{job_id}.{run}.json"), marker)
    lock = _try_lock(directory)
    if lock is None:
        return  # a collector runs: it sees this marker before it can exit (see collect())
    posix.close(lock)
    _spawn_collector(config)


def _write_marker(path: str, marker: dict[str, object]) -> None:
    """Write a marker whole or not at all (tmp, fsync, rename)."""
    from computeproof.canonical import canonical_bytes

    tmp = path + f".{posix.getpid()}.tmp"
    fd = posix.open(tmp, posix.O_WRONLY | posix.O_CREAT | posix.O_TRUNC, 0o600)
    try:
        posix.write(fd, canonical_bytes(marker))
        posix.fsync(fd)
    finally:
        posix.close(fd)
    posix.rename(tmp, path)


def _try_lock(directory: str) -> int | None:
    import fcntl

    fd = posix.open(posixfs.join(directory, LOCK_NAME), posix.O_RDWR | posix.O_CREAT, 0o600)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except OSError:
        posix.close(fd)
        return None
    return fd


def _markers(directory: str) -> list[tuple[str, dict[str, object]]]:
    import json

    out = []
    for name in sorted(posix.listdir(directory)):
        if not name.endswith(".json"):
            continue
        path = posixfs.join(directory, name)
        try:
            with open(path, "rb") as f:
                out.append((path, json.loads(f.read())))
        except (OSError, ValueError):
            continue
    return out


def collect(
    config: "HookConfig", poll_s: float = POLL_SECONDS, idle_exit_s: float = IDLE_EXIT_SECONDS
) -> int:
    """Be the controller's one collector while markers are pending; return events written.

    Exits when nothing has been pending for IDLE_EXIT_SECONDS. Before exiting it releases
    the lock and looks once more: a marker written meanwhile is either seen here (and the
    lock re-taken) or its writer took the lock and collects it. Nothing is left behind.
    """
    directory = pending_dir(config)
    lock = _try_lock(directory)
    if lock is None:
        return 0  # another collector runs; it will see our marker
    written = 0
    idle_since = time.monotonic()
    try:
        while True:
            markers = _markers(directory)
            if markers:
                written += _collect_once(config, markers)
                idle_since = time.monotonic()
            elif time.monotonic() - idle_since >= idle_exit_s:
                posix.close(lock)
                lock = None
                if not _markers(directory) or (lock := _try_lock(directory)) is None:
                    return written
                idle_since = time.monotonic()
                continue
            time.sleep(poll_s)
    finally:
        if lock is not None:
            posix.close(lock)


def _collect_once(config: "HookConfig", markers: list[tuple[str, dict[str, object]]]) -> int:
    """One pass: one squeue call for the runs owed ``completed``, one sacct call for every
    pending run (and, for stragglers, one squeue call)."""
    from slurm_hooks.slurmcli import SlurmCli, pick_run

    info = SlurmCli(config.slurm_bin)
    owed = sorted({int(m["job_id"]) for _, m in markers if isinstance(m.get("completed"), dict)})  # type: ignore[call-overload]
    live_records, live_error = _query(owed, info.jobs_live)
    live_now = {rec["job_id"]: rec for rec in live_records}
    ids = sorted({int(m["job_id"]) for _, m in markers})  # type: ignore[call-overload]
    accounted, error = _query(ids, info.jobs_accounting)
    error = error or live_error
    by_job: dict[int, list[AccountingRecord]] = {}
    for rec in accounted:
        by_job.setdefault(rec["job_id"], []).append(rec)
    written = 0
    now = time.time()
    late: list[tuple[str, dict[str, object]]] = []
    for path, m in markers:
        job_id, run = int(m["job_id"]), int(m["run"])  # type: ignore[call-overload]
        runs = by_job.get(job_id, [])
        owed_event = m.get("completed")
        if isinstance(owed_event, dict):
            seen, source = _completed_record(m, live_now.get(job_id), runs, now, error)
            if source is None:
                continue  # not reported yet: the next pass asks again
            _record_completed(config, m, owed_event, seen, source)
            written += 1
            m = {k: v for k, v in m.items() if k != "completed"}
            if m.get("start") is None and seen is not None:
                m["start"] = seen.get("start_epoch")
            if m.get("batch") is None and seen is not None:
                m["batch"] = seen.get("batch")
            _write_marker(path, m)
        start = m.get("start")
        # by start time when Slurm gave one, else by run number
        record = pick_run(runs, start) if isinstance(start, int) else _nth_run(runs, run)
        # a batch job's exit code and signal reach slurmdbd with its batch step's end
        whole = m.get("batch") is not True or record is None or bool(record.get("batch_step_end"))
        if record is not None and settled(record) and (whole or record.get("start_epoch") is None):
            _record(config, str(m["job"]), job_id, run, final_payload(record, "sacct"))
            _unlink(path)
            written += 1
        elif now >= int(m.get("deadline") or 0):  # type: ignore[call-overload]
            late.append((path, {**m, "partial": record}))
    if late:
        late_records, late_error = _query(
            sorted({int(m["job_id"]) for _, m in late}),  # type: ignore[call-overload]
            info.jobs_live,
        )
        live = {rec["job_id"]: rec for rec in late_records}
        error = late_error or error
        for path, m in late:
            written += _give_up(config, path, m, live, error)
    return written


def _query(
    ids: list[int], call: "Callable[[list[int]], list[AccountingRecord]]"
) -> "tuple[list[AccountingRecord], str]":
    """Records of ``ids`` from ``call``, BATCH ids a call; and the last error, if any (the
    records of the other calls are kept)."""
    out: list[AccountingRecord] = []
    error = ""
    for i in range(0, len(ids), BATCH):
        try:
            out.extend(call(ids[i : i + BATCH]))
        except SlurmError as e:
            error = str(e)
    return out, error


def _nth_run(runs: "list[AccountingRecord]", run: int) -> "AccountingRecord | None":
    """sacct lists a requeued job's runs oldest first, so the run number picks one."""
    return runs[run] if run < len(runs) else None


def _completed_record(
    marker: dict[str, object],
    live: "AccountingRecord | None",
    runs: "list[AccountingRecord]",
    now: float,
    error: str,
) -> "tuple[AccountingRecord | None, str | None]":
    """Slurm's record of the run a ``completed`` event is owed for, and where it came from;
    (None, None) to wait for the next pass, (None, "unavailable: ...") at the deadline."""
    run = int(marker["run"])  # type: ignore[call-overload]
    # squeue shows the job's latest run: this one unless it was requeued since
    if live is not None and ended(live) and live.get("restarts") in (None, run):
        return live, "squeue"
    record = _nth_run(runs, run)
    if record is not None and ended(record):
        return record, "sacct"
    if now >= int(marker.get("deadline") or 0):  # type: ignore[call-overload]
        return None, f"unavailable: {error or 'not reported by squeue or sacct'}"
    return None, None


def _record_completed(
    config: "HookConfig",
    marker: dict[str, object],
    owed: dict[str, object],
    record: "AccountingRecord | None",
    source: str,
) -> None:
    env, ids = owed.get("env"), owed.get("ids")
    payload = completed_payload(
        {str(k): str(v) for k, v in env.items()} if isinstance(env, dict) else {},
        dict(ids) if isinstance(ids, dict) else {},
        record,
        source,
        str(owed.get("run_source")),
    )
    job_id, run = int(marker["job_id"]), int(marker["run"])  # type: ignore[call-overload]
    event = new_event("completed", config.cluster, str(marker["job"]), job_id, config.host,
                      payload, run=run, time=str(owed["time"]))  # fmt: skip
    Spool(config.spool_dir).write(event)


def _give_up(
    config: "HookConfig",
    path: str,
    marker: dict[str, object],
    live: "dict[int, AccountingRecord]",
    error: str,
) -> int:
    # slurmdbd lagged: squeue's view is Slurm's own report of the final state too;
    # failing that, the final state sacct gave before its record was whole.
    job_id, run, job = int(marker["job_id"]), int(marker["run"]), str(marker["job"])  # type: ignore[call-overload]
    rec = live.get(job_id)
    start = marker.get("start")
    partial = marker.get("partial")
    _unlink(path)
    if rec is not None and settled(rec) and start in (None, rec.get("start_epoch")):
        _record(config, job, job_id, run, final_payload(rec, "squeue"))
        return 1
    if isinstance(partial, dict) and partial.get("state") not in NOT_FINAL:
        _record(config, job, job_id, run, final_payload(partial, "sacct_partial"))  # type: ignore[arg-type]
        return 1
    from slurm_hooks.hooks import count_failure, failure_line, log

    why = f"no final state within {WATCH_SECONDS:g} s: {error or 'not reported'}"
    log("final_state", why, job_id)
    count_failure(config.spool_dir, failure_line("final_state", why, job_id))
    return 0


def _unlink(path: str) -> None:
    try:  # noqa: SIM105 - contextlib costs imports on the hook path
        posix.unlink(path)
    except FileNotFoundError:
        pass


def _record(
    config: "HookConfig", job: str, job_id: int, run: int, payload: dict[str, object]
) -> dict[str, object]:
    event = new_event("final_state", config.cluster, job, job_id, config.host, payload, run=run)
    Spool(config.spool_dir).write(event)
    return event


def _spawn_collector(config: "HookConfig") -> None:
    """Run :func:`collect` in a detached grandchild; return at once (the epilog goes on)."""
    pid = posix.fork()
    if pid:
        posix.waitpid(pid, 0)  # the middle child exits at once
        return
    try:
        posix.setsid()
        if posix.fork():
            posix._exit(0)
        _detach()
        try:
            collect(config)
        except Exception as e:  # a bug must not leave a traceback on slurmctld's pipes
            from slurm_hooks.hooks import count_failure, failure_line, log

            what = f"{type(e).__name__}: {e}"
            log("final_state", what, None)
            count_failure(config.spool_dir, failure_line("final_state", what, None))
    finally:
        posix._exit(0)


def _detach() -> None:
    """Drop the inherited descriptors so slurmctld is not kept waiting on its pipes."""
    devnull = posix.open("/dev/null", posix.O_RDWR)
    for fd in (0, 1, 2):
        posix.dup2(devnull, fd)
    posix.closerange(3, 65536)
    posix.chdir("/")
