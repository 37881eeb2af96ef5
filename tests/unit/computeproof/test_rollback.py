"""Anti-rollback (issue 13.6): the last checkpoint the ledger signed is kept beside its key
(computeproof/lastsigned.py); a ledger file replaced by an older backup, or by another
log, is refused for signing and appending and named by `ledger verify`; forwarders keep
what they forwarded (spool forwarded/) and replay it, exactly once and in log order."""

from __future__ import annotations

import multiprocessing
import os
import shutil
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from computeproof.errors import RollbackError
from computeproof.forward import forward_spool, replay_spool
from computeproof.keys import Signer
from computeproof.lastsigned import state_path
from computeproof.ledger import Ledger
from computeproof.spool import Spool
from computeproof.store.sqlite import SQLiteStore

ORIGIN = "computeproof.test.ledger"
HOSTS = ("ctl", "node1", "node2")
DAY = 86400.0


def _open(d: Path, db: str = "ledger.db") -> Ledger:
    return Ledger(SQLiteStore(str(d / db)), ORIGIN, str(d / "ledger.key"), workers=1)


def _restore(d: Path, backup: Path) -> None:
    """Put a backup in place of the ledger file, as an admin with `cp` would."""
    for suffix in ("", "-wal", "-shm"):
        if os.path.exists(f"{d / 'ledger.db'}{suffix}"):
            os.unlink(f"{d / 'ledger.db'}{suffix}")
    shutil.copy(backup, d / "ledger.db")


def _spool(d: Path, events: list[dict[str, Any]]) -> Spool:
    sp = Spool(str(d / "spool"))
    for ev in events:
        sp.write(ev)
    return sp


@pytest.fixture(params=["single files", "batches"])
def rolled_back(
    request: pytest.FixtureRequest,
    tmp_path: Path,
    host_signer: Signer,
    make_lifecycle: Callable[..., list[dict[str, Any]]],
) -> dict[str, Any]:
    """A ledger fed through a spool: jobs 100-101 forwarded, checkpoint, backup, jobs
    102-104 forwarded, checkpoint; then the backup put in place of the ledger file. With
    "batches", the spool holds batch files (the collector's) besides single events, whose
    events the log interleaves with the others'."""
    events_before = make_lifecycle("100") + make_lifecycle("101")
    events_after = make_lifecycle("102") + make_lifecycle("103") + make_lifecycle("104")
    batched = request.param == "batches"
    with _open(tmp_path) as led:
        led.enroll(host_signer.public_raw, HOSTS)
        if batched:
            sp = Spool(str(tmp_path / "spool"))
            sp.write_batch(events_before[::2])
            for ev in events_before[1::2]:
                sp.write(ev)
        else:
            sp = _spool(tmp_path, events_before)
        forward_spool(sp, host_signer, led, retention_s=7 * DAY)
        small = led.checkpoint()
        assert isinstance(led.store, SQLiteStore)
        time.sleep(0.05)  # file times: what was forwarded before the backup is older
        backup_time = time.time()
        led.store.backup(str(tmp_path / "backup.db"))
        time.sleep(0.05)
        if batched:
            sp.write_batch(events_after[1::3])
            sp.write_batch(events_after[2::3])
            for ev in events_after[::3]:
                sp.write(ev)
        else:
            for ev in events_after:
                sp.write(ev)
        forward_spool(sp, host_signer, led, retention_s=7 * DAY)
        big = led.checkpoint()
    assert big.size > small.size
    _restore(tmp_path, tmp_path / "backup.db")
    return {"dir": tmp_path, "spool": sp, "small": small, "big": big, "since": backup_time}


def test_a_restored_backup_is_refused_for_signing(rolled_back: dict[str, Any]) -> None:
    """Regression (13.6): the ledger signed nothing new, or returned the backup's own
    checkpoint, as if nothing had happened; ledger verify said OK."""
    d, big = rolled_back["dir"], rolled_back["big"]
    with _open(d) as led:
        assert led.size() == rolled_back["small"].size
        with pytest.raises(RollbackError, match="rolled back") as e:
            led.checkpoint()
        msg = str(e.value)
        assert f"signed a checkpoint of {big.size} leaves" in msg
        assert state_path(str(d / "ledger.key")) in msg and "--replay-since" in msg
        assert "\n" not in msg
        report = led.verify()
    assert not report.ok
    assert any("rolled back" in p for p in report.problems), report.problems


def test_a_restored_backup_refuses_appends_that_would_fork_the_log(
    rolled_back: dict[str, Any],
    host_signer: Signer,
    make_lifecycle: Callable[..., list[dict[str, Any]]],
    sign_all: Callable[..., list[bytes]],
) -> None:
    with _open(rolled_back["dir"]) as led, pytest.raises(RollbackError, match="replay"):
        led.append(sign_all(make_lifecycle("200")))


def test_a_backup_copy_verifies_with_backup(rolled_back: dict[str, Any]) -> None:
    """`ledger verify --backup` of a copy: being behind is expected there, and said."""
    with _open(rolled_back["dir"]) as led:
        report = led.verify(backup=True)
    assert report.ok, report.problems
    assert any(f"{rolled_back['big'].size} leaves" in n for n in report.notes)


def test_replay_restores_the_very_log_and_signing(
    rolled_back: dict[str, Any], host_signer: Signer
) -> None:
    """forward --replay-since sends what was forwarded since the backup again, in log
    order and exactly once: the log grows back to the very tree the ledger had signed."""
    d, big, sp = rolled_back["dir"], rolled_back["big"], rolled_back["spool"]
    with _open(d) as led:
        # everything ever forwarded is replayed: what the backup holds is a no-op
        r = replay_spool(sp, host_signer, led, since=0)
        assert (r.appended, r.refused, r.size) == (big.size - rolled_back["small"].size, 0,
                                                   big.size)  # fmt: skip
        assert r.present == rolled_back["small"].size
        assert led.root(big.size) == big.root
        assert led.checkpoint().size == big.size
        assert led.verify().ok
        again = replay_spool(sp, host_signer, led, since=0)  # exactly once
        assert (again.appended, again.present, led.size()) == (0, big.size, big.size)


def test_replay_since_the_backup_is_enough(
    rolled_back: dict[str, Any], host_signer: Signer
) -> None:
    d, big, sp = rolled_back["dir"], rolled_back["big"], rolled_back["spool"]
    with _open(d) as led:
        r = replay_spool(sp, host_signer, led, since=rolled_back["since"])
        assert r.found == big.size - rolled_back["small"].size == r.appended
        assert led.checkpoint().root == big.root


def test_a_replay_in_another_order_is_a_replaced_log(
    rolled_back: dict[str, Any], host_signer: Signer
) -> None:
    """Events replayed out of their log order give another tree: the ledger refuses to
    sign it (it would contradict the checkpoint it signed), and verify says replaced."""
    d, sp = rolled_back["dir"], rolled_back["spool"]
    names = sorted((n for n in os.listdir(sp.forwarded) if n.endswith(".json")),
                   key=lambda n: int(n.split(".")[0]))  # fmt: skip
    newest = names[-2:]
    a, b = (os.path.join(sp.forwarded, n) for n in newest)  # swap the last two leaf numbers
    tmp = a + ".swap"
    os.rename(a, tmp)
    os.rename(b, os.path.join(sp.forwarded, os.path.basename(a).split(".", 1)[0] + "."
                              + os.path.basename(b).split(".", 1)[1]))  # fmt: skip
    os.rename(tmp, os.path.join(sp.forwarded, os.path.basename(b).split(".", 1)[0] + "."
                                + os.path.basename(a).split(".", 1)[1]))  # fmt: skip
    with _open(d) as led:
        replay_spool(sp, host_signer, led, since=0)
        with pytest.raises(RollbackError, match="replaced"):
            led.checkpoint()
        report = led.verify()
    assert not report.ok and any("replaced" in p for p in report.problems), report.problems


def test_another_log_in_place_of_the_ledger_file_is_refused(
    tmp_path: Path,
    host_signer: Signer,
    make_lifecycle: Callable[..., list[dict[str, Any]]],
    sign_all: Callable[..., list[bytes]],
) -> None:
    """A ledger file of the same size but other content (or a larger one that does not
    extend the signed checkpoint) is refused too."""
    with _open(tmp_path) as led:
        led.enroll(host_signer.public_raw, HOSTS)
        led.append(sign_all(make_lifecycle("100")))
        signed = led.checkpoint()
    (tmp_path / "other").mkdir()
    with _open(tmp_path / "other") as other:  # same origin, other events, never signed
        other.enroll(host_signer.public_raw, HOSTS)
        other.append(sign_all(make_lifecycle("300")))
    _restore(tmp_path, tmp_path / "other" / "ledger.db")
    with _open(tmp_path) as led:
        assert led.size() == signed.size
        with pytest.raises(RollbackError, match="replaced"):
            led.checkpoint()
        led.append(sign_all(make_lifecycle("301")))
        with pytest.raises(RollbackError, match="does not extend"):
            led.checkpoint()
        report = led.verify()
    assert not report.ok and any("replaced" in p for p in report.problems)


def test_a_ledger_from_before_the_file_adopts_its_last_checkpoint(
    tmp_path: Path, host_signer: Signer, make_lifecycle: Callable[..., list[dict[str, Any]]],
    sign_all: Callable[..., list[bytes]],
) -> None:  # fmt: skip
    with _open(tmp_path) as led:
        led.enroll(host_signer.public_raw, HOSTS)
        led.append(sign_all(make_lifecycle("100")))
        cp = led.checkpoint()
    os.unlink(state_path(str(tmp_path / "ledger.key")))  # as a ledger of an older version
    with _open(tmp_path) as led:
        assert led.checkpoint() == cp
    assert Path(state_path(str(tmp_path / "ledger.key"))).read_text() == cp.note


def _sign_in_turns(d: str, envelopes: list[bytes], out: Any) -> None:
    led = Ledger(SQLiteStore(os.path.join(d, "ledger.db")), ORIGIN,
                 os.path.join(d, "ledger.key"), workers=1)  # fmt: skip
    try:
        for env in envelopes:
            led.append([env])
            led.checkpoint()
        out.put("ok")
    except Exception as e:  # reported to the test
        out.put(f"{type(e).__name__}: {e}")
    finally:
        led.close()


def test_two_processes_signing_at_once_never_move_the_file_backwards(
    tmp_path: Path, host_signer: Signer, make_lifecycle: Callable[..., list[dict[str, Any]]],
    sign_all: Callable[..., list[bytes]],
) -> None:  # fmt: skip
    """Signing holds the key's checkpoint lock: neither process takes the other's newer
    checkpoint for a rollback, and the file ends at the largest size signed."""
    with _open(tmp_path) as led:
        led.enroll(host_signer.public_raw, HOSTS)
    a = sign_all(make_lifecycle("100", progress=6))
    b = sign_all(make_lifecycle("101", progress=6))
    ctx = multiprocessing.get_context("spawn")
    out = ctx.Queue()
    procs = [ctx.Process(target=_sign_in_turns, args=(str(tmp_path), envs, out))
             for envs in (a, b)]  # fmt: skip
    for p in procs:
        p.start()
    results = [out.get(timeout=120) for _ in procs]
    for p in procs:
        p.join(timeout=60)
    assert results == ["ok", "ok"]
    with _open(tmp_path) as led:
        head = Path(state_path(str(tmp_path / "ledger.key"))).read_text()
        assert led.store.checkpoints()[-1].note == head
        assert led.verify().ok


def test_forwarded_events_are_kept_for_the_retention_period(
    tmp_path: Path, ledger: Ledger, host_signer: Signer,
    make_lifecycle: Callable[..., list[dict[str, Any]]],
) -> None:  # fmt: skip
    events = make_lifecycle("100")
    sp = _spool(tmp_path, events)
    forward_spool(sp, host_signer, ledger, retention_s=7 * DAY)
    kept = sorted(os.listdir(sp.forwarded))
    assert sp.count_pending() == 0 and sp.count_forwarded() == len(events)
    # named by leaf index, in log order
    leaves = sorted(int(n.split(".")[0]) for n in kept if n.endswith(".json"))
    assert leaves == list(range(len(events)))
    assert os.path.basename(sp.forwarded_since(0)[0]).startswith("0.")
    now = time.time()
    # within the period nothing goes; the sweep runs at most once an hour
    assert sp.sweep_forwarded(7 * DAY, now + 6 * DAY) == 0
    assert sp.sweep_forwarded(7 * DAY, now + 8 * DAY, every_s=3 * DAY) == 0  # swept at +6
    assert sp.sweep_forwarded(7 * DAY, now + 8 * DAY, every_s=0) == len(events)
    assert sp.count_forwarded() == 0


def test_no_retention_removes_forwarded_events(
    tmp_path: Path, ledger: Ledger, host_signer: Signer,
    make_lifecycle: Callable[..., list[dict[str, Any]]],
) -> None:  # fmt: skip
    sp = _spool(tmp_path, make_lifecycle("100"))
    forward_spool(sp, host_signer, ledger)
    assert sp.count_pending() == 0 and sp.count_forwarded() == 0
