"""The jobs page's query: filters, search and a keyset cursor, read from a URL's parameters.

The URL is the whole state of the jobs page (filters, search, page), so a reload, a
shared link or a live refresh shows the same selection.
"""

from __future__ import annotations

import base64
import binascii
import json
from collections.abc import Callable
from dataclasses import dataclass, field
from urllib.parse import urlencode

from computeproof.errors import ComputeProofError
from computeproof.reports.dates import parse_date_arg
from computeproof.store.interface import JobCursor, JobFilter

MAX_VALUES = 20  # values of one filter in one request
MAX_TEXT = 200  # characters of one filter value


class QueryError(ComputeProofError):
    """A dashboard request's parameters are malformed (answered with HTTP 400)."""


FILTERS = ("user", "account", "partition", "state", "gpu_model", "node")


def encode_cursor(cursor: JobCursor) -> str:
    """A cursor as an opaque URL-safe token."""
    data = json.dumps([cursor.sort, cursor.job_id, cursor.job_key], separators=(",", ":"))
    return base64.urlsafe_b64encode(data.encode()).decode().rstrip("=")


def decode_cursor(token: str) -> JobCursor:
    """The cursor of a token made by :func:`encode_cursor`; QueryError when it is not one."""
    try:
        data = json.loads(base64.urlsafe_b64decode(token + "=" * (-len(token) % 4)))
        sort, job_id, job_key = data
        if not (isinstance(sort, str) and isinstance(job_key, str) and type(job_id) is int):
            raise ValueError("wrong types")
    except (ValueError, TypeError, binascii.Error, UnicodeDecodeError) as e:
        raise QueryError("the page cursor is malformed; go back to the first page") from e
    return JobCursor(sort, job_id, job_key)


@dataclass(frozen=True)
class JobQuery:
    """What the jobs page was asked for."""

    filters: dict[str, tuple[str, ...]] = field(default_factory=dict)
    date_from: str = ""
    date_to: str = ""
    search: str = ""
    after: str = ""  # cursor token: the page after this row
    before: str = ""  # cursor token: the page before this row
    size: int = 50

    @classmethod
    def parse(
        cls, get_list: Callable[[str], list[str]], default_size: int, max_size: int
    ) -> JobQuery:
        """Read the query from URL parameters (``get_list(name)``: every value given)."""

        def values(name: str) -> tuple[str, ...]:
            got = [v.strip() for v in get_list(name) if v.strip()]
            if len(got) > MAX_VALUES or any(len(v) > MAX_TEXT for v in got):
                raise QueryError(f"too many or too long values for filter {name!r}")
            return tuple(dict.fromkeys(got))

        def one(name: str) -> str:
            got = values(name)
            return got[-1] if got else ""

        size_text = one("size")
        try:
            size = int(size_text) if size_text else default_size
        except ValueError as e:
            raise QueryError(f"page size {size_text[:20]!r} is not a number") from e
        query = cls(
            filters={f: values(f) for f in FILTERS if values(f)},
            date_from=one("from"),
            date_to=one("to"),
            search=one("q"),
            after=one("after"),
            before=one("before"),
            size=min(max(size, 1), max_size),
        )
        query.selection()  # refuse bad dates now
        if query.after:
            decode_cursor(query.after)
        if query.before:
            decode_cursor(query.before)
        return query

    def selection(self) -> JobFilter:
        """The store filter of this query (before the viewer's restriction)."""
        f = self.filters
        try:
            since = parse_date_arg(self.date_from, "from") if self.date_from else None
            # a date "to" includes that whole day: jobs that started before the next one
            until = _day_after(self.date_to) if self.date_to else None
        except ComputeProofError as e:
            raise QueryError(str(e)) from e
        return JobFilter(
            users=f.get("user", ()),
            accounts=f.get("account", ()),
            partitions=f.get("partition", ()),
            states=tuple(s.upper() for s in f.get("state", ())),
            nodes=f.get("node", ()),
            gpu_models=f.get("gpu_model", ()),
            since=since,
            until=until,
            job=self.search or None,
        )

    def params(self, **change: str) -> str:
        """This query's URL parameters (without the cursor), with ``change`` applied."""
        items: list[tuple[str, str]] = [(k, v) for k, vs in self.filters.items() for v in vs]
        for name, value in (("from", self.date_from), ("to", self.date_to), ("q", self.search)):
            if value:
                items.append((name, value))
        items.extend((k, v) for k, v in change.items() if v)
        return urlencode(items)

    @property
    def first_page(self) -> bool:
        """Whether this is the newest page (live updates refresh it in place)."""
        return not self.after and not self.before


def _day_after(text: str) -> str:
    import datetime as dt

    from computeproof.reports.dates import parse_date

    value = parse_date(text, "to")
    if len(text.strip().rstrip("Z")) == 10:  # a plain date: the whole day
        value += dt.timedelta(days=1)
    return value.strftime("%Y-%m-%dT%H:%M:%S")
