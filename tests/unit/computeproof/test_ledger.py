"""Tests of computeproof/ledger.py: append, dedupe, proofs, checkpoints, verify, and
tampering with the SQLite file behind the ledger's back."""

from __future__ import annotations

import gc
import multiprocessing
import os
import shutil
import sqlite3
import tempfile
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from computeproof import ledger as ledger_module
from computeproof import merkle
from computeproof.checkpoint import open_checkpoint
from computeproof.envelope import sign_event
from computeproof.errors import (
    CheckpointError,
    KeyError_,
    ProofError,
    ReceiptError,
    SignatureError,
    StoreError,
)
from computeproof.keys import Signer, format_public_key, write_key
from computeproof.ledger import PARALLEL_THRESHOLD, Ledger
from computeproof.privacy import commit_fields
from computeproof.store.interface import CheckpointRow
from computeproof.store.sqlite import SQLiteStore

ORIGIN = "computeproof.test.ledger"
HOSTS = ("ctl", "node1", "node2")
Sign = Callable[..., list[bytes]]


def _open(
    db: Path | str, key: Path | str | None = None, origin: str = ORIGIN, workers: int = 1
) -> Ledger:
    return Ledger(SQLiteStore(str(db)), origin, None if key is None else str(key), workers)


# -- enrollment and append ---------------------------------------------------------------


def test_enroll(ledger: Ledger, other_signer: Signer) -> None:
    key = ledger.enroll(format_public_key(other_signer.public_raw), ["node9"])
    assert key.key_id == other_signer.key_id and key.hosts == ("node9",)
    assert ledger.store.enrolled()[key.key_id].public_raw == other_signer.public_raw
    with pytest.raises(SignatureError, match="name the hosts"):
        ledger.enroll(other_signer.public_raw, [])
    with pytest.raises(KeyError_):
        ledger.enroll("ed25519:AAAA", ["x"])


def test_origin_is_fixed(tmp_path: Path) -> None:
    _open(tmp_path / "l.db").close()
    with pytest.raises(CheckpointError, match="origin"):
        _open(tmp_path / "l.db", origin="another.origin")


def test_append_accepts_in_order(ledger: Ledger, make_lifecycle: Callable, sign_all: Sign) -> None:
    envs = sign_all(make_lifecycle())
    r = ledger.append(envs)
    assert [(p, leaf) for p, _, leaf in r.accepted] == [(i, i) for i in range(len(envs))]
    assert r.duplicates == [] and r.rejected == []
    assert ledger.size() == len(envs)
    assert [row.envelope for row in ledger.store.leaves()] == envs
    assert ledger.root() == merkle.root_from_leaf_hashes([merkle.leaf_hash(e) for e in envs])
    assert ledger.append([]).accepted == []


def test_job_index_and_queries(ledger: Ledger, make_lifecycle: Callable, sign_all: Sign) -> None:
    ledger.append(sign_all(make_lifecycle("100", nodes=("node1", "node2"))))
    ledger.append(sign_all(make_lifecycle("101", user="bob", state="FAILED")))
    rows = {r.job: r for r in ledger.jobs()}
    assert set(rows) == {"100", "101"}
    row = rows["100"]
    assert (row.user, row.account, row.state, row.gpus) == ("alice", "physics", "COMPLETED", 4)
    assert row.nodes == "node1,node2" and row.events == 8
    assert row.fields["gpu_totals"]["busy_gpu_ms"] == 2 * 3_600_000  # type: ignore[index]
    assert rows["101"].state == "FAILED" and rows["101"].user == "bob"
    assert ledger.resolve_job("101").job_key == "c1/101#0"
    with pytest.raises(ReceiptError, match="no receipts for job 999"):
        ledger.resolve_job("999")
    events = ledger.job_events(row)
    assert next(e["type"] for _, e in events) == "scheduled"
    assert [leaf.index for leaf, _ in events] == list(range(8))


def test_resolve_job_latest_run(ledger: Ledger, make_lifecycle: Callable, sign_all: Sign) -> None:
    ledger.append(sign_all(make_lifecycle("100", run=0) + make_lifecycle("100", run=1)))
    assert ledger.resolve_job("100").run == 1
    assert ledger.resolve_job("c1/100#0").run == 0


def test_same_envelope_is_a_duplicate(
    ledger: Ledger, make_lifecycle: Callable, sign_all: Sign
) -> None:
    envs = sign_all(make_lifecycle())
    ledger.append(envs[:3])
    root = ledger.root()
    r = ledger.append(envs)
    assert [(p, leaf) for p, _, leaf in r.duplicates] == [(0, 0), (1, 1), (2, 2)]
    assert [p for p, _, _ in r.accepted] == [3, 4]
    r2 = ledger.append(envs)
    assert len(r2.duplicates) == len(envs) and r2.accepted == [] and r2.rejected == []
    assert ledger.size() == len(envs)
    assert ledger.root(3) == root


def test_duplicate_within_a_batch(ledger: Ledger, make_lifecycle: Callable, sign_all: Sign) -> None:
    env = sign_all(make_lifecycle())[0]
    r = ledger.append([env, env, env])
    assert [(p, leaf) for p, _, leaf in r.accepted] == [(0, 0)]
    assert [(p, leaf) for p, _, leaf in r.duplicates] == [(1, 0), (2, 0)]
    assert ledger.size() == 1


def test_copies_of_a_stored_event_in_one_batch_all_name_its_leaf(
    ledger: Ledger, make_lifecycle: Callable, sign_all: Sign
) -> None:
    envs = sign_all(make_lifecycle())
    ledger.append(envs)
    r = ledger.append([envs[2], envs[2]])  # before: the second copy said leaf -1
    assert sorted(r.duplicates) == [(0, r.duplicates[0][1], 2), (1, r.duplicates[0][1], 2)]


def test_different_envelope_same_event_id_is_rejected(
    ledger: Ledger, make_lifecycle: Callable, sign_all: Sign
) -> None:
    events = make_lifecycle()
    ledger.append(sign_all(events))
    root, size = ledger.root(), ledger.size()
    changed = {**events[-1], "payload": {"state": "FAILED"}}  # same identity, other content
    r = ledger.append([sign_event(changed, _host_signer(ledger))])
    assert r.accepted == [] and len(r.rejected) == 1
    assert "already in the ledger at leaf" in r.rejected[0][1]
    assert (ledger.root(), ledger.size()) == (root, size)
    assert ledger.verify().ok
    # and within one batch: the first copy wins, the second is refused
    fresh = make_lifecycle("200")[0]
    r = ledger.append(
        [
            sign_event(fresh, _host_signer(ledger)),
            sign_event({**fresh, "time": "2030-01-01T00:00:00Z"}, _host_signer(ledger)),
        ]
    )
    assert [p for p, _, _ in r.accepted] == [0]
    assert r.rejected[0][0] == 1 and "appears twice in the batch" in r.rejected[0][1]


def _host_signer(ledger: Ledger) -> Signer:
    return Signer.from_seed(bytes([1]) * 32)


def test_host_binding(
    ledger: Ledger, other_signer: Signer, make_lifecycle: Callable, sign_all: Sign
) -> None:
    ledger.enroll(other_signer.public_raw, ["node1"])
    events = make_lifecycle(nodes=("node1",))
    r = ledger.append(sign_all(events, other_signer))
    accepted_hosts = {events[p]["host"] for p, _, _ in r.accepted}
    assert accepted_hosts == {"node1"}
    # refused for its key alone: "untrusted" (the forwarder keeps such events in the spool)
    untrusted_hosts = {events[p]["host"] for p, _ in r.untrusted}
    assert untrusted_hosts == {"ctl"} and r.rejected == []
    assert all("is enrolled for hosts node1, not ctl" in why for _, why in r.untrusted)
    assert ledger.verify().ok


def test_unenrolled_key_rejected(
    ledger: Ledger, other_signer: Signer, make_lifecycle: Callable, sign_all: Sign
) -> None:
    r = ledger.append(sign_all(make_lifecycle(), other_signer))
    assert r.accepted == [] and r.rejected == [] and len(r.untrusted) == 5
    assert all("not enrolled" in why for _, why in r.untrusted)
    assert ledger.size() == 0


def test_revoked_key(
    ledger: Ledger, other_signer: Signer, make_lifecycle: Callable, sign_all: Sign
) -> None:
    ledger.enroll(other_signer.public_raw, ["*"])
    ledger.append(sign_all(make_lifecycle("100"), other_signer))
    assert ledger.store.revoke(other_signer.key_id, "2026-02-01T00:00:00Z")
    r = ledger.append(sign_all(make_lifecycle("101"), other_signer))
    assert r.accepted == [] and len(r.untrusted) == 5
    assert all("not enrolled" in why for _, why in r.untrusted)
    report = ledger.verify()  # old events of a revoked key still verify
    assert report.ok and report.signatures == ledger.size() == 5


def test_enrolling_again_adds_hosts(ledger: Ledger, other_signer: Signer) -> None:
    first = ledger.enroll(other_signer.public_raw, ["node1"])
    again = ledger.enroll(other_signer.public_raw, ["node2", "node1"])
    assert again.hosts == ("node1", "node2") and again.enrolled == first.enrolled
    assert ledger.store.enrolled()[other_signer.key_id].hosts == ("node1", "node2")
    replaced = ledger.enroll(other_signer.public_raw, ["node3"], replace=True)
    assert ledger.store.enrolled()[other_signer.key_id].hosts == replaced.hosts == ("node3",)


def test_a_revoked_key_is_not_enrolled_again(ledger: Ledger, other_signer: Signer) -> None:
    ledger.enroll(other_signer.public_raw, ["node1"])
    assert ledger.store.revoke(other_signer.key_id, "2026-02-01T00:00:00Z")
    for replace in (False, True):
        with pytest.raises(SignatureError, match="was revoked at 2026-02-01T00:00:00Z"):
            ledger.enroll(other_signer.public_raw, ["node1"], replace=replace)
    assert ledger.store.enrolled()[other_signer.key_id].revoked == "2026-02-01T00:00:00Z"


def test_append_pauses_the_garbage_collector(
    ledger: Ledger, make_lifecycle: Callable, sign_all: Sign, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The collector is off while a batch commits and back on afterwards, also after a
    failed commit; a collector the caller turned off stays off."""
    seen: list[bool] = []
    store_append = ledger.store.append

    def append(*args: object) -> None:
        seen.append(gc.isenabled())
        store_append(*args)  # type: ignore[arg-type]

    monkeypatch.setattr(ledger.store, "append", append)
    ledger.append(sign_all(make_lifecycle("100")))
    assert seen == [False] and gc.isenabled()

    def failing(*args: object) -> None:
        raise StoreError("disk full")

    monkeypatch.setattr(ledger.store, "append", failing)
    with pytest.raises(StoreError):
        ledger.append(sign_all(make_lifecycle("101")))
    assert gc.isenabled()
    gc.disable()
    try:
        monkeypatch.setattr(ledger.store, "append", append)
        ledger.append(sign_all(make_lifecycle("102")))
        assert seen == [False, False] and not gc.isenabled()
    finally:
        gc.enable()


def test_a_worker_chunk_pauses_the_garbage_collector(
    make_lifecycle: Callable, sign_all: Sign, host_signer: Signer, monkeypatch: pytest.MonkeyPatch
) -> None:
    seen: list[bool] = []
    real = ledger_module.verify_envelope

    def verify_envelope(data: bytes, keys: dict[str, bytes]) -> object:
        seen.append(gc.isenabled())
        return real(data, keys)

    monkeypatch.setattr(ledger_module, "verify_envelope", verify_envelope)
    envs = sign_all(make_lifecycle("100"))
    blob = ledger_module._check_packed(envs, {host_signer.key_id: host_signer.public_raw})
    assert [type(c).__name__ for c in ledger_module._unpack(blob)] == ["Checked"] * len(envs)
    assert seen == [False] * len(envs) and gc.isenabled()


def _append_in_turns(db: str, envelopes: list[bytes], start: Any, out: Any) -> None:
    """A second process: append ``envelopes`` 20 at a time once ``start`` is set; put the
    (accepted, duplicates, rejected) counts of each append, or the error, on ``out``."""
    ledger = _open(db)
    start.wait()
    try:
        results = [ledger.append(envelopes[i : i + 20]) for i in range(0, len(envelopes), 20)]
    except ReceiptError as e:
        out.put(str(e))
        return
    finally:
        ledger.close()
    out.put([(len(r.accepted), len(r.duplicates), len(r.rejected)) for r in results])


def test_two_writers_append_at_once(
    tmp_path: Path, host_signer: Signer, make_lifecycle: Callable, sign_all: Sign
) -> None:
    """Two processes appending to one ledger at the same time both succeed: a commit that
    finds the log grown under it checks its events again and starts over (before, it
    failed with "another writer is active" and the forwarder left the batch for later)."""
    db = str(tmp_path / "l.db")
    with _open(db) as ledger:
        ledger.enroll(host_signer.public_raw, list(HOSTS))
    envs = [e for j in range(60) for e in sign_all(make_lifecycle(str(1000 + j)))]
    shared = envs[:40]  # both writers send these: each lands once, the other copy dedupes
    halves = [shared + envs[40 + k :: 2] for k in range(2)]
    ctx = multiprocessing.get_context("fork")
    start, out = ctx.Event(), ctx.Queue()
    writers = [ctx.Process(target=_append_in_turns, args=(db, h, start, out)) for h in halves]
    for w in writers:
        w.start()
    start.set()
    counts = [out.get(timeout=60) for _ in writers]
    for w in writers:
        w.join(timeout=60)
        assert w.exitcode == 0
    assert not [c for c in counts if isinstance(c, str)], counts
    accepted = sum(a for c in counts for a, _, _ in c)
    duplicates = sum(d for c in counts for _, d, _ in c)
    assert sum(r for c in counts for _, _, r in c) == 0
    assert accepted == len(envs) and duplicates == len(shared)
    with _open(db) as ledger:
        assert ledger.size() == len(envs) and ledger.verify().ok
        rows = {leaf.job_key for leaf in ledger.store.leaves()}
        for job in ledger.jobs():  # no lost update of a job row between the writers
            assert job.events == len(ledger.store.job_leaves(job.job_key)), job.job_key
        assert len(rows) == len(ledger.jobs()) == 60


def test_an_event_another_writer_appends_after_the_lookup_is_a_duplicate(
    tmp_path: Path, host_signer: Signer, make_lifecycle: Callable, sign_all: Sign
) -> None:
    """Another writer appends some of this batch's events between this writer's dedupe
    lookup and its commit: they become duplicates and the rest is appended (before, the
    commit read the log's size after the other append, passed its check, and the store
    refused the second copy: the whole batch failed)."""
    db = tmp_path / "l.db"
    envs = sign_all(make_lifecycle("100"))
    with _open(db) as a, _open(db) as b:
        a.enroll(host_signer.public_raw, list(HOSTS))
        lookup = a.store.find_events
        raced: list[object] = []

        def find_events(pairs: Any) -> Any:
            found = lookup(pairs)
            if not raced:  # the first lookup done: now the other writer gets in
                raced.append(b.append(envs[:2]))
            return found

        a.store.find_events = find_events  # type: ignore[method-assign]
        r = a.append(envs)
        assert len(r.accepted) == 3 and sorted(p for p, _, _ in r.duplicates) == [0, 1]
        assert a.size() == len(envs) and a.verify().ok


def test_verify_while_a_forwarder_appends(
    tmp_path: Path, host_signer: Signer, make_lifecycle: Callable, sign_all: Sign
) -> None:
    """Another writer appends after `ledger verify` read the log's size: the check is of
    the log as it was, and passes (before, it reported the new rows as "node (0, N) lies
    beyond the log's end" and exited 1 whenever a forwarder was at work)."""
    db, key = tmp_path / "l.db", tmp_path / "l.key"
    with _open(db, key) as ledger:
        ledger.enroll(host_signer.public_raw, list(HOSTS))
        ledger.append(sign_all(make_lifecycle("100")))
        ledger.checkpoint()
    later = sign_all(make_lifecycle("101"))
    with _open(db, key) as ledger, _open(db, key) as forwarder:
        read_levels = ledger.store.nodes_at_level

        def nodes_at_level(level: int) -> Iterator[tuple[int, bytes]]:
            if level == 0:  # the leaves are checked; now a forwarder commits, and signs
                assert forwarder.append(later).accepted
                forwarder.checkpoint()
            return read_levels(level)

        ledger.store.nodes_at_level = nodes_at_level  # type: ignore[method-assign]
        report = ledger.verify()
        assert report.ok, report.problems
        assert report.size == len(sign_all(make_lifecycle("100")))
    with _open(db, key) as ledger:
        report = ledger.verify()
        assert report.ok and report.size == ledger.size() > len(later)


def test_checkpoint_while_another_process_appends(
    tmp_path: Path, host_signer: Signer, make_lifecycle: Callable, sign_all: Sign
) -> None:
    """Between this checkpoint's read of the log's size and of the stored checkpoints,
    another process appends: this one signs the size it read (before, it refused with "the
    log no longer matches checkpoint N"). Another process cannot sign meanwhile: signing
    holds the ledger key's checkpoint lock (lastsigned.py), so the other one signs after."""
    db, key = tmp_path / "l.db", tmp_path / "l.key"
    with _open(db, key) as ledger:
        ledger.enroll(host_signer.public_raw, list(HOSTS))
        first = ledger.append(sign_all(make_lifecycle("100"))).accepted
        ledger.checkpoint()
        ledger.append(sign_all(make_lifecycle("101")))
    with _open(db, key) as ledger, _open(db, key) as other:
        size = ledger.size()
        read_checkpoint = ledger.store.last_checkpoint

        def last_checkpoint() -> CheckpointRow | None:
            if not other.size() > size:
                assert other.append(sign_all(make_lifecycle("102"))).accepted
            return read_checkpoint()

        ledger.store.last_checkpoint = last_checkpoint  # type: ignore[method-assign]
        row = ledger.checkpoint()
        assert row.size == size > len(first)
        other.checkpoint()
    with _open(db, key) as ledger:
        sizes = [cp.size for cp in ledger.store.checkpoints()]
        assert sizes == [len(first), size, ledger.size()] and ledger.verify().ok


def test_rejected_append_keeps_earlier_content(
    ledger: Ledger, other_signer: Signer, make_lifecycle: Callable, sign_all: Sign
) -> None:
    good = sign_all(make_lifecycle("100"))
    ledger.append(good)
    root = ledger.root()
    bad = [good[0][:-5], b"not json", *sign_all(make_lifecycle("101"), other_signer)]
    r = ledger.append(bad)
    assert r.accepted == [] and [p for p, _ in r.rejected] == [0, 1]
    assert [p for p, _ in r.untrusted] == list(range(2, len(bad)))
    assert ledger.root() == root and ledger.verify().ok


def test_openings_are_stored(ledger: Ledger, host_signer: Signer, make_lifecycle: Callable) -> None:
    ev = make_lifecycle()[0]
    payload, openings = commit_fields(ev["payload"], ("user",), ev["id"], host_signer.salt_secret)
    ledger.append([sign_event({**ev, "payload": payload}, host_signer)], [openings])
    stored = ledger.store.openings(str(ev["id"]))
    assert stored == {"user": (openings["user"]["salt"], '"alice"')}
    assert ledger.jobs()[0].user is None  # a commitment is never indexed as the user


def test_parallel_workers(tmp_path: Path, host_signer: Signer, make_lifecycle: Callable) -> None:
    events = []
    job = 1000
    while len(events) < PARALLEL_THRESHOLD + 8:
        events += make_lifecycle(str(job), progress=3)
        job += 1
    envs = [sign_event(e, host_signer) for e in events]
    with _open(tmp_path / "l.db", tmp_path / "k", workers=2) as led:
        led.enroll(host_signer.public_raw, ["*"])
        r = led.append([*envs, envs[0], b"garbage"])
        assert len(r.accepted) == len(envs)
        assert [p for p, _, _ in r.accepted] == list(range(len(envs)))
        assert r.duplicates == [(len(envs), r.accepted[0][1], 0)]
        assert r.rejected[0][0] == len(envs) + 1
        assert led.root() == merkle.root_from_leaf_hashes([merkle.leaf_hash(e) for e in envs])
        report = led.verify()
        assert report.ok and report.signatures == len(envs)


# -- proofs and checkpoints --------------------------------------------------------------


def test_inclusion_and_consistency_proofs(
    ledger: Ledger, make_lifecycle: Callable, sign_all: Sign
) -> None:
    envs = sign_all(make_lifecycle("100", progress=4))  # 8 events
    hashes: list[bytes] = []
    for e in [*envs[:5], b"", *envs[5:]]:  # two appends to exercise stored frontiers
        if e == b"":
            continue
        ledger.append([e])
        hashes.append(merkle.leaf_hash(e))
    n = len(hashes)
    roots = {size: merkle.root_from_leaf_hashes(hashes[:size]) for size in range(n + 1)}
    for size in range(1, n + 1):
        assert ledger.root(size) == roots[size]
        for index in range(size):
            proof = ledger.inclusion_proof(index, size)
            merkle.verify_inclusion(hashes[index], index, size, proof, roots[size])
            if size > 1:
                with pytest.raises(ProofError):
                    merkle.verify_inclusion(
                        hashes[index - 1] if index else hashes[1], index, size, proof, roots[size]
                    )
        for old in range(1, size + 1):
            proof = ledger.consistency_proof(old, size)
            merkle.verify_consistency(old, size, proof, roots[old], roots[size])


def test_checkpoint(ledger: Ledger, make_lifecycle: Callable, sign_all: Sign) -> None:
    assert ledger.ledger_public_key() is None
    ledger.append(sign_all(make_lifecycle()))
    cp = ledger.checkpoint()
    public = ledger.ledger_public_key()
    assert public is not None
    opened = open_checkpoint(cp.note, ORIGIN, public, origin=ORIGIN)
    assert (opened.size, opened.root) == (5, ledger.root()) == (cp.size, cp.root)
    assert ledger.checkpoint() == cp  # same size: the same checkpoint
    assert ledger.open_checkpoint(cp.note).size == 5
    ledger.append(sign_all(make_lifecycle("101")))
    assert ledger.latest_checkpoint().size == 10
    assert [c.size for c in ledger.store.checkpoints()] == [5, 10]
    old, new, proof = ledger.prove_extends(cp.note)
    assert (old.size, new.size) == (5, 10)
    merkle.verify_consistency(5, 10, proof, old.root, new.root)


def test_checkpoint_unless_one_was_signed_lately(
    ledger: Ledger, make_lifecycle: Callable, sign_all: Sign
) -> None:
    """The collector's interval, kept under the signing lock: a checkpoint signed less than
    ``unless_signed_within`` seconds ago is returned instead of a new one."""
    ledger.append(sign_all(make_lifecycle("100")))
    first = ledger.checkpoint()
    ledger.append(sign_all(make_lifecycle("101")))
    assert ledger.checkpoint(unless_signed_within=3600) == first  # the log grew: not signed
    assert [c.size for c in ledger.store.checkpoints()] == [5]
    assert ledger.checkpoint(unless_signed_within=0).size == 10  # no interval: signed
    ledger.append(sign_all(make_lifecycle("102")))
    time.sleep(0.05)
    assert ledger.checkpoint(unless_signed_within=0.01).size == 15  # the interval is over


def test_checkpoint_needs_a_key(tmp_path: Path) -> None:
    with _open(tmp_path / "l.db") as led, pytest.raises(CheckpointError, match="no ledger key"):
        led.checkpoint()


def test_ledger_key_must_not_change(tmp_path: Path) -> None:
    with _open(tmp_path / "l.db", tmp_path / "a.key") as led:
        led.checkpoint()
    write_key(str(tmp_path / "b.key"), Signer.generate())
    with _open(tmp_path / "l.db", tmp_path / "b.key") as led:
        for _ in range(2):  # the wrong key is not kept for a second call
            with pytest.raises(CheckpointError, match="not the key this ledger signs with"):
                led.checkpoint()


def test_missing_ledger_key_is_not_created_for_a_ledger_that_has_one(tmp_path: Path) -> None:
    with _open(tmp_path / "l.db", tmp_path / "a.key") as led:
        led.checkpoint()
    with (
        _open(tmp_path / "l.db", tmp_path / "gone.key") as led,
        pytest.raises(CheckpointError, match=r"gone.key does not exist.*restore the original"),
    ):
        led.checkpoint()
    assert not (tmp_path / "gone.key").exists()


def test_prove_extends_refuses_foreign_checkpoints(
    tmp_path: Path, ledger: Ledger, make_lifecycle: Callable, sign_all: Sign
) -> None:
    ledger.append(sign_all(make_lifecycle()))
    ledger.checkpoint()
    with _open(tmp_path / "other.db", tmp_path / "other.key", origin="other.origin") as other:
        foreign = other.checkpoint().note
    with _open(tmp_path / "same.db", tmp_path / "same.key") as same:  # same origin, other key
        impostor = same.checkpoint().note
    with pytest.raises(CheckpointError, match=r"from log 'other\.origin'"):
        ledger.prove_extends(foreign)
    with pytest.raises(CheckpointError):
        ledger.prove_extends(impostor)


def test_checkpoint_refuses_after_tampering(
    tmp_path: Path, ledger: Ledger, make_lifecycle: Callable, sign_all: Sign
) -> None:
    ledger.append(sign_all(make_lifecycle()))  # 5 leaves: nodes (2,0) and (0,4) give the root
    ledger.checkpoint()
    ledger.append(sign_all(make_lifecycle("101")))
    db = sqlite3.connect(tmp_path / "ledger.db")
    with db:
        db.execute("UPDATE nodes SET hash = ? WHERE level = 2 AND idx = 0", (b"\x00" * 32,))
    db.close()
    with pytest.raises(CheckpointError, match="no longer matches checkpoint 5"):
        ledger.checkpoint()
    assert [c.size for c in ledger.store.checkpoints()] == [5]


def test_checkpoint_refuses_tampered_new_nodes(
    tmp_path: Path, ledger: Ledger, make_lifecycle: Callable, sign_all: Sign
) -> None:
    ledger.append(sign_all(make_lifecycle()))  # 5 leaves
    ledger.checkpoint()
    ledger.append(sign_all(make_lifecycle("101")))  # 10 leaves: root uses node (1, 4)
    db = sqlite3.connect(tmp_path / "ledger.db")
    with db:
        db.execute("UPDATE nodes SET hash = ? WHERE level = 1 AND idx = 4", (b"\x00" * 32,))
    db.close()
    with pytest.raises(CheckpointError):
        ledger.checkpoint()


# -- whole-log verification and tampering ------------------------------------------------


def test_verify_clean(ledger: Ledger, make_lifecycle: Callable, sign_all: Sign) -> None:
    ledger.append(sign_all(make_lifecycle()))
    ledger.checkpoint()
    seen: list[tuple[int, int]] = []
    report = ledger.verify(lambda done, total: seen.append((done, total)))
    assert report.ok and report.first_bad_index is None and report.problems == []
    assert (report.size, report.signatures, report.checkpoints) == (5, 5, 1)
    assert seen[-1] == (5, 5)


def test_verify_empty(ledger: Ledger) -> None:
    report = ledger.verify()
    assert report.ok and report.size == 0


@pytest.fixture(scope="module")
def template(
    tmp_path_factory: pytest.TempPathFactory, host_signer: Signer, make_lifecycle: Callable
) -> Path:
    """A closed ledger of 7 leaves with checkpoints at 4 and 7 (copied by each test)."""
    d = tmp_path_factory.mktemp("template")
    events = make_lifecycle("100") + make_lifecycle("102", nodes=())  # 5 + 2 events
    envs = [sign_event(e, host_signer) for e in events]
    with _open(d / "ledger.db", d / "ledger.key") as led:
        led.enroll(host_signer.public_raw, HOSTS)
        led.append(envs[:4])
        led.checkpoint()
        led.append(envs[4:])
        led.checkpoint()
        assert led.verify().ok
    return d


def _copy(template: Path, dest: Path) -> Path:
    for name in os.listdir(template):
        shutil.copy(template / name, dest / name)
    return dest / "ledger.db"


def _tamper(template: Path, dest: Path, *statements: tuple[str, tuple[object, ...]]) -> Ledger:
    db = _copy(template, dest)
    con = sqlite3.connect(db)
    with con:
        for sql, args in statements:
            con.execute(sql, args)
    con.close()
    return _open(db, dest / "ledger.key")


def _envelope(template: Path, index: int) -> bytes:
    con = sqlite3.connect(template / "ledger.db")
    try:
        row = con.execute("SELECT envelope FROM leaves WHERE idx = ?", (index,)).fetchone()
        return bytes(row[0])
    finally:
        con.close()


def _flip(data: bytes, pos: int) -> bytes:
    return data[:pos] + bytes([data[pos] ^ 0x01]) + data[pos + 1 :]


def _leaf_tamper(t: Path) -> list[tuple[str, tuple[object, ...]]]:
    return [("UPDATE leaves SET envelope = ? WHERE idx = 3", (_flip(_envelope(t, 3), 200),))]


def _sig_tamper(t: Path) -> list[tuple[str, tuple[object, ...]]]:
    env = _envelope(t, 5)
    return [("UPDATE leaves SET envelope = ? WHERE idx = 5", (_flip(env, len(env) - 8),))]


def _swap(t: Path) -> list[tuple[str, tuple[object, ...]]]:
    return [
        ("UPDATE leaves SET envelope = ? WHERE idx = 1", (_envelope(t, 4),)),
        ("UPDATE leaves SET envelope = ? WHERE idx = 4", (_envelope(t, 1),)),
    ]


def _node(level: int, idx: int) -> Callable[[Path], list[tuple[str, tuple[object, ...]]]]:
    sql = "UPDATE nodes SET hash = ? WHERE level = ? AND idx = ?"
    return lambda t: [(sql, (b"\x00" * 32, level, idx))]


def _sql(statement: str, *args: object) -> Callable[[Path], list[tuple[str, tuple[object, ...]]]]:
    return lambda t: [(statement, args)]


TAMPERING = [
    ("leaf envelope byte", _leaf_tamper, 3, "leaf 3:"),
    ("leaf signature byte", _sig_tamper, 5, "leaf 5:"),
    (
        "leaf index column",
        _sql("UPDATE leaves SET host = 'node2' WHERE idx = 2"),
        2,
        "leaf 2: index columns do not match",
    ),
    ("level-0 node", _node(0, 5), 5, "leaf hash stored for leaf 5 does not match"),
    ("level-1 node", _node(1, 1), 2, "node (1, 1) stored for leaf 2 does not match"),
    ("level-2 node", _node(2, 0), 0, "node (2, 0) stored for leaf 0 does not match"),
    (
        "middle leaf deleted",
        _sql("DELETE FROM leaves WHERE idx = 3"),
        3,
        "leaf table has 6 rows for indices 0..6: rows are missing",
    ),
    (
        "last leaf deleted",
        _sql("DELETE FROM leaves WHERE idx = 6"),
        6,
        "node (0, 6) lies beyond the log's end",
    ),
    ("envelopes swapped", _swap, 1, "leaf 1: index columns do not match"),
    (
        "leaves truncated",
        _sql("DELETE FROM leaves"),
        0,
        "checkpoint 4 covers more leaves than the log has (0)",
    ),
    (
        "leaves truncated to 2",
        _sql("DELETE FROM leaves WHERE idx >= 2"),
        2,
        "checkpoint 4 covers more leaves than the log has (2)",
    ),
    (
        "checkpoint root edited",
        _sql("UPDATE checkpoints SET root = ? WHERE size = 7", b"\x01" * 32),
        4,
        "checkpoint 7: stored size/root differ from its signed note",
    ),
    (
        "checkpoint note edited",
        _sql("UPDATE checkpoints SET note = replace(note, ?, ?) WHERE size = 4", "\n4\n", "\n3\n"),
        0,
        "checkpoint 4:",
    ),
]


@pytest.mark.parametrize(("name", "make", "first_bad", "needle"), TAMPERING)
def test_tampering_is_detected_and_named(
    template: Path, tmp_path: Path, name: str, make: Callable, first_bad: int, needle: str
) -> None:
    with _tamper(template, tmp_path, *make(template)) as led:
        report = led.verify()
    assert not report.ok, name
    assert report.first_bad_index is not None and report.first_bad_index <= first_bad
    assert any(needle in p for p in report.problems), report.problems


@pytest.mark.parametrize(
    ("name", "make", "first_bad", "needle"),
    [pytest.param(*t) for t in TAMPERING],
)
def test_tampering_first_bad_index(
    template: Path, tmp_path: Path, name: str, make: Callable, first_bad: int, needle: str
) -> None:
    with _tamper(template, tmp_path, *make(template)) as led:
        report = led.verify()
    assert report.first_bad_index == first_bad, report.problems


def test_foreign_checkpoint_is_detected(template: Path, tmp_path: Path) -> None:
    (tmp_path / "other").mkdir()
    with _open(tmp_path / "other" / "l.db", tmp_path / "other" / "k", origin="other.log") as o:
        o.store.append(0, [], [], [], [])
        foreign = o.checkpoint()
    with _tamper(
        template,
        tmp_path,
        ("INSERT INTO checkpoints VALUES (6, ?, ?, 't')", (foreign.root, foreign.note)),
    ) as led:
        report = led.verify()
    assert not report.ok and report.first_bad_index == 4
    assert any("checkpoint 6" in p and "other.log" in p for p in report.problems)


def test_tampered_log_refuses_new_checkpoint(template: Path, tmp_path: Path) -> None:
    with (
        _tamper(
            template, tmp_path, ("UPDATE checkpoints SET root = ? WHERE size = 7", (b"\x01" * 32,))
        ) as led,
        pytest.raises(CheckpointError, match="no longer matches checkpoint 7"),
    ):
        led.checkpoint()


def test_truncation_without_checkpoint_is_detected(template: Path, tmp_path: Path) -> None:
    with _tamper(
        template, tmp_path, ("DELETE FROM checkpoints", ()), ("DELETE FROM leaves", ())
    ) as led:
        report = led.verify()
    assert not report.ok


def test_rejected_append_then_verify(
    template: Path, tmp_path: Path, other_signer: Signer, make_lifecycle: Callable
) -> None:
    db = _copy(template, tmp_path)
    with _open(db, tmp_path / "ledger.key") as led:
        r = led.append([sign_event(e, other_signer) for e in make_lifecycle("300")])
        assert r.accepted == [] and led.size() == 7
        assert led.verify().ok


@settings(max_examples=60, deadline=None)
@given(st.integers(0, 6), st.integers(0, 10_000), st.integers(1, 255))
def test_any_single_byte_change_of_any_leaf_is_detected(
    template: Path, index: int, offset: int, delta: int
) -> None:
    env = _envelope(template, index)
    pos = offset % len(env)
    mutated = env[:pos] + bytes([(env[pos] + delta) % 256]) + env[pos + 1 :]
    with (
        tempfile.TemporaryDirectory() as d,
        _tamper(
            template, Path(d), ("UPDATE leaves SET envelope = ? WHERE idx = ?", (mutated, index))
        ) as led,
    ):
        report = led.verify()
    assert not report.ok
    assert any(p.startswith(f"leaf {index}: ") for p in report.problems), report.problems
    # exact only once the first_bad_index bug (test_tampering_first_bad_index) is fixed
    assert report.first_bad_index is not None and report.first_bad_index <= index
