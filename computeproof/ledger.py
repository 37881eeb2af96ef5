"""The ledger: enrolled host keys, signature-checked append-only RFC 9162 Merkle log,
proofs, signed checkpoints and whole-log verification, over a :class:`Store`.

Appends are batched: envelopes are opened and their signatures checked in worker processes
(Ed25519 verification is the physical floor of ingest; the parsing around it holds the GIL),
then the batch's leaves, Merkle nodes and job-index rows are committed in one transaction.
Dedupe is by event id: the same envelope again is a no-op, a different envelope for an
existing event id is refused.
"""

from __future__ import annotations

import bisect
import contextlib
import gc
import json
import marshal
import multiprocessing
import os
from collections import deque
from collections.abc import Callable, Iterable, Iterator, Sequence
from concurrent.futures import Future, ProcessPoolExecutor
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, NamedTuple

from computeproof import merkle
from computeproof.checkpoint import Checkpoint, open_checkpoint, sign_checkpoint
from computeproof.envelope import open_envelope, verify_envelope
from computeproof.errors import (
    CheckpointError,
    ReceiptError,
    SignatureError,
    StoreConflict,
    StoreError,
    UnknownKeyError,
)
from computeproof.event import job_key, utc_now
from computeproof.jobindex import apply_event, index_payload, new_row
from computeproof.keys import Signer, format_public_key, key_id, parse_public_key
from computeproof.store import read_leaves
from computeproof.store.interface import (
    CheckpointRow,
    EnrolledKey,
    JobFilter,
    JobRow,
    LeafRow,
    Store,
)

if TYPE_CHECKING:
    from computeproof.config import Config

PARALLEL_THRESHOLD = 512  # below this a batch is checked in-process (no IPC overhead)
CHUNK = 256
COMMIT_ATTEMPTS = 20  # another writer's appends make a commit start again (see _complete)

Progress = Callable[[int, int], None]


@contextlib.contextmanager
def _gc_paused() -> Iterator[None]:
    """Pause the cyclic garbage collector for one batch (or one worker's chunk). A batch
    allocates several container objects an event and none of them form cycles, yet each
    allocation burst sets off collector passes over the heap: 12-15 % of the committing
    process's CPU on a 100k-event ingest, for nothing (worker processes forked from a
    large process inherit its heap too). A collector that was already off stays off."""
    if not gc.isenabled():
        yield
        return
    gc.disable()
    try:
        yield
    finally:
        gc.enable()


@dataclass
class AppendResult:
    """What an append did, per envelope position in the batch."""

    accepted: list[tuple[int, str, int]] = field(default_factory=list)  # (pos, event id, leaf)
    duplicates: list[tuple[int, str, int]] = field(default_factory=list)
    rejected: list[tuple[int, str]] = field(default_factory=list)  # (pos, reason)
    # signed by a key not enrolled (for that host): retry once the site enrolls it
    untrusted: list[tuple[int, str]] = field(default_factory=list)


@dataclass
class VerifyReport:
    """The result of re-checking a whole ledger."""

    size: int
    ok: bool = True
    first_bad_index: int | None = None
    problems: list[str] = field(default_factory=list)
    checkpoints: int = 0
    signatures: int = 0
    bad_leaves: list[int] = field(default_factory=list)

    def bad(self, index: int, problem: str) -> None:
        """Record a problem at a leaf index."""
        self.bad_leaves.append(index)
        self.ok = False
        if self.first_bad_index is None or index < self.first_bad_index:
            self.first_bad_index = index
        if len(self.problems) < 50:
            self.problems.append(problem)


class Checked(NamedTuple):
    """A verified envelope, reduced to what the ingesting process needs (cheap to pickle)."""

    event_id: str
    cluster: str
    job: str
    job_id: int
    run: int
    type: str
    host: str
    time: str
    key_id: str
    leaf_hash: bytes
    index_fields: dict[str, object]  # jobindex.index_payload
    job_key: str  # event.job_key: ``cluster/job_id#run``


class Refused(NamedTuple):
    """Why an envelope was refused; ``untrusted`` when only its key is the problem."""

    reason: str
    untrusted: bool = False


@_gc_paused()
def _check_packed(envelopes: Sequence[bytes], keys: dict[str, bytes]) -> bytes:
    """Worker: :func:`_check_envelopes` as plain tuples in one marshal blob (plain tuples
    pickle twice as fast as named tuples, and marshal twice as fast again; every field
    is a str, int, bytes or a dict of JSON values); :func:`_unpack` turns them back."""
    return marshal.dumps([(r.reason, r.untrusted) if type(r) is Refused else tuple(r)
                          for r in _check_envelopes(envelopes, keys)])  # fmt: skip


def _unpack(blob: bytes) -> list[Checked | Refused]:
    make = Checked._make
    return [Refused(*t) if len(t) == 2 else make(t) for t in marshal.loads(blob)]


def _check_envelopes(
    envelopes: Sequence[bytes], keys: dict[str, bytes], index: bool = True
) -> list[Checked | Refused]:
    """Worker: open and verify each envelope -> Checked, or why it was refused;
    ``index=False`` leaves ``index_fields`` empty (`ledger verify` does not need them)."""
    out: list[Checked | Refused] = []
    for data in envelopes:
        try:
            e = verify_envelope(data, keys)
        except UnknownKeyError as err:
            out.append(Refused(str(err), True))
            continue
        except ReceiptError as err:
            out.append(Refused(str(err)))
            continue
        ev = e.event  # check_event vouched for every field's type
        etype = ev["type"]
        cluster, job_id, run = ev["cluster"], ev["job_id"], ev["run"]
        out.append(
            Checked(
                ev["id"],
                cluster,
                ev["job"],
                job_id,
                run,
                etype,
                ev["host"],
                ev["time"],
                e.key_id,
                merkle.leaf_hash(data),
                index_payload(etype, ev["payload"]) if index else {},
                job_key(cluster, job_id, run),
            )
        )
    return out


VerifiedLeaf = tuple[int, bytes, str, "str | None", "str | None", "str | None"]
"""(index, leaf hash, event id column, key id, signed host, problem): key id None when the
envelope was refused (problem says why)."""


def _verify_rows(rows: Sequence[LeafRow], keys: dict[str, bytes]) -> list[VerifiedLeaf]:
    """Check stored leaves: signature, envelope, and the index columns against the event."""
    out: list[VerifiedLeaf] = []
    checked = _check_envelopes([r.envelope for r in rows], keys, index=False)
    for row, c in zip(rows, checked, strict=True):
        if type(c) is Refused:
            out.append((row.index, merkle.leaf_hash(row.envelope), row.event_id, None, None,
                        c.reason))  # fmt: skip
            continue
        assert type(c) is Checked
        same = (row.event_id, row.job_key, row.type, row.host, row.time) == (
            c.event_id, c.job_key, c.type, c.host, c.time)  # fmt: skip
        out.append((row.index, c.leaf_hash, row.event_id, c.key_id, c.host,
                    None if same else "index columns do not match the signed event"))  # fmt: skip
    return out


def _verify_range(url: str, start: int, stop: int, keys: dict[str, bytes]) -> list[VerifiedLeaf]:
    """Worker: read leaves [start, stop) through ``url`` and check them."""
    return _verify_rows(read_leaves(url, start, stop), keys)


def _worker_pool(workers: int) -> ProcessPoolExecutor:
    """A pool whose workers come from a forkserver, never forked from this process: the
    agent forwards from a thread, and a fork of a multi-threaded process can copy a lock
    another thread held (a deadlock; Python 3.12+ warns). The forkserver imports this
    module once, so each worker starts with it loaded."""
    context = multiprocessing.get_context("forkserver")
    context.set_forkserver_preload([__name__])
    return ProcessPoolExecutor(workers, mp_context=context)


class Ledger:
    """One transparency log of signed job events."""

    def __init__(
        self,
        store: Store,
        origin: str | None,
        ledger_key_path: str | None = None,
        workers: int | None = None,
        default_origin: str = "computeproof.ledger",
    ) -> None:
        """Open a ledger. ``origin`` pins the log's identity (an existing ledger with
        another origin is refused); None takes the stored one, or ``default_origin``
        for a new ledger."""
        self.store = store
        self.ledger_key_path = ledger_key_path
        self.workers = workers if workers is not None else (os.cpu_count() or 1)
        self._pool: ProcessPoolExecutor | None = None
        self._signer: Signer | None = None
        stored = store.get_meta("origin")
        if stored is None:
            self.origin = origin or default_origin
            store.set_meta("origin", self.origin)
        elif origin is not None and stored != origin:
            raise CheckpointError(
                f"this ledger's origin is {stored!r}, not {origin!r} as configured; fix "
                "ledger_origin in the config or open the right ledger"
            )
        else:
            self.origin = stored

    # -- lifecycle -------------------------------------------------------------------

    def close(self) -> None:
        """Stop worker processes and close the store."""
        if self._pool is not None:
            self._pool.shutdown(cancel_futures=True)
            self._pool = None
        self.store.close()

    def __enter__(self) -> Ledger:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def _map(
        self, chunks: list[Sequence[bytes]], keys: dict[str, bytes]
    ) -> Iterable[list[Checked | Refused]]:
        """Check chunks of envelopes, in worker processes when there are several chunks;
        results come back lazily in order, so the caller works while workers verify."""
        if self.workers <= 1 or len(chunks) <= 1:
            return (_check_envelopes(c, keys) for c in chunks)
        if self._pool is None:
            self._pool = _worker_pool(self.workers)
        return map(_unpack, self._pool.map(_check_packed, chunks, [keys] * len(chunks)))

    # -- keys ------------------------------------------------------------------------

    def enroll(
        self, public_key: str | bytes, hosts: Sequence[str], replace: bool = False
    ) -> EnrolledKey:
        """Trust a host public key for events from ``hosts`` ("*" for any host). A key
        enrolled already keeps its hosts and gains these (``replace``: these only). A
        revoked key is refused: enrolling it again must not quietly undo the revocation."""
        raw = parse_public_key(public_key) if isinstance(public_key, str) else public_key
        if not hosts:
            raise SignatureError("name the hosts this key signs for (--host NAME, or '*')")
        kid = key_id(raw)
        old = self.store.enrolled().get(kid)
        if old is not None and old.revoked is not None:
            raise SignatureError(
                f"key {kid[:16]}... was revoked at {old.revoked}; a revoked key is not "
                "enrolled again: create a new host key (`computeproof keys init`) and "
                "enroll that"
            )
        if old is None or replace:
            key = EnrolledKey(kid, raw, tuple(dict.fromkeys(hosts)), utc_now())
        else:
            key = EnrolledKey(kid, raw, tuple(dict.fromkeys((*old.hosts, *hosts))), old.enrolled)
        self.store.enroll(key)
        return key

    def signer(self) -> Signer:
        """The ledger's checkpoint key, created on first use (back it up)."""
        if self._signer is None:
            from computeproof.keys import load_or_create_signer

            if not self.ledger_key_path:
                raise CheckpointError("no ledger key configured (ledger_key in config.toml)")
            stored = self.store.get_meta("ledger_public_key")
            if stored is not None and not os.path.lexists(self.ledger_key_path):
                # a new key here could never sign for this ledger: do not leave one behind
                raise CheckpointError(
                    f"ledger key {self.ledger_key_path} does not exist, and this ledger "
                    f"signs with key {stored}; restore the original ledger key there, or set "
                    "ledger_key in config.toml to where it is"
                )
            signer = load_or_create_signer(self.ledger_key_path)
            public = format_public_key(signer.public_raw)
            if stored is None:
                self.store.set_meta("ledger_public_key", public)
            elif stored != public:  # and not kept: a second call must refuse again
                raise CheckpointError(
                    f"ledger key {self.ledger_key_path} is not the key this ledger signs "
                    f"with ({stored}); restore the original ledger key, or set ledger_key "
                    "in config.toml to where it is"
                )
            self._signer = signer
        return self._signer

    def ledger_public_key(self) -> bytes | None:
        """The ledger's checkpoint public key, if it has signed anything."""
        stored = self.store.get_meta("ledger_public_key")
        return parse_public_key(stored) if stored else None

    # -- append ----------------------------------------------------------------------

    def append(
        self,
        envelopes: Sequence[bytes],
        openings: Sequence[dict[str, dict[str, object]]] | None = None,
    ) -> AppendResult:
        """Verify and append a batch of envelopes; see the module docstring for dedupe."""
        return self._complete(envelopes, openings, *self._submit(envelopes))

    def append_stream(
        self,
        batches: Iterable[tuple[Sequence[bytes], Sequence[dict[str, dict[str, object]]] | None]],
    ) -> Iterator[AppendResult]:
        """Append (envelopes, openings) batches in order, one result each. The next batch's
        signatures are checked by the workers while this process commits the current one."""
        pending: tuple[Sequence[bytes], Any, dict[str, EnrolledKey], Any] | None = None
        for envelopes, openings in batches:
            submitted = self._submit(envelopes)
            if pending is not None:
                yield self._complete(pending[0], pending[1], pending[2], pending[3])
            pending = (envelopes, openings, *submitted)
        if pending is not None:
            yield self._complete(pending[0], pending[1], pending[2], pending[3])

    def _submit(
        self, envelopes: Sequence[bytes]
    ) -> tuple[dict[str, EnrolledKey], Iterable[list[Checked | Refused]]]:
        """Start checking a batch's signatures; results arrive lazily, in order."""
        enrolled = self.store.enrolled()
        active = {k: v.public_raw for k, v in enrolled.items() if v.revoked is None}
        n = len(envelopes)
        size = CHUNK if n >= PARALLEL_THRESHOLD else max(n, 1)
        chunks = [envelopes[i : i + size] for i in range(0, n, size)]
        return enrolled, self._map(chunks, active)

    @_gc_paused()
    def _complete(
        self,
        envelopes: Sequence[bytes],
        openings: Sequence[dict[str, dict[str, object]]] | None,
        enrolled: dict[str, EnrolledKey],
        checked: Iterable[list[Checked | Refused]],
    ) -> AppendResult:
        """Dedupe, check host enrollment and commit one submitted batch."""
        result = AppendResult()
        seen: dict[str, int] = {}
        fresh: list[tuple[int, Checked]] = []
        pos = 0
        for part in checked:
            candidates: list[tuple[int, Checked]] = []
            for item in part:
                if isinstance(item, Refused):
                    (result.untrusted if item.untrusted else result.rejected).append(
                        (pos, item.reason)
                    )
                elif "*" not in (hosts := enrolled[item.key_id].hosts) and item.host not in hosts:
                    result.untrusted.append(
                        (
                            pos,
                            f"key {item.key_id[:16]}... is enrolled for "
                            f"hosts {','.join(hosts)}, not {item.host}",
                        )
                    )
                elif item.event_id in seen:
                    if envelopes[seen[item.event_id]] == envelopes[pos]:
                        result.duplicates.append((pos, item.event_id, -1))
                    else:
                        result.rejected.append(
                            (
                                pos,
                                f"event {item.event_id} appears twice in "
                                "the batch with different envelopes",
                            )
                        )
                else:
                    seen[item.event_id] = pos
                    candidates.append((pos, item))
                pos += 1
            fresh += self._not_stored(envelopes, candidates, result)
        for attempt in range(1, COMMIT_ATTEMPTS + 1):
            if not fresh:
                break
            try:
                result.accepted += self._commit(envelopes, fresh, openings)
                break
            except StoreConflict:
                # another writer appended since this batch read the log: what it added may
                # include some of these events, so check them again, then redo the commit
                if attempt == COMMIT_ATTEMPTS:
                    raise
                fresh = self._not_stored(envelopes, fresh, result)
        # dedupe within the batch points at the leaf the first copy got
        placed = {eid: leaf for _, eid, leaf in result.accepted}
        result.duplicates = [(p, e, placed.get(e, i)) for p, e, i in result.duplicates]
        return result

    def _not_stored(
        self,
        envelopes: Sequence[bytes],
        candidates: list[tuple[int, Checked]],
        result: AppendResult,
    ) -> list[tuple[int, Checked]]:
        """The candidates the log does not hold yet; the others become duplicates (same
        envelope) or rejections (another envelope under the same event id)."""
        existing = self.store.find_events([(c.job_key, c.event_id) for _, c in candidates])
        fresh: list[tuple[int, Checked]] = []
        for p, c in candidates:
            if c.event_id not in existing:
                fresh.append((p, c))
            elif existing[c.event_id][1] == envelopes[p]:
                result.duplicates.append((p, c.event_id, existing[c.event_id][0]))
            else:
                result.rejected.append(
                    (
                        p,
                        f"event {c.event_id} is already in the ledger "
                        f"at leaf {existing[c.event_id][0]} with a "
                        "different envelope",
                    )
                )
        return fresh

    def _commit(
        self,
        envelopes: Sequence[bytes],
        fresh: list[tuple[int, Checked]],
        openings: Sequence[dict[str, dict[str, object]]] | None,
    ) -> list[tuple[int, str, int]]:
        """Append ``fresh`` at the end of the log in one transaction; return (position,
        event id, leaf index) of each. Raises StoreConflict, changing nothing, when
        another writer appended after this read the log's size."""
        start = self.store.size()
        frontier_keys = merkle.frontier_keys(start)
        have = self.store.read_nodes(frontier_keys)
        try:
            frontier = [have[k] for k in frontier_keys]
        except KeyError as e:
            raise StoreError(
                f"ledger is missing Merkle node {e.args[0]}; run `computeproof ledger verify`"
            ) from e
        nodes, _ = merkle.nodes_to_store(start, [c.leaf_hash for _, c in fresh], frontier)
        jobs: dict[str, JobRow] = dict(self.store.get_jobs(sorted({c.job_key for _, c in fresh})))
        leaves: list[LeafRow] = []
        opening_rows: list[tuple[str, str, str, str]] = []
        accepted: list[tuple[int, str, int]] = []
        for index, (pos, c) in enumerate(fresh, start):
            jk = c.job_key
            leaves.append(LeafRow(index, c.event_id, jk, c.type, c.host, c.time, envelopes[pos]))
            row = jobs.get(jk)
            if row is None:
                row = jobs[jk] = new_row(c.cluster, c.job, c.job_id, c.run)
            apply_event(row, c.type, c.host, c.index_fields, index, c.job)
            if openings is not None and pos < len(openings):
                for name, op in openings[pos].items():
                    opening_rows.append(
                        (c.event_id, name, str(op["salt"]), json.dumps(op["value"], sort_keys=True))
                    )
            accepted.append((pos, c.event_id, index))
        self.store.append(start, leaves, nodes, list(jobs.values()), opening_rows)
        return accepted

    # -- tree ------------------------------------------------------------------------

    def size(self) -> int:
        """Number of leaves."""
        return self.store.size()

    def root(self, size: int | None = None) -> bytes:
        """The Merkle root at ``size`` (default: now)."""
        n = self.size() if size is None else size
        return merkle.root(n, self.store.read_nodes)

    def inclusion_proof(self, index: int, size: int) -> list[bytes]:
        """Audit path of leaf ``index`` in the tree of ``size`` leaves."""
        return merkle.inclusion_proof(index, size, self.store.read_nodes)

    def consistency_proof(self, old_size: int, new_size: int) -> list[bytes]:
        """Proof that the tree of ``new_size`` extends the tree of ``old_size``."""
        return merkle.consistency_proof(old_size, new_size, self.store.read_nodes)

    # -- checkpoints -----------------------------------------------------------------

    def checkpoint(self) -> CheckpointRow:
        """Sign a checkpoint at the current size (or return the one already at it).

        Refuses when the log no longer matches the last checkpoint: a ledger never signs
        two inconsistent checkpoints. Reads one snapshot, so that another process appending
        and signing meanwhile is not taken for a log that shrank.
        """
        signer = self.signer()
        with self.store.snapshot():
            size = self.size()
            previous = self.store.checkpoints()
            last_size = 0
            if previous:
                last = previous[-1]
                if last.size > size or self.root(last.size) != last.root:
                    raise CheckpointError(
                        f"the log no longer matches checkpoint {last.size}: refusing to "
                        "sign; run `computeproof ledger verify`"
                    )
                if last.size == size:
                    return last
                last_size = last.size
            root = self._root_from_envelopes(last_size, size)
        note = sign_checkpoint(Checkpoint(self.origin, size, root), self.origin, signer.private_key)
        row = CheckpointRow(size, root, note, utc_now())
        self.store.add_checkpoint(row)
        return row

    def _root_from_envelopes(self, start: int, size: int) -> bytes:
        """The root at ``size`` from the checkpointed compact range of [0, start) and the
        leaves after it re-hashed from their envelopes; every stored node those leaves
        produce must match, so a tampered node is never signed into a checkpoint."""
        keys = merkle.frontier_keys(start)
        have = self.store.read_nodes(keys)
        frontier = [have[k] for k in keys]
        hashes = [merkle.leaf_hash(leaf.envelope) for leaf in self.store.leaves(start, size)]
        if len(hashes) != size - start:
            raise CheckpointError(
                f"leaves {start}..{size - 1} are not all present: refusing to sign; "
                "run `computeproof ledger verify`"
            )
        nodes, frontier = merkle.nodes_to_store(start, hashes, frontier)
        stored = self.store.read_nodes([k for k, _ in nodes])
        for (level, index), h in nodes:
            if stored.get((level, index)) != h:
                raise CheckpointError(
                    f"stored Merkle node ({level}, {index}) over leaves from {index << level} "
                    "does not match the envelopes: refusing to sign; run "
                    "`computeproof ledger verify`"
                )
        return merkle.root_from_frontier(frontier)

    def latest_checkpoint(self) -> CheckpointRow:
        """The newest checkpoint that covers the whole log, signing one if needed."""
        cps = self.store.checkpoints()
        if cps and cps[-1].size == self.size():
            return cps[-1]
        return self.checkpoint()

    def open_checkpoint(self, note: str) -> Checkpoint:
        """Parse and verify a checkpoint note signed by this ledger."""
        public = self.ledger_public_key()
        if public is None:
            raise CheckpointError("this ledger has never signed a checkpoint")
        return open_checkpoint(note, self.origin, public, origin=self.origin)

    def prove_extends(self, note: str) -> tuple[Checkpoint, Checkpoint, list[bytes]]:
        """Check that the log now extends an older checkpoint; return old, new and proof."""
        old = self.open_checkpoint(note)
        new_row = self.latest_checkpoint()
        new = Checkpoint(self.origin, new_row.size, new_row.root)
        if old.size > new.size:
            raise CheckpointError(
                f"checkpoint size {old.size} is larger than the log ({new.size} leaves): "
                "the log was truncated or the checkpoint is from another log"
            )
        proof = self.consistency_proof(old.size, new.size)
        merkle.verify_consistency(old.size, new.size, proof, old.root, new.root)
        return old, new, proof

    # -- verification ------------------------------------------------------------------

    def verify(self, progress: Progress | None = None) -> VerifyReport:
        """Re-hash every leaf, re-check every signature, rebuild the tree, check every
        checkpoint. Reports the first bad leaf index. Checks the log as it was when the
        check began, while forwarders go on appending (they add only rows past it)."""
        with self.store.snapshot():
            return self._verify_snapshot(progress)

    def _verify_snapshot(self, progress: Progress | None) -> VerifyReport:
        count, lo, hi = self.store.leaf_count_rows()
        size = hi + 1
        report = VerifyReport(size=size)
        if count != size or (count and lo != 0):
            report.bad(
                self._first_gap(),
                f"leaf table has {count} rows for indices {lo}..{hi}: rows are missing",
            )
        enrolled = self.store.enrolled()
        keys = {k: v.public_raw for k, v in enrolled.items()}
        allowed = {k: None if "*" in v.hosts else frozenset(v.hosts) for k, v in enrolled.items()}
        level0: list[bytes] = []
        seen_ids: dict[str, int] = {}
        for part in self._verified_leaves(size, keys):
            for index, lh, event_id, kid, host, problem in part:
                while len(level0) < index:  # a gap, already reported: keep positions aligned
                    level0.append(b"")
                level0.append(lh)
                if kid is None:
                    report.bad(index, f"leaf {index}: {problem}")
                    continue
                report.signatures += 1
                hosts = allowed[kid]
                if hosts is not None and host not in hosts:
                    report.bad(index, f"leaf {index}: signed by a key not enrolled for host {host}")
                if problem is not None:
                    report.bad(index, f"leaf {index}: {problem}")
                if event_id in seen_ids:
                    report.bad(
                        index,
                        f"leaf {index}: event {event_id} duplicates leaf {seen_ids[event_id]}",
                    )
                seen_ids[event_id] = index
            if progress is not None:
                progress(len(level0), size)
        levels = self._verify_nodes(level0, report)
        self._verify_checkpoints(levels, report)
        return report

    def _verified_leaves(self, size: int, keys: dict[str, bytes]) -> Iterator[list[VerifiedLeaf]]:
        """:func:`_verify_rows` over leaves [0, size) in index order, a chunk at a time.
        With several workers and a store they can open themselves, each worker reads its
        own chunks (nothing is copied between processes but the small results), with a
        bounded number of chunks in flight."""
        step = CHUNK * 2
        url = self.store.reader_url()
        if self.workers <= 1 or url is None or size <= step:
            rows: list[LeafRow] = []
            for row in self.store.leaves(0, size):
                rows.append(row)
                if len(rows) >= step:
                    yield _verify_rows(rows, keys)
                    rows = []
            if rows:
                yield _verify_rows(rows, keys)
            return
        if self._pool is None:
            self._pool = _worker_pool(self.workers)
        window: deque[Future[list[VerifiedLeaf]]] = deque()
        for lo in range(0, size, step):
            window.append(self._pool.submit(_verify_range, url, lo, min(lo + step, size), keys))
            if len(window) >= 4 * self.workers:
                yield window.popleft().result()
        while window:
            yield window.popleft().result()

    def _first_gap(self) -> int:
        expect = 0
        for row in self.store.leaves():
            if row.index != expect:
                return expect
            expect += 1
        return expect

    def _verify_nodes(self, level0: list[bytes], report: VerifyReport) -> list[list[bytes]]:
        """Compare every stored node with the tree rebuilt from the leaves; return the
        rebuilt levels."""
        levels: list[list[bytes]] = []
        level, current = 0, level0
        explained: list[int] = []  # leaf indices already reported, sorted

        def unexplained(first: int, end: int) -> bool:
            at = bisect.bisect_left(explained, first)
            return at == len(explained) or explained[at] >= end

        while current:
            explained = sorted(set(explained) | set(report.bad_leaves))
            levels.append(current)
            stored = dict(self.store.nodes_at_level(level))
            for i, h in enumerate(current):
                if stored.get(i) != h and unexplained(i << level, (i + 1) << level):
                    where = "leaf hash" if level == 0 else f"node ({level}, {i})"
                    report.bad(
                        i << level,
                        f"{where} stored for leaf {i << level} does not match the recomputed hash",
                    )
            for i in stored:
                if i >= len(current):  # reported at the first leaf past the end it claims
                    report.bad(
                        max(i << level, len(level0)),
                        f"node ({level}, {i}) lies beyond the log's end",
                    )
            current = [
                merkle.node_hash(current[i], current[i + 1]) for i in range(0, len(current) - 1, 2)
            ]
            level += 1
        for i, _ in self.store.nodes_at_level(level):  # the level above the top, or an empty log
            report.bad(
                max(i << level, len(level0)), f"node ({level}, {i}) lies beyond the log's end"
            )
            break
        return levels

    def _verify_checkpoints(self, levels: list[list[bytes]], report: VerifyReport) -> None:
        def read(keys: Sequence[tuple[int, int]]) -> dict[tuple[int, int], bytes]:
            return {(lv, i): levels[lv][i] for lv, i in keys}

        public = self.ledger_public_key()
        size = len(levels[0]) if levels else 0
        previous = 0
        for cp in self.store.checkpoints():
            report.checkpoints += 1
            if public is None:
                report.bad(previous, f"checkpoint {cp.size}: ledger has no public key")
                continue
            try:
                opened = open_checkpoint(cp.note, self.origin, public, origin=self.origin)
            except CheckpointError as e:
                report.bad(previous, f"checkpoint {cp.size}: {e}")
                continue
            if opened.size != cp.size or opened.root != cp.root:
                report.bad(
                    previous, f"checkpoint {cp.size}: stored size/root differ from its signed note"
                )
            if cp.size > size:
                report.bad(
                    size,
                    f"checkpoint {cp.size} covers more leaves than the "
                    f"log has ({size}): the log was truncated",
                )
            elif merkle.root(cp.size, read) != opened.root and not any(
                i < cp.size for i in report.bad_leaves
            ):  # a bad leaf below cp.size already explains the mismatch
                report.bad(
                    previous, f"checkpoint {cp.size}: recomputed root differs from the signed root"
                )
            previous = cp.size

    # -- queries ---------------------------------------------------------------------

    def jobs(self, selection: JobFilter | None = None) -> list[JobRow]:
        """Job index rows."""
        return self.store.jobs(selection or JobFilter())

    def resolve_job(self, job: str) -> JobRow:
        """The job run named ``job`` ("123", "100_4", "cluster/123#1"); latest run wins."""
        rows = self.store.jobs(JobFilter(job=job))
        if not rows:
            raise ReceiptError(f"no receipts for job {job} in this ledger")
        return max(rows, key=lambda r: (r.run, r.cluster))

    def job_events(self, row: JobRow) -> list[tuple[LeafRow, dict[str, object]]]:
        """The job run's leaves with their parsed events, in log order."""
        return [(leaf, open_envelope(leaf.envelope).event)
                for leaf in self.store.job_leaves(row.job_key)]  # fmt: skip


def open_ledger(config: Config, create: bool = False) -> Ledger:
    """The configured ledger (SQLite file or PostgreSQL URL). Only enrolling a key creates
    a ledger (``create``): nothing can be appended before a key is enrolled, so any other
    command that finds no ledger file was given the wrong path."""
    from computeproof.store import open_store

    return Ledger(
        open_store(config.db, create),
        config.ledger_origin or None,
        config.ledger_key,
        default_origin=config.origin,
    )
