"""SQLite storage (the embedded default): one file, WAL, one writer, concurrent readers.

Commits are synchronous (synchronous=FULL): the forwarder deletes a spooled event only
after the ledger committed it, so a committed transaction must survive power loss.
"""

from __future__ import annotations

import contextlib
import json
import os
import sqlite3
from collections.abc import Callable, Iterator, Mapping, Sequence
from typing import Any

from computeproof.errors import StoreConflict, StoreError
from computeproof.store.interface import (
    AnchorRow,
    CheckpointRow,
    EnrolledKey,
    JobCursor,
    JobFacets,
    JobFilter,
    JobRow,
    LeafRow,
    NodeKey,
    Store,
    UsageFilter,
    UsageRow,
)

SCHEMA_VERSION = "2"

# Leaves are indexed by (job key, event id): job keys arrive in job order, so a batch
# touches few index pages (an event-id index alone made ingest slow down as the log grew:
# docs/performance.md). As unique as the event id, which hashes its job's identity.
# Schema 1 ledgers keep their old indexes until `computeproof ledger upgrade`.
_LEAVES = """(
    idx INTEGER PRIMARY KEY, event_id TEXT NOT NULL, job_key TEXT NOT NULL,
    type TEXT NOT NULL, host TEXT NOT NULL, time TEXT NOT NULL, envelope BLOB NOT NULL,
    UNIQUE (job_key, event_id))"""
_SCHEMA = f"""
CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS leaves {_LEAVES};
CREATE TABLE IF NOT EXISTS nodes (
    level INTEGER NOT NULL, idx INTEGER NOT NULL, hash BLOB NOT NULL,
    PRIMARY KEY (level, idx)) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS checkpoints (
    size INTEGER PRIMARY KEY, root BLOB NOT NULL, note TEXT NOT NULL, created TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS keys (
    key_id TEXT PRIMARY KEY, public_key BLOB NOT NULL, hosts TEXT NOT NULL,
    enrolled TEXT NOT NULL, revoked TEXT);
CREATE TABLE IF NOT EXISTS openings (
    event_id TEXT NOT NULL, field TEXT NOT NULL, salt TEXT NOT NULL, value TEXT NOT NULL,
    PRIMARY KEY (event_id, field)) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS jobs (
    job_key TEXT PRIMARY KEY, cluster TEXT NOT NULL, job TEXT NOT NULL,
    job_id INTEGER NOT NULL, run INTEGER NOT NULL, user TEXT, account TEXT, partition TEXT,
    state TEXT, gpus INTEGER, gpu_model TEXT, nodes TEXT, submit TEXT, start TEXT, "end" TEXT,
    elapsed_s INTEGER, exit_code TEXT, synthetic INTEGER NOT NULL DEFAULT 0,
    events INTEGER NOT NULL DEFAULT 0, first_leaf INTEGER, last_leaf INTEGER, fields TEXT);
CREATE TABLE IF NOT EXISTS cosignatures (
    size INTEGER NOT NULL, witness TEXT NOT NULL, line TEXT NOT NULL,
    PRIMARY KEY (size, witness)) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS anchors (
    id INTEGER PRIMARY KEY AUTOINCREMENT, kind TEXT NOT NULL, target TEXT NOT NULL,
    size INTEGER NOT NULL, record TEXT NOT NULL, created TEXT NOT NULL);
CREATE INDEX IF NOT EXISTS anchors_size ON anchors (size);
CREATE INDEX IF NOT EXISTS jobs_start ON jobs (start);
CREATE INDEX IF NOT EXISTS jobs_job ON jobs (job);
CREATE INDEX IF NOT EXISTS jobs_order ON jobs (coalesce(start, submit, ''), job_id, job_key);
"""

_JOB_COLUMNS = (
    "job_key",
    "cluster",
    "job",
    "job_id",
    "run",
    "user",
    "account",
    "partition",
    "state",
    "gpus",
    "gpu_model",
    "nodes",
    "submit",
    "start",
    "end",
    "elapsed_s",
    "exit_code",
    "synthetic",
    "events",
    "first_leaf",
    "last_leaf",
    "fields",
)
_JOB_SELECT = ", ".join(f'"{c}"' for c in _JOB_COLUMNS)
_JOB_INSERT = (
    f"INSERT OR REPLACE INTO jobs ({_JOB_SELECT}) VALUES ({', '.join('?' * len(_JOB_COLUMNS))})"
)


def _job_from_row(row: Sequence[Any]) -> JobRow:
    values = dict(zip(_JOB_COLUMNS, row, strict=True))
    values["synthetic"] = bool(values["synthetic"])
    values["fields"] = json.loads(str(values["fields"])) if values["fields"] else {}
    return JobRow(**values)


def _job_to_row(job: JobRow) -> tuple[object, ...]:
    return tuple(
        json.dumps(job.fields, sort_keys=True, separators=(",", ":"))
        if c == "fields"
        else int(job.synthetic)
        if c == "synthetic"
        else getattr(job, c)
        for c in _JOB_COLUMNS
    )


# the jobs' display order (JobCursor); the jobs_order index is on this expression
_JOB_ORDER = "coalesce(start, submit, '')"


def _small_int(text: str) -> bool:
    # isdigit() is also true of other scripts' digits ("²"), which int() refuses
    return text.isascii() and text.isdigit() and len(text) < 19


def _job_where(selection: JobFilter) -> tuple[list[str], list[object]]:
    """SQL conditions and their arguments for a :class:`JobFilter` (its limit aside)."""
    where: list[str] = []
    args: list[object] = []
    for column, values in (
        ("user", selection.users),
        ("account", selection.accounts),
        ("partition", selection.partitions),
        ("state", selection.states),
        ("gpu_model", selection.gpu_models),
    ):
        if values:
            where.append(f'"{column}" IN ({", ".join("?" * len(values))})')
            args.extend(values)
    if selection.nodes:
        where.append(
            "(" + " OR ".join("(',' || nodes || ',') LIKE ?" for _ in selection.nodes) + ")"
        )
        args.extend(f"%,{n},%" for n in selection.nodes)
    if selection.since:
        where.append('("end" IS NULL OR "end" >= ?)')
        args.append(selection.since)
    if selection.until:
        where.append("(start IS NULL OR start < ?)")
        args.append(selection.until)
    if selection.job:
        where.append("(job = ? OR job_key = ? OR job_id = ?)")
        args.extend(
            # SQLite integers are 64-bit; a longer number names no job
            [selection.job, selection.job, int(selection.job) if _small_int(selection.job) else -1]
        )
    return where, args


_LEAF_SELECT = "SELECT idx, event_id, job_key, type, host, time, envelope FROM leaves"


def _leaf_row(r: Sequence[Any]) -> LeafRow:
    return LeafRow(r[0], r[1], r[2], r[3], r[4], r[5], bytes(r[6]))


_READERS: dict[str, sqlite3.Connection] = {}


def read_leaves(path: str, start: int, stop: int) -> list[LeafRow]:
    """Leaves start <= index < stop of the ledger file ``path``, through a read-only
    connection kept for the life of the process (a ledger worker's)."""
    db = _READERS.get(path)
    try:
        if db is None:
            db = sqlite3.connect(f"file:{path}?mode=ro", uri=True, check_same_thread=False)
            db.execute("PRAGMA busy_timeout=30000")
            _READERS[path] = db
        rows = db.execute(
            f"{_LEAF_SELECT} WHERE idx >= ? AND idx < ? ORDER BY idx",
            (start, stop),
        ).fetchall()
    except sqlite3.DatabaseError as e:
        raise StoreError(f"ledger database {path}: {e}") from e
    return [_leaf_row(r) for r in rows]


def _create_private(path: str) -> None:
    """Create a missing ledger file readable by its owner only (SQLite gives the -wal and
    -shm files the same mode): the ledger holds the openings of private fields, which
    must not be readable by every user of the host."""
    with contextlib.suppress(FileExistsError):
        os.close(os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600))


def readable_by_others(path: str) -> int | None:
    """The permission bits of the ledger file ``path`` when users other than its owner can
    read it, else None."""
    try:
        mode = os.stat(path).st_mode & 0o777
    except OSError:
        return None
    return mode if mode & 0o044 else None


class SQLiteStore(Store):
    """A ledger in one SQLite file."""

    def __init__(self, path: str, create: bool = True) -> None:
        """Open the ledger file ``path``; with ``create`` False a missing file is an error
        (a mistyped path must not read as a new, empty ledger)."""
        self.path = path
        parent = os.path.dirname(os.path.abspath(path))
        if os.path.isdir(path):
            raise StoreError(
                f"ledger database {path} is a directory; give the SQLite file "
                f"(e.g. {os.path.join(path, 'ledger.db')})"
            )
        if not create and not os.path.exists(path):
            raise StoreError(
                f"no ledger at {path}: check --db, COMPUTEPROOF_DB or `db` in the config "
                "(`computeproof keys enroll` creates the ledger)"
            )
        try:
            os.makedirs(parent, exist_ok=True)
            _create_private(path)
            self.db = sqlite3.connect(path, isolation_level=None, check_same_thread=False)
            self.db.execute("PRAGMA journal_mode=WAL")
            self.db.execute("PRAGMA synchronous=FULL")
            self.db.execute("PRAGMA busy_timeout=30000")
            self.db.executescript(_SCHEMA)
            if self.get_meta("schema_version") is None:
                self.set_meta("schema_version", SCHEMA_VERSION)
        except sqlite3.DatabaseError as e:
            raise StoreError(f"cannot open ledger database {path}: {e}") from e
        except FileExistsError as e:
            raise StoreError(
                f"cannot create ledger directory {parent}: a file of that name is in the way"
            ) from e
        except OSError as e:
            raise StoreError(f"cannot create ledger directory {parent}: {e.strerror}") from e

    def _query(self, sql: str, args: Sequence[object] = ()) -> list[Any]:
        try:
            return self.db.execute(sql, args).fetchall()
        except sqlite3.DatabaseError as e:
            raise StoreError(f"ledger database {self.path}: {e}") from e

    @contextlib.contextmanager
    def snapshot(self) -> Iterator[None]:
        """A read transaction: in WAL mode its reads see the database as of the first one,
        while writers on other connections go on committing. Inside another snapshot it
        is that one."""
        if self.db.in_transaction:
            yield
            return
        try:
            self.db.execute("BEGIN")
        except sqlite3.DatabaseError as e:
            raise StoreError(f"ledger database {self.path}: {e}") from e
        try:
            yield
        finally:
            # it only read; a failed read may have ended it, and that error is on its way
            with contextlib.suppress(sqlite3.DatabaseError):
                self.db.execute("ROLLBACK")

    def close(self) -> None:
        """Close the connection."""
        self.db.close()

    def get_meta(self, key: str) -> str | None:
        """A ledger-wide setting."""
        rows = self._query("SELECT value FROM meta WHERE key = ?", (key,))
        return str(rows[0][0]) if rows else None

    def set_meta(self, key: str, value: str) -> None:
        """Store a ledger-wide setting."""
        self._query("INSERT OR REPLACE INTO meta (key, value) VALUES (?, ?)", (key, value))

    def size(self) -> int:
        """Number of leaves (one past the highest index)."""
        rows = self._query("SELECT max(idx) FROM leaves")
        return 0 if rows[0][0] is None else int(rows[0][0]) + 1

    def read_nodes(self, keys: Sequence[NodeKey]) -> Mapping[NodeKey, bytes]:
        """Stored perfect-subtree hashes, one query."""
        if not keys:
            return {}
        out: dict[NodeKey, bytes] = {}
        # row values IN list: one statement whatever the number of keys (bounded by log n)
        for i in range(0, len(keys), 400):
            chunk = keys[i : i + 400]
            where = " OR ".join("(level = ? AND idx = ?)" for _ in chunk)
            args = [v for k in chunk for v in k]
            for level, idx, h in self._query(
                f"SELECT level, idx, hash FROM nodes WHERE {where}", args
            ):
                out[(int(level), int(idx))] = bytes(h)
        return out

    def append(
        self,
        expected_size: int,
        leaves: Sequence[LeafRow],
        nodes: Sequence[tuple[NodeKey, bytes]],
        jobs: Sequence[JobRow],
        openings: Sequence[tuple[str, str, str, str]],
    ) -> None:
        """Add a batch in one IMMEDIATE transaction."""
        db = self.db
        try:
            db.execute("BEGIN IMMEDIATE")
            try:
                if self.size() != expected_size:
                    raise StoreConflict(
                        f"ledger grew from {expected_size} to {self.size()} leaves during "
                        "the append; another writer is active"
                    )
                db.executemany(
                    "INSERT INTO leaves (idx, event_id, job_key, type, host, time, envelope) "
                    "VALUES (?, ?, ?, ?, ?, ?, ?)",
                    leaves,  # LeafRow is a tuple in this column order
                )
                db.executemany(
                    "INSERT OR REPLACE INTO nodes (level, idx, hash) VALUES (?, ?, ?)",
                    [(k[0], k[1], h) for k, h in nodes],
                )
                db.executemany(_JOB_INSERT, [_job_to_row(j) for j in jobs])
                db.executemany(
                    "INSERT OR REPLACE INTO openings (event_id, field, salt, value) "
                    "VALUES (?, ?, ?, ?)",
                    openings,
                )
            except BaseException:
                db.execute("ROLLBACK")
                raise
            db.execute("COMMIT")
        except sqlite3.DatabaseError as e:
            raise StoreError(f"ledger database {self.path}: append failed: {e}") from e

    def upgrade(self, progress: Callable[[int, int], None] | None = None) -> tuple[str, str]:
        """Bring a schema 1 ledger to schema 2 (the leaf table rebuilt with its one index),
        in one transaction: a crash or an error leaves it as it was. Returns (schema
        before, schema after); a current ledger is left alone. Needs free disk for a second
        copy of the leaf table while it runs; writers wait meanwhile."""
        before = self.get_meta("schema_version") or SCHEMA_VERSION
        if before == SCHEMA_VERSION:
            return before, before
        if before != "1":
            raise StoreError(
                f"ledger database {self.path} has schema {before}, which this version of "
                f"computeproof does not know (it writes schema {SCHEMA_VERSION}); upgrade "
                "computeproof"
            )
        db = self.db
        step = 20_000
        try:
            db.execute("BEGIN IMMEDIATE")
            try:
                size = self.size()
                db.execute(f"CREATE TABLE leaves_v2 {_LEAVES}")
                for lo in range(0, size, step):
                    db.execute("INSERT INTO leaves_v2 SELECT idx, event_id, job_key, type, "
                               "host, time, envelope FROM leaves WHERE idx >= ? AND idx < ?",
                               (lo, lo + step))  # fmt: skip
                    if progress is not None:
                        progress(min(lo + step, size), size)
                (old,), (new,) = (db.execute(f"SELECT count(*) FROM {t}").fetchone()
                                  for t in ("leaves", "leaves_v2"))  # fmt: skip
                if old != new:
                    raise StoreError(
                        f"ledger database {self.path}: {old - new} leaf rows lie outside "
                        f"indices 0..{size - 1}; run `computeproof ledger verify`"
                    )
                db.execute("DROP TABLE leaves")  # its indexes go with it
                db.execute("ALTER TABLE leaves_v2 RENAME TO leaves")
                db.execute("UPDATE meta SET value = ? WHERE key = 'schema_version'",
                           (SCHEMA_VERSION,))  # fmt: skip
            except BaseException:
                db.execute("ROLLBACK")
                raise
            db.execute("COMMIT")
        except sqlite3.IntegrityError as e:
            raise StoreError(
                f"ledger database {self.path}: two leaves share a job and event id ({e}); "
                "run `computeproof ledger verify`"
            ) from e
        except sqlite3.DatabaseError as e:
            raise StoreError(f"ledger database {self.path}: upgrade failed: {e}") from e
        return before, SCHEMA_VERSION

    def backup(self, dest: str) -> int:
        """Write a consistent, compacted copy of the ledger to the new file ``dest`` (0600),
        while writers go on appending: the copy is the log as of its start (SQLite's
        VACUUM INTO reads one snapshot). A plain `cp` of a live WAL database may not be.
        Returns the copy's leaf count."""
        if os.path.lexists(dest):
            raise StoreError(f"{dest} exists; give a new file for the backup")
        try:
            _create_private(dest)  # VACUUM INTO writes into an empty file, keeping its mode
            self.db.execute("VACUUM INTO ?", (dest,))
        except OSError as e:
            raise StoreError(f"cannot write the backup {dest}: {e.strerror}") from e
        except sqlite3.DatabaseError as e:
            with contextlib.suppress(OSError):
                os.unlink(dest)
            raise StoreError(f"cannot write the backup {dest}: {e}") from e
        copy = SQLiteStore(dest, create=False)
        try:
            return copy.size()
        finally:
            copy.close()

    def warnings(self) -> list[str]:
        """A ledger file other users can read: it holds the openings of private fields
        (versions before 2026-11-26 created it 0644)."""
        mode = readable_by_others(self.path)
        if mode is None:
            return []
        return [
            f"{self.path} is readable by other users (mode {mode:o}) and holds the "
            f"openings of private fields: chmod 600 {self.path}*"
        ]

    def usage_rows(
        self, selection: UsageFilter, part: tuple[int, int] | None = None
    ) -> Iterator[UsageRow]:
        """Job runs for a usage report, in one streaming query (``part``: a rowid range)."""
        where = ['("end" IS NULL OR "end" >= ?)', "(start IS NULL OR start < ?)"]
        args: list[object] = [selection.since, selection.until]
        for column, values in (("account", selection.accounts), ("user", selection.users)):
            if values:
                where.append(f'"{column}" IN ({", ".join("?" * len(values))})')
                args.extend(values)
        if not selection.include_synthetic:
            where.append("synthetic = 0")
        if part is not None:
            where.append("j.rowid >= ? AND j.rowid < ?")
            args.extend(part)
        sql = (
            'SELECT j.job_key, account, user, partition, gpu_model, state, gpus, start, "end", '
            "elapsed_s, json_extract(fields, '$.gpu_totals.busy_gpu_ms'), "
            "json_extract(fields, '$.gpu_totals.energy_mj'), synthetic, last_leaf, "
            "(SELECT group_concat(idx) FROM leaves l WHERE l.job_key = j.job_key) "
            f"FROM jobs j WHERE {' AND '.join(where)} ORDER BY j.rowid"
        )
        try:
            cur = self.db.execute(sql, args)
            while rows := cur.fetchmany(5000):
                for r in rows:
                    yield UsageRow(
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
                        r[10] if isinstance(r[10], int) else None,
                        r[11] if isinstance(r[11], int) else None,
                        bool(r[12]),
                        r[13] if r[13] is not None else -1,
                        sorted(map(int, r[14].split(","))) if r[14] else [],
                    )
        except sqlite3.DatabaseError as e:
            raise StoreError(f"ledger database {self.path}: {e}") from e

    def partitions(self, n: int) -> list[tuple[int, int]]:
        """``n`` rowid ranges of the job index."""
        lo, hi = self._query("SELECT coalesce(min(rowid), 0), coalesce(max(rowid), -1) FROM jobs")[
            0
        ]
        lo, hi = int(lo), int(hi)
        if hi < lo or n < 1:
            return []
        step = (hi - lo + n) // n
        return [(lo + i * step, lo + (i + 1) * step) for i in range(n)]

    def find_events(self, events: Sequence[tuple[str, str]]) -> dict[str, tuple[int, bytes]]:
        """Index and envelope of the given (job key, event id) pairs present in the log,
        by event id."""
        out: dict[str, tuple[int, bytes]] = {}
        pairs = list(events)
        for i in range(0, len(pairs), 500):
            chunk = pairs[i : i + 500]
            # a join, not `(job_key, event_id) IN (VALUES ...)`: SQLite scans the whole
            # table for that, and searches the index for each row of this
            for eid, idx, env in self._query(
                f"WITH k (job_key, event_id) AS (VALUES {', '.join(['(?, ?)'] * len(chunk))}) "
                "SELECT l.event_id, l.idx, l.envelope FROM k JOIN leaves AS l "
                "ON l.job_key = k.job_key AND l.event_id = k.event_id",
                [v for pair in chunk for v in pair],
            ):
                out[str(eid)] = (int(idx), bytes(env))
        return out

    def leaves(self, start: int = 0, stop: int | None = None) -> Iterator[LeafRow]:
        """Leaves in index order, streamed."""
        sql = f"{_LEAF_SELECT} WHERE idx >= ?"
        args: list[object] = [start]
        if stop is not None:
            sql += " AND idx < ?"
            args.append(stop)
        try:
            cur = self.db.execute(sql + " ORDER BY idx", args)
            while rows := cur.fetchmany(2000):
                for r in rows:
                    yield _leaf_row(r)
        except sqlite3.DatabaseError as e:
            raise StoreError(f"ledger database {self.path}: {e}") from e

    def reader_url(self) -> str | None:
        """The database file: workers open it read-only (WAL lets them read while this
        connection writes)."""
        return os.path.abspath(self.path)

    def leaf_count_rows(self) -> tuple[int, int, int]:
        """(count, min index, max index) of the leaf table."""
        r = self._query(
            "SELECT count(*), coalesce(min(idx), -1), coalesce(max(idx), -1) FROM leaves"
        )[0]
        return int(r[0]), int(r[1]), int(r[2])

    def nodes_at_level(self, level: int) -> Iterator[tuple[int, bytes]]:
        """Stored (index, hash) at one level, in index order."""
        try:
            cur = self.db.execute(
                "SELECT idx, hash FROM nodes WHERE level = ? ORDER BY idx", (level,)
            )
            while rows := cur.fetchmany(5000):
                for idx, h in rows:
                    yield int(idx), bytes(h)
        except sqlite3.DatabaseError as e:
            raise StoreError(f"ledger database {self.path}: {e}") from e

    def job_leaves(self, job_key: str) -> list[LeafRow]:
        """Every leaf of one job run, in index order."""
        return [
            _leaf_row(r)
            for r in self._query(
                f"{_LEAF_SELECT} WHERE job_key = ? ORDER BY idx",
                (job_key,),
            )
        ]

    def jobs(self, selection: JobFilter) -> list[JobRow]:
        """Job index rows matching the selection."""
        where, args = _job_where(selection)
        sql = f"SELECT {_JOB_SELECT} FROM jobs"
        if where:
            sql += " WHERE " + " AND ".join(where)
        sql += f" ORDER BY {_JOB_ORDER}, job_id, job_key"
        if selection.limit is not None:
            sql += f" LIMIT {int(selection.limit)}"
        return [_job_from_row(r) for r in self._query(sql, args)]

    def jobs_page(
        self,
        selection: JobFilter,
        after: JobCursor | None = None,
        limit: int = 50,
        newest_first: bool = True,
    ) -> list[JobRow]:
        """One page of job rows in cursor order; walks the jobs_order index from the cursor."""
        where, args = _job_where(selection)
        if after is not None:
            # the leading bound is what lets SQLite search the index from the cursor (a row
            # value comparison makes it scan from the start)
            lt = "<" if newest_first else ">"
            where.append(
                f"{_JOB_ORDER} {lt}= ? AND ({_JOB_ORDER} {lt} ? OR job_id {lt} ? "
                f"OR (job_id = ? AND job_key {lt} ?))"
            )
            args.extend((after.sort, after.sort, after.job_id, after.job_id, after.job_key))
        way = "DESC" if newest_first else "ASC"
        sql = f"SELECT {_JOB_SELECT} FROM jobs"
        if where:
            sql += " WHERE " + " AND ".join(where)
        sql += f" ORDER BY {_JOB_ORDER} {way}, job_id {way}, job_key {way} LIMIT ?"
        args.append(max(0, int(limit)))
        return [_job_from_row(r) for r in self._query(sql, args)]

    def count_jobs(self, selection: JobFilter, cap: int | None = None) -> int:
        """Matching rows, counted up to ``cap``."""
        where, args = _job_where(selection)
        inner = "SELECT 1 FROM jobs" + (" WHERE " + " AND ".join(where) if where else "")
        if cap is not None:
            inner += " LIMIT ?"
            args.append(max(0, int(cap)))
        return int(self._query(f"SELECT count(*) FROM ({inner})", args)[0][0])

    def job_facets(self, selection: JobFilter, per_field: int = 500) -> JobFacets:
        """Distinct filter values of the matching rows, one scan."""
        where, args = _job_where(selection)
        sql = 'SELECT DISTINCT "user", account, partition, state, gpu_model, nodes FROM jobs'
        if where:
            sql += " WHERE " + " AND ".join(where)
        seen: list[set[str]] = [set() for _ in range(6)]
        try:
            cur = self.db.execute(sql, args)
            while rows := cur.fetchmany(5000):
                for row in rows:
                    for i, value in enumerate(row[:5]):
                        if value is not None:
                            seen[i].add(str(value))
                    if row[5]:
                        seen[5].update(n for n in str(row[5]).split(",") if n)
        except sqlite3.DatabaseError as e:
            raise StoreError(f"ledger database {self.path}: {e}") from e
        users, accounts, partitions, states, models, nodes = (
            tuple(sorted(values)[:per_field]) for values in seen
        )
        return JobFacets(users, accounts, partitions, states, models, nodes)

    def get_jobs(self, job_keys: Sequence[str]) -> dict[str, JobRow]:
        """Job rows by key."""
        out: dict[str, JobRow] = {}
        keys = list(job_keys)
        for i in range(0, len(keys), 500):
            chunk = keys[i : i + 500]
            for r in self._query(
                f"SELECT {_JOB_SELECT} FROM jobs WHERE job_key IN ({', '.join('?' * len(chunk))})",
                chunk,
            ):
                job = _job_from_row(r)
                out[job.job_key] = job
        return out

    def job_keys(self) -> list[str]:
        """Every job index row's key."""
        return [str(r[0]) for r in self._query("SELECT job_key FROM jobs ORDER BY job_key")]

    def replace_jobs(self, expected_size: int, jobs: Sequence[JobRow]) -> None:
        """Replace the job index in one IMMEDIATE transaction (writers wait meanwhile)."""
        db = self.db
        try:
            db.execute("BEGIN IMMEDIATE")
            try:
                if self.size() != expected_size:
                    raise StoreConflict(
                        f"the log grew from {expected_size} to {self.size()} leaves while the "
                        "job index was rebuilt; nothing was changed: run it again"
                    )
                db.execute("DELETE FROM jobs")
                db.executemany(_JOB_INSERT, [_job_to_row(j) for j in jobs])
            except BaseException:
                db.execute("ROLLBACK")
                raise
            db.execute("COMMIT")
        except sqlite3.DatabaseError as e:
            raise StoreError(f"ledger database {self.path}: rebuilding the job index: {e}") from e

    def add_cosignatures(self, size: int, cosignatures: Sequence[tuple[str, str]]) -> None:
        """Record witness cosignature lines of one checkpoint."""
        try:
            with contextlib.closing(self.db.cursor()) as cur:
                cur.executemany(
                    "INSERT OR REPLACE INTO cosignatures (size, witness, line) VALUES (?, ?, ?)",
                    [(size, w, line) for w, line in cosignatures],
                )
        except sqlite3.DatabaseError as e:
            raise StoreError(f"ledger database {self.path}: {e}") from e

    def cosignatures(self, size: int) -> dict[str, str]:
        """Cosignature lines of the checkpoint of ``size`` leaves, by witness."""
        return {
            str(w): str(line)
            for w, line in self._query(
                "SELECT witness, line FROM cosignatures WHERE size = ? ORDER BY witness", (size,)
            )
        }

    def cosigned_sizes(self) -> dict[str, int]:
        """The largest size each witness cosigned."""
        return {
            str(w): int(n)
            for w, n in self._query("SELECT witness, max(size) FROM cosignatures GROUP BY witness")
        }

    def openings(self, event_id: str) -> dict[str, tuple[str, str]]:
        """Private-field openings of one event."""
        return {
            str(f): (str(s), str(v))
            for f, s, v in self._query(
                "SELECT field, salt, value FROM openings WHERE event_id = ?", (event_id,)
            )
        }

    def add_checkpoint(self, row: CheckpointRow) -> None:
        """Record a signed checkpoint (one per size)."""
        self._query(
            "INSERT OR REPLACE INTO checkpoints (size, root, note, created) VALUES (?, ?, ?, ?)",
            (row.size, row.root, row.note, row.created),
        )

    def checkpoints(self) -> list[CheckpointRow]:
        """Every checkpoint, smallest size first."""
        return [
            CheckpointRow(int(s), bytes(r), str(n), str(c))
            for s, r, n, c in self._query(
                "SELECT size, root, note, created FROM checkpoints ORDER BY size"
            )
        ]

    def last_checkpoint(self) -> CheckpointRow | None:
        """The largest checkpoint, by its primary key."""
        rows = self._query(
            "SELECT size, root, note, created FROM checkpoints ORDER BY size DESC LIMIT 1"
        )
        return CheckpointRow(int(rows[0][0]), bytes(rows[0][1]), str(rows[0][2]),
                             str(rows[0][3])) if rows else None  # fmt: skip

    def add_anchor(self, row: AnchorRow) -> int:
        """Record an anchor; its id."""
        try:
            cur = self.db.execute(
                "INSERT INTO anchors (kind, target, size, record, created) VALUES (?, ?, ?, ?, ?)",
                (row.kind, row.target, row.size, row.record, row.created),
            )
        except sqlite3.DatabaseError as e:
            raise StoreError(f"ledger database {self.path}: {e}") from e
        assert cur.lastrowid is not None
        return int(cur.lastrowid)

    def anchors(self, kind: str | None = None, target: str | None = None) -> list[AnchorRow]:
        """Anchor records, by size then id."""
        where, args = [], []
        for column, value in (("kind", kind), ("target", target)):
            if value is not None:
                where.append(f"{column} = ?")
                args.append(value)
        sql = "SELECT id, kind, target, size, record, created FROM anchors"
        if where:
            sql += " WHERE " + " AND ".join(where)
        return [
            AnchorRow(str(k), str(t), int(s), str(r), str(c), int(i))
            for i, k, t, s, r, c in self._query(sql + " ORDER BY size, id", args)
        ]

    def update_anchor(self, anchor_id: int, record: str) -> None:
        """Replace one anchor's record JSON."""
        try:
            cur = self.db.execute("UPDATE anchors SET record = ? WHERE id = ?", (record, anchor_id))
        except sqlite3.DatabaseError as e:
            raise StoreError(f"ledger database {self.path}: {e}") from e
        if cur.rowcount != 1:
            raise StoreError(f"ledger database {self.path}: no anchor {anchor_id}")

    def enroll(self, key: EnrolledKey) -> None:
        """Trust a host key."""
        self._query(
            "INSERT OR REPLACE INTO keys (key_id, public_key, hosts, enrolled, revoked) "
            "VALUES (?, ?, ?, ?, ?)",
            (key.key_id, key.public_raw, ",".join(key.hosts), key.enrolled, key.revoked),
        )

    def revoke(self, key_id: str, when: str) -> bool:
        """Refuse new events from a key."""
        found = self._query("SELECT 1 FROM keys WHERE key_id = ?", (key_id,))
        if found:
            self._query("UPDATE keys SET revoked = ? WHERE key_id = ?", (when, key_id))
        return bool(found)

    def enrolled(self) -> dict[str, EnrolledKey]:
        """All keys ever enrolled, revoked ones included (they verify old events)."""
        return {
            str(k): EnrolledKey(
                str(k), bytes(p), tuple(str(h).split(",")), str(e), None if r is None else str(r)
            )
            for k, p, h, e, r in self._query(
                "SELECT key_id, public_key, hosts, enrolled, revoked FROM keys"
            )
        }
