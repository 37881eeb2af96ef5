"""The Store contract (store_contract.py) run against SQLiteStore, plus SQLite specifics."""

from __future__ import annotations

import os
import sys
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

# store_contract.py sits beside this file (also importable under --import-mode=importlib)
sys.path.insert(0, str(Path(__file__).resolve().parent))
from store_contract import StoreContract

from slurm_hooks.errors import StoreError
from slurm_hooks.receipts.store import open_store
from slurm_hooks.receipts.store.interface import Store
from slurm_hooks.receipts.store.sqlite import SQLiteStore


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


def test_open_store_picks_sqlite_for_paths(tmp_path: Path) -> None:
    store = open_store(str(tmp_path / "sub" / "ledger.db"))
    try:
        assert isinstance(store, SQLiteStore)
        assert os.path.exists(tmp_path / "sub" / "ledger.db")  # parent directory created
        assert store.get_meta("schema_version") == "1"
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
        assert store.get_meta("schema_version") == "1"
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
