"""Ledger storage backends behind one narrow interface (interface.py).

sqlite.py is the embedded default; a PostgreSQL backend implements the same interface
and runs the same contract tests (tests/unit/computeproof/store_contract.py).
"""

from __future__ import annotations

from computeproof.store.interface import LeafRow, Store


def open_store(url: str, create: bool = True) -> Store:
    """Open a store: a ``postgresql://`` URL or a SQLite file path (a missing file is
    created, or with ``create`` False refused)."""
    if is_postgres_url(url):
        from computeproof.store.postgres import PostgresStore

        return PostgresStore(url, create)
    from computeproof.store.sqlite import SQLiteStore

    return SQLiteStore(url, create)


def is_postgres_url(url: str) -> bool:
    """Whether ``url`` names a PostgreSQL ledger rather than a SQLite file."""
    return url.startswith(("postgresql://", "postgres://"))


def read_leaves(url: str, start: int, stop: int) -> list[LeafRow]:
    """Leaves start <= index < stop through a store's :meth:`Store.reader_url`, read-only
    (for ledger worker processes)."""
    if not is_postgres_url(url):
        from computeproof.store.sqlite import read_leaves as read_sqlite

        return read_sqlite(url, start, stop)
    from computeproof.store.postgres import read_leaves as read_postgres

    return read_postgres(url, start, stop)
