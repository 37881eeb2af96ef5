"""Grant maps: which research grant (and PI) a Slurm account's GPU time is billed to, by date.

    [[grant]]
    id = "ERC-2026-117"
    pi = "Prof. Ada Byron"
    title = "Lattice QCD on GPUs"      # optional
    accounts = ["physics"]
    from = 2026-01-01                  # inclusive (TOML date or date-time, UTC)
    to = 2026-07-01                    # exclusive; omit for open-ended

An account can move to another grant on a date: give each grant its own range. A job
that runs across the change is split by time. Ranges of one account must not overlap.
Jobs of accounts (or at times) no grant covers are reported under "(no grant)".
"""

from __future__ import annotations

import bisect
import datetime as dt
import itertools
from dataclasses import dataclass
from typing import Any

from computeproof.errors import ReportError
from computeproof.reports.dates import parse_date
from computeproof.reports.ratecard import load_toml

NO_GRANT = "(no grant)"
_FAR_FUTURE = 2**62


@dataclass(frozen=True)
class Grant:
    """One grant and the accounts it pays for between two instants (epoch ms)."""

    id: str
    pi: str
    title: str
    accounts: tuple[str, ...]
    from_ms: int
    to_ms: int | None

    def to_json(self) -> dict[str, object]:
        """The grant as embedded in a report."""
        return {
            "id": self.id,
            "pi": self.pi,
            "title": self.title,
            "accounts": list(self.accounts),
            "from_ms": self.from_ms,
            "to_ms": self.to_ms,
        }


class GrantMap:
    """Account -> grant lookups by time."""

    def __init__(self, grants: tuple[Grant, ...], source: str = "") -> None:
        self.grants = grants
        self.source = source
        self.by_id = {g.id: g for g in grants}
        spans: dict[str, list[tuple[int, int, str]]] = {}
        for g in grants:
            for account in g.accounts:
                spans.setdefault(account, []).append(
                    (g.from_ms, g.to_ms if g.to_ms is not None else _FAR_FUTURE, g.id)
                )
        self._spans: dict[str, list[tuple[int, int, str]]] = {}
        self._starts: dict[str, list[int]] = {}
        self._cuts: dict[str, list[int]] = {}
        for account, items in spans.items():
            items.sort()
            for (_, a1, aid), (b0, _, bid) in itertools.pairwise(items):
                if b0 < a1:
                    raise ReportError(
                        f"{source or 'grant map'}: account {account!r} is in grants "
                        f"{aid!r} and {bid!r} at the same time"
                    )
            self._spans[account] = items
            self._starts[account] = [s for s, _, _ in items]
            self._cuts[account] = sorted(
                {t for s, e, _ in items for t in (s, e) if t != _FAR_FUTURE}
            )

    def grant_at(self, account: str, t_ms: int) -> str:
        """The grant id paying for ``account`` at instant ``t_ms`` (or NO_GRANT)."""
        items = self._spans.get(account)
        if not items:
            return NO_GRANT
        i = bisect.bisect_right(self._starts[account], t_ms) - 1
        if i >= 0 and items[i][0] <= t_ms < items[i][1]:
            return items[i][2]
        return NO_GRANT

    def cuts(self, account: str) -> list[int]:
        """Instants (epoch ms) where ``account`` changes grant, sorted."""
        return self._cuts.get(account, [])

    def pi(self, grant_id: str) -> str:
        """The PI of a grant ("" for NO_GRANT)."""
        g = self.by_id.get(grant_id)
        return g.pi if g is not None else ""

    def to_json(self) -> dict[str, object]:
        """The grant map as embedded in a report."""
        return {"source": self.source, "grants": [g.to_json() for g in self.grants]}


def _instant(value: object, where: str) -> int:
    if isinstance(value, dt.datetime):
        if value.tzinfo is not None:
            value = value.astimezone(dt.UTC).replace(tzinfo=None)
        return to_ms(value)
    if isinstance(value, dt.date):
        return to_ms(dt.datetime(value.year, value.month, value.day))
    if isinstance(value, str):
        return to_ms(parse_date(value, where))
    raise ReportError(f"{where} must be a date (YYYY-MM-DD), not {type(value).__name__} {value!r}")


def to_ms(value: dt.datetime) -> int:
    """Epoch milliseconds of a naive UTC datetime."""
    delta = value - dt.datetime(1970, 1, 1)
    return (delta.days * 86_400 + delta.seconds) * 1000 + delta.microseconds // 1000


def _text(value: object, where: str, required: bool = True) -> str:
    if value is None and not required:
        return ""
    if not isinstance(value, str) or not value:
        raise ReportError(f"{where} must be a non-empty string, not {value!r}")
    return value


def parse_grants(data: dict[str, Any], source: str) -> GrantMap:
    """Check and build a grant map from decoded TOML; errors name the file and key path."""
    for key in data:
        if key != "grant":
            raise ReportError(f"{source}: unknown key '{key}' (grants are [[grant]] tables)")
    items = data.get("grant", [])
    if not isinstance(items, list):
        raise ReportError(f"{source}: 'grant' must be an array of tables ([[grant]])")
    grants: list[Grant] = []
    for i, item in enumerate(items):
        where = f"{source}: grant[{i}]"
        if not isinstance(item, dict):
            raise ReportError(f"{where} must be a table")
        for key in item:
            if key not in ("id", "pi", "title", "accounts", "from", "to"):
                raise ReportError(f"{where}: unknown key '{key}'")
        for key in ("id", "accounts", "from"):
            if key not in item:
                raise ReportError(f"{where}: '{key}' is missing")
        accounts = item["accounts"]
        if (
            not isinstance(accounts, list)
            or not accounts
            or not all(isinstance(a, str) and a for a in accounts)
        ):
            raise ReportError(f"{where}.accounts must be a non-empty list of account names")
        start = _instant(item["from"], f"{where}.from")
        end = _instant(item["to"], f"{where}.to") if "to" in item else None
        if end is not None and end <= start:
            raise ReportError(f"{where}: 'to' must be after 'from'")
        grants.append(
            Grant(
                _text(item["id"], f"{where}.id"),
                _text(item.get("pi"), f"{where}.pi", required=False),
                _text(item.get("title"), f"{where}.title", required=False),
                tuple(accounts),
                start,
                end,
            )
        )
    ids = [g.id for g in grants]
    for gid in ids:
        if ids.count(gid) > 1:
            raise ReportError(f"{source}: grant id {gid!r} appears more than once")
    return GrantMap(tuple(grants), source)


def load_grants(path: str) -> GrantMap:
    """Load and check a grant map file."""
    return parse_grants(load_toml(path, "grant map"), path)


def grants_from_json(data: object) -> GrantMap:
    """The grant map embedded in a report."""
    if not isinstance(data, dict):
        raise ReportError("report: embedded grant map is not an object")
    try:
        return GrantMap(
            tuple(
                Grant(
                    str(g["id"]),
                    str(g["pi"]),
                    str(g["title"]),
                    tuple(g["accounts"]),
                    int(g["from_ms"]),
                    None if g["to_ms"] is None else int(g["to_ms"]),
                )
                for g in data["grants"]
            ),
            str(data.get("source", "")),
        )
    except (KeyError, TypeError, ValueError) as e:
        raise ReportError(f"report: embedded grant map is malformed: {e}") from e
