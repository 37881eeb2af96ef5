"""Reading the jobs a report may count from the ledger's job index, with the leaf indices of
each job's events, through the store interface (:meth:`Store.usage_rows` streams them: a
1M-job report never holds 1M index rows).
"""

from __future__ import annotations

from collections.abc import Iterator

from computeproof.ledger import Ledger
from computeproof.reports.dates import ms_rfc3339
from computeproof.reports.usage import JobUsage, ReportParams
from computeproof.store import open_store
from computeproof.store.interface import Store, UsageFilter, UsageRow

# (usage, leaf indices in log order, last leaf index)
Candidate = tuple[JobUsage, list[int], int]


def usage_filter(params: ReportParams) -> UsageFilter:
    """The store selection of the job runs that may overlap the report period."""
    # stored times are RFC 3339 "...Z" text: a prefix comparison selects by instant
    return UsageFilter(
        since=ms_rfc3339(params.from_ms)[:19],
        until=ms_rfc3339(params.to_ms)[:19],
        accounts=params.accounts,
        users=params.users,
        include_synthetic=params.include_synthetic,
    )


def _candidate(row: UsageRow) -> Candidate:
    usage = JobUsage._make(row[: len(JobUsage._fields)])
    return usage, row.leaves, row.last_leaf


def candidates(
    store: Store, params: ReportParams, part: tuple[int, int] | None = None
) -> Iterator[Candidate]:
    """Jobs whose run may overlap the report period, with their leaf indices."""
    for row in store.usage_rows(usage_filter(params), part):
        yield _candidate(row)


def candidate_jobs(ledger: Ledger, params: ReportParams) -> Iterator[Candidate]:
    """Jobs whose run may overlap the report period, with their leaf indices."""
    return candidates(ledger.store, params)


def candidates_in_part(
    url: str, params: ReportParams, part: tuple[int, int]
) -> Iterator[Candidate]:
    """The candidates of one part of the job index, on a connection of its own (a worker
    process's)."""
    store = open_store(url, create=False)
    try:
        yield from candidates(store, params, part)
    finally:
        store.close()
