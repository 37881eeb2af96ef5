"""JobInfo over pyslurm, used only when it imports and was built for the running Slurm.

pyslurm links libslurm of one Slurm release (PyPI ships 25.11.x for Slurm 25.11); against
another release it fails to import or mis-reads structures, so the backend is chosen only
when pyslurm's major.minor equals ``scontrol --version``'s. Importing pyslurm where libslurm
finds no slurm.conf ends the process (a libslurm fatal), so the check imports it in a child
process first. The adapter reads pyslurm 25.11's object API: ``pyslurm.Jobs.load()`` (every
job the controller holds, one RPC), ``pyslurm.Job.load(id)``, and
``pyslurm.db.Jobs.load(pyslurm.db.JobFilter(...))``; it is unit-tested over stand-ins of
those classes, not against a real libslurm.

pyslurm decodes Slurm's strings as strict UTF-8, so reading a job name or path that is not
UTF-8 raises, and its database view keeps one record per job id, so a requeued job's
earlier runs are not returned. For those jobs (and only those) the backend asks the
command-line backend, which keeps a name's exact bytes and lists every run; without one
(``fallback`` None) such a name is recorded as None and only the latest run is returned.
"""

from __future__ import annotations

import os
import sys
from collections.abc import Callable, Iterable, Sequence
from types import ModuleType

from computeproof.errors import SlurmError
from slurm_hooks import command
from slurm_hooks.finalstate import state_name
from slurm_hooks.jobinfo import AccountingRecord, JobInfo, job_state, pick_run
from slurm_hooks.slurmtext import finish_record, json_text, node_names

_MIB = 1 << 20


def slurm_release(slurm_bin: str) -> str:
    """The running Slurm's "major.minor" from ``scontrol --version`` ("slurm 22.05.8")."""
    out = command.run([os.path.join(slurm_bin, "scontrol"), "--version"], timeout=5.0)
    words = out.decode("utf-8", "replace").split()
    if len(words) < 2:
        raise SlurmError(f"unexpected scontrol --version output {out[:80]!r}")
    return ".".join(words[1].split(".")[:2])


def _major_minor(version: str) -> str:
    return ".".join(version.split(".")[:2])


def probe_pyslurm_version(python: str = sys.executable, timeout: float = 20.0) -> str | None:
    """pyslurm's version as a child process imports it, None when it does not import (or
    libslurm ends the child)."""
    code = "import pyslurm, sys; sys.stdout.write(pyslurm.__version__)"
    try:
        out = command.run([python, "-c", code], timeout=timeout, env=dict(os.environ))
    except SlurmError:
        return None
    text = out.decode("ascii", "replace").strip()
    return text or None


def load_pyslurm(
    slurm_bin: str,
    module: ModuleType | None = None,
    probe: Callable[[], str | None] = probe_pyslurm_version,
) -> PySlurm | None:
    """A PySlurm backend when pyslurm imports and matches the running Slurm, else None."""
    if module is None:
        import importlib.util

        if importlib.util.find_spec("pyslurm") is None:
            return None  # not installed: no child process to find that out
        version = probe()
        if version is None or _major_minor(version) != slurm_release(slurm_bin):
            return None
        try:
            import pyslurm  # type: ignore[import-not-found,unused-ignore]
        except Exception:  # ImportError, or a libslurm that does not load
            return None
        module = pyslurm
    if _major_minor(str(getattr(module, "__version__", ""))) != slurm_release(slurm_bin):
        return None
    from slurm_hooks.slurmcli import SlurmCli

    return PySlurm(module, SlurmCli(slurm_bin))


def _get(obj: object, name: str) -> object:
    """``obj.name``, None when absent or when pyslurm cannot decode it (not UTF-8)."""
    try:
        return getattr(obj, name, None)
    except (UnicodeDecodeError, ValueError, TypeError):
        return None


_TEXT_FIELDS = ("name", "working_directory", "user_name", "group_name", "account", "comment")


def undecodable(job: object) -> bool:
    """Whether pyslurm cannot decode one of the job's text fields (not UTF-8)."""
    for name in _TEXT_FIELDS:
        try:
            getattr(job, name, None)
        except (UnicodeDecodeError, ValueError):
            return True
    return False


def _int(value: object) -> int | None:
    if isinstance(value, bool) or not isinstance(value, int):
        return None
    return value


def _epoch(value: object) -> int | None:
    """pyslurm gives times as epoch ints, None (or 0) when unset."""
    if hasattr(value, "timestamp"):
        value = int(value.timestamp())
    n = _int(value)
    return n if n else None


def _count(resource: object) -> int | None:
    return _int(_get(resource, "count"))


def tres_dict(tres: object) -> dict[str, int]:
    """A pyslurm TrackableResources as {"cpu": 2, "mem": bytes, "gres/gpu:a100": 4, ...}."""
    out: dict[str, int] = {}
    if tres is None:
        return out
    for kind in ("cpu", "mem", "energy", "node", "billing", "vmem", "pages"):
        count = _count(_get(tres, kind))
        if count is not None:
            out[kind] = count * _MIB if kind == "mem" else count  # pyslurm counts MiB
    for group in ("gres", "license", "fs", "interconnect"):
        items = _get(tres, group)
        if not isinstance(items, dict):
            continue
        for name, resource in items.items():
            count = _count(resource)
            if isinstance(name, str) and count is not None:
                out[f"{group}/{name}"] = count
    return out


def to_record(job: object, live: bool) -> AccountingRecord:
    """An AccountingRecord from a pyslurm.Job (``live``) or a pyslurm.db.Job."""
    job_id = _int(_get(job, "id"))
    if job_id is None:
        raise SlurmError("pyslurm job without an integer id")
    state = json_text(_get(job, "state")) or ""
    task = _array_task(job)
    het = _int(_get(job, "heterogeneous_id")) or None
    nodes = node_names(_get(job, "allocated_nodes" if live else "nodelist"))
    allocated = bool(nodes)
    limit = _int(_get(job, "time_limit"))
    name = _get(job, "name")
    rec: AccountingRecord = {
        "job_id": job_id,
        "array_job_id": _int(_get(job, "array_id")) if task is not None else None,
        "array_task_id": task,
        "het_job_id": het,
        "het_job_offset": _int(_get(job, "heterogeneous_offset")) if het else None,
        "user": json_text(_get(job, "user_name")),
        "uid": _int(_get(job, "user_id")),
        "gid": _int(_get(job, "group_id")),
        "group": json_text(_get(job, "group_name")),
        "account": json_text(_get(job, "account")),
        "partition": json_text(_get(job, "partition")),
        "qos": json_text(_get(job, "qos")),
        "job_name": name if isinstance(name, str) else None,
        "work_dir": json_text(_get(job, "working_directory")),
        "state": state_name([state]) if state else "",
        "state_flags": [state] if state else [],
        "reason": json_text(_get(job, "state_reason")),
        "exit_code": _int(_get(job, "exit_code")),
        "signal": _int(_get(job, "exit_code_signal")),
        "submit_epoch": _epoch(_get(job, "submit_time")),
        "eligible_epoch": _epoch(_get(job, "eligible_time")),
        "start_epoch": _epoch(_get(job, "start_time")) if allocated else None,
        "end_epoch": _epoch(_get(job, "end_time")),
        "time_limit_s": limit * 60 if limit is not None else None,
        "nodes": nodes,
        "num_nodes": _int(_get(job, "num_nodes")),
        "num_cpus": _int(_get(job, "cpus")),
        "tres_allocated": tres_dict(_get(job, "allocated_tres")) if allocated else {},
        "tres_requested": tres_dict(_get(job, "requested_tres")),
        "restarts": _int(_get(job, "requeue_count")),
    }
    if live:
        batch = _get(job, "is_batch_job")
        rec["batch"] = batch if isinstance(batch, bool) else None
    else:
        elapsed = _int(_get(job, "elapsed_time"))
        if elapsed is not None:
            rec["elapsed_s"] = elapsed
        # as sacct's: a batch job's record lists its batch step, whose end and exit code
        # are the job script's (settled() waits for that step's end)
        step = _batch_step(_get(job, "steps"))
        rec["batch"] = True if step is not None else None
        if step is not None:
            rec["batch_step_end"] = _epoch(_get(step, "end_time"))
            rec["batch_exit_code"] = _int(_get(step, "exit_code"))
            rec["batch_signal"] = _int(_get(step, "exit_code_signal"))
    return finish_record(rec)  # type: ignore[arg-type,return-value]


def _array_task(job: object) -> int | None:
    """The array task id. pyslurm reads Slurm's 0 as unset (its u32_parse treats zero as
    no value), so task 0 of an array comes back None: a job of an array (``array_id``
    set) with no task id and no tasks still pending under it is task 0."""
    task = _int(_get(job, "array_task_id"))
    if task is not None:
        return task
    if _int(_get(job, "array_id")) is not None and not _get(job, "array_tasks_waiting"):
        return 0
    return None


def _batch_step(steps: object) -> object | None:
    """The "batch" step of a pyslurm.db.Job's steps (a dict keyed by step id)."""
    if not isinstance(steps, dict):
        return None
    step: object = steps.get("batch")
    if step is not None:
        return step
    return next((s for s in steps.values() if _get(s, "id") == "batch"), None)


def _values(collection: object) -> list[object]:
    """The jobs of a pyslurm collection (a multi-cluster map, or a plain list)."""
    values = getattr(collection, "values", None)
    items = values() if callable(values) else collection
    return list(items) if isinstance(items, Iterable) else []


class PySlurm:
    """JobInfo over a pyslurm module object (the real one, or a stand-in in tests), with
    ``fallback`` (the command-line backend) for the jobs pyslurm cannot read whole."""

    def __init__(self, module: ModuleType, fallback: JobInfo | None = None) -> None:
        self.pyslurm = module
        self.fallback = fallback

    def _error(self, e: Exception) -> SlurmError:
        return SlurmError(f"pyslurm: {e}")

    def _db_jobs(self, **filter_args: object) -> list[AccountingRecord]:
        db = self.pyslurm.db
        try:
            jobs = _values(db.Jobs.load(db.JobFilter(**filter_args)))
        except Exception as e:  # pyslurm raises RPCError and friends
            raise self._error(e) from e
        out = [to_record(job, live=False) for job in jobs]
        # a name pyslurm cannot decode, or a requeued job whose earlier runs its one record
        # a job id hides: the command line's records of those jobs instead
        redo = {r["job_id"] for r, job in zip(out, jobs, strict=True)
                if undecodable(job) or (r.get("restarts") or 0) > 0}  # fmt: skip
        if redo and self.fallback is not None:
            out = [r for r in out if r["job_id"] not in redo]
            out += self.fallback.jobs_accounting(sorted(redo))
        out.sort(key=lambda r: (r["job_id"], r.get("start_epoch") or 0))
        return out

    def accounting(
        self, since: int, until: int, states: Sequence[str] = ()
    ) -> list[AccountingRecord]:
        """Every job active between ``since`` and ``until``, from slurmdbd; with
        ``states``, only those in one of them then."""
        records = self._db_jobs(start_time=since, end_time=until)
        if states:  # pyslurm 25.11's JobFilter does not filter by state yet
            wanted = set(states)
            records = [r for r in records if r.get("state") in wanted]
        return records

    def jobs_accounting(
        self, job_ids: Sequence[int], detail: bool = True
    ) -> list[AccountingRecord]:
        """The slurmdbd records of ``job_ids`` (the latest run of each), in one call
        (names included whatever ``detail``: one RPC either way)."""
        if not job_ids:
            return []
        wanted = set(job_ids)
        return [r for r in self._db_jobs(ids=sorted(wanted)) if r["job_id"] in wanted]

    def job_accounting(self, job_id: int, start: int | None = None) -> AccountingRecord | None:
        """The slurmdbd record of ``job_id``'s run that started at ``start`` (else latest)."""
        return pick_run(self.jobs_accounting([job_id]), start)

    def live_jobs(
        self, detail: bool = False, job_ids: Sequence[int] = ()
    ) -> list[AccountingRecord]:
        """Every job the controller holds (one RPC; names included whatever ``detail``)."""
        try:
            jobs = _values(self.pyslurm.Jobs.load())
        except Exception as e:
            raise self._error(e) from e
        out = [to_record(job, live=True) for job in jobs]
        redo = {r["job_id"] for r, job in zip(out, jobs, strict=True) if undecodable(job)}
        if redo and self.fallback is not None:
            exact = {r["job_id"]: r for r in self.fallback.live_jobs(True, sorted(redo))}
            out = [exact.get(r["job_id"], r) if r["job_id"] in redo else r for r in out]
        return out

    def job_live(self, job_id: int) -> AccountingRecord | None:
        """The controller's record of ``job_id``, None once purged."""
        try:
            job = self.pyslurm.Job.load(job_id)
        except Exception as e:
            # pyslurm raises RPCError "Invalid job id specified" for a purged job.
            if "Invalid job id" in str(e):
                return None
            raise self._error(e) from e
        if undecodable(job) and self.fallback is not None:
            return self.fallback.job_live(job_id)
        return to_record(job, live=True)

    def job_state(self, job_id: int) -> str | None:
        """The job's state from the controller, else from accounting."""
        return job_state(self, job_id)
