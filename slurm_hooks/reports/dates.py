"""Date arguments of query and report commands."""

from __future__ import annotations

import datetime as dt

from slurm_hooks.errors import ReportError

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
