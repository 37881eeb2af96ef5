"""PostgreSQL storage (psycopg 3): the central ledger that several collector processes
append to at once.

Concurrent appenders: an append takes the row lock of ``append_lock`` (SELECT ... FOR
UPDATE) before it checks the log's size, so the expected-size check and the insert are
one atomic step across every connection; a writer that finds the log grown raises
StoreConflict, changing nothing, exactly as the SQLite store does, and the ledger checks
its batch again and retries. A writer that keeps losing that race takes the lock for its
whole recheck and commit (:meth:`exclusive`), so busy collectors never starve one another.
Readers never wait for it. :meth:`snapshot` is a REPEATABLE READ transaction.

Text columns use the "C" collation, so the job index sorts the way SQLite's does (by
code point) whatever the database's locale. PostgreSQL text cannot hold a NUL character,
which canonical JSON can: a value holding one (or starting with \\x01) is stored as \\x01
followed by its JSON string form, and read back exactly (:func:`_enc`, :func:`_dec`).
"""

from __future__ import annotations

import contextlib
import json
import re
from collections.abc import Callable, Iterator, Mapping, Sequence
from typing import Any

import psycopg

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

SCHEMA_VERSION = "1"
_PAGE = 2000  # rows a streamed read fetches per query

_SCHEMA = """
CREATE TABLE IF NOT EXISTS meta (key TEXT COLLATE "C" PRIMARY KEY, value TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS append_lock (id INTEGER PRIMARY KEY);
INSERT INTO append_lock (id) VALUES (1) ON CONFLICT DO NOTHING;
CREATE TABLE IF NOT EXISTS leaves (
    idx BIGINT PRIMARY KEY, event_id TEXT COLLATE "C" NOT NULL,
    job_key TEXT COLLATE "C" NOT NULL, type TEXT COLLATE "C" NOT NULL,
    host TEXT COLLATE "C" NOT NULL, time TEXT COLLATE "C" NOT NULL, envelope BYTEA NOT NULL,
    UNIQUE (job_key, event_id));
CREATE TABLE IF NOT EXISTS nodes (
    level SMALLINT NOT NULL, idx BIGINT NOT NULL, hash BYTEA NOT NULL,
    PRIMARY KEY (level, idx));
CREATE TABLE IF NOT EXISTS checkpoints (
    size BIGINT PRIMARY KEY, root BYTEA NOT NULL, note TEXT NOT NULL, created TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS keys (
    key_id TEXT COLLATE "C" PRIMARY KEY, public_key BYTEA NOT NULL, hosts TEXT NOT NULL,
    enrolled TEXT NOT NULL, revoked TEXT);
CREATE TABLE IF NOT EXISTS openings (
    event_id TEXT COLLATE "C" NOT NULL, field TEXT COLLATE "C" NOT NULL, salt TEXT NOT NULL,
    value TEXT NOT NULL, PRIMARY KEY (event_id, field));
CREATE TABLE IF NOT EXISTS jobs (
    id BIGSERIAL UNIQUE, job_key TEXT COLLATE "C" PRIMARY KEY,
    cluster TEXT COLLATE "C" NOT NULL, job TEXT COLLATE "C" NOT NULL,
    job_id BIGINT NOT NULL, run BIGINT NOT NULL, "user" TEXT COLLATE "C",
    account TEXT COLLATE "C", partition TEXT COLLATE "C", state TEXT COLLATE "C",
    gpus BIGINT, gpu_model TEXT COLLATE "C", nodes TEXT COLLATE "C",
    submit TEXT COLLATE "C", start TEXT COLLATE "C", "end" TEXT COLLATE "C",
    elapsed_s BIGINT, exit_code TEXT COLLATE "C", synthetic BOOLEAN NOT NULL DEFAULT false,
    events BIGINT NOT NULL DEFAULT 0, first_leaf BIGINT, last_leaf BIGINT, fields TEXT);
CREATE TABLE IF NOT EXISTS anchors (
    id BIGSERIAL PRIMARY KEY, kind TEXT NOT NULL, target TEXT NOT NULL, size BIGINT NOT NULL,
    record TEXT NOT NULL, created TEXT NOT NULL);
CREATE INDEX IF NOT EXISTS anchors_size ON anchors (size);
CREATE TABLE IF NOT EXISTS cosignatures (
    size BIGINT NOT NULL, witness TEXT COLLATE "C" NOT NULL, line TEXT NOT NULL,
    PRIMARY KEY (size, witness));
CREATE INDEX IF NOT EXISTS jobs_start ON jobs (start);
CREATE INDEX IF NOT EXISTS jobs_job ON jobs (job);
CREATE INDEX IF NOT EXISTS jobs_order ON jobs ((coalesce(start, submit, '')), job_id, job_key);
"""
# the jobs' display order (JobCursor); the jobs_order index is on it
_JOB_ORDER = "coalesce(start, submit, '')"

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
_JOB_TYPES = (
    "text",
    "text",
    "text",
    "bigint",
    "bigint",
    "text",
    "text",
    "text",
    "text",
    "bigint",
    "text",
    "text",
    "text",
    "text",
    "text",
    "bigint",
    "text",
    "boolean",
    "bigint",
    "bigint",
    "bigint",
    "text",
)
_JOB_TEXT = frozenset(c for c, t in zip(_JOB_COLUMNS, _JOB_TYPES, strict=True) if t == "text")
_JOB_SELECT = ", ".join(f'"{c}"' for c in _JOB_COLUMNS)
_JOB_UPSERT = (
    f"INSERT INTO jobs ({_JOB_SELECT}) SELECT * FROM unnest("
    + ", ".join(f"%b::{t}[]" for t in _JOB_TYPES)
    + ") ON CONFLICT (job_key) DO UPDATE SET "
    + ", ".join(f'"{c}" = EXCLUDED."{c}"' for c in _JOB_COLUMNS[1:])
)
_LEAF_SELECT = "SELECT idx, event_id, job_key, type, host, time, envelope FROM leaves"
_LEAF_TYPES = ("int8", "text", "text", "text", "text", "text", "bytea")

_ESCAPED = "\x01"


def _enc(value: str | None) -> str | None:
    """A string as PostgreSQL text can hold it (see the module docstring)."""
    if value is None or ("\x00" not in value and not value.startswith(_ESCAPED)):
        return value
    return _ESCAPED + json.dumps(value)


def _dec(value: str | None) -> str | None:
    """The string :func:`_enc` stored."""
    if value is None or not value.startswith(_ESCAPED):
        return value
    decoded = json.loads(value[1:])
    assert isinstance(decoded, str)
    return decoded


def _text(value: object) -> str:
    out = _dec(str(value))
    assert out is not None
    return out


def _leaf_row(r: Sequence[Any]) -> LeafRow:
    return LeafRow(
        int(r[0]), _text(r[1]), _text(r[2]), _text(r[3]), _text(r[4]), _text(r[5]), bytes(r[6])
    )


def _job_from_row(row: Sequence[Any]) -> JobRow:
    values = dict(zip(_JOB_COLUMNS, row, strict=True))
    for c in _JOB_TEXT:
        values[c] = _dec(values[c])
    values["synthetic"] = bool(values["synthetic"])
    values["fields"] = json.loads(str(values["fields"])) if values["fields"] else {}
    return JobRow(**values)


def _job_columns(jobs: Sequence[JobRow]) -> list[list[object]]:
    """Job rows as one array per column (bound to unnest)."""
    columns: list[list[object]] = [[] for _ in _JOB_COLUMNS]
    for job in jobs:
        for i, c in enumerate(_JOB_COLUMNS):
            if c == "fields":
                # json.dumps escapes NUL and non-ASCII: always storable as text
                value: object = json.dumps(job.fields, sort_keys=True, separators=(",", ":"))
            elif c in _JOB_TEXT:
                value = _enc(getattr(job, c))
            else:
                value = getattr(job, c)
            columns[i].append(value)
    return columns


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
            where.append(f'"{column}" = ANY(%s::text[])')
            args.append([_enc(v) for v in values])
    if selection.nodes:
        where.append("(" + " OR ".join("(',' || nodes || ',') LIKE %s" for _ in selection.nodes)
                     + ")")  # fmt: skip
        args.extend(f"%,{n},%" for n in selection.nodes)
    if selection.since:
        where.append('("end" IS NULL OR "end" >= %s)')
        args.append(selection.since)
    if selection.until:
        where.append("(start IS NULL OR start < %s)")
        args.append(selection.until)
    if selection.job:
        where.append("(job = %s OR job_key = %s OR job_id = %s)")
        # a number past 64 bits names no job (as in SQLite); so do other scripts' digits
        job = selection.job
        number = int(job) if job.isascii() and job.isdigit() and len(job) < 19 else -1
        args.extend([_enc(job), _enc(job), number])
    return where, args


def _locked_size(cur: psycopg.Cursor[Any]) -> int:
    """Take the append lock (held to the transaction's end) and read the log's size."""
    cur.execute("SELECT id FROM append_lock WHERE id = 1 FOR UPDATE")
    # READ COMMITTED: this statement sees every append committed before the lock
    cur.execute("SELECT max(idx) FROM leaves")
    row = cur.fetchone()
    return 0 if row is None or row[0] is None else int(row[0]) + 1


def redact(url: str) -> str:
    """``url`` with any password replaced by ***, for messages and logs."""
    return re.sub(r"(://[^/:@]*:)[^@/]*@", r"\1***@", re.sub(r"(password=)[^&\s]*", r"\1***", url))


def _last_wins(
    rows: Sequence[tuple[Any, ...]], key: Callable[[tuple[Any, ...]], object]
) -> list[tuple[Any, ...]]:
    """``rows`` with one row a key, the last of each (INSERT OR REPLACE semantics: one
    upsert statement may not touch a row twice)."""
    return list({key(r): r for r in rows}.values())


class PostgresStore(Store):
    """A ledger in one PostgreSQL database (the tables of the connection's search_path)."""

    def __init__(self, url: str, create: bool = True) -> None:
        """Connect to ``url`` (``postgresql://user:password@host:port/db``, or any libpq
        URL); with ``create`` False a database without a ledger is an error."""
        self.url = url
        self._shown = redact(url)
        self._in_snapshot = False
        try:
            self.conn = psycopg.connect(url, autocommit=True)
        except psycopg.Error as e:
            raise StoreError(
                f"cannot connect to the PostgreSQL ledger {self._shown}: {_first_line(e)}"
            ) from e
        try:
            if self._query("SELECT to_regclass('meta')")[0][0] is None:
                if not create:
                    raise StoreError(
                        f"no ledger in the PostgreSQL database {self._shown}: check --db "
                        "or `db` in the config (`computeproof keys enroll` creates the ledger)"
                    )
                self._create_schema()
            elif self.get_meta("schema_version") is None:
                self.set_meta("schema_version", SCHEMA_VERSION)
        except BaseException:
            self.conn.close()
            raise

    def _create_schema(self) -> None:
        # two processes creating the schema at once would race on the catalog: serialize
        with self._transaction() as cur:
            cur.execute("SELECT pg_advisory_xact_lock(hashtext('computeproof schema'))")
            cur.execute(_SCHEMA)
            cur.execute(
                "INSERT INTO meta (key, value) VALUES ('schema_version', %s) "
                "ON CONFLICT DO NOTHING",
                (SCHEMA_VERSION,),
            )

    @contextlib.contextmanager
    def _transaction(self) -> Iterator[psycopg.Cursor[Any]]:
        """A read-write transaction; any database error becomes a StoreError."""
        try:
            with self.conn.transaction(), self.conn.cursor() as cur:
                yield cur
        except psycopg.errors.UniqueViolation as e:
            raise StoreError(
                f"PostgreSQL ledger {self._shown}: append refused, a row exists already "
                f"({_first_line(e)})"
            ) from e
        except psycopg.Error as e:
            raise StoreError(f"PostgreSQL ledger {self._shown}: {_first_line(e)}") from e

    def _query(self, sql: str, args: Sequence[object] | None = None) -> list[Any]:
        try:
            with self.conn.cursor() as cur:
                cur.execute(sql, args)
                return cur.fetchall() if cur.description is not None else []
        except psycopg.Error as e:
            raise StoreError(f"PostgreSQL ledger {self._shown}: {_first_line(e)}") from e

    def _pages(
        self, sql: str, args: Sequence[object], start: int, stop: int | None
    ) -> Iterator[list[Any]]:
        """Rows of ``sql`` (which takes the cursor as its last two parameters, ``col >= %s``
        and ``LIMIT %s``, and returns the cursor column first) a page at a time."""
        cursor = start
        while True:
            rows = self._query(sql, [*args, cursor, _PAGE])
            if stop is not None:
                rows = [r for r in rows if r[0] < stop]
            if not rows:
                return
            yield rows
            if len(rows) < _PAGE:
                return
            cursor = int(rows[-1][0]) + 1

    # -- lifecycle -------------------------------------------------------------------

    def close(self) -> None:
        """Close the connection."""
        self.conn.close()

    @contextlib.contextmanager
    def snapshot(self) -> Iterator[None]:
        """A REPEATABLE READ transaction: its reads see the database as of the first one.
        Inside another snapshot it is that one."""
        if self._in_snapshot:
            yield
            return
        self._query("BEGIN ISOLATION LEVEL REPEATABLE READ READ ONLY")
        self._in_snapshot = True
        try:
            yield
        finally:
            self._in_snapshot = False
            with contextlib.suppress(psycopg.Error):
                self.conn.execute("ROLLBACK")

    @contextlib.contextmanager
    def exclusive(self) -> Iterator[None]:
        """A transaction holding the append lock: other writers' appends wait until it
        ends, and this connection's reads and appends inside it are its own."""
        if self._in_snapshot:
            raise StoreError("cannot append inside a read snapshot")
        with self._transaction() as cur:
            cur.execute("SELECT id FROM append_lock WHERE id = 1 FOR UPDATE")
            yield

    # -- meta ------------------------------------------------------------------------

    def get_meta(self, key: str) -> str | None:
        """A ledger-wide setting."""
        rows = self._query("SELECT value FROM meta WHERE key = %s", (key,))
        return str(rows[0][0]) if rows else None

    def set_meta(self, key: str, value: str) -> None:
        """Store a ledger-wide setting."""
        self._query(
            "INSERT INTO meta (key, value) VALUES (%s, %s) "
            "ON CONFLICT (key) DO UPDATE SET value = EXCLUDED.value",
            (key, value),
        )

    # -- the log ---------------------------------------------------------------------

    def size(self) -> int:
        """Number of leaves (one past the highest index)."""
        value = self._query("SELECT max(idx) FROM leaves")[0][0]
        return 0 if value is None else int(value) + 1

    def read_nodes(self, keys: Sequence[NodeKey]) -> Mapping[NodeKey, bytes]:
        """Stored perfect-subtree hashes, one query."""
        if not keys:
            return {}
        rows = self._query(
            "SELECT n.level, n.idx, n.hash FROM nodes n JOIN unnest(%b::smallint[], "
            "%b::bigint[]) AS k (level, idx) ON n.level = k.level AND n.idx = k.idx",
            ([k[0] for k in keys], [k[1] for k in keys]),
        )
        return {(int(lv), int(i)): bytes(h) for lv, i, h in rows}

    def append(
        self,
        expected_size: int,
        leaves: Sequence[LeafRow],
        nodes: Sequence[tuple[NodeKey, bytes]],
        jobs: Sequence[JobRow],
        openings: Sequence[tuple[str, str, str, str]],
    ) -> None:
        """Add a batch in one transaction, under the append lock."""
        if self._in_snapshot:
            raise StoreError("cannot append inside a read snapshot")
        with self._transaction() as cur:
            size = _locked_size(cur)
            if size != expected_size:
                raise StoreConflict(
                    f"ledger grew from {expected_size} to {size} leaves during the append; "
                    "another writer is active"
                )
            if leaves:
                # binary COPY: a third of the cost of an INSERT of the same rows (envelopes
                # are most of the bytes, and text parameters would hex-escape them)
                with cur.copy(
                    "COPY leaves (idx, event_id, job_key, type, host, time, envelope) "
                    "FROM STDIN (FORMAT BINARY)"
                ) as copy:
                    copy.set_types(_LEAF_TYPES)
                    for r in leaves:
                        copy.write_row((r.index, _enc(r.event_id), _enc(r.job_key), _enc(r.type),
                                        _enc(r.host), _enc(r.time), r.envelope))  # fmt: skip
            if nodes:
                rows = _last_wins([(k[0], k[1], h) for k, h in nodes], lambda r: (r[0], r[1]))
                cur.execute(
                    "INSERT INTO nodes (level, idx, hash) SELECT * FROM unnest(%b::smallint[], "
                    "%b::bigint[], %b::bytea[]) ON CONFLICT (level, idx) DO UPDATE SET "
                    "hash = EXCLUDED.hash",
                    ([r[0] for r in rows], [r[1] for r in rows], [r[2] for r in rows]),
                )
            if jobs:
                unique = list({j.job_key: j for j in jobs}.values())
                cur.execute(_JOB_UPSERT, _job_columns(unique))
            if openings:
                ops = _last_wins(list(openings), lambda r: (r[0], r[1]))
                cur.execute(
                    "INSERT INTO openings (event_id, field, salt, value) SELECT * FROM "
                    "unnest(%b::text[], %b::text[], %b::text[], %b::text[]) ON CONFLICT "
                    "(event_id, field) DO UPDATE SET salt = EXCLUDED.salt, "
                    "value = EXCLUDED.value",
                    tuple([_enc(str(r[i])) for r in ops] for i in range(4)),
                )

    def find_events(self, events: Sequence[tuple[str, str]]) -> dict[str, tuple[int, bytes]]:
        """Index and envelope of the given (job key, event id) pairs present in the log."""
        if not events:
            return {}
        rows = self._query(
            "SELECT l.event_id, l.idx, l.envelope FROM unnest(%b::text[], %b::text[]) "
            "AS k (job_key, event_id) JOIN leaves l "
            "ON l.job_key = k.job_key AND l.event_id = k.event_id",
            ([_enc(j) for j, _ in events], [_enc(e) for _, e in events]),
        )
        return {_text(eid): (int(idx), bytes(env)) for eid, idx, env in rows}

    def leaves(self, start: int = 0, stop: int | None = None) -> Iterator[LeafRow]:
        """Leaves in index order, a page at a time."""
        bound, args = ("", []) if stop is None else ("idx < %s AND ", [stop])
        for rows in self._pages(
            f"{_LEAF_SELECT} WHERE {bound}idx >= %s ORDER BY idx LIMIT %s", args, start, stop
        ):
            yield from map(_leaf_row, rows)

    def reader_url(self) -> str | None:
        """The connection URL: ledger workers connect with it, read-only by use."""
        return self.url

    def leaf_count_rows(self) -> tuple[int, int, int]:
        """(count, min index, max index) of the leaf table."""
        r = self._query(
            "SELECT count(*), coalesce(min(idx), -1), coalesce(max(idx), -1) FROM leaves"
        )[0]
        return int(r[0]), int(r[1]), int(r[2])

    def nodes_at_level(self, level: int) -> Iterator[tuple[int, bytes]]:
        """Stored (index, hash) at one level, in index order."""
        for rows in self._pages(
            "SELECT idx, hash FROM nodes WHERE level = %s AND idx >= %s ORDER BY idx LIMIT %s",
            [level],
            0,
            None,
        ):
            for idx, h in rows:
                yield int(idx), bytes(h)

    def job_leaves(self, job_key: str) -> list[LeafRow]:
        """Every leaf of one job run, in index order."""
        return [
            _leaf_row(r)
            for r in self._query(
                f"{_LEAF_SELECT} WHERE job_key = %s ORDER BY idx", (_enc(job_key),)
            )
        ]

    # -- the job index ---------------------------------------------------------------

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
        """One page of job rows in cursor order, from the jobs_order index (a row-value
        comparison: PostgreSQL walks the index from the cursor)."""
        where, args = _job_where(selection)
        if after is not None:
            lt = "<" if newest_first else ">"
            where.append(f"({_JOB_ORDER}, job_id, job_key) {lt} (%s, %s, %s)")
            args.extend((_enc(after.sort), after.job_id, _enc(after.job_key)))
        way = "DESC" if newest_first else "ASC"
        sql = f"SELECT {_JOB_SELECT} FROM jobs"
        if where:
            sql += " WHERE " + " AND ".join(where)
        sql += f" ORDER BY {_JOB_ORDER} {way}, job_id {way}, job_key {way} LIMIT %s"
        args.append(max(0, int(limit)))
        return [_job_from_row(r) for r in self._query(sql, args)]

    def count_jobs(self, selection: JobFilter, cap: int | None = None) -> int:
        """Matching rows, counted up to ``cap``."""
        where, args = _job_where(selection)
        inner = "SELECT 1 FROM jobs" + (" WHERE " + " AND ".join(where) if where else "")
        if cap is not None:
            inner += " LIMIT %s"
            args.append(max(0, int(cap)))
        return int(self._query(f"SELECT count(*) FROM ({inner}) AS matching", args)[0][0])

    def job_facets(self, selection: JobFilter, per_field: int = 500) -> JobFacets:
        """Distinct filter values of the matching rows."""
        where, args = _job_where(selection)
        sql = 'SELECT DISTINCT "user", account, partition, state, gpu_model, nodes FROM jobs'
        if where:
            sql += " WHERE " + " AND ".join(where)
        seen: list[set[str]] = [set() for _ in range(6)]
        for row in self._query(sql, args):
            for i, value in enumerate(row[:5]):
                if value is not None:
                    seen[i].add(_text(value))
            if row[5]:
                seen[5].update(n for n in _text(row[5]).split(",") if n)
        users, accounts, partitions, states, models, nodes = (
            tuple(sorted(values)[:per_field]) for values in seen
        )
        return JobFacets(users, accounts, partitions, states, models, nodes)

    def get_jobs(self, job_keys: Sequence[str]) -> dict[str, JobRow]:
        """Job rows by key."""
        if not job_keys:
            return {}
        rows = self._query(
            f"SELECT {_JOB_SELECT} FROM jobs WHERE job_key = ANY(%s::text[])",
            ([_enc(k) for k in job_keys],),
        )
        return {job.job_key: job for job in map(_job_from_row, rows)}

    def job_keys(self) -> list[str]:
        """Every job index row's key."""
        return [_text(r[0]) for r in self._query("SELECT job_key FROM jobs ORDER BY job_key")]

    def replace_jobs(self, expected_size: int, jobs: Sequence[JobRow]) -> None:
        """Replace the job index in one transaction, under the append lock (appends wait
        meanwhile)."""
        if self._in_snapshot:
            raise StoreError("cannot rebuild the job index inside a read snapshot")
        with self._transaction() as cur:
            size = _locked_size(cur)
            if size != expected_size:
                raise StoreConflict(
                    f"the log grew from {expected_size} to {size} leaves while the job index "
                    "was rebuilt; nothing was changed: run it again"
                )
            cur.execute("DELETE FROM jobs")
            if jobs:
                unique = list({j.job_key: j for j in jobs}.values())
                cur.execute(_JOB_UPSERT, _job_columns(unique))

    def add_cosignatures(self, size: int, cosignatures: Sequence[tuple[str, str]]) -> None:
        """Record witness cosignature lines of one checkpoint (a later one replaces)."""
        rows = _last_wins([(size, w, line) for w, line in cosignatures], lambda r: r[1])
        if not rows:
            return
        self._query(
            "INSERT INTO cosignatures (size, witness, line) SELECT * FROM unnest(%b::bigint[], "
            "%b::text[], %b::text[]) ON CONFLICT (size, witness) DO UPDATE SET "
            "line = EXCLUDED.line",
            ([r[0] for r in rows], [r[1] for r in rows], [r[2] for r in rows]),
        )

    def cosignatures(self, size: int) -> dict[str, str]:
        """Cosignature lines of the checkpoint of ``size`` leaves, by witness."""
        return {
            str(w): str(line)
            for w, line in self._query(
                "SELECT witness, line FROM cosignatures WHERE size = %s ORDER BY witness", (size,)
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
            _text(f): (_text(s), _text(v))
            for f, s, v in self._query(
                "SELECT field, salt, value FROM openings WHERE event_id = %s", (_enc(event_id),)
            )
        }

    def usage_rows(
        self, selection: UsageFilter, part: tuple[int, int] | None = None
    ) -> Iterator[UsageRow]:
        """Job runs for a usage report, a page at a time (``part``: a range of row ids)."""
        where = ['("end" IS NULL OR "end" >= %s)', "(start IS NULL OR start < %s)"]
        args: list[object] = [selection.since, selection.until]
        for column, values in (("account", selection.accounts), ("user", selection.users)):
            if values:
                where.append(f'"{column}" = ANY(%s::text[])')
                args.append([_enc(v) for v in values])
        if not selection.include_synthetic:
            where.append("NOT synthetic")
        lo, hi = part if part is not None else (0, None)
        sql = (
            'SELECT j.id, j.job_key, account, "user", partition, gpu_model, state, gpus, start, '
            '"end", elapsed_s, fields, synthetic, last_leaf, (SELECT array_agg(idx ORDER BY '
            "idx) FROM leaves l WHERE l.job_key = j.job_key) "
            f"FROM jobs j WHERE {' AND '.join(where)} AND j.id >= %s ORDER BY j.id LIMIT %s"
        )
        for rows in self._pages(sql, args, lo, hi):
            for r in rows:
                fields = json.loads(r[11]) if r[11] else {}
                totals = fields.get("gpu_totals") if isinstance(fields, dict) else None
                totals = totals if isinstance(totals, dict) else {}
                busy, energy = totals.get("busy_gpu_ms"), totals.get("energy_mj")
                yield UsageRow(
                    _text(r[1]),
                    _dec(r[2]),
                    _dec(r[3]),
                    _dec(r[4]),
                    _dec(r[5]),
                    _dec(r[6]),
                    r[7],
                    _dec(r[8]),
                    _dec(r[9]),
                    r[10],
                    busy if type(busy) is int else None,
                    energy if type(energy) is int else None,
                    bool(r[12]),
                    r[13] if r[13] is not None else -1,
                    [int(i) for i in r[14]] if r[14] else [],
                )

    def partitions(self, n: int) -> list[tuple[int, int]]:
        """``n`` ranges of job row ids."""
        lo, hi = self._query("SELECT coalesce(min(id), 0), coalesce(max(id), -1) FROM jobs")[0]
        lo, hi = int(lo), int(hi)
        if hi < lo or n < 1:
            return []
        step = (hi - lo + n) // n
        return [(lo + i * step, lo + (i + 1) * step) for i in range(n)]

    # -- checkpoints and keys --------------------------------------------------------

    def add_checkpoint(self, row: CheckpointRow) -> None:
        """Record a signed checkpoint (one per size)."""
        self._query(
            "INSERT INTO checkpoints (size, root, note, created) VALUES (%s, %s, %s, %s) "
            "ON CONFLICT (size) DO UPDATE SET root = EXCLUDED.root, note = EXCLUDED.note, "
            "created = EXCLUDED.created",
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
        if not rows:
            return None
        s, r, n, c = rows[0]
        return CheckpointRow(int(s), bytes(r), str(n), str(c))

    def add_anchor(self, row: AnchorRow) -> int:
        """Record an anchor; its id."""
        rows = self._query(
            "INSERT INTO anchors (kind, target, size, record, created) "
            "VALUES (%s, %s, %s, %s, %s) RETURNING id",
            (row.kind, row.target, row.size, row.record, row.created),
        )
        return int(rows[0][0])

    def anchors(self, kind: str | None = None, target: str | None = None) -> list[AnchorRow]:
        """Anchor records, by size then id."""
        where: list[str] = []
        args: list[object] = []
        for column, value in (("kind", kind), ("target", target)):
            if value is not None:
                where.append(f"{column} = %s")
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
        if not self._query(
            "UPDATE anchors SET record = %s WHERE id = %s RETURNING 1", (record, anchor_id)
        ):
            raise StoreError(f"PostgreSQL ledger {self._shown}: no anchor {anchor_id}")

    def enroll(self, key: EnrolledKey) -> None:
        """Trust a host key."""
        self._query(
            "INSERT INTO keys (key_id, public_key, hosts, enrolled, revoked) "
            "VALUES (%s, %s, %s, %s, %s) ON CONFLICT (key_id) DO UPDATE SET "
            "public_key = EXCLUDED.public_key, hosts = EXCLUDED.hosts, "
            "enrolled = EXCLUDED.enrolled, revoked = EXCLUDED.revoked",
            (key.key_id, key.public_raw, _enc(",".join(key.hosts)), key.enrolled, key.revoked),
        )

    def revoke(self, key_id: str, when: str) -> bool:
        """Refuse new events from a key."""
        return bool(
            self._query(
                "UPDATE keys SET revoked = %s WHERE key_id = %s RETURNING 1", (when, key_id)
            )
        )

    def enrolled(self) -> dict[str, EnrolledKey]:
        """All keys ever enrolled, revoked ones included (they verify old events)."""
        return {
            str(k): EnrolledKey(
                str(k), bytes(p), tuple(_text(h).split(",")), str(e), None if r is None else str(r)
            )
            for k, p, h, e, r in self._query(
                "SELECT key_id, public_key, hosts, enrolled, revoked FROM keys"
            )
        }

    # -- administration --------------------------------------------------------------

    def warnings(self) -> list[str]:
        """A connection as a superuser (the collector needs only its own tables), or an
        unencrypted connection to another host (it carries the openings of private
        fields)."""
        out: list[str] = []
        if self._query("SELECT rolsuper FROM pg_roles WHERE rolname = current_user")[0][0]:
            out.append(
                f"the ledger connects to {self._shown} as a PostgreSQL superuser; connect "
                "as a role that owns only the ledger's database"
            )
        host = self.conn.info.host or ""
        local = host.startswith("/") or host in ("localhost", "127.0.0.1", "::1", "")
        if not local and not self.conn.pgconn.ssl_in_use:
            out.append(
                f"the connection to {self._shown} is not encrypted and carries the openings "
                "of private fields: add sslmode=verify-full to the URL"
            )
        return out

    def upgrade(self, progress: Callable[[int, int], None] | None = None) -> tuple[str, str]:
        """Nothing to do yet: PostgreSQL ledgers have had one schema."""
        version = self.get_meta("schema_version") or SCHEMA_VERSION
        if version != SCHEMA_VERSION:
            raise StoreError(
                f"PostgreSQL ledger {self._shown} has schema {version}, which this version "
                f"of computeproof does not know (it writes schema {SCHEMA_VERSION}); upgrade "
                "computeproof"
            )
        return version, version

    def backup(self, dest: str) -> int:
        """PostgreSQL has its own consistent backup: pg_dump."""
        raise StoreError(
            "a PostgreSQL ledger is backed up with PostgreSQL's tools: pg_dump --format=custom "
            f"--file {dest} DBNAME (one consistent snapshot, while collectors go on appending)"
        )


def _first_line(e: BaseException) -> str:
    return (str(e).strip().splitlines() or [type(e).__name__])[0]


_READERS: dict[str, PostgresStore] = {}


def read_leaves(url: str, start: int, stop: int) -> list[LeafRow]:
    """Leaves start <= index < stop of the ledger at ``url``, through a connection kept for
    the life of the process (a ledger worker's)."""
    store = _READERS.get(url)
    if store is None:
        store = _READERS[url] = PostgresStore(url, create=False)
    return list(store.leaves(start, stop))
