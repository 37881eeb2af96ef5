"""The forwarder: signs spooled events with the host key and hands them to an event sink
(the ledger in-process, or the collector over HTTPS: computeproof.sink).

At least once: a spooled event is removed only after the ledger committed it (or holds
it already); the ledger's dedupe by event id makes delivery exactly once. An event the
ledger rejects moves to the spool's failed/ directory with the reason. A committed event
moves to forwarded/ for the retention period, named by its leaf index, and
:func:`replay_spool` sends those again, in log order, to a ledger restored from a backup.

Two forwarders of one spool (`computeproof forward` and the agent's) take turns on the
spool's forward.lock (flock: a killed forwarder's lock goes with it), so they never sign
and append the same events at the same time.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import logging
import os
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from computeproof.envelope import sign_event
from computeproof.errors import ComputeProofError, ConfigError, ReceiptError, SpoolError
from computeproof.event import check_event, utc_now
from computeproof.keys import Signer, load_signer
from computeproof.ledger import Ledger, open_ledger
from computeproof.privacy import commit_fields
from computeproof.sink import EventSink
from computeproof.spool import BATCH, Spool, read_events

if TYPE_CHECKING:
    from computeproof.config import Config


@dataclass
class ForwardResult:
    """Counts of one forwarding pass."""

    forwarded: int = 0
    duplicates: int = 0
    failed: int = 0
    untrusted: int = 0  # left in the spool: the host key is not enrolled (for that host)
    remaining: int = 0
    errors: list[str] = field(default_factory=list)


def forward_spool(
    spool: Spool,
    signer: Signer,
    sink: EventSink,
    private_fields: tuple[str, ...] = (),
    batch_size: int = 1000,
    progress: Callable[[int, int], None] | None = None,
    retention_s: float = 0,
) -> ForwardResult:
    """Drain ``spool`` into ``sink`` (the ledger, or the collector) in batches; return
    what happened. ``progress`` is told (event files handled, event files found) after
    each batch. Committed events are kept in forwarded/ for ``retention_s`` seconds (0:
    removed at once). A spool batch file (several events) is finished whole once all its
    events are committed; events of one the ledger did not take stay in new/ (untrusted)
    or go to failed/ (rejected) on their own."""
    result = ForwardResult()
    paths = list(spool.pending())
    start = 0
    while start < len(paths):
        if progress is not None and start:
            progress(start, len(paths))
        envelopes: list[bytes] = []
        openings: list[dict[str, dict[str, object]]] = []
        kept: list[tuple[str, int]] = []  # (file, line) of each envelope
        events: list[tuple[str, int, dict[str, object]]] = []
        spooled: dict[tuple[str, int], tuple[bytes, dict[str, object]]] = {}  # as read
        lines: dict[str, int] = {}  # events in each file read
        # files until batch_size events (a batch file holds many)
        while start < len(paths) and len(events) < batch_size:
            path = paths[start]
            start += 1
            try:
                found = [(data, check_event(json.loads(data))) for data in read_events(path)]
            except FileNotFoundError:
                continue  # forwarded by a concurrent forwarder
            except (ValueError, ReceiptError) as e:
                spool.fail(path, f"unreadable event: {e}")
                result.failed += 1
                result.errors.append(f"{os.path.basename(path)}: {e}")
                continue
            lines[path] = len(found)
            for line, (data, event) in enumerate(found):
                events.append((path, line, event))
                spooled[(path, line)] = (data, event)
        # file times are coarse; the hook's own timestamp orders the log
        events.sort(key=lambda pe: (str(pe[2]["time"]), str(pe[2]["id"])))
        refused: dict[tuple[str, int], str] = {}
        for path, line, event in events:
            payload = event["payload"]
            assert isinstance(payload, dict)
            try:
                committed, opened = commit_fields(
                    payload, private_fields, str(event["id"]), signer.salt_secret
                )
                envelopes.append(sign_event({**event, "payload": committed}, signer))
            except ReceiptError as e:  # e.g. a float in the payload: never signable
                refused[(path, line)] = f"cannot sign event: {e}"
                continue
            openings.append(opened)
            kept.append((path, line))
        outcome = None
        if envelopes:
            try:
                outcome = sink.append(envelopes, openings)
            except ReceiptError as e:  # ledger unreachable or locked: all stays spooled
                spool.record_forward_status(
                    f"{utc_now()} FAILED: {e}; {spool.count_pending()} events wait in the spool"
                )
                raise
        leaves: dict[tuple[str, int], int] = {}
        if outcome is not None:
            for pos, _, leaf in outcome.accepted:
                leaves[kept[pos]] = leaf
                result.forwarded += 1
            for pos, _, leaf in outcome.duplicates:
                leaves[kept[pos]] = leaf
                result.duplicates += 1
            for pos, reason in outcome.untrusted:
                result.untrusted += 1
                if len(result.errors) < 20:
                    name = os.path.basename(kept[pos][0])
                    result.errors.append(f"{name}: {reason} (left in spool)")
            for pos, reason in outcome.rejected:
                refused[kept[pos]] = reason
        for key, reason in refused.items():
            result.failed += 1
            result.errors.append(f"{os.path.basename(key[0])}: {reason}")
        for path, count in lines.items():
            _settle(spool, path, count, leaves, refused, spooled, retention_s)
    if progress is not None and paths:
        progress(len(paths), len(paths))
    spool.sweep_forwarded(retention_s, time.time())
    result.remaining = spool.count_pending()
    spool.record_forward_status(
        f"{utc_now()} forwarded {result.forwarded}, duplicates {result.duplicates}, "
        f"rejected {result.failed}, waiting {result.remaining}"
        + (
            f"; {result.untrusted} wait because: {outcome_reason(result)}"
            if result.untrusted
            else ""
        )
    )
    return result


def _settle(
    spool: Spool,
    path: str,
    count: int,
    leaves: dict[tuple[str, int], int],
    refused: dict[tuple[str, int], str],
    spooled: dict[tuple[str, int], tuple[bytes, dict[str, object]]],
    retention_s: float,
) -> None:
    """Finish one spool file after a pass: committed (kept or removed), rejected (to
    failed/), or left waiting. A batch whose events did not all fare alike is split:
    those still waiting are written to new/ as a batch of their own first, so a crash
    at any point leaves every event somewhere (at worst twice: the ledger dedupes)."""
    keys = [(path, line) for line in range(count)]
    done = [k for k in keys if k in leaves]
    try:
        if not path.endswith(BATCH):
            if done:
                _finish(spool, path, [leaves[keys[0]]], retention_s)
            elif keys[0] in refused:
                spool.fail(path, refused[keys[0]])
            return  # else waiting (untrusted, or not sent): stays in new/
        if len(done) == count:
            _finish(spool, path, [leaves[k] for k in keys], retention_s)
            return
        if not done and not any(k in refused for k in keys):
            return  # the whole batch waits as it is
        # named apart from this file (fewer events than it holds), so never over it
        rest = [k for k in keys if k not in leaves and k not in refused]
        if rest:
            name = f"{spooled[rest[0]][1]['id']}+{len(rest)}"
            spool.write_batch([spooled[k][1] for k in rest], name=name)
        for k in keys:
            if k in refused:
                data, event = spooled[k]
                spool.fail_event(str(event["id"]), data, refused[k])
        if done and retention_s > 0:
            name = f"{spooled[done[0]][1]['id']}+{len(done)}.done"
            kept = spool.write_batch([spooled[k][1] for k in done], name=name)
            _finish(spool, kept, [leaves[k] for k in done], retention_s)
        spool.done(path)
    except OSError as e:
        raise SpoolError(f"cannot settle {path} after forwarding: {e}") from e


def _finish(spool: Spool, path: str, leaves: list[int], retention_s: float) -> None:
    """A committed spool file: kept in forwarded/ (a batch with its leaves), or removed."""
    if retention_s <= 0:
        spool.done(path)
    elif path.endswith(BATCH):
        spool.keep(path, min(leaves), leaves)
    else:
        spool.keep(path, leaves[0])


@dataclass
class ReplayResult:
    """Counts of one replay of forwarded events."""

    found: int = 0  # kept in forwarded/ since the given time
    appended: int = 0  # the restored log lacked them
    present: int = 0  # the restored log holds them already
    refused: int = 0
    size: int = 0  # the log's size after the replay
    # why the log still does not extend the last checkpoint signed; None: it does again
    rollback: str | None = None
    errors: list[str] = field(default_factory=list)


def replay_spool(
    spool: Spool,
    signer: Signer,
    ledger: Ledger,
    since: float,
    private_fields: tuple[str, ...] = (),
    batch_size: int = 1000,
    progress: Callable[[int, int], None] | None = None,
) -> ReplayResult:
    """Send the events forwarded at or after POSIX time ``since`` again, in the order the
    ledger first logged them, to a ledger restored from a backup. The ledger dedupes by
    event id, so what the backup holds is a no-op and the rest is appended once; signing is
    deterministic (Ed25519, and commitment salts derived from the host key), so with the
    same host key and private fields each envelope is byte for byte the one first logged,
    and a log fed by this one spool grows back to the very tree it had."""
    result = ReplayResult()
    found = spool.forwarded_events_since(since)
    result.found = len(found)
    for start in range(0, len(found), batch_size):
        if progress is not None and start:
            progress(start, len(found))
        envelopes: list[bytes] = []
        openings: list[dict[str, dict[str, object]]] = []
        names: list[str] = []
        for name, data in found[start : start + batch_size]:
            try:
                event = check_event(json.loads(data))
                payload = event["payload"]
                assert isinstance(payload, dict)
                committed, opened = commit_fields(
                    payload, private_fields, str(event["id"]), signer.salt_secret
                )
                envelopes.append(sign_event({**event, "payload": committed}, signer))
            except (ValueError, ReceiptError) as e:
                result.refused += 1
                result.errors.append(f"{name}: {e}")
                continue
            openings.append(opened)
            names.append(name)
        if not envelopes:
            continue
        outcome = ledger.append(envelopes, openings, replay=True)
        result.appended += len(outcome.accepted)
        result.present += len(outcome.duplicates)
        for pos, reason in outcome.rejected + outcome.untrusted:
            result.refused += 1
            if len(result.errors) < 20:
                result.errors.append(f"{names[pos]}: {reason}")
    if progress is not None and found:
        progress(len(found), len(found))
    result.size = ledger.size()
    result.rollback = ledger.rollback_problem()
    return result


def outcome_reason(result: ForwardResult) -> str:
    """The first reason events were left in the spool."""
    return next((e for e in result.errors if e.endswith("(left in spool)")), "")


@contextlib.contextmanager
def forward_lock(spool: Spool, wait: bool = True) -> Iterator[bool]:
    """Hold the spool's forward lock; yields False (and holds nothing) when ``wait`` is
    False and another forwarder has it."""
    spool.ensure()
    try:
        fd = os.open(os.path.join(spool.path, "forward.lock"), os.O_RDWR | os.O_CREAT, 0o600)
    except OSError as e:
        raise SpoolError(f"cannot open {spool.path}/forward.lock: {e.strerror}") from e
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | (0 if wait else fcntl.LOCK_NB))
        except BlockingIOError:
            yield False
            return
        yield True
    finally:
        os.close(fd)  # releases the lock


def forward_configured(
    config: Config, wait: bool = True, progress: Callable[[int, int], None] | None = None
) -> ForwardResult | None:
    """One forwarding pass of the configured spool, signed with the host key, into the
    collector when ``collector_url`` is set, else into the configured ledger; None when
    ``wait`` is False and another forwarder is at work."""
    spool = Spool(config.spool_dir)
    with forward_lock(spool, wait) as held:
        if not held:
            return None
        signer = load_signer(config.host_key)
        if config.collector_url:  # a node of a cluster: post to the collector
            try:
                from computeproof.httpsink import HttpSink
            except ImportError as e:
                raise ConfigError(
                    f"collector_url is set, but posting to it needs httpx ({e}): "
                    "pip install 'computeproof[server]'"
                ) from e

            with HttpSink(
                config.collector_url,
                signer,
                config.collector_ca or None,
                float(config.collector_timeout),
            ) as sink:
                return forward_spool(
                    spool,
                    signer,
                    sink,
                    config.private_fields,
                    progress=progress,
                    retention_s=config.forward_retention_days * 86400,
                )
        with open_ledger(config) as ledger:
            return forward_spool(
                spool,
                signer,
                ledger,
                config.private_fields,
                progress=progress,
                retention_s=config.forward_retention_days * 86400,
            )


class LoggedForwarder:
    """Forwarding passes of the configured spool for a long-lived process (the agent, the
    controller's collector): a failure is logged once, until it ends, and the events wait
    in the spool for the next pass; a pass another forwarder holds the spool for is
    skipped, not waited for."""

    def __init__(self, config: Config, log: logging.Logger) -> None:
        self.config = config
        self.log = log
        self._problem: str | None = None  # the failure last logged, until it ends
        # httpx logs every request at INFO: a line a second per forwarder, no news
        logging.getLogger("httpx").setLevel(logging.WARNING)

    def once(self) -> ForwardResult | None:
        """One pass; None when it failed or another forwarder was at work."""
        try:
            result = forward_configured(self.config, wait=False)
        except ComputeProofError as e:
            if str(e) != self._problem:
                self.log.warning("forwarding failed, events wait in the spool: %s", e)
                self._problem = str(e)
            return None
        if result is None:
            return None
        if self._problem is not None:
            self.log.info("forwarding works again: %s", self._problem)
            self._problem = None
        if result.forwarded or result.failed or result.untrusted:
            self.log.info(
                "forwarded %d, duplicates %d, rejected %d, waiting %d",
                result.forwarded, result.duplicates, result.failed, result.remaining,
            )  # fmt: skip
        return result


def replay_configured(
    config: Config, since: float, progress: Callable[[int, int], None] | None = None
) -> ReplayResult:
    """:func:`replay_spool` of the configured spool into the configured ledger, holding
    the spool's forward lock (no forwarding pass interleaves with the replay)."""
    if config.collector_url:
        raise ConfigError(
            "a replay goes into the ledger itself, not through the collector: run it with "
            "db set to the ledger's PostgreSQL URL and collector_url empty (--config)"
        )
    spool = Spool(config.spool_dir)
    with forward_lock(spool) as _:
        signer = load_signer(config.host_key)
        with open_ledger(config) as ledger:
            return replay_spool(
                spool, signer, ledger, since, config.private_fields, progress=progress
            )
