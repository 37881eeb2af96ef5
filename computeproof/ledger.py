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
import os
import time
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
    ProofError,
    ReceiptError,
    RollbackError,
    SignatureError,
    StoreConflict,
    StoreError,
    UnknownKeyError,
)
from computeproof.event import job_key, utc_epoch, utc_now
from computeproof.jobindex import apply_event, index_payload, new_row
from computeproof.keys import Signer, format_public_key, key_id, parse_public_key
from computeproof.lastsigned import RESTORE_HINT, LastSigned, state_path
from computeproof.sink import AppendResult
from computeproof.store import read_leaves
from computeproof.store.interface import (
    CheckpointRow,
    EnrolledKey,
    JobFilter,
    JobRow,
    LeafRow,
    Store,
)
from computeproof.workers import process_pool

if TYPE_CHECKING:
    from computeproof.config import Config
    from computeproof.witness.client import WitnessEndpoint

PARALLEL_THRESHOLD = 512  # below this a batch is checked in-process (no IPC overhead)
CHUNK = 256
COMMIT_ATTEMPTS = 20  # another writer's appends make a commit start again (see _complete)
EXCLUSIVE_AFTER = 3  # conflicts after which a commit holds the other writers off

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
class VerifyReport:
    """The result of re-checking a whole ledger."""

    size: int
    ok: bool = True
    first_bad_index: int | None = None
    problems: list[str] = field(default_factory=list)
    checkpoints: int = 0
    signatures: int = 0
    bad_leaves: list[int] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)  # facts that are no problem
    warnings: list[str] = field(default_factory=list)  # around the log, not in it

    # the job index rows folded from the verified events (`ledger reindex` writes them)
    jobs: dict[str, JobRow] = field(default_factory=dict, repr=False)
    index_problems: int = 0

    def bad(self, index: int, problem: str) -> None:
        """Record a problem at a leaf index."""
        self.bad_leaves.append(index)
        self.ok = False
        if self.first_bad_index is None or index < self.first_bad_index:
            self.first_bad_index = index
        if len(self.problems) < 50:
            self.problems.append(problem)

    def alarm(self, problem: str) -> None:
        """Record a problem outside the log itself (a witness refused its checkpoint)."""
        self.ok = False
        if len(self.problems) < 50:
            self.problems.append(problem)

    def bad_index(self, problem: str) -> None:
        """Record a job index row that the receipts do not give (derived data)."""
        self.ok = False
        self.index_problems += 1
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


IndexFacts = tuple[str, str, str, int, int, str, dict[str, object]]
"""What the job index folds from one event: (job key, cluster, display id, job id, run,
type, :func:`jobindex.index_payload`)."""

VerifiedLeaf = tuple[int, bytes, str, "str | None", "str | None", "str | None", "IndexFacts | None"]
"""(index, leaf hash, event id column, key id, signed host, problem, index facts): key id
and facts None when the envelope was refused (problem says why)."""


def _verify_rows(rows: Sequence[LeafRow], keys: dict[str, bytes]) -> list[VerifiedLeaf]:
    """Check stored leaves: signature, envelope, and the index columns against the event;
    keep what the job index folds from each, to check the index against the receipts."""
    out: list[VerifiedLeaf] = []
    checked = _check_envelopes([r.envelope for r in rows], keys)
    for row, c in zip(rows, checked, strict=True):
        if type(c) is Refused:
            out.append((row.index, merkle.leaf_hash(row.envelope), row.event_id, None, None,
                        c.reason, None))  # fmt: skip
            continue
        assert type(c) is Checked
        same = (row.event_id, row.job_key, row.type, row.host, row.time) == (
            c.event_id, c.job_key, c.type, c.host, c.time)  # fmt: skip
        out.append((row.index, c.leaf_hash, row.event_id, c.key_id, c.host,
                    None if same else "index columns do not match the signed event",
                    (c.job_key, c.cluster, c.job, c.job_id, c.run, c.type,
                     c.index_fields)))  # fmt: skip
    return out


def _verify_range(url: str, start: int, stop: int, keys: dict[str, bytes]) -> list[VerifiedLeaf]:
    """Worker: read leaves [start, stop) through ``url`` and check them."""
    return _verify_rows(read_leaves(url, start, stop), keys)


def _worker_pool(workers: int) -> ProcessPoolExecutor:
    """The ledger's signature-checking pool (computeproof.workers: never a fork of a
    multi-threaded process)."""
    return process_pool(workers, preload=[__name__])


class Ledger:
    """One transparency log of signed job events; the in-process :class:`EventSink`
    (computeproof.sink) a forwarder on the ledger's host appends to."""

    def __init__(
        self,
        store: Store,
        origin: str | None,
        ledger_key_path: str | None = None,
        workers: int | None = None,
        default_origin: str = "computeproof.ledger",
        witnesses: Sequence[WitnessEndpoint] = (),
    ) -> None:
        """Open a ledger. ``origin`` pins the log's identity (an existing ledger with
        another origin is refused); None takes the stored one, or ``default_origin``
        for a new ledger. Each new checkpoint is submitted to ``witnesses``."""
        self.store = store
        self.witnesses = list(witnesses)
        self.ledger_key_path = ledger_key_path
        # the last checkpoint signed, beside the key: a restored database cannot undo it
        self.last_signed = LastSigned(state_path(ledger_key_path)) if ledger_key_path else None
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
        replay: bool = False,
    ) -> AppendResult:
        """Verify and append a batch of envelopes; see the module docstring for dedupe.

        A log smaller than the last checkpoint this ledger signed was rolled back (an older
        backup in place of the ledger file): appending there would fork it for good, so
        only a ``replay`` of what was forwarded since the backup may append (RollbackError
        otherwise)."""
        if not replay:
            self._refuse_if_behind()
        return self._complete(envelopes, openings, *self._submit(envelopes))

    def append_stream(
        self,
        batches: Iterable[tuple[Sequence[bytes], Sequence[dict[str, dict[str, object]]] | None]],
        replay: bool = False,
    ) -> Iterator[AppendResult]:
        """Append (envelopes, openings) batches in order, one result each. The next batch's
        signatures are checked by the workers while this process commits the current one."""
        if not replay:
            self._refuse_if_behind()
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
        # the log's size before its first dedupe lookup: the commit expects that size, so
        # an event another writer appends after the lookup makes it a conflict (and a
        # recheck), never a second copy refused by the store
        start: int | None = None
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
            if start is None and candidates:
                start = self.store.size()
            fresh += self._not_stored(envelopes, candidates, result)
        for attempt in range(1, COMMIT_ATTEMPTS + 1):
            # after a few lost races for the log's end (busy collectors on one database),
            # recheck and commit with the other writers held off, so this batch gets in
            hold = self.store.exclusive() if attempt > EXCLUSIVE_AFTER else contextlib.nullcontext()
            try:
                with hold:
                    if attempt > 1:
                        # another writer appended since this batch read the log: what it
                        # added may include some of these events, so check them again
                        start = self.store.size()
                        fresh = self._not_stored(envelopes, fresh, result)
                    if fresh:
                        assert start is not None
                        result.accepted += self._commit(envelopes, fresh, openings, start)
                break
            except StoreConflict:
                if attempt == COMMIT_ATTEMPTS:
                    raise
        # dedupe within the batch points at the leaf the first copy got (appended now, or
        # found in the log already)
        placed = {eid: leaf for _, eid, leaf in (*result.accepted, *result.duplicates) if leaf >= 0}
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
        start: int,
    ) -> list[tuple[int, str, int]]:
        """Append ``fresh`` at the end of the log, which had ``start`` leaves when they were
        found not stored, in one transaction; return (position, event id, leaf index) of
        each. Raises StoreConflict, changing nothing, when another writer appended since."""
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

    def checkpoint(self, unless_signed_within: float = 0.0) -> CheckpointRow:
        """Sign a checkpoint at the current size (or return the one already at it).

        Refuses when the log no longer matches the last checkpoint in the database, or does
        not extend the last one this ledger signed (kept beside its key: RollbackError): a
        ledger never signs two inconsistent checkpoints. Reads one snapshot, so that
        another process appending and signing meanwhile is not taken for a log that shrank.
        With ``unless_signed_within`` (seconds), the last checkpoint is returned instead if
        it was signed that recently: decided under the signing lock, so that processes
        sharing the ledger key keep one interval between them.
        """
        signer = self.signer()
        lock = self.last_signed.locked() if self.last_signed else contextlib.nullcontext()
        with lock:
            row = self._signed_within(unless_signed_within) or self._sign(signer)
        if self.witnesses:
            from computeproof.witness.client import submit_checkpoint

            submit_checkpoint(self, row, self.witnesses)
        return row

    def witness_statements(self, names: Iterable[str]) -> list[dict[str, str]]:
        """The log key statements kept from these witnesses (witness/logkey.py)."""
        from computeproof.witness.client import STATEMENT_KEY

        out = []
        for name in sorted(set(names)):
            text = self.store.get_meta(STATEMENT_KEY + name)
            if text:
                out.append(json.loads(text))
        return out

    def _signed_within(self, seconds: float) -> CheckpointRow | None:
        """The last checkpoint if it was signed less than ``seconds`` ago."""
        if seconds <= 0:
            return None
        last = self.store.last_checkpoint()
        signed = None if last is None else utc_epoch(last.created)
        return last if signed is not None and 0 <= time.time() - signed < seconds else None

    def _sign(self, signer: Signer) -> CheckpointRow:
        with self.store.snapshot():
            size = self.size()
            last = self.store.last_checkpoint()
            last_size = 0
            if last is not None:
                if last.size > size or self.root(last.size) != last.root:
                    self._check_extends_last_signed(size, None, signer)  # the likelier cause
                    raise CheckpointError(
                        f"the log no longer matches checkpoint {last.size}: refusing to "
                        "sign; run `computeproof ledger verify`"
                    )
                if last.size == size:
                    head = self._check_extends_last_signed(size, last.root, signer)
                    if self.last_signed is not None and (head is None or head.size < size):
                        # adopt it (a ledger from before this file existed, or a crash
                        # between the database's commit and this file's write)
                        open_checkpoint(last.note, self.origin, signer.public_raw, self.origin)
                        self.last_signed.write(last.note)
                    return last
                last_size = last.size
            root = self._root_from_envelopes(last_size, size)
            self._check_extends_last_signed(size, root, signer)
        note = sign_checkpoint(Checkpoint(self.origin, size, root), self.origin, signer.private_key)
        if self.last_signed is not None:  # before the note can leave this process
            self.last_signed.write(note)
        row = CheckpointRow(size, root, note, utc_now())
        self.store.add_checkpoint(row)
        return row

    def _check_extends_last_signed(
        self, size: int, root: bytes | None, signer: Signer
    ) -> Checkpoint | None:
        """Raise RollbackError unless the log of ``size`` leaves and ``root`` (None: not
        known, only the size is checked) extends the last checkpoint this ledger signed;
        return that checkpoint (None when it never signed one)."""
        if self.last_signed is None:
            return None
        got = self.last_signed.read()
        if got is None:
            return None
        head, note = got
        where = self.last_signed.path
        try:
            open_checkpoint(note, self.origin, signer.public_raw, origin=self.origin)
        except CheckpointError as e:
            raise RollbackError(
                f"the last checkpoint signed with this ledger key ({where}) is not this log's "
                f"({e}): the ledger file was replaced by another ledger's, or the key signs "
                f"for two logs; put the right ledger file back, or give each log its own "
                "ledger_key"
            ) from e
        problem = self._not_extending(head, size, root)
        if problem is not None:
            raise RollbackError(f"{problem} (kept in {where}); refusing to sign; {RESTORE_HINT}")
        return head

    def _not_extending(self, head: Checkpoint, size: int, root: bytes | None) -> str | None:
        """Why the log (``size``, ``root``) does not extend the signed ``head``, or None."""
        if size < head.size:
            return (
                f"the log was rolled back or replaced: it has {size} leaves, but this ledger "
                f"signed a checkpoint of {head.size} leaves"
            )
        if root is None or head.size == 0:
            return None
        if size == head.size:
            if root != head.root:
                return (
                    f"the log was replaced: its root at {size} leaves is not the root of the "
                    "checkpoint of that size this ledger signed"
                )
            return None
        try:
            proof = self.consistency_proof(head.size, size)
            merkle.verify_consistency(head.size, size, proof, head.root, root)
        except (ProofError, StoreError) as e:
            return (
                f"the log was replaced: it does not extend the checkpoint of {head.size} "
                f"leaves this ledger signed ({e})"
            )
        return None

    def rollback_problem(self) -> str | None:
        """Why the log does not extend the last checkpoint this ledger signed (kept beside
        its key), or None when it does or there is none (the root from the stored tree)."""
        if self.last_signed is None:
            return None
        got = self.last_signed.read()
        if got is None:
            return None
        with self.store.snapshot():
            size = self.size()
            root = self.root(size) if size >= got[0].size and got[0].size else None
            return self._not_extending(got[0], size, root)

    def _refuse_if_behind(self) -> None:
        """RollbackError when the log is smaller than the last checkpoint signed. Only a
        readable file counts: a forwarder on a host without the ledger key's directory
        cannot see it, and signing checks again anyway."""
        if self.last_signed is None:
            return
        try:
            got = self.last_signed.read()
        except CheckpointError:
            return
        if got is None:
            return
        size = self.store.size()
        if size < got[0].size:
            raise RollbackError(
                f"the log was rolled back: it has {size} leaves, but this ledger signed a "
                f"checkpoint of {got[0].size} leaves (kept in {self.last_signed.path}); "
                "refusing to append anything but a replay, which would fork the log for "
                f"good; {RESTORE_HINT}"
            )

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
        last = self.store.last_checkpoint()
        if last is not None and last.size == self.size():
            return last
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

    def verify(self, progress: Progress | None = None, backup: bool = False) -> VerifyReport:
        """Re-hash every leaf, re-check every signature, rebuild the tree, check every
        checkpoint, and that the log extends the last checkpoint this ledger signed (kept
        beside its key; ``backup``: this is a copy, so being smaller than it is expected).
        Reports the first bad leaf index. Checks the log as it was when the check began,
        while forwarders go on appending (they add only rows past it)."""
        # read before the snapshot: it then covers every leaf the file's checkpoint does,
        # while a process signing a newer one meanwhile is not taken for a rollback
        head: tuple[Checkpoint, str] | CheckpointError | None = None
        if self.last_signed is not None:
            try:
                head = self.last_signed.read()
            except CheckpointError as e:
                head = e
        with self.store.snapshot():
            return self._verify_snapshot(progress, backup, head)

    def _verify_snapshot(
        self,
        progress: Progress | None,
        backup: bool = False,
        head: tuple[Checkpoint, str] | CheckpointError | None = None,
    ) -> VerifyReport:
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
        jobs = report.jobs
        for part in self._verified_leaves(size, keys):
            for index, lh, event_id, kid, host, problem, facts in part:
                while len(level0) < index:  # a gap, already reported: keep positions aligned
                    level0.append(b"")
                level0.append(lh)
                if kid is None or facts is None:
                    report.bad(index, f"leaf {index}: {problem}")
                    continue
                # fold the job index from the verified events, as ingest does
                jk, cluster, job, job_id, run, etype, fields = facts
                row = jobs.get(jk)
                if row is None:
                    row = jobs[jk] = new_row(cluster, job, job_id, run)
                apply_event(row, etype, str(host), fields, index, job)
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
        self._verify_last_signed(levels, report, backup, head)
        self._verify_job_index(report)
        if self.witnesses:
            from computeproof.witness.client import alarms

            for alarm in alarms(self, self.witnesses):
                report.alarm(alarm)
        return report

    def _verify_job_index(self, report: VerifyReport) -> None:
        """Every job index row must be the one its verified events fold to: the index is
        derived data, and `jobs list`, `jobs show` and reports read it."""
        folded = report.jobs
        stored = self.store.job_keys()
        hint = "; rebuild the index from the receipts with `computeproof ledger reindex`"
        for jk in sorted(set(stored) - set(folded)):
            report.bad_index(f"job index row {jk} has no receipts in the log{hint}")
        keys = sorted(folded)
        for i in range(0, len(keys), 500):
            rows = self.store.get_jobs(keys[i : i + 500])
            for jk in keys[i : i + 500]:
                row = rows.get(jk)
                if row is None:
                    report.bad_index(f"job {jk} has receipts but no job index row{hint}")
                    continue
                differs = job_row_differences(row, folded[jk])
                if differs:
                    report.bad_index(f"job index row {jk}: {'; '.join(differs)}{hint}")

    def _verify_last_signed(
        self,
        levels: list[list[bytes]],
        report: VerifyReport,
        backup: bool,
        got: tuple[Checkpoint, str] | CheckpointError | None,
    ) -> None:
        """The log must extend the last checkpoint this ledger signed (a rolled-back or
        replaced ledger file is otherwise sound in itself)."""
        if self.last_signed is None or got is None:
            return
        if isinstance(got, CheckpointError):
            report.warnings.append(str(got))
            return
        where = self.last_signed.path
        head, note = got
        size = len(levels[0]) if levels else 0
        public = self.ledger_public_key()
        try:
            if public is None:
                raise CheckpointError("this ledger file has no ledger key")
            open_checkpoint(note, self.origin, public, origin=self.origin)
        except CheckpointError as e:
            report.bad(0, f"the last checkpoint this ledger key signed ({where}) is not this "
                          f"log's: {e}; the ledger file was replaced")  # fmt: skip
            return
        if size < head.size:
            if backup:
                report.notes.append(
                    f"this copy has {size} leaves; the ledger has since signed a checkpoint "
                    f"of {head.size} leaves ({where})"
                )
                return
            report.bad(size, f"the log was rolled back or replaced: it has {size} leaves, but "
                             f"this ledger signed a checkpoint of {head.size} leaves (kept in "
                             f"{where}); {RESTORE_HINT}")  # fmt: skip
            return

        def read(keys: Sequence[tuple[int, int]]) -> dict[tuple[int, int], bytes]:
            return {(lv, i): levels[lv][i] for lv, i in keys}

        if (
            head.size
            and merkle.root(head.size, read) != head.root
            and not any(i < head.size for i in report.bad_leaves)
        ):
            report.bad(0, f"the log was replaced: its first {head.size} leaves do not give the "
                          f"root of the checkpoint of that size this ledger signed ({where}); "
                          f"{RESTORE_HINT}")  # fmt: skip

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

    def reindex(self, progress: Progress | None = None) -> tuple[VerifyReport, int]:
        """Rebuild the job index from the verified receipts: verify the whole log, then,
        when no leaf, tree or checkpoint problem was found (a damaged log is not indexed
        over), replace every index row with the rows its events fold to. Returns the
        verification and the number of index problems fixed (0: none, or refused)."""
        with self.store.snapshot():
            report = self._verify_snapshot(progress)
        if report.bad_leaves or not report.index_problems:
            return report, 0
        self.store.replace_jobs(report.size, list(report.jobs.values()))
        return report, report.index_problems

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


def job_row_differences(stored: JobRow, folded: JobRow) -> list[str]:
    """How a job index row differs from the row its receipts fold to, one phrase a field
    ("gpus is 8 in the index, the receipts give 1")."""
    out = []
    for name in JobRow.__dataclass_fields__:
        have, want = getattr(stored, name), getattr(folded, name)
        if have != want:
            out.append(f"{name} is {have!r} in the index, the receipts give {want!r}")
    return out


def open_ledger(config: Config, create: bool = False) -> Ledger:
    """The configured ledger (SQLite file or PostgreSQL URL). Only enrolling a key creates
    a ledger (``create``): nothing can be appended before a key is enrolled, so any other
    command that finds no ledger file was given the wrong path."""
    from computeproof.store import open_store
    from computeproof.witness.client import parse_witness_entry

    witnesses = [parse_witness_entry(w) for w in config.witnesses]
    return Ledger(
        open_store(config.db, create),
        config.ledger_origin or None,
        config.ledger_key,
        default_origin=config.origin,
        witnesses=witnesses,
    )
