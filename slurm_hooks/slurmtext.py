"""The text Slurm prints that we may read: value formats, and ``squeue -O`` of safe fields.

No text output a job user can shape is ever parsed. A job's name, comment, work dir,
output paths, WCKey and the like may hold any bytes (newlines, separators, ``Key=Value``
words), so text records that contain them cannot be split reliably; those values come
from JSON output or the hook's environment instead. :data:`SAFE_FIELDS` lists the
``squeue -O`` fields this module reads: numbers, times, states, node and TRES lists, and
names only an administrator sets (user, account, partition, QOS). Standard library only
and no ``re``: the controller hooks import this.
"""

import time

from computeproof.errors import SlurmError
from slurm_hooks.finalstate import ended
from slurm_hooks.slurmenv import display_id, expand_hostlist, parse_int_ranges, split_top

_UNSET = frozenset({"", "Unknown", "None", "N/A", "(null)", "NONE"})
_UNITS = {"K": 1 << 10, "M": 1 << 20, "G": 1 << 30, "T": 1 << 40, "P": 1 << 50}


def json_text(value: object) -> str | None:
    """A text field of Slurm's structured output (JSON, or pyslurm's objects); None when
    Slurm leaves it unset ("", "None", "(null)")."""
    return value if isinstance(value, str) and value not in ("", "None", "(null)") else None


def node_names(value: object) -> list[str]:
    """A node list field of structured output, expanded; [] when unset or unreadable."""
    text = json_text(value)
    if text is None or text == "None assigned":
        return []
    try:
        return expand_hostlist(text)
    except SlurmError:
        return []


def unset(value: str | None) -> bool:
    """True for Slurm's spellings of "no value" (Unknown, None, N/A, (null), NONE)."""
    return value is None or value in _UNSET


def parse_size(text: str, default_unit: str = "M") -> int:
    """A Slurm size ("100M", "1.50G", "4096") in bytes; a bare number is in ``default_unit``."""
    text = text.strip()
    unit = default_unit
    if text and text[-1].upper() in _UNITS:
        unit, text = text[-1].upper(), text[:-1]
    whole, _, frac = text.partition(".")
    if not whole.isdigit() or (frac and not frac.isdigit()):
        raise SlurmError(f"bad size {text!r}")
    mult = _UNITS.get(unit, 1)
    # Integer arithmetic only: canonical events carry no floats.
    return int(whole) * mult + (int(frac) * mult // 10 ** len(frac) if frac else 0)


def parse_tres(text: str) -> dict[str, int]:
    """A TRES string ("cpu=2,mem=100M,node=1,gres/gpu=2") as integers; memory in bytes.
    Items that are not ``name=number`` are left out."""
    out: dict[str, int] = {}
    if unset(text):
        return out
    for item in text.split(","):
        name, sep, value = item.partition("=")
        if not sep or not name:
            continue
        try:
            if name.startswith("mem"):
                out[name] = parse_size(value)
            elif value.isdigit() and value.isascii():
                out[name] = int(value)
            else:
                out[name] = parse_size(value, default_unit="")
        except SlurmError:
            continue
    return out


def gpu_count(tres: dict[str, int]) -> int:
    """Number of GPUs in a TRES dict (gres/gpu), 0 if none."""
    return tres.get("gres/gpu", 0)


def parse_gres_indices(gres: str) -> list[int]:
    """GPU indices in a GRES detail: "gpu:a100:2(IDX:0-1),shard:0(IDX:N/A)" -> [0, 1]."""
    out: list[int] = []
    for item in split_top(gres, "(", ")"):
        name, _, rest = item.partition("(")
        if name.split(":", 1)[0] != "gpu":
            continue
        idx = rest.rstrip(")")
        if idx.startswith("IDX:") and idx[4:] not in _UNSET:
            out.extend(parse_int_ranges(idx[4:]))
    return out


def parse_time(value: str | None, utc: bool = False) -> int | None:
    """A Slurm time "2025-11-25T17:00:00" as epoch seconds; None when unset.

    Slurm prints local time without a zone. ``utc`` reads it as UTC, for output of a
    client run with TZ=UTC (no DST hour that reads twice); else mktime applies the host's
    zone and DST (time.strptime would pull in re and locale on the hook path)."""
    if value is None or unset(value):
        return None
    date, sep, clock = value.partition("T")
    parts = date.split("-") + clock.split(":")
    if not sep or len(parts) != 6 or not all(p.isdigit() and p.isascii() for p in parts):
        raise SlurmError(f"bad Slurm time {value!r}")
    y, mo, d, h, mi, s = (int(p) for p in parts)
    if utc:
        return _days_from_civil(y, mo, d) * 86400 + h * 3600 + mi * 60 + s
    return int(time.mktime((y, mo, d, h, mi, s, 0, 0, -1)))


def _days_from_civil(y: int, m: int, d: int) -> int:
    """Days since 1970-01-01 of a proleptic Gregorian date (calendar.timegm's arithmetic,
    without importing calendar)."""
    y -= m <= 2
    era = y // 400
    yoe = y - era * 400
    doy = (153 * (m + (-3 if m > 2 else 9)) + 2) // 5 + d - 1
    return era * 146097 + yoe * 365 + yoe // 4 - yoe // 100 + doy - 719468


def rfc3339(epoch: int | None) -> str | None:
    """Epoch seconds as "2025-11-25T16:00:00Z"; None stays None."""
    if epoch is None:
        return None
    text = _RFC3339.get(epoch)
    if text is None:
        if len(_RFC3339) >= 4096:
            _RFC3339.clear()
        text = _RFC3339[epoch] = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(epoch))
    return text


_RFC3339: "dict[int, str]" = {}  # epoch -> text: the records of a burst share their times


def parse_duration(value: str | None) -> int | None:
    """Slurm's "[D-]HH:MM:SS" / "MM:SS" as seconds; None for UNLIMITED or unset."""
    if value is None or unset(value) or value in ("UNLIMITED", "INFINITE", "Partition_Limit"):
        return None
    days, sep, rest = value.partition("-")
    if not sep:
        days, rest = "0", value
    parts = rest.split(":")
    if not days.isdigit() or not all(p.isdigit() for p in parts) or len(parts) > 3:
        raise SlurmError(f"bad Slurm duration {value!r}")
    seconds = 0
    for p in parts:
        seconds = seconds * 60 + int(p)
    if len(parts) == 1:
        seconds *= 60  # a lone number is minutes in Slurm's time formats
    return int(days) * 86400 + seconds


def parse_exit_status(text: str) -> tuple[int, int] | None:
    """squeue's exit_code as (exit code, signal): 22.05 prints the raw wait(2) status
    ("768"), 24.11 and later "<code>:<signal>" ("0:15")."""
    code, sep, sig = text.strip().partition(":")
    if sep:
        if code.isdigit() and sig.isdigit():
            return int(code), int(sig)
        return None
    if code.isdigit() and code.isascii():
        status = int(code)
        return (status >> 8) & 0xFF, status & 0x7F
    return None


# ``squeue -O`` fields read by the controller (its collector and its hooks), in this order.
# None of them can be set by a job's user: numbers, times, states, nodes, TRES, and names
# only an administrator creates. Reason comes last: it is Slurm's reason code, or a
# description slurmctld sets, and splitting with a bound keeps a '|' in it harmless.
SAFE_FIELDS = (
    "JobID", "ArrayJobID", "ArrayTaskID", "HetJobID", "HetJobOffset", "State", "exit_code",
    "RestartCnt", "BatchFlag", "SubmitTime", "EligibleTime", "StartTime", "EndTime",
    "TimeLimit", "NodeList", "NumNodes", "NumCPUs", "tres-alloc", "UserName", "UserID",
    "GroupID", "Account", "Partition", "QOS", "Reason",
)  # fmt: skip
SAFE_FORMAT = ",".join(f"{name}:|" for name in SAFE_FIELDS[:-1]) + f",{SAFE_FIELDS[-1]}:"
_N = len(SAFE_FIELDS)


def _int(value: str) -> int | None:
    return int(value) if value.isdigit() and value.isascii() else None


def _name(value: str) -> str | None:
    return None if unset(value) else value


_UTC: "dict[str, int | None]" = {}  # time text -> epoch: a burst's jobs share their times


def _utc(value: str) -> int | None:
    try:
        return _UTC[value]
    except KeyError:
        pass
    try:
        epoch = parse_time(value, utc=True)
    except SlurmError:
        epoch = None  # a format this parser does not know: the record still counts
    if len(_UTC) >= 4096:
        _UTC.clear()
    _UTC[value] = epoch
    return epoch


def parse_squeue_safe(
    text: str, seen: "dict[str, dict[str, object]] | None" = None
) -> "list[dict[str, object]]":
    """Records from ``squeue -h -t all -O SAFE_FORMAT`` run with TZ=UTC: the controller's
    live view of every job it holds, in the keys of jobinfo.AccountingRecord. Lines that
    are not a record are skipped.

    ``seen`` maps the lines of the previous read to their records (shared, not to be
    changed) and is updated to this read's: a job whose line did not change since (every
    ended job slurmctld still holds) costs a lookup, not a parse."""
    out: list[dict[str, object]] = []
    previous = dict(seen) if seen is not None else {}
    if seen is not None:
        seen.clear()
    for line in text.split("\n"):
        known = previous.get(line)
        if known is not None:
            out.append(known)
            if seen is not None:
                seen[line] = known
            continue
        parts = line.split("|", _N - 1)
        if len(parts) != _N or not parts[0].isdigit() or not parts[0].isascii():
            continue
        (job_id, array_id, task_id, het_id, het_offset, state, exit_code, restarts, batch,
         submit, eligible, start, end, limit, nodelist, num_nodes, num_cpus, tres_alloc,
         user, uid, gid, account, partition, qos, reason) = parts  # fmt: skip
        try:
            nodes = [] if unset(nodelist) else expand_hostlist(nodelist)
            time_limit = parse_duration(limit)
        except SlurmError:
            continue
        status = parse_exit_status(exit_code)
        task = _int(task_id)
        het = _int(het_id) or None
        rec: dict[str, object] = {
            "job_id": int(job_id),
            # a job that is no array shows its own id as ArrayJobID and N/A as the task
            "array_job_id": _int(array_id) if task is not None else None,
            "array_task_id": task,
            "het_job_id": het,
            "het_job_offset": _int(het_offset) if het else None,
            "state": state,
            "state_flags": [state] if state else [],
            "reason": _name(reason.strip()),
            "exit_code": status[0] if status else None,
            "signal": status[1] if status else None,
            "restarts": _int(restarts),
            "batch": {"1": True, "0": False}.get(batch),
            "submit_epoch": _utc(submit),
            "eligible_epoch": _utc(eligible),
            "time_limit_s": time_limit,
            "nodes": nodes,
            "num_nodes": _int(num_nodes),
            "num_cpus": _int(num_cpus),
            "user": _name(user),
            "uid": _int(uid),
            "gid": _int(gid),
            "account": _name(account),
            "partition": _name(partition),
            "qos": _name(qos),
        }
        # A pending job's tres-alloc is what it asked for, and its start and end times are
        # estimates (a cancelled one shows both at the cancel): only an allocation counts.
        allocated = bool(nodes)
        rec["tres_allocated"] = parse_tres(tres_alloc) if allocated else {}
        rec["start_epoch"] = _utc(start) if allocated else None
        rec["end_epoch"] = _utc(end)
        out.append(finish_record(rec))
        if seen is not None:
            seen[line] = rec
    return out


def finish_record(rec: "dict[str, object]") -> "dict[str, object]":
    """Add the derived keys every record carries: display id, RFC 3339 times, GPUs."""
    job_id = rec["job_id"]
    assert isinstance(job_id, int)
    ids = [rec.get(k) for k in ("array_job_id", "array_task_id", "het_job_id", "het_job_offset")]
    rec["job"] = display_id(job_id, *(i if isinstance(i, int) else None for i in ids))
    start, end = rec.get("start_epoch"), rec.get("end_epoch")
    rec["start_time"] = rfc3339(start if isinstance(start, int) else None)
    rec["end_time"] = rfc3339(end if isinstance(end, int) else None)
    tres = rec.get("tres_allocated")
    rec["gpus"] = gpu_count(tres) if isinstance(tres, dict) else 0
    if "elapsed_s" not in rec:
        over = isinstance(start, int) and isinstance(end, int) and end >= start and ended(rec)
        rec["elapsed_s"] = end - start if over else None  # type: ignore[operator]
    return rec


# ``sacct -P`` fields of a run's settled record (the collector's final_state), none of
# them set by a job's user; Reason (Slurm's reason code) last, split with a bound. The
# name and work dir are left out: final_state does not carry them (scheduled has them).
SACCT_FIELDS = (
    "JobIDRaw", "JobID", "State", "ExitCode", "Submit", "Eligible", "Start", "End",
    "ElapsedRaw", "TimelimitRaw", "NodeList", "NNodes", "AllocTRES", "ReqTRES", "User",
    "Group", "Account", "Partition", "QOS", "Reason",
)  # fmt: skip
# and of each batch step (asked for as "<id>.batch"): when it ended and how
SACCT_STEP_FIELDS = ("JobIDRaw", "Start", "End", "ExitCode")


def _display_ids(display: str) -> "tuple[int | None, int | None, int | None, int | None]":
    """(array job id, task id, het job id, het offset) from sacct's JobID ("100_4", "200+1")."""
    head, sep, task = display.partition("_")
    if sep and head.isdigit() and task.isdigit():
        return int(head), int(task), None, None
    head, sep, offset = display.partition("+")
    if sep and head.isdigit() and offset.isdigit():
        return None, None, int(head), int(offset)
    return None, None, None, None


def parse_sacct_safe(
    text: str, steps: str = "", restarts: bool = False
) -> "list[dict[str, object]]":
    """Accounting records from ``sacct -P -n -X -D --noconvert -o SACCT_FIELDS`` (with
    ``restarts``, Restarts before Reason: Slurm 24.11 and later) run with TZ=UTC, and
    their batch steps from ``steps`` (``-o SACCT_STEP_FIELDS`` of "<id>.batch"), in the
    keys slurmcli.parse_sacct_json gives less the job's name and work dir. Lines that are
    not a record are skipped."""
    names = SACCT_FIELDS[:-1] + (("Restarts",) if restarts else ()) + SACCT_FIELDS[-1:]
    n = len(names)
    batches: dict[int, list[tuple[int | None, int | None, tuple[int, int] | None]]] = {}
    for line in steps.split("\n"):
        parts = line.split("|")
        if len(parts) != len(SACCT_STEP_FIELDS) or not parts[0].endswith(".batch"):
            continue
        raw = parts[0][:-6]
        if raw.isdigit() and raw.isascii():
            batches.setdefault(int(raw), []).append(
                (_utc(parts[1]), _utc(parts[2]), parse_exit_status_pair(parts[3]))
            )
    out: list[dict[str, object]] = []
    for line in text.split("\n"):
        parts = line.split("|", n - 1)
        if len(parts) != n or not parts[0].isdigit() or not parts[0].isascii():
            continue
        values = dict(zip(names, parts, strict=True))
        job_id = int(parts[0])
        try:
            nodes = [] if unset(values["NodeList"]) or values["NodeList"] == "None assigned" \
                else expand_hostlist(values["NodeList"])  # fmt: skip
        except SlurmError:
            nodes = []
        array_id, task, het_id, het_offset = _display_ids(values["JobID"])
        status = parse_exit_status_pair(values["ExitCode"])
        allocated = parse_tres(values["AllocTRES"])
        state = values["State"].split(" ", 1)[0]  # "CANCELLED by 0"
        limit = _int(values["TimelimitRaw"])
        rec: dict[str, object] = {
            "job_id": job_id,
            "array_job_id": array_id,
            "array_task_id": task,
            "het_job_id": het_id,
            "het_job_offset": het_offset,
            "user": _name(values["User"]),
            "group": _name(values["Group"]),
            "account": _name(values["Account"]),
            "partition": _name(values["Partition"]),
            "qos": _name(values["QOS"]),
            "state": state,
            "state_flags": [state] if state else [],
            "reason": _name(values["Reason"].strip()),
            "exit_code": status[0] if status else None,
            "signal": status[1] if status else None,
            "submit_epoch": _utc(values["Submit"]),
            "eligible_epoch": _utc(values["Eligible"]),
            "start_epoch": _utc(values["Start"]),
            "end_epoch": _utc(values["End"]),
            "elapsed_s": _int(values["ElapsedRaw"]),
            "time_limit_s": limit * 60 if limit is not None else None,
            "nodes": nodes,
            # never allocated: sacct prints the nodes asked for, the JSON none
            "num_nodes": _int(values["NNodes"]) if nodes else 0,
            "num_cpus": allocated.get("cpu"),
            "tres_allocated": allocated,
            "tres_requested": parse_tres(values["ReqTRES"]),
            "restarts": _int(values["Restarts"]) if restarts else None,
            "batch": None,
            "batch_step_end": None,
            "batch_exit_code": None,
            "batch_signal": None,
        }
        out.append(rec)
    # each batch step belongs to the latest run of its job that started before it
    by_job: dict[int, list[dict[str, object]]] = {}
    for rec in out:
        by_job.setdefault(rec["job_id"], []).append(rec)  # type: ignore[arg-type]
    for job_id, job_steps in batches.items():
        runs = by_job.get(job_id, [])
        for start, end, status in job_steps:
            owner = None
            for rec in runs:
                run_start = rec["start_epoch"]
                if isinstance(run_start, int) and start is not None and run_start <= start:
                    owner = rec
            if owner is None and len(runs) == 1:
                owner = runs[0]
            if owner is None:
                continue
            owner["batch"] = True
            owner["batch_step_end"] = end
            owner["batch_exit_code"] = status[0] if status else None
            owner["batch_signal"] = status[1] if status else None
    return [finish_record(rec) for rec in out]


def parse_exit_status_pair(text: str) -> "tuple[int, int] | None":
    """sacct's ExitCode "<code>:<signal>" as integers."""
    code, sep, sig = text.strip().partition(":")
    if sep and code.isdigit() and sig.isdigit() and code.isascii() and sig.isascii():
        return int(code), int(sig)
    return None
