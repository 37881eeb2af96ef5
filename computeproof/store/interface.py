"""The storage interface of the ledger: leaves, perfect-subtree nodes, checkpoints, keys.

Kept narrow on purpose so a PostgreSQL backend is a second small module. The store only
persists; every check (signatures, Merkle math, dedupe policy) lives in the ledger.
"""

from __future__ import annotations

import contextlib
from abc import ABC, abstractmethod
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import AbstractContextManager
from dataclasses import dataclass, field
from typing import NamedTuple

NodeKey = tuple[int, int]  # (level, index): perfect subtree over [index*2^level, (index+1)*2^level)


class LeafRow(NamedTuple):
    """One log entry: its index, the event's id and job, and the envelope bytes (a named
    tuple in the leaves table's column order, so it binds to SQL as it is)."""

    index: int  # type: ignore[assignment]  # the field shadows tuple.index, on purpose
    event_id: str
    job_key: str
    type: str
    host: str
    time: str
    envelope: bytes


@dataclass(frozen=True)
class CheckpointRow:
    """A signed checkpoint the ledger issued."""

    size: int
    root: bytes
    note: str
    created: str


@dataclass(frozen=True)
class EnrolledKey:
    """A host public key the ledger trusts, and the hosts it may sign for ("*": any)."""

    key_id: str
    public_raw: bytes
    hosts: tuple[str, ...]
    enrolled: str
    revoked: str | None = None  # still verifies old events; new ones are refused


@dataclass(frozen=True)
class AnchorRow:
    """A record that a public registry holds one of this log's checkpoints (or, in the
    per-job mode, one event): its kind ("evm", "numbers", "numbers-event"), the registry it
    went to, the log size it speaks for, and the registry's record as JSON
    (computeproof.anchors.AnchorRecord). Stored only from a real response or chain receipt."""

    kind: str
    target: str
    size: int
    record: str
    created: str
    id: int = 0  # assigned by the store


@dataclass
class JobRow:
    """The job index: one row per run of a job, derived from its events (not authoritative:
    `ledger verify` and receipts check the events themselves)."""

    job_key: str
    cluster: str
    job: str
    job_id: int
    run: int
    user: str | None = None
    account: str | None = None
    partition: str | None = None
    state: str | None = None
    gpus: int | None = None
    gpu_model: str | None = None
    nodes: str | None = None
    submit: str | None = None
    start: str | None = None
    end: str | None = None
    elapsed_s: int | None = None
    exit_code: str | None = None
    synthetic: bool = False
    events: int = 0
    first_leaf: int | None = None
    last_leaf: int | None = None
    fields: dict[str, object] = field(default_factory=dict)


@dataclass(frozen=True)
class JobFilter:
    """Selection for :meth:`Store.jobs`; None means any."""

    users: tuple[str, ...] = ()
    accounts: tuple[str, ...] = ()
    partitions: tuple[str, ...] = ()
    states: tuple[str, ...] = ()
    nodes: tuple[str, ...] = ()
    gpu_models: tuple[str, ...] = ()
    since: str | None = None  # jobs that ended at or after (or are still running)
    until: str | None = None  # jobs that started before
    job: str | None = None
    limit: int | None = None


@dataclass(frozen=True)
class UsageFilter:
    """Selection for :meth:`Store.usage_rows`: job runs that may overlap a report period."""

    since: str  # RFC 3339 prefix: runs that ended at or after it (or have not ended)
    until: str  # runs that started before it (or have not started)
    accounts: tuple[str, ...] = ()
    users: tuple[str, ...] = ()
    include_synthetic: bool = False


class UsageRow(NamedTuple):
    """What a usage report needs of one job run: its index figures and its leaf indices."""

    job_key: str
    account: str | None
    user: str | None
    partition: str | None
    gpu_model: str | None
    state: str | None
    gpus: int | None
    start: str | None
    end: str | None
    elapsed_s: int | None
    busy_gpu_ms: int | None
    energy_mj: int | None
    synthetic: bool
    last_leaf: int  # -1 for a run with no leaves
    leaves: list[int]  # in index order


@dataclass(frozen=True)
class JobCursor:
    """A position in the jobs' display order: start time (else submit time, else ""), then
    job id, then job key. The last row of one page; the next page continues after it
    (keyset paging: as fast on page 2,000 as on page 1)."""

    sort: str
    job_id: int
    job_key: str

    @classmethod
    def of(cls, row: JobRow) -> JobCursor:
        """The cursor of ``row``: where a page that ends with it leaves off."""
        return cls(row.start or row.submit or "", row.job_id, row.job_key)


@dataclass(frozen=True)
class JobFacets:
    """The distinct values of the filterable job fields among some job rows, sorted."""

    users: tuple[str, ...] = ()
    accounts: tuple[str, ...] = ()
    partitions: tuple[str, ...] = ()
    states: tuple[str, ...] = ()
    gpu_models: tuple[str, ...] = ()
    nodes: tuple[str, ...] = ()


class Store(ABC):
    """Persistence for one ledger. One writer at a time; readers run concurrently."""

    @abstractmethod
    def close(self) -> None:
        """Release the connection."""

    @abstractmethod
    def snapshot(self) -> AbstractContextManager[None]:
        """A context in which this store's reads all see the log as of the first of them,
        whatever other writers commit meanwhile (`ledger verify` on a live ledger)."""

    def exclusive(self) -> AbstractContextManager[None]:
        """A context in which no other writer appends: a writer that keeps losing the
        race for the log's end (StoreConflict) rechecks and commits its batch in one.
        Appends inside it still check their expected size. The default does nothing
        (SQLite's single local writer seldom loses the race for long)."""
        return contextlib.nullcontext()

    @abstractmethod
    def get_meta(self, key: str) -> str | None:
        """A ledger-wide setting (origin, ledger public key)."""

    @abstractmethod
    def set_meta(self, key: str, value: str) -> None:
        """Store a ledger-wide setting."""

    @abstractmethod
    def size(self) -> int:
        """Number of leaves in the log."""

    @abstractmethod
    def read_nodes(self, keys: Sequence[NodeKey]) -> Mapping[NodeKey, bytes]:
        """The stored hashes of the requested perfect subtrees, in one round trip."""

    @abstractmethod
    def append(
        self,
        expected_size: int,
        leaves: Sequence[LeafRow],
        nodes: Sequence[tuple[NodeKey, bytes]],
        jobs: Sequence[JobRow],
        openings: Sequence[tuple[str, str, str, str]],
    ) -> None:
        """Atomically add leaves (indices from ``expected_size``), their new nodes, the
        updated job rows and private-field openings (event id, field, salt, value JSON).
        Raise StoreConflict, changing nothing, if the log no longer has ``expected_size``
        (another writer appended first)."""

    @abstractmethod
    def find_events(self, events: Sequence[tuple[str, str]]) -> dict[str, tuple[int, bytes]]:
        """Leaf index and envelope of each given (job key, event id) already in the log, by
        event id. An event id hashes its job's identity, so the pair is as unique as the id
        and a store may index the two together."""

    @abstractmethod
    def leaves(self, start: int = 0, stop: int | None = None) -> Iterator[LeafRow]:
        """Leaves with start <= index < stop, in index order."""

    def reader_url(self) -> str | None:
        """A URL that :func:`computeproof.store.read_leaves` in another process
        can read this log's leaves through, concurrently and read-only; None when the
        backend has none (then the ledger passes leaves to its workers itself)."""
        return None

    @abstractmethod
    def leaf_count_rows(self) -> tuple[int, int, int]:
        """(row count, min index, max index) of the leaf table, for integrity checks."""

    @abstractmethod
    def nodes_at_level(self, level: int) -> Iterator[tuple[int, bytes]]:
        """All stored (index, hash) at one level, in index order (for `ledger verify`)."""

    @abstractmethod
    def job_leaves(self, job_key: str) -> list[LeafRow]:
        """Every leaf of one job run, in index order."""

    @abstractmethod
    def jobs(self, selection: JobFilter) -> list[JobRow]:
        """Job index rows matching ``selection``, ordered by start then job key."""

    @abstractmethod
    def jobs_page(
        self,
        selection: JobFilter,
        after: JobCursor | None = None,
        limit: int = 50,
        newest_first: bool = True,
    ) -> list[JobRow]:
        """At most ``limit`` rows matching ``selection`` (its own limit is ignored) in the
        :class:`JobCursor` order, newest first unless ``newest_first`` is False, strictly
        after ``after`` in that direction."""

    @abstractmethod
    def count_jobs(self, selection: JobFilter, cap: int | None = None) -> int:
        """How many rows match ``selection``; with ``cap``, counting stops at ``cap``."""

    @abstractmethod
    def job_facets(self, selection: JobFilter, per_field: int = 500) -> JobFacets:
        """The distinct users, accounts, partitions, states, GPU models and nodes (each node
        of a row's node list) of the rows matching ``selection``, at most ``per_field`` of
        each, sorted (for filter menus)."""

    @abstractmethod
    def get_jobs(self, job_keys: Sequence[str]) -> dict[str, JobRow]:
        """Job index rows by key."""

    @abstractmethod
    def job_keys(self) -> list[str]:
        """The key of every job index row (`ledger verify` checks each against the log)."""

    @abstractmethod
    def replace_jobs(self, expected_size: int, jobs: Sequence[JobRow]) -> None:
        """Atomically replace the whole job index with ``jobs`` (`ledger reindex`). Raise
        StoreConflict, changing nothing, if the log no longer has ``expected_size``
        leaves: rows folded from a smaller log would undo the appends since."""

    @abstractmethod
    def add_cosignatures(self, size: int, cosignatures: Sequence[tuple[str, str]]) -> None:
        """Record witness cosignatures of the checkpoint of ``size`` leaves: (witness
        name, signature line); one per witness and size, a later one replacing it."""

    @abstractmethod
    def cosignatures(self, size: int) -> dict[str, str]:
        """The cosignature lines of the checkpoint of ``size`` leaves, by witness name."""

    @abstractmethod
    def cosigned_sizes(self) -> dict[str, int]:
        """The largest checkpoint size each witness cosigned, by witness name (the old
        size of the next request to it)."""

    @abstractmethod
    def openings(self, event_id: str) -> dict[str, tuple[str, str]]:
        """Private-field openings of one event: field -> (salt hex, value JSON)."""

    @abstractmethod
    def add_checkpoint(self, row: CheckpointRow) -> None:
        """Record a signed checkpoint."""

    @abstractmethod
    def checkpoints(self) -> list[CheckpointRow]:
        """Every checkpoint, oldest first."""

    def last_checkpoint(self) -> CheckpointRow | None:
        """The largest checkpoint, None before the first (a collector signs one a second:
        reading them all to find it grows without bound)."""
        rows = self.checkpoints()
        return rows[-1] if rows else None

    @abstractmethod
    def add_anchor(self, row: AnchorRow) -> int:
        """Record an anchor (``row.id`` is ignored); return the id the store gave it."""

    @abstractmethod
    def anchors(self, kind: str | None = None, target: str | None = None) -> list[AnchorRow]:
        """Anchor records, of one kind and registry when given, by size then id."""

    @abstractmethod
    def update_anchor(self, anchor_id: int, record: str) -> None:
        """Replace an anchor's record JSON (a Numbers commit transaction learnt later);
        raise StoreError when there is no anchor ``anchor_id``."""

    @abstractmethod
    def enroll(self, key: EnrolledKey) -> None:
        """Trust a host key (replacing its host list if already enrolled)."""

    @abstractmethod
    def revoke(self, key_id: str, when: str) -> bool:
        """Stop trusting a key for new events; True if it was enrolled."""

    @abstractmethod
    def enrolled(self) -> dict[str, EnrolledKey]:
        """Enrolled keys by key id."""

    @abstractmethod
    def usage_rows(
        self, selection: UsageFilter, part: tuple[int, int] | None = None
    ) -> Iterator[UsageRow]:
        """Job runs matching ``selection``, streamed (a 1M-job report never holds 1M rows);
        with ``part``, only those of one of :meth:`partitions`' parts."""

    def partitions(self, n: int) -> list[tuple[int, int]]:
        """Up to ``n`` disjoint parts of the job index that workers can scan through
        :meth:`reader_url` in parallel; [] when the backend offers none."""
        return []

    @abstractmethod
    def warnings(self) -> list[str]:
        """What is wrong around a sound ledger (e.g. a file other users can read)."""

    @abstractmethod
    def upgrade(self, progress: Callable[[int, int], None] | None = None) -> tuple[str, str]:
        """Bring the ledger to this version's schema; (schema before, schema after)."""

    @abstractmethod
    def backup(self, dest: str) -> int:
        """Write a consistent copy of the live ledger to ``dest``; the copy's leaf count.
        Raise StoreError where the backend is backed up with its own tools."""
