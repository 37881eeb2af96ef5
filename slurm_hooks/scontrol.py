"""Parsing of ``scontrol show job -o -d`` and the value formats Slurm prints.

``-o`` puts the whole job on one line of ``Key=Value`` words; ``-d`` adds one group per
node set, ``Nodes=c1 CPU_IDs=0-1 Mem=100 GRES=gpu:a100:2(IDX:0-1)``, which is the only
place the controller side learns which GPU indices each node gave the job. Standard
library only and no ``re``: the controller hooks import this.
"""

import time

from computeproof.errors import SlurmError
from slurm_hooks.slurmenv import parse_int_ranges, split_top

# Keys that belong to a per-node group opened by "Nodes=" in -d output.
_NODE_KEYS = frozenset({"Nodes", "CPU_IDs", "Mem", "GRES"})
_UNSET = frozenset({"", "Unknown", "None", "N/A", "(null)"})
_UNITS = {"K": 1 << 10, "M": 1 << 20, "G": 1 << 30, "T": 1 << 40, "P": 1 << 50}


def _starts_key(word: str) -> int:
    """Position of '=' if ``word`` starts a ``Key=`` (keys hold letters, digits, _ : /)."""
    eq = word.find("=")
    if eq <= 0 or not word[0].isalpha():
        return -1
    for c in word[:eq]:
        if not (c.isascii() and (c.isalnum() or c in "_:/")):
            return -1
    return eq


def parse_show_job(line: str) -> tuple[dict[str, str], list[dict[str, str]]]:
    """Split one ``-o -d`` line into the job's fields and its per-node detail groups."""
    fields: dict[str, str] = {}
    nodes: list[dict[str, str]] = []
    target: dict[str, str] = fields
    last: str | None = None
    for word in line.strip().split(" "):
        if not word:
            continue
        eq = _starts_key(word)
        if eq < 0:
            # A value with spaces (JobName="a b", a Command with arguments) continues.
            if last is not None:
                target[last] += " " + word
            continue
        key, value = word[:eq], word[eq + 1 :]
        if key == "Nodes":
            target = {}
            nodes.append(target)
        elif key not in _NODE_KEYS:
            target = fields
        if key in target:
            # Keep the first occurrence; later duplicates are other sections' keys.
            last = None
            continue
        target[key] = value
        last = key
    if "JobId" not in fields:
        raise SlurmError(f"scontrol output has no JobId: {line[:200]!r}")
    return fields, nodes


def unset(value: str | None) -> bool:
    """True for Slurm's spellings of "no value" (Unknown, None, N/A, (null))."""
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
    """A TRES string ("cpu=2,mem=100M,node=1,gres/gpu=2") as integers; memory in bytes."""
    out: dict[str, int] = {}
    if unset(text):
        return out
    for item in text.split(","):
        name, sep, value = item.partition("=")
        if not sep:
            continue
        if name == "mem" or name.startswith("mem"):
            out[name] = parse_size(value)
        elif value.isdigit():
            out[name] = int(value)
        else:
            out[name] = parse_size(value, default_unit="")
    return out


def gpu_count(tres: dict[str, int]) -> int:
    """Number of GPUs in a TRES dict (gres/gpu), 0 if none."""
    return tres.get("gres/gpu", 0)


def parse_gres_indices(gres: str) -> list[int]:
    """GPU indices in a detail GRES value: "gpu:a100:2(IDX:0-1),shard:0(IDX:N/A)" -> [0, 1]."""
    out: list[int] = []
    for item in split_top(gres, "(", ")"):
        name, _, rest = item.partition("(")
        if name.split(":", 1)[0] != "gpu":
            continue
        idx = rest.rstrip(")")
        if idx.startswith("IDX:") and idx[4:] not in _UNSET:
            out.extend(parse_int_ranges(idx[4:]))
    return out


def parse_user(value: str) -> tuple[str | None, int | None]:
    """ "alice(1000)" -> ("alice", 1000)."""
    name, sep, rest = value.partition("(")
    uid = rest.rstrip(")")
    return (name or None, int(uid) if sep and uid.isdigit() else None)


def parse_time(value: str | None, utc: bool = False) -> int | None:
    """A Slurm time "2025-11-25T17:00:00" as epoch seconds; None when unset.

    Slurm prints local time without a zone. ``utc`` reads it as UTC, for output of a
    client run with TZ=UTC (no DST hour that reads twice); else mktime applies the host's
    zone and DST (time.strptime would pull in re and locale on the hook path)."""
    if value is None or unset(value) or value == "NONE":  # squeue: a job with no end yet
        return None
    date, sep, clock = value.partition("T")
    parts = date.split("-") + clock.split(":")
    if not sep or len(parts) != 6 or not all(p.isdigit() for p in parts):
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
    return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(epoch))


def parse_duration(value: str | None) -> int | None:
    """Slurm's "[D-]HH:MM:SS" / "MM:SS" as seconds; None for UNLIMITED or unset."""
    if value is None or unset(value) or value in ("UNLIMITED", "Partition_Limit"):
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
