"""JobInfo over the Slurm client commands' output (the default backend): sacct's JSON and
text, and squeue's text fields.

Absolute paths from ``slurm_bin`` (hooks have no PATH), a timeout on every call, and
subprocess failures raised as SlurmError. Parses the data_parser v0.0.38 layout of
Slurm 22.05 and the later {"set", "number"} integer wrappers.

Slurm 22.05 quirk: ``sacct --json`` reports the job's exit_code as SUCCESS/0 even for a
job that exited 3 (the batch step is right, the job record is not); the text output
``sacct -P -o JobIDRaw,ExitCode`` is right, so the exit code is taken from there.
"""

from __future__ import annotations

import json
import os
from collections.abc import Sequence

from computeproof.errors import SlurmError
from slurm_hooks import command
from slurm_hooks.jobinfo import AccountingRecord
from slurm_hooks.scontrol import parse_time, rfc3339
from slurm_hooks.slurmenv import display_id, expand_hostlist, parse_exit_code

TIMEOUT = 30.0
_MIB = 1 << 20


def _num(value: object) -> int | None:
    """An integer field: plain, or {"set": bool, "number": n} (v0.0.39+); None if unset."""
    if isinstance(value, dict):
        if not value.get("set", True) or value.get("infinite"):
            return None
        value = value.get("number")
    if isinstance(value, bool) or not isinstance(value, int):
        return None
    return value


def _opt_id(value: object) -> int | None:
    """Array/het ids: 0 means "not an array/het job" in Slurm's JSON."""
    n = _num(value)
    return n if n else None


def _str(value: object) -> str | None:
    return value if isinstance(value, str) and value not in ("", "None", "(null)") else None


def _nodes(value: object) -> list[str]:
    text = _str(value)
    if text is None or text == "None assigned":
        return []
    return expand_hostlist(text)


def _tres_list(items: object) -> dict[str, int]:
    """sacct's [{"type": "gres", "name": "gpu", "count": 4}, ...] as {"gres/gpu": 4}."""
    out: dict[str, int] = {}
    if not isinstance(items, list):
        return out
    for item in items:
        if not isinstance(item, dict):
            continue
        count = _num(item.get("count"))
        kind = item.get("type")
        if count is None or not isinstance(kind, str):
            continue
        name = item.get("name")
        key = f"{kind}/{name}" if isinstance(name, str) and name else kind
        out[key] = count * _MIB if kind == "mem" else count  # sacct counts memory in MiB
    return out


def _tres_str(text: object) -> dict[str, int]:
    from slurm_hooks.scontrol import parse_tres

    return parse_tres(text) if isinstance(text, str) else {}


def _state(value: object) -> tuple[str, str | None]:
    if isinstance(value, dict):
        current = value.get("current")
        if isinstance(current, list):  # v0.0.39+: a list of flags
            current = current[0] if current else ""
        return (current if isinstance(current, str) else ""), _str(value.get("reason"))
    if isinstance(value, list):
        return (value[0] if value and isinstance(value[0], str) else ""), None
    return (value if isinstance(value, str) else ""), None


def _exit(value: object) -> tuple[int | None, int | None]:
    if isinstance(value, dict):
        sig = value.get("signal")
        signal = _num(sig.get("signal_id", sig.get("id"))) if isinstance(sig, dict) else None
        return _num(value.get("return_code")), signal if signal is not None else 0
    return None, None


def _finish(rec: AccountingRecord) -> AccountingRecord:
    rec["job"] = display_id(
        rec["job_id"],
        rec.get("array_job_id"),
        rec.get("array_task_id"),
        rec.get("het_job_id"),
        rec.get("het_job_offset"),
    )
    rec["start_time"] = rfc3339(rec.get("start_epoch"))
    rec["end_time"] = rfc3339(rec.get("end_epoch"))
    rec["gpus"] = rec.get("tres_allocated", {}).get("gres/gpu", 0)
    return rec


def _batch_step(steps: object) -> dict[str, object] | None:
    for step in steps if isinstance(steps, list) else ():
        if isinstance(step, dict) and (step.get("step") or {}).get("name") == "batch":
            return step
    return None


def _batch_step_end(steps: object) -> int | None:
    """When the job's batch step ended, per sacct; None while it is not recorded as ended."""
    step = _batch_step(steps)
    times = step.get("time") if step is not None else None
    return _opt_id(times.get("end")) if isinstance(times, dict) else None


def _batch_exit(steps: object) -> tuple[int | None, int | None]:
    """(exit code, signal) of the batch step. For a cancelled job Slurm records 0:0 on the
    job and the signal (0:15) on its batch step, so the receipt keeps both."""
    step = _batch_step(steps)
    return _exit(step.get("exit_code")) if step is not None else (None, None)


def parse_sacct_json(data: object) -> list[AccountingRecord]:
    """Accounting records from ``sacct --json`` output (already decoded)."""
    if not isinstance(data, dict) or not isinstance(data.get("jobs"), list):
        raise SlurmError("sacct --json output has no 'jobs' list")
    out: list[AccountingRecord] = []
    for job in data["jobs"]:
        if not isinstance(job, dict) or _num(job.get("job_id")) is None:
            continue
        array = job.get("array") if isinstance(job.get("array"), dict) else {}
        het = job.get("het") if isinstance(job.get("het"), dict) else {}
        times = job.get("time") if isinstance(job.get("time"), dict) else {}
        tres = job.get("tres") if isinstance(job.get("tres"), dict) else {}
        assert isinstance(array, dict) and isinstance(het, dict)
        assert isinstance(times, dict) and isinstance(tres, dict)
        state, reason = _state(job.get("state"))
        code, signal = _exit(job.get("exit_code"))
        het_id = _opt_id(het.get("job_id"))
        rec: AccountingRecord = {
            "job_id": _num(job["job_id"]) or 0,
            "array_job_id": _opt_id(array.get("job_id")),
            "array_task_id": _num(array.get("task_id")),
            "het_job_id": het_id,
            "het_job_offset": _num(het.get("job_offset")) if het_id else None,
            "user": _str(job.get("user")),
            "account": _str(job.get("account")),
            "partition": _str(job.get("partition")),
            "qos": _str(job.get("qos")),
            "job_name": _str(job.get("name")),
            "state": state,
            "reason": reason,
            "exit_code": code,
            "signal": signal,
            "submit_epoch": _opt_id(times.get("submission")),
            "start_epoch": _opt_id(times.get("start")),
            "end_epoch": _opt_id(times.get("end")),
            "elapsed_s": _num(times.get("elapsed")),
            "nodes": _nodes(job.get("nodes")),
            "num_nodes": _num(job.get("allocation_nodes")),
            "tres_allocated": _tres_list(tres.get("allocated")),
            "restarts": _num(job.get("restart_cnt")),
            "batch_step_end": _batch_step_end(job.get("steps")),
        }
        rec["batch_exit_code"], rec["batch_signal"] = _batch_exit(job.get("steps"))
        out.append(_finish(rec))
    return out


# ``squeue -O`` fields read by jobs_live, in this order; the job name last, as it may hold
# the separator. squeue --json would give the same, but in 22.05 it ignores -j and
# serializes every job in the system: 30-100 ms of CPU a call with 200 jobs queued, where
# this takes 3-5 ms (the collector calls it once a second through a burst of jobs).
SQUEUE_FIELDS = (
    "JobID", "State", "Reason", "exit_code", "SubmitTime", "StartTime", "EndTime",
    "NodeList", "NumNodes", "tres-alloc", "UserName", "Account", "Partition", "QOS",
    "restartcnt", "BatchFlag", "ArrayJobID", "ArrayTaskID", "HetJobID", "HetJobOffset",
    "Name",
)  # fmt: skip
SQUEUE_FORMAT = ",".join(f"{name}:|" for name in SQUEUE_FIELDS[:-1]) + f",{SQUEUE_FIELDS[-1]}:"


def _text_int(value: str) -> int | None:
    return int(value) if value.isdigit() else None


def _utc(value: str) -> int | None:
    try:
        return parse_time(value, utc=True)
    except SlurmError:
        return None  # a format this parser does not know: the record still counts


def parse_squeue_text(text: str) -> list[AccountingRecord]:
    """Records from ``squeue -h -t all -O SQUEUE_FORMAT`` run with TZ=UTC: the
    controller's live view of jobs. Lines that are not a record are skipped."""
    out: list[AccountingRecord] = []
    for line in text.splitlines():
        parts = line.split("|", len(SQUEUE_FIELDS) - 1)
        if len(parts) != len(SQUEUE_FIELDS) or not parts[0].isdigit():
            continue
        f = dict(zip(SQUEUE_FIELDS, parts, strict=True))
        submit, start, end = (_utc(f[k]) for k in ("SubmitTime", "StartTime", "EndTime"))
        status = _text_int(f["exit_code"])
        het_id = _opt_id(_text_int(f["HetJobID"]))
        rec: AccountingRecord = {
            "job_id": int(parts[0]),
            # a job that is no array shows its own id as ArrayJobID and N/A as the task
            "array_job_id": _text_int(f["ArrayJobID"]) if f["ArrayTaskID"] != "N/A" else None,
            "array_task_id": _text_int(f["ArrayTaskID"]),
            "het_job_id": het_id,
            "het_job_offset": _text_int(f["HetJobOffset"]) if het_id else None,
            "user": _str(f["UserName"]),
            "account": _str(f["Account"]),
            "partition": _str(f["Partition"]),
            "qos": _str(f["QOS"]),
            "job_name": _str(f["Name"]),
            "state": f["State"],
            "reason": _str(f["Reason"]),
            # squeue gives the raw wait(2) status: exit code in the high byte.
            "exit_code": (status >> 8) & 0xFF if status is not None else None,
            "signal": status & 0x7F if status is not None else None,
            "submit_epoch": submit,
            "start_epoch": start,
            "end_epoch": end,
            "elapsed_s": end - start if start is not None and end is not None else None,
            "nodes": _nodes(f["NodeList"]),
            "num_nodes": _text_int(f["NumNodes"]),
            # a pending job's tres-alloc is what it asked for: nothing is allocated yet
            "tres_allocated": {} if f["State"] == "PENDING" else _tres_str(f["tres-alloc"]),
            "restarts": _text_int(f["restartcnt"]),
            "batch": {"1": True, "0": False}.get(f["BatchFlag"]),
            "batch_step_end": None,  # squeue has no steps; sacct says when the batch step ended
            "batch_exit_code": None,
            "batch_signal": None,
        }
        out.append(_finish(rec))
    return out


def parse_sacct_exit_codes(text: str) -> dict[tuple[int, int | None], tuple[int, int]]:
    """``sacct -P -n -D -o JobIDRaw,Start,ExitCode`` lines (run with TZ=UTC) as
    {(job id, start): (code, sig)}.

    Keyed by start time too: a requeued job has one record per run under the same id.
    """
    out: dict[tuple[int, int | None], tuple[int, int]] = {}
    for line in text.splitlines():
        parts = line.split("|")
        if len(parts) != 3 or not parts[0].isdigit():
            continue
        parsed = parse_exit_code(parts[2])
        try:
            start = parse_time(parts[1], utc=True)
        except SlurmError:
            continue
        if parsed is not None:
            out[(int(parts[0]), start)] = parsed
    return out


def pick_run(records: list[AccountingRecord], start: int | None) -> AccountingRecord | None:
    """The record of the run that started at ``start``; the last one if no start is given.

    sacct lists a requeued job once per run, oldest first, all under the same job id.
    """
    if start is None:
        return records[-1] if records else None
    for rec in records:
        if rec.get("start_epoch") == start:
            return rec
    return None


class SlurmCli:
    """JobInfo over squeue/sacct/scontrol at ``slurm_bin``."""

    def __init__(self, slurm_bin: str = "/usr/bin", timeout: float = TIMEOUT) -> None:
        self.slurm_bin = slurm_bin
        self.timeout = timeout

    def _run(self, name: str, *args: str) -> bytes:
        # command.run's default environment: client_env, TZ=UTC as the parsers expect
        return command.run([os.path.join(self.slurm_bin, name), *args], timeout=self.timeout)

    def _json(self, name: str, *args: str) -> object:
        out = self._run(name, *args)
        try:
            return json.loads(out)
        except ValueError as e:
            raise SlurmError(f"{name} printed something that is not JSON: {e}") from e

    def _sacct(self, *select: str) -> list[AccountingRecord]:
        records = parse_sacct_json(self._json("sacct", "--json", *select))
        text = self._run("sacct", "-P", "-n", "-X", "-D", "-o", "JobIDRaw,Start,ExitCode", *select)
        codes = parse_sacct_exit_codes(text.decode("utf-8", "replace"))
        for rec in records:
            key = (rec["job_id"], rec.get("start_epoch"))
            if key in codes:
                rec["exit_code"], rec["signal"] = codes[key]
        return records

    def accounting(self, since: int, until: int) -> list[AccountingRecord]:
        """Jobs that ran between ``since`` and ``until`` (epoch seconds), from sacct."""
        return self._sacct("-a", "-S", _utc_text(since), "-E", _utc_text(until))

    def job_accounting(self, job_id: int, start: int | None = None) -> AccountingRecord | None:
        """The sacct record of ``job_id``'s run that started at ``start`` (else its latest)."""
        return pick_run([r for r in self._sacct("-j", str(job_id)) if r["job_id"] == job_id], start)

    def jobs_accounting(self, job_ids: Sequence[int]) -> list[AccountingRecord]:
        """The sacct records of every run of ``job_ids``, in one call."""
        return self._sacct("-j", ",".join(str(j) for j in job_ids))

    def jobs_live(self, job_ids: Sequence[int]) -> list[AccountingRecord]:
        """The squeue records of ``job_ids``, in one call; purged jobs (after MinJobAge)
        are left out."""
        ids = ",".join(str(j) for j in job_ids)
        try:
            out = self._run("squeue", "-h", "-t", "all", "-O", SQUEUE_FORMAT, "-j", ids)
        except SlurmError as e:
            if "Invalid job id" in str(e):
                return []
            raise
        wanted = set(job_ids)
        return [
            r for r in parse_squeue_text(out.decode("utf-8", "replace")) if r["job_id"] in wanted
        ]

    def job_live(self, job_id: int) -> AccountingRecord | None:
        """The squeue record of ``job_id``, None once purged (after MinJobAge)."""
        return next(iter(self.jobs_live([job_id])), None)

    def job_state(self, job_id: int) -> str | None:
        """The job's state: squeue while the controller knows it, else sacct."""
        live = self.job_live(job_id)
        if live is not None:
            return live["state"]
        rec = self.job_accounting(job_id)
        return rec["state"] if rec is not None else None


def _utc_text(epoch: int) -> str:
    """Epoch seconds as the "YYYY-MM-DDTHH:MM:SS" sacct -S/-E take (run with TZ=UTC)."""
    import time

    return time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(epoch))
