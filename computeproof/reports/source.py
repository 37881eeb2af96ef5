"""Reading the jobs a report may count from the ledger's job index, with the leaf indices of
each job's events. SQLite ledgers are read with one streaming query (a 1M-job report never
holds 1M index rows); other stores go through the generic :class:`Store` interface.
"""

from __future__ import annotations

from collections.abc import Iterator

from computeproof.ledger import Ledger
from computeproof.reports.dates import ms_rfc3339
from computeproof.reports.receiptcheck import usage_of
from computeproof.reports.usage import JobUsage, ReportParams
from computeproof.store.interface import JobFilter

# (usage, leaf indices in log order, last leaf index)
Candidate = tuple[JobUsage, list[int], int]


def _bounds(params: ReportParams) -> tuple[str, str]:
    # stored times are RFC 3339 "...Z" text: a prefix comparison selects by instant
    return ms_rfc3339(params.from_ms)[:19], ms_rfc3339(params.to_ms)[:19]


def candidate_jobs(ledger: Ledger, params: ReportParams) -> Iterator[Candidate]:
    """Jobs whose run may overlap the report period, with their leaf indices."""
    from computeproof.store.sqlite import SQLiteStore

    if isinstance(ledger.store, SQLiteStore):
        yield from _sqlite_candidates(ledger.store, params)
        return
    since, until = _bounds(params)
    selection = JobFilter(users=params.users, accounts=params.accounts, since=since, until=until)
    for row in ledger.jobs(selection):
        leaves = [leaf.index for leaf in ledger.store.job_leaves(row.job_key)]
        yield usage_of(row), leaves, row.last_leaf if row.last_leaf is not None else -1


def sqlite_rowid_span(store: object) -> tuple[int, int]:
    """(lowest, highest) rowid of a SQLite ledger's job index, to split a scan."""
    from computeproof.store.sqlite import SQLiteStore

    assert isinstance(store, SQLiteStore)
    lo, hi = store.db.execute("SELECT coalesce(min(rowid), 0), coalesce(max(rowid), -1) "
                              "FROM jobs").fetchone()  # fmt: skip
    return int(lo), int(hi)


def sqlite_candidates_range(
    path: str, params: ReportParams, lo: int, hi: int
) -> Iterator[Candidate]:
    """The candidates of job-index rows lo <= rowid < hi, on a connection of its own."""
    from computeproof.store.sqlite import SQLiteStore

    store = SQLiteStore(path)
    try:
        yield from _sqlite_candidates(store, params, (lo, hi))
    finally:
        store.close()


def _sqlite_candidates(
    store: object, params: ReportParams, rowids: tuple[int, int] | None = None
) -> Iterator[Candidate]:
    import sqlite3

    from computeproof.errors import StoreError
    from computeproof.store.sqlite import SQLiteStore

    assert isinstance(store, SQLiteStore)
    since, until = _bounds(params)
    where = ['("end" IS NULL OR "end" >= ?)', "(start IS NULL OR start < ?)"]
    args: list[object] = [since, until]
    for column, values in (("account", params.accounts), ("user", params.users)):
        if values:
            where.append(f'"{column}" IN ({", ".join("?" * len(values))})')
            args.extend(values)
    if not params.include_synthetic:
        where.append("synthetic = 0")
    if rowids is not None:
        where.append("j.rowid >= ? AND j.rowid < ?")
        args.extend(rowids)
    sql = (
        'SELECT j.job_key, account, user, partition, gpu_model, state, gpus, start, "end", '
        "elapsed_s, json_extract(fields, '$.gpu_totals.busy_gpu_ms'), "
        "json_extract(fields, '$.gpu_totals.energy_mj'), synthetic, last_leaf, "
        "(SELECT group_concat(idx) FROM leaves l WHERE l.job_key = j.job_key) "
        f"FROM jobs j WHERE {' AND '.join(where)} ORDER BY j.rowid"
    )
    try:
        cur = store.db.execute(sql, args)
        while rows := cur.fetchmany(5000):
            for r in rows:
                leaves = sorted(map(int, r[14].split(","))) if r[14] else []
                busy = r[10] if isinstance(r[10], int) else None
                energy = r[11] if isinstance(r[11], int) else None
                yield (
                    JobUsage(
                        r[0],
                        r[1],
                        r[2],
                        r[3],
                        r[4],
                        r[5],
                        r[6],
                        r[7],
                        r[8],
                        r[9],
                        busy,
                        energy,
                        bool(r[12]),
                    ),
                    leaves,
                    r[13] if r[13] is not None else -1,
                )
    except sqlite3.DatabaseError as e:
        raise StoreError(f"ledger database {store.path}: {e}") from e
