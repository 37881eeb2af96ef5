"""The controller's events, built from one job record: ``scheduled``, ``completed`` and
``final_state``.

The collector (controller.py) builds all three, and the optional PrologSlurmctld builds
``scheduled`` here too, so both carry the same fields under the same deterministic id
whichever was written first. A record is a jobinfo.AccountingRecord; the hook's
environment, where given, wins for what Slurm hands the hook directly (its values are the
raw bytes of the job's name and work dir). Every payload says where its
figures came from (``source``) and who recorded it (``recorded_by``).
Standard library only: the hooks import this.
"""

import posix

from slurm_hooks.finalstate import ended
from slurm_hooks.slurmenv import env_int, expand_hostlist
from slurm_hooks.slurmtext import rfc3339

TYPE_CHECKING = False
if TYPE_CHECKING:
    from collections.abc import Mapping

    Record = Mapping[str, object]

ID_KEYS = ("array_job_id", "array_task_id", "het_job_id", "het_job_offset")


def _ints(value: object) -> int | None:
    return value if isinstance(value, int) and not isinstance(value, bool) else None


def ids_of(rec: "Record") -> "dict[str, int | None]":
    """The array and het ids of a record."""
    return {k: _ints(rec.get(k)) for k in ID_KEYS}


def _gpus_per_node(rec: "Record") -> "dict[str, int] | None":
    indices = rec.get("gpu_indices")
    if isinstance(indices, dict) and indices:
        return {str(node): len(idx) for node, idx in indices.items() if isinstance(idx, list)}
    return None


def _env_nodes(env: "Mapping[str, str]", rec: "Record") -> object:
    nodelist = env.get("SLURM_JOB_NODELIST")
    if nodelist:
        try:
            return expand_hostlist(nodelist)
        except Exception:  # a hostlist this parser does not know: Slurm's record has it
            pass
    return rec.get("nodes") or []


def scheduled_payload(
    rec: "Record",
    source: str,
    recorded_by: str,
    env: "Mapping[str, str] | None" = None,
) -> dict[str, object]:
    """``scheduled``: who, where, what was asked for and given, when."""
    env = env or {}
    tres = rec.get("tres_allocated")
    submit, eligible, start = (_ints(rec.get(k)) for k in
                               ("submit_epoch", "eligible_epoch", "start_epoch"))  # fmt: skip
    return {
        "user": env.get("SLURM_JOB_USER") or rec.get("user"),
        "uid": env_int(env, "SLURM_JOB_UID") if "SLURM_JOB_UID" in env else rec.get("uid"),
        "gid": env_int(env, "SLURM_JOB_GID") if "SLURM_JOB_GID" in env else rec.get("gid"),
        "group": env.get("SLURM_JOB_GROUP") or rec.get("group"),
        "account": env.get("SLURM_JOB_ACCOUNT") or rec.get("account"),
        "partition": env.get("SLURM_JOB_PARTITION") or rec.get("partition"),
        "qos": rec.get("qos"),
        # the raw bytes Slurm handed the hook, else what the structured read said
        "job_name": env["SLURM_JOB_NAME"] if "SLURM_JOB_NAME" in env else rec.get("job_name"),
        "work_dir": env.get("SLURM_JOB_WORK_DIR") or rec.get("work_dir"),
        "nodes": _env_nodes(env, rec),
        "num_nodes": rec.get("num_nodes"),
        "num_cpus": rec.get("num_cpus"),
        "submit_time": rfc3339(submit),
        "eligible_time": rfc3339(eligible),
        "start_time": rfc3339(start),
        "submit_epoch": submit,
        "start_epoch": start,
        "time_limit_s": rec.get("time_limit_s"),
        "tres_requested": rec.get("tres_requested"),
        "tres_per_node": rec.get("tres_per_node"),
        "tres_allocated": tres if isinstance(tres, dict) else None,
        "gpus": rec.get("gpus") if isinstance(tres, dict) else None,
        "gpus_per_node": _gpus_per_node(rec),
        "gpu_indices": rec.get("gpu_indices"),
        "restarts": rec.get("restarts"),
        "controller": posix.uname().nodename,
        "source": source,
        "recorded_by": recorded_by,
        **ids_of(rec),
    }


def completed_payload(rec: "Record", source: str, recorded_by: str) -> dict[str, object]:
    """``completed``: exit code and signal, times, GPU-seconds, from the record of the run
    as it ended (the controller's, or accounting's for a run the controller no longer
    held)."""
    code, sig = _ints(rec.get("exit_code")), _ints(rec.get("signal"))
    over = ended(rec)
    start, end = _ints(rec.get("start_epoch")), _ints(rec.get("end_epoch")) if over else None
    elapsed = end - start if start is not None and end is not None and end >= start else None
    tres = rec.get("tres_allocated")
    gpus = _ints(rec.get("gpus")) if isinstance(tres, dict) else None
    return {
        "exit_code": code,
        "signal": sig,
        "state_seen": rec.get("state"),
        "reason": rec.get("reason"),
        "start_time": rfc3339(start),
        "end_time": rfc3339(end),
        "start_epoch": start,
        "end_epoch": end,
        "elapsed_s": elapsed,
        "nodes": rec.get("nodes") or [],
        "tres_allocated": tres if isinstance(tres, dict) else None,
        "gpus": gpus,
        "gpu_seconds": gpus * elapsed if gpus is not None and elapsed is not None else None,
        "user": rec.get("user"),
        "account": rec.get("account"),
        "partition": rec.get("partition"),
        "qos": rec.get("qos"),
        "controller": posix.uname().nodename,
        "source": source,
        "recorded_by": recorded_by,
        **ids_of(rec),
    }


# the collector's bookkeeping, and what a user set (accounting keeps its own version of it:
# scheduled has the exact bytes)
_NOT_PAYLOAD = frozenset({"job_id", "batch", "job_name", "work_dir"})


def final_payload(rec: "Record", source: str) -> dict[str, object]:
    """``final_state``: Slurm's settled record of the run, and its GPU-seconds."""
    payload: dict[str, object] = {k: v for k, v in rec.items() if k not in _NOT_PAYLOAD}
    elapsed, gpus = _ints(rec.get("elapsed_s")), _ints(rec.get("gpus"))
    payload["gpu_seconds"] = gpus * elapsed if gpus is not None and elapsed is not None else None
    payload["source"] = source
    payload["recorded_by"] = "collector"
    return payload


def event_time(epoch: int | None) -> str | None:
    """A Slurm time as an event's ``time``: the collector stamps its events with the
    times Slurm recorded, so an event written again after a restart is the same bytes."""
    stamp = rfc3339(epoch)
    return stamp[:-1] + ".000000Z" if stamp is not None else None
