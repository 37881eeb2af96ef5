"""The ledger's and the forwarder's tests (test_ledger.py, test_forward.py) again, with a
PostgreSQL store behind the ledger: every test there that does not edit the SQLite file
behind the ledger's back (tampering is tested per backend) runs here on PostgreSQL.

Those modules open ledgers through the ``ledger`` fixture and test_ledger's ``_open``;
this module overrides the fixture and points ``_open`` at a PostgreSQL schema a path.
"""

from __future__ import annotations

import inspect
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parents[2]))
import test_forward as _forward_tests
import test_ledger as _ledger_tests
from pgharness import PostgresServer, postgres_server  # noqa: F401  (a fixture)

from computeproof.keys import Signer
from computeproof.ledger import Ledger
from computeproof.store.postgres import PostgresStore

pytestmark = pytest.mark.postgres


def _reusable(fn: object) -> bool:
    """A test that reaches the store only through the ledger (no sqlite3 of its own, no
    SQLite template file)."""
    if not callable(fn):
        return False
    source = inspect.getsource(fn)  # type: ignore[arg-type]
    params = inspect.signature(fn).parameters  # type: ignore[arg-type]
    return "sqlite3" not in source and "template" not in params and "_gc_" not in source


for _module in (_ledger_tests, _forward_tests):
    for _name, _fn in list(vars(_module).items()):
        if _name.startswith("test_") and "garbage_collector" not in _name and _reusable(_fn):
            globals()[_name] = _fn


@pytest.fixture(autouse=True)
def _postgres_ledgers(
    monkeypatch: pytest.MonkeyPatch,
    postgres_server: PostgresServer,  # noqa: F811
) -> None:
    """test_ledger's ``_open(path, ...)`` opens one PostgreSQL schema per path."""
    urls: dict[str, str] = {}

    def _open(
        db: Path | str,
        key: Path | str | None = None,
        origin: str = _ledger_tests.ORIGIN,
        workers: int = 1,
    ) -> Ledger:
        url = urls.setdefault(str(db), postgres_server.new_url())
        return Ledger(PostgresStore(url), origin, None if key is None else str(key), workers)

    monkeypatch.setattr(_ledger_tests, "_open", _open)


@pytest.fixture
def ledger(
    tmp_path: Path,
    host_signer: Signer,
    postgres_server: PostgresServer,  # noqa: F811
) -> Iterator[Ledger]:
    """An empty PostgreSQL ledger (one worker) trusting ``host_signer`` for the test hosts
    (conftest's ``ledger`` on the other backend)."""
    led = Ledger(
        PostgresStore(postgres_server.new_url()),
        "computeproof.test.ledger",
        str(tmp_path / "ledger.key"),
        workers=1,
    )
    led.enroll(host_signer.public_raw, ("ctl", "node1", "node2"))
    yield led
    led.close()


def test_this_module_reruns_most_of_them() -> None:
    reused = [n for n in globals() if n.startswith("test_") and n != inspect.stack()[0].function]
    assert len(reused) >= 30, reused
    assert "test_two_writers_append_at_once" in reused
    assert "test_forward_drains_the_spool" in reused
