"""The collector service without its HTTP layer: request authentication, ingest into
the ledger, the checkpoint loop, per-host rate limits and the read queries.

Threads and connections: ingest appends through one writer ledger, one batch at a time
(a lock: the ledger commits one batch after another anyway, and several collector
processes on one PostgreSQL database take turns through the store's append lock); the
checkpoint loop signs through a ledger of its own; each request thread reads through its
own ledger connection. A ledger whose store failed (PostgreSQL restarted) is reopened
for the next request.
"""

from __future__ import annotations

import base64
import logging
import threading
import time
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any

import orjson

from computeproof.anchors.periodic import (
    PeriodicAnchoring,
    check_anchor_config,
    configured_anchorer,
)
from computeproof.config import Config
from computeproof.envelope import open_envelope
from computeproof.errors import (
    CheckpointError,
    ComputeProofError,
    ReceiptError,
    StoreError,
)
from computeproof.event import utc_epoch
from computeproof.httpsig import NonceCache, RequestAuthError, SignedBy, verify_request
from computeproof.ledger import Ledger
from computeproof.privacy import check_opening
from computeproof.server.metrics import Metrics, reject_reason
from computeproof.store import open_store
from computeproof.store.interface import CheckpointRow, EnrolledKey

log = logging.getLogger("computeproof.serve")

KEY_CACHE_S = 2.0  # enrolled keys are re-read this often (a revocation applies within it)


class NotCheckpointed(ReceiptError):
    """The collector has signed no checkpoint (yet) that covers what was asked for."""


class CollectorLedger(Ledger):
    """A ledger whose reads never sign: receipts carry the newest checkpoint the
    checkpoint loop signed, so checkpoints are signed at most every N ms however many
    receipts are asked for."""

    def latest_checkpoint(self) -> CheckpointRow:
        """The newest signed checkpoint."""
        last = self.store.last_checkpoint()
        if last is None:
            raise NotCheckpointed("the collector has not signed a checkpoint yet; retry shortly")
        return last


@dataclass
class EnvelopeResult:
    """What became of one envelope of a batch."""

    status: str  # accepted, duplicate, rejected, untrusted
    event_id: str | None = None
    leaf_index: int | None = None
    reason: str | None = None


@dataclass
class Caller:
    """A request's verified signer: the enrolled key and the hosts it may speak for."""

    key: EnrolledKey
    signed: SignedBy

    @property
    def host_label(self) -> str:
        """The hosts the key is enrolled for, as one metric label."""
        return ",".join(self.key.hosts)


@dataclass
class _Bucket:
    tokens: float
    stamp: float


@dataclass
class _Cache:
    keys: dict[str, EnrolledKey] = field(default_factory=dict)
    stamp: float = float("-inf")


_KEYID = b'"keyid":"'


def envelope_key_id(envelope: bytes) -> str | None:
    """The key id an envelope names (None when it is not even JSON of that shape: the
    ledger then says exactly what is wrong)."""
    # the canonical envelope has one signature and one "keyid": read it in place
    at = envelope.find(_KEYID)
    if at >= 0 and envelope.count(_KEYID) == 1:
        end = at + len(_KEYID) + 64
        if envelope[end : end + 1] == b'"':
            kid = envelope[at + len(_KEYID) : end]
            return kid.decode("ascii") if kid.isascii() and kid.isalnum() else None
    try:
        kid = orjson.loads(envelope)["signatures"][0]["keyid"]
    except (orjson.JSONDecodeError, KeyError, IndexError, TypeError):
        return None
    return kid if isinstance(kid, str) else None


class Collector:
    """One collector process over the configured ledger."""

    def __init__(self, config: Config, workers: int | None = None) -> None:
        """Open the ledger named by ``config.db`` (it must exist: `computeproof keys enroll`
        creates it); ``workers`` signature-checking processes for large batches."""
        self.config = config
        self.workers = workers
        self._write_lock = threading.Lock()
        self._writer: CollectorLedger | None = self._open(workers)
        self._local = threading.local()
        self._readers: list[CollectorLedger] = []
        self._readers_lock = threading.Lock()
        self._generation = 0
        self._keys = _Cache()
        self._keys_lock = threading.Lock()
        self._buckets: dict[str, _Bucket] = {}
        self._bucket_lock = threading.Lock()
        self.nonces = NonceCache(config.serve_clock_window)
        self._nonce_lock = threading.Lock()
        self.metrics = Metrics(self._log_state)
        self._grew = threading.Event()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._checkpoint_problem: str | None = None
        self._anchor_thread: threading.Thread | None = None
        self._anchor_problem: str | None = None
        self.anchors_made: list[int] = []  # sizes this process anchored (for the log/tests)
        check_anchor_config(config)  # a one-line error at start, not one an interval later
        self.origin = self._writer.origin

    def _open(self, workers: int | None = 1) -> CollectorLedger:
        return CollectorLedger(
            open_store(self.config.db, create=False),
            self.config.ledger_origin or None,
            self.config.ledger_key,
            workers=workers,
            default_origin=self.config.origin,
        )

    # -- lifecycle -------------------------------------------------------------------

    def start(self) -> None:
        """Start the checkpoint loop, and the anchoring loop where the config names a
        registry (again, after :meth:`close`)."""
        if self._thread is None or not self._thread.is_alive():
            self._stop.clear()
            self._thread = threading.Thread(
                target=self._checkpoint_loop, name="checkpoints", daemon=True
            )
            self._thread.start()
        if self.config.anchor_target and (
            self._anchor_thread is None or not self._anchor_thread.is_alive()
        ):
            self._anchor_thread = threading.Thread(
                target=self._anchor_loop, name="anchoring", daemon=True
            )
            self._anchor_thread.start()

    def close(self) -> None:
        """Stop the checkpoint loop and close every ledger."""
        self._stop.set()
        self._grew.set()
        if self._thread is not None:
            self._thread.join(30)
        if self._anchor_thread is not None:
            self._anchor_thread.join(30)  # a transaction under way is waited for a while
        with self._write_lock:
            if self._writer is not None:
                self._writer.close()
                self._writer = None
        with self._readers_lock:
            # threads still hold their ledgers: a new generation makes them open new ones
            self._generation += 1
            for ledger in self._readers:
                ledger.close()
            self._readers.clear()

    # -- ledgers ---------------------------------------------------------------------

    @contextmanager
    def reader(self) -> Iterator[CollectorLedger]:
        """This thread's read-only ledger (reopened after a store failure)."""
        ledger: CollectorLedger | None = getattr(self._local, "ledger", None)
        if ledger is None or getattr(self._local, "generation", None) != self._generation:
            ledger = self._open()
            self._local.ledger = ledger
            with self._readers_lock:
                self._local.generation = self._generation
                self._readers.append(ledger)
        try:
            yield ledger
        except StoreError:
            self._local.ledger = None
            with self._readers_lock:
                if ledger in self._readers:
                    self._readers.remove(ledger)
            ledger.close()
            raise

    def _log_state(self) -> tuple[int, int | None, float | None]:
        with self.reader() as ledger:
            size = ledger.size()
            last = ledger.store.last_checkpoint()
        if last is None:
            return size, None, None
        return size, last.size, utc_epoch(last.created)

    # -- authentication --------------------------------------------------------------

    def enrolled(self) -> dict[str, EnrolledKey]:
        """Enrolled keys, re-read at most every KEY_CACHE_S seconds."""
        with self._keys_lock:
            now = time.monotonic()
            if now - self._keys.stamp > KEY_CACHE_S:
                with self.reader() as ledger:
                    self._keys = _Cache(ledger.store.enrolled(), now)
            return self._keys.keys

    def authenticate(self, method: str, path: str, query: str, headers: Any, body: bytes) -> Caller:
        """The enrolled, unrevoked host key that signed this request (RFC 9421), within
        its rate limit. Raises RequestAuthError (401) or RateLimited (429)."""
        keys = self.enrolled()

        def public_key(kid: str) -> bytes | None:
            k = keys.get(kid)
            return None if k is None or k.revoked is not None else k.public_raw

        try:
            with self._nonce_lock:
                signed = verify_request(
                    method, path, query, headers, body, public_key, self.nonces,
                    self.config.serve_clock_window,
                )  # fmt: skip
        except RequestAuthError as e:
            self.metrics.refused.labels(e.reason).inc()
            raise
        self._take_token(signed.key_id)
        return Caller(keys[signed.key_id], signed)

    def _take_token(self, key_id: str) -> None:
        rate = self.config.serve_rate_limit
        if rate <= 0:
            return
        with self._bucket_lock:
            now = time.monotonic()
            bucket = self._buckets.get(key_id)
            if bucket is None:
                bucket = self._buckets[key_id] = _Bucket(2.0 * rate, now)
            bucket.tokens = min(2.0 * rate, bucket.tokens + (now - bucket.stamp) * rate)
            bucket.stamp = now
            if bucket.tokens < 1:
                self.metrics.refused.labels("rate_limited").inc()
                raise RateLimited(
                    f"more than {rate} requests a second from key {key_id[:16]}...; slow down",
                    (1 - bucket.tokens) / rate,
                )
            bucket.tokens -= 1

    # -- ingest ----------------------------------------------------------------------

    def ingest(
        self,
        caller: Caller,
        envelopes: Sequence[bytes],
        openings: Sequence[dict[str, dict[str, object]] | None] | None = None,
    ) -> list[EnvelopeResult]:
        """Check and append a batch the caller sent; one result an envelope, in order.
        Each envelope must be signed by the caller's own key; openings must open the
        commitments they name."""
        results: list[EnvelopeResult | None] = [None] * len(envelopes)
        positions: list[int] = []
        for i, env in enumerate(envelopes):
            kid = envelope_key_id(env)
            problem = None
            if kid is not None and kid != caller.key.key_id:
                problem = (
                    f"envelope signed by key {kid[:16]}..., not signed by the sending host's "
                    f"key {caller.key.key_id[:16]}...: each host sends its own events"
                )
            elif openings is not None and i < len(openings) and openings[i]:
                problem = _check_openings(env, openings[i] or {})
            if problem is None:
                positions.append(i)
            else:
                results[i] = EnvelopeResult("rejected", reason=problem)
        batch = [envelopes[i] for i in positions]
        batch_openings = (
            [(openings[i] if i < len(openings) else None) or {} for i in positions]
            if openings is not None
            else None
        )
        if batch:
            started = time.perf_counter()
            outcome = self._append(batch, batch_openings)
            self.metrics.batch_seconds.observe(time.perf_counter() - started)
            for pos, eid, leaf in outcome.accepted:
                results[positions[pos]] = EnvelopeResult("accepted", eid, leaf)
            for pos, eid, leaf in outcome.duplicates:
                results[positions[pos]] = EnvelopeResult("duplicate", eid, leaf)
            for pos, reason in outcome.rejected:
                results[positions[pos]] = EnvelopeResult("rejected", reason=reason)
            for pos, reason in outcome.untrusted:
                results[positions[pos]] = EnvelopeResult("untrusted", reason=reason)
            if outcome.accepted:
                self._grew.set()
        out = [r if r is not None else EnvelopeResult("rejected", reason="not processed")
               for r in results]  # fmt: skip
        delivered = 0
        for r in out:
            self.metrics.events.labels(r.status).inc()
            if r.status in ("rejected", "untrusted"):
                self.metrics.rejects.labels(reject_reason(r.reason or "")).inc()
            else:
                delivered += 1
        if delivered:
            self.metrics.host_last_event.labels(caller.host_label).set(time.time())
        return out

    def _append(
        self, envelopes: list[bytes], openings: list[dict[str, dict[str, object]]] | None
    ) -> Any:
        with self._write_lock:
            if self._writer is None:
                self._writer = self._open(self.workers)
            try:
                return self._writer.append(envelopes, openings)
            except StoreError:
                # the store may be gone (PostgreSQL restarted): open it anew next time
                self._writer.close()
                self._writer = None
                raise

    def append_as_collector(self, envelopes: list[bytes]) -> Any:
        """Append envelopes the collector signed itself (the seed API's plain JSON)."""
        outcome = self._append(envelopes, None)
        if outcome.accepted:
            self._grew.set()
        return outcome

    # -- checkpoints -----------------------------------------------------------------

    def _checkpoint_loop(self) -> None:
        interval = max(self.config.serve_checkpoint_ms, 1) / 1000
        ledger: CollectorLedger | None = None
        last_signed = float("-inf")
        while not self._stop.is_set():
            # woken by an ingest; also on every interval, for other collector processes
            self._grew.wait(interval)
            if self._stop.is_set():
                break
            wait = last_signed + interval - time.monotonic()
            if wait > 0:
                self._stop.wait(wait)
                continue
            self._grew.clear()
            try:
                if ledger is None:
                    ledger = self._open()
                last = ledger.store.last_checkpoint()
                # another collector process on this database may have signed lately: the
                # interval holds for the ledger, not for each process
                since = None if last is None else utc_epoch(last.created)
                if since is not None and 0 <= time.time() - since < interval:
                    self._stop.wait(interval - (time.time() - since))
                    self._grew.set()  # look again then
                    continue
                if ledger.size() > (0 if last is None else last.size):
                    # decided again under the signing lock: another process may sign now
                    row = ledger.checkpoint(unless_signed_within=interval)
                    last_signed = time.monotonic()
                    self.metrics.checkpoints.inc()
                    log.debug("signed checkpoint %d", row.size)
                self._checkpoint_ok()
            except CheckpointError as e:
                # the anti-rollback rule refused: an alarm, not a hiccup
                self.metrics.checkpoint_failures.inc()
                self._checkpoint_failed(f"ALARM: refusing to sign a checkpoint: {e}")
            except ComputeProofError as e:
                self.metrics.checkpoint_failures.inc()
                self._checkpoint_failed(f"cannot sign a checkpoint: {e}")
                if ledger is not None:
                    ledger.close()
                    ledger = None
                self._stop.wait(interval)
        if ledger is not None:
            ledger.close()

    def _checkpoint_failed(self, message: str) -> None:
        if message != self._checkpoint_problem:
            log.error("%s", message)
            self._checkpoint_problem = message

    def _checkpoint_ok(self) -> None:
        if self._checkpoint_problem is not None:
            log.info("checkpoints are signed again")
            self._checkpoint_problem = None

    # -- anchoring ---------------------------------------------------------------------

    def _anchor_loop(self) -> None:
        """Anchor the newest checkpoint every ``anchor_interval`` seconds when the log grew
        (computeproof/anchors/periodic.py); failures are logged once, counted, retried."""
        interval = float(self.config.anchor_interval)
        idle = min(interval, 30.0)  # how soon a log that did not grow is looked at again
        periodic: PeriodicAnchoring | None = None
        ledger: CollectorLedger | None = None
        while not self._stop.is_set():
            wait = idle
            try:
                if periodic is None:
                    periodic = PeriodicAnchoring(
                        configured_anchorer(self.config), interval, self.config.ledger_key
                        + ".anchor.lock",
                    )  # fmt: skip
                if ledger is None:
                    ledger = self._open()
                record = periodic.due_anchor(ledger)
                if record is not None:
                    self.anchors_made.append(record.size)
                    self.metrics.anchors.inc()
                    log.info("anchored checkpoint %d (%s)", record.size, record.target)
                self._anchor_ok()
                wait = periodic.wait_s(ledger) or idle
            except NotCheckpointed:
                pass  # nothing signed yet: nothing to anchor
            except ComputeProofError as e:
                self.metrics.anchor_failures.inc()
                if self._anchor_problem != str(e):
                    log.error("cannot anchor a checkpoint (retrying every %g s): %s", idle, e)
                    self._anchor_problem = str(e)
                if ledger is not None and isinstance(e, StoreError):
                    ledger.close()
                    ledger = None
            self._stop.wait(wait)
        if periodic is not None:
            periodic.close()
        if ledger is not None:
            ledger.close()

    def _anchor_ok(self) -> None:
        if self._anchor_problem is not None:
            log.info("anchoring works again")
            self._anchor_problem = None


class RateLimited(ComputeProofError):
    """A host key sent more requests than its rate allows; retry after ``retry_after``."""

    def __init__(self, message: str, retry_after: float) -> None:
        super().__init__(message)
        self.retry_after = retry_after


def _check_openings(envelope: bytes, openings: dict[str, dict[str, object]]) -> str | None:
    """Why the openings sent with ``envelope`` do not open its commitments, or None."""
    if not isinstance(openings, dict):
        return "openings must be an object of field -> {salt, value}"
    try:
        payload = open_envelope(envelope).event["payload"]
    except ReceiptError as e:
        return str(e)
    for name, opening in openings.items():
        if not isinstance(opening, dict):
            return f"the opening of field {name!r} must be an object with salt and value"
        try:
            check_opening(payload.get(name), opening)
        except ReceiptError as e:
            return f"the opening of field {name!r} does not open its commitment: {e}"
    return None


def b64(data: bytes) -> str:
    """Standard base64 text."""
    return base64.b64encode(data).decode()
