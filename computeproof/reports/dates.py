"""Date arguments of query and report commands."""

from __future__ import annotations

import datetime as dt
import functools

from computeproof.errors import ReportError

_FORMATS = (
    "%Y-%m-%d",
    "%Y-%m-%dT%H:%M",
    "%Y-%m-%dT%H:%M:%S",
    "%Y-%m",
    "%Y-%m-%d %H:%M",
    "%Y-%m-%d %H:%M:%S",
)


def parse_date(text: str, what: str) -> dt.datetime:
    """Parse a date or date-time (UTC) given on the command line."""
    value = text.strip().rstrip("Z")
    for fmt in _FORMATS:
        try:
            return dt.datetime.strptime(value, fmt)
        except ValueError:
            continue
    raise ReportError(f"{what}: {text!r} is not a date; use YYYY-MM-DD or YYYY-MM-DDTHH:MM[:SS]")


def parse_date_arg(text: str, what: str) -> str:
    """A command-line date as the sortable UTC text stored in the ledger."""
    return parse_date(text, what).strftime("%Y-%m-%dT%H:%M:%S")


def parse_period(start: str, end: str) -> tuple[dt.datetime, dt.datetime]:
    """The report period [start, end) from --from/--to (UTC).

    A --to given as a date (YYYY-MM-DD) or month (YYYY-MM) includes that whole day or
    month; a --to with a time is the exclusive end instant.
    """
    lo = parse_date(start, "--from")
    hi = parse_date(end, "--to")
    text = end.strip().rstrip("Z")
    if len(text) == 7:  # YYYY-MM
        hi = (hi.replace(day=28) + dt.timedelta(days=4)).replace(day=1)
    elif len(text) == 10:  # YYYY-MM-DD
        hi = hi + dt.timedelta(days=1)
    if hi <= lo:
        raise ReportError(f"--from {start} is not before --to {end}: the period is empty")
    return lo, hi


@functools.lru_cache(maxsize=4096)
def _epoch_day(year: int, month: int, day: int) -> int:
    return dt.date(year, month, day).toordinal() - _EPOCH_ORDINAL


def rfc3339_ms(text: str) -> int:
    """Epoch milliseconds of an RFC 3339 time as stored in events ("...Z", offsets, fractions)."""
    if len(text) == 20 and text[19] == "Z" and text[10] == "T":  # the hooks' own form, fast
        try:
            days = _epoch_day(int(text[0:4]), int(text[5:7]), int(text[8:10]))
            h, m, s = int(text[11:13]), int(text[14:16]), int(text[17:19])
        except ValueError:
            pass
        else:
            if h < 24 and m < 60 and s < 60:
                return ((days * 24 + h) * 60 + m) * 60_000 + s * 1000
    value = dt.datetime.fromisoformat(text.replace("Z", "+00:00") if text.endswith("Z") else text)
    if value.tzinfo is not None:
        value = value.astimezone(dt.UTC).replace(tzinfo=None)
    delta = value - _EPOCH
    return (delta.days * 86_400 + delta.seconds) * 1000 + delta.microseconds // 1000


def ms_rfc3339(ms: int) -> str:
    """RFC 3339 UTC text of epoch milliseconds (seconds precision when whole)."""
    value = _EPOCH + dt.timedelta(milliseconds=ms)
    if ms % 1000:
        return value.strftime("%Y-%m-%dT%H:%M:%S.%f")[:-3] + "Z"
    return value.strftime("%Y-%m-%dT%H:%M:%SZ")


_EPOCH = dt.datetime(1970, 1, 1)
_EPOCH_ORDINAL = dt.date(1970, 1, 1).toordinal()
