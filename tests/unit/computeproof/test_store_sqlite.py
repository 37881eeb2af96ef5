"""The Store contract (store_contract.py) run against SQLiteStore, plus SQLite specifics."""

from __future__ import annotations

import contextlib
import os
import sqlite3
import sys
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

# store_contract.py sits beside this file (also importable under --import-mode=importlib)
sys.path.insert(0, str(Path(__file__).resolve().parent))
from store_contract import StoreContract

from computeproof.errors import StoreError
from computeproof.keys import Signer
from computeproof.ledger import Ledger
from computeproof.store import open_store
from computeproof.store.interface import Store
from computeproof.store.sqlite import SCHEMA_VERSION, SQLiteStore, readable_by_others


class TestSQLiteStore(StoreContract):
    @pytest.fixture
    def make_store(self, tmp_path: Path) -> Iterator[Callable[..., Store]]:
        opened: list[Store] = []

        def make(name: str = "main") -> Store:
            store = SQLiteStore(str(tmp_path / f"{name}.db"))
            opened.append(store)
            return store

        yield make
        for store in opened:
            store.close()


# The leaf table of schema 1 (ledgers made before leaves were indexed by job key and event
# id together): those ledgers are opened as they are, so the contract must hold on it too.
_SCHEMA_1_LEAVES = """
CREATE TABLE meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
INSERT INTO meta VALUES ('schema_version', '1');
CREATE TABLE leaves (
    idx INTEGER PRIMARY KEY, event_id TEXT NOT NULL UNIQUE, job_key TEXT NOT NULL,
    type TEXT NOT NULL, host TEXT NOT NULL, time TEXT NOT NULL, envelope BLOB NOT NULL);
CREATE INDEX leaves_job ON leaves (job_key);
"""


def _schema_1_file(path: Path) -> None:
    if not path.exists():
        with contextlib.closing(sqlite3.connect(path)) as db:
            db.executescript(_SCHEMA_1_LEAVES)


class TestSQLiteStoreSchema1(StoreContract):
    @pytest.fixture
    def make_store(self, tmp_path: Path) -> Iterator[Callable[..., Store]]:
        opened: list[Store] = []

        def make(name: str = "main") -> Store:
            path = tmp_path / f"{name}.db"
            _schema_1_file(path)
            store = SQLiteStore(str(path))
            assert store.get_meta("schema_version") == "1"
            opened.append(store)
            return store

        yield make
        for store in opened:
            store.close()


def test_lookups_search_an_index(tmp_path: Path) -> None:
    """find_events and job_leaves search an index on either schema (a row-value IN scans
    the whole table: a regression to that would be slow at scale, not wrong)."""
    for schema in ("2", "1"):
        path = tmp_path / f"s{schema}.db"
        if schema == "1":
            _schema_1_file(path)
        store = SQLiteStore(str(path))
        statements: list[str] = []
        store.db.set_trace_callback(statements.append)  # the SQL with its values filled in
        store.find_events([("c1/1#0", "a" * 64), ("c1/2#0", "b" * 64)])
        store.job_leaves("c1/1#0")
        store.db.set_trace_callback(None)
        plans = [[str(r[-1]) for r in store.db.execute("EXPLAIN QUERY PLAN " + sql)]
                 for sql in statements]  # fmt: skip
        store.close()
        assert len(plans) == 2
        for plan in plans:
            assert any(p.startswith("SEARCH l") and "INDEX" in p for p in plan), plan
            assert not any(p.startswith(("SCAN l", "SCAN leaves")) for p in plan), plan


def _schema_1_ledger(path: Path, signer: Signer, envelopes: list[bytes]) -> bytes:
    """A schema 1 ledger holding ``envelopes``; returns its root."""
    _schema_1_file(path)
    with Ledger(SQLiteStore(str(path)), "o", None, workers=1) as ledger:
        ledger.enroll(signer.public_raw, ["ctl", "node1", "node2"])
        assert len(ledger.append(envelopes).accepted) == len(envelopes)
        return ledger.root()


def test_upgrade_from_schema_1(
    tmp_path: Path, host_signer: Signer, make_lifecycle: Callable, sign_all: Callable
) -> None:
    path = tmp_path / "old.db"
    envs = [e for j in ("100", "101", "102") for e in sign_all(make_lifecycle(j))]
    root = _schema_1_ledger(path, host_signer, envs)
    store = SQLiteStore(str(path))
    before = list(store.leaves())
    seen: list[tuple[int, int]] = []
    assert store.upgrade(lambda done, total: seen.append((done, total))) == ("1", "2")
    assert seen[-1] == (len(envs), len(envs))
    indexes = {r[0] for r in store.db.execute("SELECT name FROM sqlite_master")}
    assert "leaves_job" not in indexes and "leaves_v2" not in indexes
    assert store.get_meta("schema_version") == "2" and list(store.leaves()) == before
    assert store.upgrade() == ("2", "2")  # again: nothing to do
    store.close()
    with Ledger(SQLiteStore(str(path)), None, None, workers=1) as ledger:
        assert ledger.root() == root and ledger.verify().ok
        again = ledger.append(envs[:3])
        assert len(again.duplicates) == 3 and not again.accepted  # dedupe still finds them


def test_upgrade_refuses_rows_it_cannot_place(
    tmp_path: Path, host_signer: Signer, make_lifecycle: Callable, sign_all: Callable
) -> None:
    path = tmp_path / "old.db"
    _schema_1_ledger(path, host_signer, sign_all(make_lifecycle("100")))
    store = SQLiteStore(str(path))
    store.db.execute("UPDATE leaves SET idx = -5 WHERE idx = 0")  # a tampered row
    with pytest.raises(StoreError, match="1 leaf rows lie outside"):
        store.upgrade()
    assert store.get_meta("schema_version") == "1"  # the transaction rolled back
    assert store.db.execute("SELECT count(*) FROM leaves WHERE idx = -5").fetchone() == (1,)
    store.close()


def test_a_new_ledger_is_readable_by_its_owner_only(tmp_path: Path) -> None:
    """The ledger holds the openings of private fields: no other user may read it, nor
    its WAL (before, a new ledger was 0644 under the usual umask)."""
    path = tmp_path / "ledger.db"
    old = os.umask(0o022)
    try:
        store = SQLiteStore(str(path))
        store.set_meta("origin", "o")  # a write: the WAL and its index exist now
    finally:
        os.umask(old)
    modes = {p.name: p.stat().st_mode & 0o777 for p in tmp_path.iterdir()}
    store.close()
    assert modes == {"ledger.db": 0o600, "ledger.db-wal": 0o600, "ledger.db-shm": 0o600}
    assert readable_by_others(str(path)) is None
    path.chmod(0o644)
    assert readable_by_others(str(path)) == 0o644
    SQLiteStore(str(path)).close()  # an existing file's mode is the site's to set
    assert path.stat().st_mode & 0o777 == 0o644


def test_backup(
    tmp_path: Path, host_signer: Signer, make_lifecycle: Callable, sign_all: Callable
) -> None:
    path, dest = tmp_path / "ledger.db", tmp_path / "copy.db"
    with Ledger(SQLiteStore(str(path)), "o", str(tmp_path / "l.key"), workers=1) as ledger:
        ledger.enroll(host_signer.public_raw, ["ctl", "node1", "node2"])
        ledger.append(sign_all(make_lifecycle("100")))
        ledger.checkpoint()
        copied = ledger.size()
        ledger.store.backup(str(dest))  # type: ignore[attr-defined]
        ledger.append(sign_all(make_lifecycle("101")))  # after the copy: not in it
        root, size = ledger.root(copied), ledger.size()
        with pytest.raises(StoreError, match="exists; give a new file"):
            ledger.store.backup(str(dest))  # type: ignore[attr-defined]
        with pytest.raises(StoreError, match="cannot write the backup"):
            ledger.store.backup(str(tmp_path / "no" / "such" / "dir.db"))  # type: ignore[attr-defined]
    assert dest.stat().st_mode & 0o777 == 0o600 and not (tmp_path / "no").exists()
    with Ledger(SQLiteStore(str(dest), create=False), None, str(tmp_path / "l.key")) as copy:
        assert copy.size() == copied < size and copy.root() == root and copy.verify().ok


def test_open_store_picks_sqlite_for_paths(tmp_path: Path) -> None:
    store = open_store(str(tmp_path / "sub" / "ledger.db"))
    try:
        assert isinstance(store, SQLiteStore)
        assert os.path.exists(tmp_path / "sub" / "ledger.db")  # parent directory created
        assert store.get_meta("schema_version") == SCHEMA_VERSION
    finally:
        store.close()


def test_open_store_without_create_refuses_a_missing_file(tmp_path: Path) -> None:
    path = tmp_path / "sub" / "ledger.db"
    with pytest.raises(StoreError, match=f"no ledger at {path}"):
        open_store(str(path), create=False)
    assert not path.parent.exists()
    open_store(str(path)).close()
    store = open_store(str(path), create=False)
    try:
        assert store.get_meta("schema_version") == SCHEMA_VERSION
    finally:
        store.close()


def test_not_a_database(tmp_path: Path) -> None:
    path = tmp_path / "ledger.db"
    path.write_bytes(b"this is not SQLite" * 100)
    with pytest.raises(StoreError, match="cannot open ledger database"):
        SQLiteStore(str(path))


def test_unopenable_path(tmp_path: Path) -> None:
    blocker = tmp_path / "file"
    blocker.write_text("x")
    with pytest.raises(StoreError):
        SQLiteStore(str(blocker / "ledger.db"))
