"""The Store contract (store_contract.py) run against PostgresStore on a real PostgreSQL
server started by the harness (tests/pgharness.py), plus what only PostgreSQL has:
appenders in several processes, text it cannot hold as it is, and its collation."""

from __future__ import annotations

import multiprocessing
import sys
import threading
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parents[2]))
from pgharness import PostgresServer, postgres_server  # noqa: F401  (a fixture)
from store_contract import StoreContract, _append, _job, _leaves

from computeproof.errors import StoreConflict, StoreError
from computeproof.event import new_event
from computeproof.keys import Signer
from computeproof.ledger import Ledger
from computeproof.store import open_store
from computeproof.store.interface import JobFilter, LeafRow, Store
from computeproof.store.postgres import PostgresStore, redact
from computeproof.store.sqlite import SQLiteStore

pytestmark = pytest.mark.postgres


class TestPostgresStore(StoreContract):
    @pytest.fixture
    def make_store(self, postgres_server: PostgresServer) -> Iterator[Callable[..., Store]]:  # noqa: F811
        opened: list[Store] = []
        urls: dict[str, str] = {}

        def make(name: str = "main") -> Store:
            if name not in urls:
                urls[name] = postgres_server.new_url()
            store = PostgresStore(urls[name])
            opened.append(store)
            return store

        yield make
        for store in opened:
            store.close()


@pytest.fixture
def url(postgres_server: PostgresServer) -> str:  # noqa: F811
    return postgres_server.new_url()


def test_open_store_dispatches_postgres_urls(url: str) -> None:
    store = open_store(url)
    try:
        assert isinstance(store, PostgresStore) and store.get_meta("schema_version") == "1"
    finally:
        store.close()


def test_open_store_without_create_refuses_a_database_without_a_ledger(
    postgres_server: PostgresServer,  # noqa: F811
) -> None:
    url = postgres_server.new_url()
    with pytest.raises(StoreError, match="no ledger in the PostgreSQL database"):
        open_store(url, create=False)
    open_store(url).close()
    open_store(url, create=False).close()


def test_unreachable_server_is_one_line_without_the_password(
    postgres_server: PostgresServer,  # noqa: F811
) -> None:
    bad = postgres_server.url().replace(str(postgres_server.port), "1")
    with pytest.raises(StoreError) as info:
        PostgresStore(bad)
    assert "cannot connect to the PostgreSQL ledger" in str(info.value)
    assert postgres_server.password not in str(info.value) and "\n" not in str(info.value)
    assert redact("postgresql://u:secret@h/db") == "postgresql://u:***@h/db"
    assert redact("host=h password=secret dbname=x") == "host=h password=*** dbname=x"


def test_a_writer_that_waited_for_the_lock_gets_a_conflict(url: str) -> None:
    """The size check and the insert are atomic: an append that started (and waited)
    while another writer held the append lock finds the log grown and raises
    StoreConflict (which the ledger redoes), never a unique-key error."""
    import psycopg

    first, second = PostgresStore(url), PostgresStore(url)
    _append(first, 2)
    holder = psycopg.connect(url)  # a transaction, not autocommit: it holds the lock
    holder.execute("SELECT id FROM append_lock WHERE id = 1 FOR UPDATE")
    outcome: list[BaseException | None] = []

    def append_second() -> None:
        try:
            second.append(2, _leaves(2, 1, "c1/9#0"), [((0, 2), b"\x02" * 32)], [], [])
            outcome.append(None)
        except BaseException as e:
            outcome.append(e)

    t = threading.Thread(target=append_second)
    t.start()
    t.join(0.5)
    assert t.is_alive()  # waiting for the lock
    row = _leaves(2, 1)[0]
    holder.execute(
        "INSERT INTO leaves (idx, event_id, job_key, type, host, time, envelope) "
        "VALUES (%s, %s, %s, %s, %s, %s, %s)",
        list(row),
    )
    holder.commit()
    t.join(10)
    assert len(outcome) == 1 and isinstance(outcome[0], StoreConflict)
    assert first.size() == 3 and first.find_events([("c1/9#0", _leaves(2, 1)[0].event_id)]) == {}
    holder.close()
    first.close()
    second.close()


def test_a_writer_that_keeps_losing_the_race_holds_the_others_off(url: str, tmp_path: Path) -> None:
    """Another collector commits between this one's read of the log and its append, every
    time it can: after a few conflicts the ledger rechecks and commits holding the append
    lock, and its batch gets in (before, it gave up after 20 conflicts)."""
    signer = Signer.from_seed(bytes([5]) * 32)
    from computeproof.envelope import sign_event

    mine = [sign_event(e, signer) for e in _lifecycle("1")]
    theirs = iter([sign_event(e, signer) for j in range(2, 40) for e in _lifecycle(str(j))])
    key = str(tmp_path / "k")
    ledger = Ledger(PostgresStore(url), "o", key, workers=1)
    other = Ledger(PostgresStore(url), "o", key, workers=1)
    ledger.enroll(signer.public_raw, ["*"])
    other.store.conn.execute("SET lock_timeout = '300ms'")  # type: ignore[attr-defined]
    outcomes: list[str] = []
    real_append = ledger.store.append

    def append(*args: object, **kw: object) -> None:
        try:
            other.append([next(theirs)])  # gets in first, whenever it can
            outcomes.append("other appended")
        except StoreError:
            outcomes.append("other held off")
        real_append(*args, **kw)  # type: ignore[arg-type]

    ledger.store.append = append  # type: ignore[method-assign]
    result = ledger.append(mine)
    assert len(result.accepted) == len(mine) and not result.rejected
    assert outcomes[0] == "other appended" and outcomes[-1] == "other held off"
    ledger.store.append = real_append  # type: ignore[method-assign]
    assert ledger.verify().ok
    ledger.close()
    other.close()


def _lifecycle(job: str) -> list[dict[str, object]]:
    """A job's events on two nodes: scheduled, (started, progress, node_done) a node,
    completed."""
    jid = int(job)
    out = [
        new_event(
            "scheduled",
            "c1",
            job,
            jid,
            "ctl",
            {"user": "u", "gpus": 2},
            time="2026-01-01T10:00:00Z",
        )
    ]
    for node in ("node1", "node2"):
        for t in ("started", "progress", "node_done"):
            out.append(new_event(t, "c1", job, jid, node, {}, time="2026-01-01T10:00:01Z"))
    out.append(
        new_event(
            "completed", "c1", job, jid, "ctl", {"state": "COMPLETED"}, time="2026-01-01T11:00:00Z"
        )
    )
    return out


def _append_jobs(url: str, seed: int, jobs: list[str], key_path: str) -> None:
    """A collector process: its own host key, one job at a time, in small batches."""
    from computeproof.envelope import sign_event

    signer = Signer.from_seed(bytes([seed]) * 32)
    with Ledger(PostgresStore(url), None, key_path, workers=1) as ledger:
        for job in jobs:
            envs = [sign_event(e, signer) for e in _lifecycle(job)]
            result = ledger.append(envs[:3])
            result2 = ledger.append(envs)  # the first three again: duplicates
            assert len(result.accepted) == 3 and len(result2.duplicates) == 3, (result, result2)
            assert not result.rejected and not result2.rejected


def test_several_processes_append_at_once(url: str, tmp_path: Path) -> None:
    """Four processes, each a collector with its own connection, append 40 jobs at once:
    every event lands once, the tree is sound, and a checkpoint signs it."""
    signers = [Signer.from_seed(bytes([10 + i]) * 32) for i in range(4)]
    key = str(tmp_path / "ledger.key")
    with Ledger(PostgresStore(url), "computeproof.test.ledger", key, workers=1) as ledger:
        for s in signers:
            ledger.enroll(s.public_raw, ["ctl", "node1", "node2"])
    ctx = multiprocessing.get_context("spawn")
    procs = [
        ctx.Process(
            target=_append_jobs,
            args=(url, 10 + i, [str(1000 * (i + 1) + j) for j in range(10)], key),
        )
        for i in range(4)
    ]
    for p in procs:
        p.start()
    for p in procs:
        p.join(240)
    assert [p.exitcode for p in procs] == [0, 0, 0, 0]
    with Ledger(PostgresStore(url), None, key, workers=1) as ledger:
        per_job = 1 + 2 * 3 + 1  # scheduled, (started, progress, node_done) x 2, completed
        assert ledger.size() == 40 * per_job
        report = ledger.verify()
        assert report.ok, report.problems
        assert len(ledger.jobs()) == 40 and all(j.events == per_job for j in ledger.jobs())
        ledger.checkpoint()


def test_text_postgres_cannot_hold_is_kept_exactly(
    postgres_server: PostgresServer,  # noqa: F811
    tmp_path: Path,
) -> None:
    """A NUL in an event's strings (canonical JSON carries it; PostgreSQL text cannot)
    round-trips through every column, and a ledger holding it verifies."""
    store = PostgresStore(postgres_server.new_url())
    odd = ["a\x00b", "\x01starts", "\x01", "plain é", "\x00"]
    rows = [
        LeafRow(i, f"e{i}", f"c\x00/{i}#0", "progress", value, value, b"x")
        for i, value in enumerate(odd)
    ]
    from computeproof import merkle

    nodes, _ = merkle.nodes_to_store(0, [merkle.leaf_hash(r.envelope) for r in rows], [])
    jobs = [_job("c1/1#0", user=v, nodes=v) for v in odd[:1]]
    store.append(0, rows, nodes, jobs, [("e0", "f\x00", "00", '"\\u0000"')])
    assert list(store.leaves()) == rows
    assert store.find_events([(rows[0].job_key, "e0")]) == {"e0": (0, b"x")}
    assert store.job_leaves(rows[1].job_key) == [rows[1]]
    assert store.get_jobs(["c1/1#0"])["c1/1#0"].user == "a\x00b"
    assert [j.job_key for j in store.jobs(JobFilter(users=("a\x00b",)))] == ["c1/1#0"]
    assert store.openings("e0") == {"f\x00": ("00", '"\\u0000"')}
    store.close()

    signer = Signer.from_seed(bytes([7]) * 32)
    from computeproof.envelope import sign_event

    env = sign_event(new_event("progress", "c\x00", "1\x00", 1, "node\x00", {"m": "x\x00"}), signer)
    with Ledger(
        PostgresStore(postgres_server.new_url()), None, str(tmp_path / "k"), workers=1
    ) as ledger:
        ledger.enroll(signer.public_raw, ["*"])
        assert len(ledger.append([env]).accepted) == 1
        assert ledger.append([env]).duplicates  # found again by its (encoded) ids
        assert ledger.verify().ok


def test_job_order_is_the_same_as_sqlite(url: str, tmp_path: Path) -> None:
    """Text sorts by code point in both backends, whatever the database's locale."""
    starts = ["b", "B", "a", "é", "Z", "_", "aa", "a b"]
    stores = [PostgresStore(url), SQLiteStore(str(tmp_path / "l.db"))]
    orders = []
    for store in stores:
        _append(store, 1, jobs=[_job(f"c1/{i}#0", start=s) for i, s in enumerate(starts)])
        orders.append([j.start for j in store.jobs(JobFilter())])
        store.close()
    assert orders[0] == orders[1] == sorted(starts)


def test_warnings_name_a_superuser_connection(url: str) -> None:
    store = PostgresStore(url)
    try:
        # the harness connects as the superuser initdb made
        assert any("superuser" in w for w in store.warnings())
    finally:
        store.close()


def test_backup_points_at_pg_dump(url: str) -> None:
    store = PostgresStore(url)
    try:
        with pytest.raises(StoreError, match="pg_dump"):
            store.backup("/tmp/x")
    finally:
        store.close()


def test_only_the_postgres_store_imports_psycopg() -> None:
    import ast

    def imports(path: Path) -> set[str]:
        out: set[str] = set()
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.Import):
                out.update(a.name for a in node.names)
            elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
                out.add(node.module)
        return out

    repo = Path(__file__).resolve().parents[3]
    allowed = {repo / "computeproof" / "store" / "postgres.py"}
    offenders = [
        str(p.relative_to(repo))
        for package in ("computeproof", "slurm_hooks")
        for p in sorted((repo / package).rglob("*.py"))
        if p not in allowed and any(m.split(".")[0] == "psycopg" for m in imports(p))
    ]
    assert offenders == []
