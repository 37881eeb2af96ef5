"""JobInfo over the Slurm client commands (the default backend).

Structured reads: ``squeue --json`` and ``sacct --json``, in every layout Slurm has used:
the flat openapi v0.0.38 of 22.05, and data_parser v0.0.42 (24.11) and v0.0.44 (25.11),
where integers come wrapped as ``{"set", "infinite", "number"}``, a job's state is a list
of flags and an exit code is an object. Text is read only for fields no job user can set
(slurmtext.SAFE_FIELDS, and sacct's JobIDRaw,Start,ExitCode): the live view that the
collector asks for every poll is ``squeue -O`` of those fields, eight times cheaper than
22.05's ``squeue --json`` (which ignores ``-j`` and serializes every job in the system);
the JSON is read when a record must carry a job's name, work dir or GPU indices.

Output is decoded as UTF-8 with surrogateescape, so bytes that are not UTF-8 (a job name
is whatever bytes its user chose) survive to the event, which records them losslessly
(computeproof.event.text_value). Absolute paths from ``slurm_bin`` (hooks have no PATH),
a timeout on every call, subprocess failures raised as SlurmError.

Slurm 22.05 quirk: ``sacct --json`` reports a job's exit_code as SUCCESS/0 even for a job
that exited 3 (the batch step is right, the job record is not); the text output
``sacct -P -o JobIDRaw,Start,ExitCode`` is right, so exit codes are taken from there.
"""

from __future__ import annotations

import json
import os
from collections.abc import Sequence

from computeproof.errors import SlurmError
from slurm_hooks import command
from slurm_hooks.finalstate import state_name
from slurm_hooks.jobinfo import AccountingRecord, job_state, pick_run
from slurm_hooks.slurmenv import parse_exit_code
from slurm_hooks.slurmtext import (
    SACCT_FIELDS,
    SACCT_STEP_FIELDS,
    SAFE_FORMAT,
    finish_record,
    json_text,
    node_names,
    parse_gres_indices,
    parse_sacct_safe,
    parse_squeue_safe,
    parse_time,
    parse_tres,
)

TIMEOUT = 30.0
_MIB = 1 << 20


def decode_json(raw: bytes, what: str) -> object:
    """A client's JSON output; bytes that are not UTF-8 kept as lone surrogates."""
    try:
        return json.loads(raw.decode("utf-8", "surrogateescape"))
    except ValueError as e:
        raise SlurmError(f"{what} printed something that is not JSON: {e}") from e


def _num(value: object) -> int | None:
    """An integer field: plain, or {"set": bool, "infinite": bool, "number": n}
    (v0.0.40+); None when unset or infinite."""
    if isinstance(value, dict):
        if not value.get("set", True) or value.get("infinite"):
            return None
        value = value.get("number")
    if isinstance(value, bool) or not isinstance(value, int):
        return None
    return value


def _opt(value: object) -> int | None:
    """Ids and times where 0 means "none" (not an array job, never started)."""
    n = _num(value)
    return n if n else None


def _dict(value: object) -> dict[str, object]:
    return value if isinstance(value, dict) else {}


def _minutes(value: object) -> int | None:
    n = _num(value)
    return n * 60 if n is not None else None


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
        if count is None or count < 0 or not isinstance(kind, str):
            continue  # -2: unset (24.11 lists energy so when not gathered)
        name = item.get("name")
        key = f"{kind}/{name}" if isinstance(name, str) and name else kind
        out[key] = count * _MIB if kind == "mem" else count  # sacct counts memory in MiB
    return out


def _state(value: object) -> tuple[str, list[str]]:
    """(state word, flags) of a state: a word (v0.0.38) or a list of flags (v0.0.40+)."""
    if isinstance(value, list):
        flags = [f for f in value if isinstance(f, str)]
        return state_name(flags), flags
    if isinstance(value, str):
        return value, [value] if value else []
    return "", []


def _exit_object(value: object) -> tuple[int | None, int | None]:
    """(return code, signal) of a PROCESS_EXIT_CODE object; signal 0 when not signalled."""
    if not isinstance(value, dict):
        return None, None
    sig = value.get("signal")
    signal = _num(sig.get("id", sig.get("signal_id"))) if isinstance(sig, dict) else None
    code = _num(value.get("return_code"))
    if code is None and signal:
        code = 0  # a signalled process has no return code: Slurm's text prints "0:15"
    return code, signal if signal is not None else 0


def _wait_status(value: object) -> tuple[int | None, int | None]:
    """squeue's exit_code: the raw wait(2) status (v0.0.38) or an object (v0.0.40+)."""
    if isinstance(value, dict):
        if "PENDING" in (value.get("status") or ()):
            return None, None
        return _exit_object(value)
    status = _num(value)
    if status is None:
        return None, None
    return (status >> 8) & 0xFF, status & 0x7F


def _gpu_indices(job: dict[str, object], nodes: list[str]) -> dict[str, list[int]]:
    """Slurm's GPU indices on each node: gres_detail holds one entry per allocated node,
    in the order of the job's node list."""
    details = job.get("gres_detail")
    out: dict[str, list[int]] = {}
    if not isinstance(details, list) or len(details) != len(nodes):
        return out
    for node, detail in zip(nodes, details, strict=True):
        if isinstance(detail, str):
            try:
                out[node] = parse_gres_indices(detail)
            except SlurmError:
                continue
    return out


def parse_squeue_json(data: object) -> list[AccountingRecord]:
    """Live records from ``squeue --json`` output (already decoded): every job the
    controller holds, with the fields its user sets (name, work dir) and GPU indices."""
    jobs = _dict(data).get("jobs")
    if not isinstance(jobs, list):
        raise SlurmError("squeue --json output has no 'jobs' list")
    out: list[AccountingRecord] = []
    for job in jobs:
        if not isinstance(job, dict) or _num(job.get("job_id")) is None:
            continue
        state, flags = _state(job.get("job_state"))
        code, signal = _wait_status(job.get("exit_code"))
        task = _num(job.get("array_task_id"))
        het = _opt(job.get("het_job_id"))
        nodes = node_names(job.get("nodes"))
        allocated = bool(nodes)
        rec: AccountingRecord = {
            "job_id": _num(job["job_id"]) or 0,
            "array_job_id": _opt(job.get("array_job_id")) if task is not None else None,
            "array_task_id": task,
            "het_job_id": het,
            "het_job_offset": _num(job.get("het_job_offset")) if het else None,
            "user": json_text(job.get("user_name")),
            "uid": _num(job.get("user_id")),
            "gid": _num(job.get("group_id")),
            "group": json_text(job.get("group_name")),
            "account": json_text(job.get("account")),
            "partition": json_text(job.get("partition")),
            "qos": json_text(job.get("qos")),
            "job_name": job["name"] if isinstance(job.get("name"), str) else None,
            "work_dir": json_text(job.get("current_working_directory")),
            "state": state,
            "state_flags": flags,
            "reason": json_text(job.get("state_reason")),
            "exit_code": code,
            "signal": signal,
            "submit_epoch": _opt(job.get("submit_time")),
            "eligible_epoch": _opt(job.get("eligible_time")),
            # a pending job's start is an estimate: only an allocation counts
            "start_epoch": _opt(job.get("start_time")) if allocated else None,
            "end_epoch": _opt(job.get("end_time")),
            "time_limit_s": _minutes(job.get("time_limit")),
            "nodes": nodes,
            "num_nodes": _num(job.get("node_count")),
            "num_cpus": _num(job.get("cpus")),
            "tres_allocated": parse_tres(str(job.get("tres_alloc_str") or "")) if allocated else {},
            "tres_requested": parse_tres(str(job.get("tres_req_str") or "")),
            "tres_per_node": json_text(job.get("tres_per_node")),
            "gpu_indices": _gpu_indices(job, nodes),
            "restarts": _num(job.get("restart_cnt")),
            "batch": job["batch_flag"] if isinstance(job.get("batch_flag"), bool) else None,
        }
        out.append(finish_record(rec))  # type: ignore[arg-type]
    return out


def _batch_step(steps: object) -> dict[str, object] | None:
    for step in steps if isinstance(steps, list) else ():
        if isinstance(step, dict) and _dict(step.get("step")).get("name") == "batch":
            return step
    return None


def parse_sacct_json(data: object) -> list[AccountingRecord]:
    """Accounting records from ``sacct --json`` output (already decoded), in its order."""
    jobs = _dict(data).get("jobs")
    if not isinstance(jobs, list):
        raise SlurmError("sacct --json output has no 'jobs' list")
    out: list[AccountingRecord] = []
    for job in jobs:
        if not isinstance(job, dict) or _num(job.get("job_id")) is None:
            continue
        array, het, times = _dict(job.get("array")), _dict(job.get("het")), _dict(job.get("time"))
        tres, state_obj = _dict(job.get("tres")), _dict(job.get("state"))
        state, flags = _state(state_obj.get("current"))
        code, signal = _exit_object(job.get("exit_code"))
        het_id = _opt(het.get("job_id"))
        task = _num(array.get("task_id"))
        batch = _batch_step(job.get("steps"))
        batch_times = _dict(batch.get("time")) if batch is not None else {}
        allocated = _tres_list(tres.get("allocated"))
        rec: AccountingRecord = {
            "job_id": _num(job["job_id"]) or 0,
            "array_job_id": _opt(array.get("job_id")) if task is not None else None,
            "array_task_id": task,
            "het_job_id": het_id,
            "het_job_offset": _num(het.get("job_offset")) if het_id else None,
            "user": json_text(job.get("user")),
            "group": json_text(job.get("group")),
            "account": json_text(job.get("account")),
            "partition": json_text(job.get("partition")),
            "qos": json_text(job.get("qos")),
            "job_name": job["name"] if isinstance(job.get("name"), str) else None,
            "work_dir": json_text(job.get("working_directory")),
            "state": state,
            "state_flags": flags,
            "reason": json_text(state_obj.get("reason")),
            "exit_code": code,
            "signal": signal,
            "submit_epoch": _opt(times.get("submission")),
            "eligible_epoch": _opt(times.get("eligible")),
            "start_epoch": _opt(times.get("start")),
            "end_epoch": _opt(times.get("end")),
            "elapsed_s": _num(times.get("elapsed")),
            "time_limit_s": _minutes(times.get("limit")),
            "nodes": node_names(job.get("nodes")),
            "num_nodes": _num(job.get("allocation_nodes")),
            "num_cpus": allocated.get("cpu"),
            "tres_allocated": allocated,
            "tres_requested": _tres_list(tres.get("requested")),
            "restarts": _num(job.get("restart_cnt")),
            "batch": True if batch is not None else None,
            "batch_step_end": _opt(batch_times.get("end")),
        }
        rec["batch_exit_code"], rec["batch_signal"] = (
            _exit_object(batch.get("exit_code")) if batch is not None else (None, None)
        )
        out.append(finish_record(rec))  # type: ignore[arg-type]
    return out


def parse_sacct_exit_codes(text: str) -> dict[tuple[int, int | None], tuple[int, int]]:
    """``sacct -P -n -X -D -o JobIDRaw,Start,ExitCode`` lines (run with TZ=UTC) as
    {(job id, start): (code, sig)}. Keyed by start time too: a requeued job has one
    record per run under the same id."""
    out: dict[tuple[int, int | None], tuple[int, int]] = {}
    for line in text.split("\n"):
        parts = line.split("|")
        if len(parts) != 3 or not parts[0].isdigit() or not parts[0].isascii():
            continue
        parsed = parse_exit_code(parts[2])
        try:
            start = parse_time(parts[1], utc=True)
        except SlurmError:
            continue
        if parsed is not None:
            out[(int(parts[0]), start)] = parsed
    return out


class SlurmCli:
    """JobInfo over squeue/sacct at ``slurm_bin``."""

    def __init__(self, slurm_bin: str = "/usr/bin", timeout: float = TIMEOUT) -> None:
        self.slurm_bin = slurm_bin
        self.timeout = timeout
        self._lines: dict[str, dict[str, object]] = {}  # the last cheap read's, parsed
        self._restarts: bool | None = None  # whether sacct has the Restarts field

    def _run(self, name: str, *args: str) -> bytes:
        # command.run's default environment: client_env, TZ=UTC as the parsers expect
        return command.run([os.path.join(self.slurm_bin, name), *args], timeout=self.timeout)

    def _sacct(self, *select: str) -> list[AccountingRecord]:
        records = parse_sacct_json(decode_json(self._run("sacct", "--json", "-D", *select),
                                               "sacct"))  # fmt: skip
        text = self._run("sacct", "-P", "-n", "-X", "-D", "-o", "JobIDRaw,Start,ExitCode", *select)
        codes = parse_sacct_exit_codes(text.decode("utf-8", "replace"))
        for rec in records:
            key = (rec["job_id"], rec.get("start_epoch"))
            if key in codes:
                rec["exit_code"], rec["signal"] = codes[key]
        return records

    def accounting(
        self, since: int, until: int, states: Sequence[str] = ()
    ) -> list[AccountingRecord]:
        """Every run active between ``since`` and ``until`` (epoch seconds), from sacct;
        with ``states``, only runs in one of them during that time."""
        select = ["-a", "-S", _utc_text(since), "-E", _utc_text(until)]
        if states:
            select += ["-s", ",".join(states)]
        return self._sacct(*select)

    def jobs_accounting(
        self, job_ids: Sequence[int], detail: bool = True
    ) -> list[AccountingRecord]:
        """The sacct records of every run of ``job_ids``, in one read: ``sacct --json``,
        or without ``detail`` (no name, work dir) ``sacct -P`` of fields no user sets and
        of the batch steps, about a sixth of the CPU (the collector's final_state)."""
        if not job_ids:
            return []
        wanted = set(job_ids)
        listed = ",".join(str(j) for j in sorted(wanted))
        if detail:
            records = self._sacct("-j", listed)
        else:
            restarts = self._has_restarts()
            fields = [*SACCT_FIELDS[:-1], *(["Restarts"] if restarts else []), SACCT_FIELDS[-1]]
            text = self._run("sacct", "-P", "-n", "-X", "-D", "--noconvert", "-o",
                             ",".join(fields), "-j", listed)  # fmt: skip
            steps = self._run("sacct", "-P", "-n", "-D", "--noconvert", "-o",
                              ",".join(SACCT_STEP_FIELDS), "-j",
                              ",".join(f"{j}.batch" for j in sorted(wanted)))  # fmt: skip
            records = parse_sacct_safe(text.decode("utf-8", "replace"),  # type: ignore[assignment]
                                       steps.decode("utf-8", "replace"), restarts)  # fmt: skip
        return [r for r in records if r["job_id"] in wanted]

    def _has_restarts(self) -> bool:
        """Whether this sacct prints a run's restart count (Restarts: Slurm 24.11 on)."""
        if self._restarts is None:
            try:
                fields = self._run("sacct", "--helpformat").decode("utf-8", "replace")
            except SlurmError:
                return False  # asked again next time
            self._restarts = "Restarts" in fields.split()
        return self._restarts

    def job_accounting(self, job_id: int, start: int | None = None) -> AccountingRecord | None:
        """The sacct record of ``job_id``'s run that started at ``start`` (else its latest)."""
        return pick_run(self.jobs_accounting([job_id]), start)

    def live_jobs(
        self, detail: bool = False, job_ids: Sequence[int] = ()
    ) -> list[AccountingRecord]:
        """Every job slurmctld holds: ``squeue -O`` of the safe fields (a job whose line did
        not change since the last call is not parsed again), or with ``detail``
        ``squeue --json`` (names, work dirs, GPU indices), of ``job_ids`` where given
        (22.05 ignores -j and -t with --json and serializes every job: eight times the
        CPU of the text read)."""
        if detail:
            select = ["-j", ",".join(str(j) for j in sorted(set(job_ids)))] if job_ids else []
            try:
                out = self._run("squeue", "--json", "-t", "all", *select)
            except SlurmError as e:
                if select and "Invalid job id" in str(e):
                    return []  # all purged since
                raise
            return parse_squeue_json(decode_json(out, "squeue"))
        out = self._run("squeue", "-h", "-t", "all", "-O", SAFE_FORMAT)
        # records of lines unchanged since the last read are reused: do not change them
        return parse_squeue_safe(out.decode("utf-8", "replace"), self._lines)  # type: ignore[return-value]

    def job_live(self, job_id: int) -> AccountingRecord | None:
        """The controller's record of ``job_id`` (safe fields), None once purged."""
        try:
            out = self._run("squeue", "-h", "-t", "all", "-j", str(job_id), "-O", SAFE_FORMAT)
        except SlurmError as e:
            if "Invalid job id" in str(e):
                return None
            raise
        records: list[AccountingRecord] = parse_squeue_safe(out.decode("utf-8", "replace"))  # type: ignore[assignment]
        return next((r for r in records if r["job_id"] == job_id), None)

    def job_state(self, job_id: int) -> str | None:
        """The job's state: squeue while the controller knows it, else sacct."""
        return job_state(self, job_id)


def _utc_text(epoch: int) -> str:
    """Epoch seconds as the "YYYY-MM-DDTHH:MM:SS" sacct -S/-E take (run with TZ=UTC)."""
    import time

    return time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(epoch))
