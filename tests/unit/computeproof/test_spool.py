"""Tests of computeproof/spool.py: durable writes, listing, done/fail, failures."""

from __future__ import annotations

import os
import stat
from pathlib import Path

import pytest

from computeproof.canonical import canonical_bytes
from computeproof.errors import CanonicalError, SpoolError
from computeproof.event import new_event
from computeproof.spool import Spool


def _event(seq: int = 0, payload: dict[str, object] | None = None) -> dict[str, object]:
    return new_event(
        "progress",
        "c1",
        "100",
        100,
        "node1",
        payload or {"percent": seq},
        seq=seq,
        time=f"2026-01-01T00:00:{seq:02d}.000000Z",
    )


def test_write_is_complete_canonical_and_private(tmp_path: Path) -> None:
    sp = Spool(str(tmp_path / "spool"))
    ev = _event()
    path = sp.write(ev)  # creates the directories on first use
    assert path == os.path.join(sp.new, f"{ev['id']}.json")
    assert Path(path).read_bytes() == canonical_bytes(ev) + b"\n"
    assert stat.S_IMODE(os.stat(path).st_mode) == 0o600
    for d in (sp.path, sp.tmp, sp.new, sp.failed):
        assert stat.S_IMODE(os.stat(d).st_mode) == 0o700
    assert os.listdir(sp.tmp) == []  # the tmp file was renamed, not copied
    assert list(sp.pending()) == [path]
    assert sp.count_pending() == 1


def test_write_is_idempotent_per_event_id(tmp_path: Path) -> None:
    sp = Spool(str(tmp_path))
    ev = _event()
    first = sp.write(ev)
    second = sp.write(dict(ev))
    assert first == second
    assert list(sp.pending()) == [first]
    assert sp.count_pending() == 1


def test_leftover_tmp_and_foreign_files_are_never_pending(tmp_path: Path) -> None:
    sp = Spool(str(tmp_path))
    sp.ensure()
    ev = _event()
    # a crash after the tmp write but before the rename
    Path(sp.tmp, f"{ev['id']}.json.12345").write_bytes(canonical_bytes(ev)[:10])
    Path(sp.new, "notes.txt").write_text("not an event")
    assert list(sp.pending()) == []
    assert sp.count_pending() == 0
    good = sp.write(_event(1))
    assert list(sp.pending()) == [good]


def test_pending_oldest_first(tmp_path: Path) -> None:
    sp = Spool(str(tmp_path))
    paths = [sp.write(_event(i)) for i in range(4)]
    # file times decide, not names or the order of writes
    for age, p in zip((10, 40, 20, 30), paths, strict=True):
        os.utime(p, ns=(age * 10**9, age * 10**9))
    assert list(sp.pending()) == [paths[0], paths[2], paths[3], paths[1]]


def test_done_and_fail(tmp_path: Path) -> None:
    sp = Spool(str(tmp_path))
    a, b = sp.write(_event(0)), sp.write(_event(1))
    sp.done(a)
    sp.done(a)  # already gone: no error
    assert list(sp.pending()) == [b]
    sp.fail(b, "signed by a key that is not enrolled")
    assert list(sp.pending()) == []
    name = os.path.basename(b)
    assert os.path.exists(os.path.join(sp.failed, name))
    assert sp.failures() == [(name, "signed by a key that is not enrolled")]


def test_missing_spool_is_empty(tmp_path: Path) -> None:
    sp = Spool(str(tmp_path / "absent"))
    assert list(sp.pending()) == []
    assert sp.count_pending() == 0
    assert sp.failures() == []
    assert not os.path.exists(sp.path)  # reading never creates it


def test_unrepresentable_event_writes_nothing(tmp_path: Path) -> None:
    sp = Spool(str(tmp_path))
    sp.ensure()
    with pytest.raises(CanonicalError):
        sp.write(_event(0, {"energy": 1.5}))
    assert os.listdir(sp.new) == [] and os.listdir(sp.tmp) == []


def test_unwritable_spool_raises_spool_error(tmp_path: Path) -> None:
    blocker = tmp_path / "file"
    blocker.write_text("x")
    sp = Spool(str(blocker / "spool"))  # a path below a regular file: never creatable
    with pytest.raises(SpoolError, match="spool"):
        sp.write(_event())
    with pytest.raises(SpoolError, match="cannot create spool directory"):
        sp.ensure()
