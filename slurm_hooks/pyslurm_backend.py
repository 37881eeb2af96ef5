"""JobInfo over pyslurm, used only when it imports and was built for the running Slurm.

pyslurm links libslurm of one Slurm release (PyPI ships it for 25.11 only); against
another release it either fails to import or mis-reads structures, so the backend is
chosen only when pyslurm's major.minor equals ``scontrol --version``'s. The adapter
reads the pyslurm >= 23 object API (pyslurm.Job, pyslurm.db.Jobs) defensively by
attribute name; it is unit-tested over a stub module, not against a real libslurm.
"""

from __future__ import annotations

import os
from types import ModuleType

from computeproof.errors import SlurmError
from slurm_hooks import command
from slurm_hooks.jobinfo import AccountingRecord
from slurm_hooks.scontrol import parse_tres, rfc3339
from slurm_hooks.slurmenv import display_id, expand_hostlist, parse_exit_code


def slurm_release(slurm_bin: str) -> str:
    """The running Slurm's "major.minor" from ``scontrol --version`` ("slurm 22.05.8")."""
    out = command.run([os.path.join(slurm_bin, "scontrol"), "--version"], timeout=5.0)
    words = out.decode("utf-8", "replace").split()
    if len(words) < 2:
        raise SlurmError(f"unexpected scontrol --version output {out[:80]!r}")
    return ".".join(words[1].split(".")[:2])


def load_pyslurm(slurm_bin: str, module: ModuleType | None = None) -> PySlurm | None:
    """A PySlurm backend when pyslurm imports and matches the running Slurm, else None."""
    if module is None:
        try:
            import pyslurm
        except Exception:  # ImportError, or a libslurm that does not load
            return None
        module = pyslurm
    version = str(getattr(module, "__version__", ""))
    if ".".join(version.split(".")[:2]) != slurm_release(slurm_bin):
        return None
    return PySlurm(module)


def _int(value: object) -> int | None:
    if isinstance(value, bool) or not isinstance(value, int):
        return None
    return value


def _epoch(value: object) -> int | None:
    """pyslurm gives times as epoch ints (or datetimes in some releases); 0 means unset."""
    if hasattr(value, "timestamp"):
        value = int(value.timestamp())
    n = _int(value)
    return n if n else None


def _attr(obj: object, *names: str) -> object:
    for name in names:
        value = getattr(obj, name, None)
        if value is not None:
            return value
    return None


def _str(value: object) -> str | None:
    return value if isinstance(value, str) and value else None


def to_record(job: object) -> AccountingRecord:
    """An AccountingRecord from a pyslurm.db.Job or pyslurm.Job object."""
    job_id = _int(_attr(job, "id", "job_id"))
    if job_id is None:
        raise SlurmError("pyslurm job without an integer id")
    het_id = _int(_attr(job, "het_job_id")) or None
    start, end = _epoch(_attr(job, "start_time")), _epoch(_attr(job, "end_time"))
    code = _attr(job, "exit_code")
    exit_code, signal = (
        parse_exit_code(code) or (None, None) if isinstance(code, str) else (_int(code), None)
    )
    if signal is None:
        signal = _int(_attr(job, "exit_code_signal"))
    tres_text = _attr(job, "tres_alloc_str", "allocated_tres", "tres_alloc")
    tres = parse_tres(tres_text) if isinstance(tres_text, str) else {}
    nodes = _str(_attr(job, "nodelist", "nodes"))
    elapsed = _int(_attr(job, "elapsed_time", "run_time"))
    rec: AccountingRecord = {
        "job_id": job_id,
        "array_job_id": _int(_attr(job, "array_id", "array_job_id")) or None,
        "array_task_id": _int(_attr(job, "array_task_id")),
        "het_job_id": het_id,
        "het_job_offset": _int(_attr(job, "het_job_offset")) if het_id else None,
        "user": _str(_attr(job, "user_name")),
        "account": _str(_attr(job, "account")),
        "partition": _str(_attr(job, "partition")),
        "qos": _str(_attr(job, "qos")),
        "job_name": _str(_attr(job, "name")),
        "state": _str(_attr(job, "state")) or "",
        "reason": _str(_attr(job, "state_reason")),
        "exit_code": exit_code,
        "signal": signal,
        "submit_epoch": _epoch(_attr(job, "submit_time")),
        "start_epoch": start,
        "end_epoch": end,
        "start_time": rfc3339(start),
        "end_time": rfc3339(end),
        "elapsed_s": elapsed
        if elapsed is not None
        else (end - start if start is not None and end is not None else None),
        "nodes": expand_hostlist(nodes) if nodes and nodes != "None assigned" else [],
        "num_nodes": _int(_attr(job, "num_nodes", "node_count")),
        "tres_allocated": tres,
        "gpus": tres.get("gres/gpu", 0),
        "restarts": _int(_attr(job, "restart_cnt", "requeue_count")),
    }
    rec["job"] = display_id(
        job_id, rec["array_job_id"], rec["array_task_id"], het_id, rec["het_job_offset"]
    )
    return rec


class PySlurm:
    """JobInfo over a pyslurm module object (the real one, or a stub in tests)."""

    def __init__(self, module: ModuleType) -> None:
        self.pyslurm = module

    def _error(self, e: Exception) -> SlurmError:
        return SlurmError(f"pyslurm: {e}")

    def accounting(self, since: int, until: int) -> list[AccountingRecord]:
        """Jobs between ``since`` and ``until`` from slurmdbd, via pyslurm.db.Jobs."""
        db = self.pyslurm.db
        try:
            jobs = db.Jobs.load(db.JobFilter(start_time=since, end_time=until))
        except Exception as e:  # pyslurm raises RPCError and friends
            raise self._error(e) from e
        values = jobs.values() if hasattr(jobs, "values") else jobs
        return [to_record(job) for job in values]

    def job_accounting(self, job_id: int, start: int | None = None) -> AccountingRecord | None:
        """The slurmdbd record of ``job_id``'s run that started at ``start`` (else latest)."""
        db = self.pyslurm.db
        try:
            jobs = db.Jobs.load(db.JobFilter(ids=[job_id]))
        except Exception as e:
            raise self._error(e) from e
        from slurm_hooks.slurmcli import pick_run

        values = list(jobs.values() if hasattr(jobs, "values") else jobs)
        records = [to_record(j) for j in values if _int(_attr(j, "id", "job_id")) == job_id]
        return pick_run(records, start)

    def job_live(self, job_id: int) -> AccountingRecord | None:
        """The controller's record of ``job_id``, None once purged."""
        try:
            job = self.pyslurm.Job.load(job_id)
        except Exception as e:
            # pyslurm raises RPCError "Invalid job id specified" for a purged job.
            if "Invalid job id" in str(e):
                return None
            raise self._error(e) from e
        return to_record(job)

    def job_state(self, job_id: int) -> str | None:
        """The job's state from the controller, else from accounting."""
        live = self.job_live(job_id)
        if live is not None:
            return live["state"]
        rec = self.job_accounting(job_id)
        return rec["state"] if rec is not None else None
