"""Tests of computeproof/forward.py: spool -> signed envelopes -> ledger."""

from __future__ import annotations

import base64
import json
import os
import shutil
from collections.abc import Callable
from pathlib import Path

import pytest

from computeproof.forward import forward_spool
from computeproof.keys import Signer
from computeproof.ledger import Ledger
from computeproof.privacy import check_opening
from computeproof.spool import Spool


def _spool(tmp_path: Path, events: list[dict[str, object]]) -> Spool:
    sp = Spool(str(tmp_path / "spool"))
    for ev in events:
        sp.write(ev)
    return sp


def _predicates(ledger: Ledger) -> list[dict[str, object]]:
    return [
        json.loads(base64.b64decode(json.loads(row.envelope)["payload"]))["predicate"]
        for row in ledger.store.leaves()
    ]


def test_forward_drains_the_spool(
    tmp_path: Path, ledger: Ledger, host_signer: Signer, make_lifecycle: Callable
) -> None:
    events = make_lifecycle("100", progress=2)
    sp = _spool(tmp_path, list(reversed(events)))  # file order is not log order
    r = forward_spool(sp, host_signer, ledger, batch_size=2)
    assert (r.forwarded, r.duplicates, r.failed, r.remaining) == (len(events), 0, 0, 0)
    assert sp.count_pending() == 0 and ledger.size() == len(events)
    # within a batch the hook's timestamps order the log
    times = [str(p["time"]) for p in _predicates(ledger)]
    assert all(a <= b for a, b in zip(times[::2], times[1::2], strict=False))
    assert ledger.verify().ok


def test_forward_reports_progress_per_batch(
    tmp_path: Path, ledger: Ledger, host_signer: Signer, make_lifecycle: Callable
) -> None:
    events = make_lifecycle("100", progress=2)
    n = len(events)
    seen: list[tuple[int, int]] = []
    forward_spool(_spool(tmp_path, events), host_signer, ledger, batch_size=2,
                  progress=lambda done, total: seen.append((done, total)))  # fmt: skip
    assert seen == [*((i, n) for i in range(2, n, 2)), (n, n)]


def test_crash_between_append_and_delete_is_exactly_once(
    tmp_path: Path, ledger: Ledger, host_signer: Signer, make_lifecycle: Callable
) -> None:
    events = make_lifecycle("100")
    sp = _spool(tmp_path, events)
    saved = tmp_path / "saved"
    shutil.copytree(sp.new, saved)
    first = forward_spool(sp, host_signer, ledger, private_fields=("user",))
    assert first.forwarded == len(events)
    size, root = ledger.size(), ledger.root()
    for name in os.listdir(saved):  # the spool files come back: the deletes never happened
        shutil.copy(saved / name, os.path.join(sp.new, name))
    second = forward_spool(sp, host_signer, ledger, private_fields=("user",))
    assert (second.forwarded, second.duplicates, second.failed) == (0, len(events), 0)
    assert (ledger.size(), ledger.root()) == (size, root)
    assert sp.count_pending() == 0 and ledger.verify().ok


def test_private_fields_become_commitments(
    tmp_path: Path, ledger: Ledger, host_signer: Signer, make_lifecycle: Callable
) -> None:
    events = make_lifecycle("100", user="alice")
    forward_spool(_spool(tmp_path, events), host_signer, ledger, private_fields=("user",))
    scheduled = _predicates(ledger)[0]
    committed = scheduled["payload"]["user"]  # type: ignore[index]
    assert set(committed) == {"sha256_commitment"}
    assert b"alice" not in b"".join(r.envelope for r in ledger.store.leaves())
    ((name, (salt, value)),) = ledger.store.openings(str(scheduled["id"])).items()
    assert name == "user" and json.loads(value) == "alice"
    assert check_opening(committed, {"salt": salt, "value": "alice"}) == "alice"
    assert ledger.jobs()[0].user is None


def test_bad_spool_files_go_to_failed(
    tmp_path: Path, ledger: Ledger, host_signer: Signer, make_lifecycle: Callable
) -> None:
    events = make_lifecycle("100")
    sp = _spool(tmp_path, events)
    Path(sp.new, "garbage.json").write_text("{not json")
    wrong_id = {**events[0], "host": "node2"}  # the id no longer matches
    Path(sp.new, "wrong.json").write_text(json.dumps(wrong_id))
    Path(sp.new, "list.json").write_text("[1, 2]")
    r = forward_spool(sp, host_signer, ledger)
    assert (r.forwarded, r.failed, r.remaining) == (len(events), 3, 0)
    reasons = dict(sp.failures())
    assert set(reasons) == {"garbage.json", "wrong.json", "list.json"}
    assert all(why.startswith("unreadable event:") for why in reasons.values())
    assert "does not match its fields" in reasons["wrong.json"]
    assert any(e.startswith("garbage.json: ") for e in r.errors)


def test_untrusted_events_stay_in_the_spool(
    tmp_path: Path, ledger: Ledger, other_signer: Signer, make_lifecycle: Callable
) -> None:
    ledger.enroll(other_signer.public_raw, ["node1"])
    events = make_lifecycle("100")  # ctl events are not node1's to sign
    sp = _spool(tmp_path, events)
    r = forward_spool(sp, other_signer, ledger)
    ctl = [e for e in events if e["host"] == "ctl"]
    assert (r.forwarded, r.failed, r.untrusted) == (len(events) - len(ctl), 0, len(ctl))
    assert r.remaining == len(ctl) and sp.failures() == []
    assert {os.path.basename(p) for p in sp.pending()} == {f"{e['id']}.json" for e in ctl}
    assert all("not ctl" in e and e.endswith("(left in spool)") for e in r.errors)
    # once the key may sign for ctl, the next pass delivers them
    ledger.enroll(other_signer.public_raw, ["node1", "ctl"])
    r = forward_spool(sp, other_signer, ledger)
    assert (r.forwarded, r.untrusted, r.remaining) == (len(ctl), 0, 0)


def test_rejected_events_go_to_failed(
    tmp_path: Path, ledger: Ledger, host_signer: Signer, make_lifecycle: Callable
) -> None:
    events = make_lifecycle("100")
    sp = _spool(tmp_path, events)
    forward_spool(sp, host_signer, ledger)
    # the same event id again, with other content: the ledger refuses it for good
    changed = {**events[-1], "payload": {"state": "FAILED"}}
    sp.write(changed)
    r = forward_spool(sp, host_signer, ledger)
    assert (r.forwarded, r.failed, r.remaining) == (0, 1, 0)
    ((name, why),) = sp.failures()
    assert name == f"{changed['id']}.json" and "already in the ledger" in why


def test_empty_spool(tmp_path: Path, ledger: Ledger, host_signer: Signer) -> None:
    r = forward_spool(Spool(str(tmp_path / "none")), host_signer, ledger)
    assert (r.forwarded, r.duplicates, r.failed, r.remaining, r.errors) == (0, 0, 0, 0, [])


def test_unsignable_spool_file_goes_to_failed(
    tmp_path: Path, ledger: Ledger, host_signer: Signer, make_lifecycle: Callable
) -> None:
    events = make_lifecycle("100")
    sp = _spool(tmp_path, events[1:])
    Path(sp.new, f"{events[0]['id']}.json").write_text(
        json.dumps({**events[0], "payload": {"util": 0.5}})
    )
    r = forward_spool(sp, host_signer, ledger)
    assert r.failed == 1 and r.forwarded == len(events) - 1


# A batch: several events in one spool file (the controller's collector writes a poll's
# events so). The forwarder takes its events as it takes single ones, and finishes the
# file whole, or splits it when its events fared differently.


def test_a_batch_is_forwarded_and_kept_whole_with_its_leaves(
    tmp_path: Path, ledger: Ledger, host_signer: Signer, make_lifecycle: Callable
) -> None:
    events = make_lifecycle("100", progress=2)
    sp = Spool(str(tmp_path / "spool"))
    path = sp.write_batch(list(reversed(events)))
    assert path.endswith(".jsonl") and sp.count_pending() == len(events)
    assert len(os.listdir(sp.new)) == 1
    r = forward_spool(sp, host_signer, ledger, retention_s=3600)
    assert (r.forwarded, r.failed, r.remaining) == (len(events), 0, 0)
    assert ledger.size() == len(events) and ledger.verify().ok
    kept = sorted(n for n in os.listdir(sp.forwarded) if not n.startswith("."))
    assert [n.rsplit(".", 1)[1] for n in kept] == ["jsonl", "leaves"]
    assert kept[0].startswith("0.") and sp.count_forwarded() == len(events)
    leaves = [int(n) for n in (Path(sp.forwarded) / kept[1]).read_text().split()]
    # each line's leaf: the file holds the events in reverse log order
    assert leaves == list(reversed(range(len(events))))
    # what replay would send, in log order
    again = [json.loads(data)["id"] for _, data in sp.forwarded_events_since(0)]
    assert again == [e["id"] for e in events]


def test_a_batch_forwarded_twice_is_exactly_once(
    tmp_path: Path, ledger: Ledger, host_signer: Signer, make_lifecycle: Callable
) -> None:
    events = make_lifecycle("100")
    sp = Spool(str(tmp_path / "spool"))
    path = sp.write_batch(events)
    saved = Path(path).read_bytes()
    assert forward_spool(sp, host_signer, ledger).forwarded == len(events)
    size, root = ledger.size(), ledger.root()
    Path(path).write_bytes(saved)  # a crash before the batch was removed
    again = forward_spool(sp, host_signer, ledger)
    assert (again.forwarded, again.duplicates, again.remaining) == (0, len(events), 0)
    assert (ledger.size(), ledger.root()) == (size, root) and not os.listdir(sp.new)


def test_a_batch_whose_events_fare_differently_is_split(
    tmp_path: Path, ledger: Ledger, other_signer: Signer, make_lifecycle: Callable
) -> None:
    """Committed events leave, a rejected one goes to failed/ alone, the untrusted ones
    wait in new/ (as a smaller batch) until the key may sign for their host."""
    ledger.enroll(other_signer.public_raw, ["node1"])
    first = make_lifecycle("100")
    node = [e for e in first if e["host"] == "node1"]
    sp = Spool(str(tmp_path / "spool"))
    sp.write(node[0])
    assert forward_spool(sp, other_signer, ledger).forwarded == 1
    changed = {**node[0], "payload": {"state": "FAILED"}}  # same id, other content
    events = make_lifecycle("101")
    ctl = [e for e in events if e["host"] == "ctl"]
    sp.write_batch([changed, *events])
    r = forward_spool(sp, other_signer, ledger, retention_s=3600)
    assert (r.forwarded, r.failed, r.untrusted) == (len(events) - len(ctl), 1, len(ctl))
    assert r.remaining == len(ctl) == sp.count_pending()
    ((name, why),) = sp.failures()
    assert name == f"{changed['id']}.json" and "already in the ledger" in why
    (waiting,) = list(sp.pending())
    assert waiting.endswith(f"+{len(ctl)}.jsonl")
    assert sp.count_forwarded() == len(events) - len(ctl)  # the first pass kept none
    # a pass that changes nothing leaves the waiting batch as it is
    r = forward_spool(sp, other_signer, ledger, retention_s=3600)
    assert (r.untrusted, list(sp.pending())) == (len(ctl), [waiting])
    ledger.enroll(other_signer.public_raw, ["node1", "ctl"])
    r = forward_spool(sp, other_signer, ledger, retention_s=3600)
    assert (r.forwarded, r.untrusted, r.remaining) == (len(ctl), 0, 0)
    assert ledger.size() == 1 + len(events) and ledger.verify().ok
    assert sp.count_forwarded() == len(events)


def test_a_batch_is_written_whole_or_not_at_all(tmp_path: Path, make_lifecycle: Callable) -> None:
    from computeproof.errors import SpoolError

    sp = Spool(str(tmp_path / "spool"))
    events = make_lifecycle("100")
    with pytest.raises(Exception):  # noqa: B017 - a float is refused before anything lands
        sp.write_batch([*events, {"id": "x", "payload": 1.5}])
    assert sp.count_pending() == 0
    sp.ensure()
    os.rmdir(sp.new)
    Path(sp.new).write_text("not a directory")
    with pytest.raises(SpoolError, match="cannot write events"):
        sp.write_batch(events)
    assert not os.listdir(sp.tmp)


def test_a_pass_reads_files_until_its_batch_holds_enough_events(
    tmp_path: Path, ledger: Ledger, host_signer: Signer, make_lifecycle: Callable
) -> None:
    """batch_size counts events, not files: a batch file bigger than it is one sink call,
    the single files after it the next ones."""
    first, second = make_lifecycle("100", progress=3), make_lifecycle("101")
    sp = Spool(str(tmp_path / "spool"))
    batch = sp.write_batch(first)
    os.utime(batch, (1, 1))  # the oldest file: read first
    for ev in second:
        sp.write(ev)
    calls: list[int] = []
    append = ledger.append

    def counting(envelopes: list[bytes], *args: object, **kwargs: object) -> object:
        calls.append(len(envelopes))
        return append(envelopes, *args, **kwargs)  # type: ignore[arg-type]

    ledger.append = counting  # type: ignore[assignment,method-assign]
    r = forward_spool(sp, host_signer, ledger, batch_size=2)
    assert (r.forwarded, r.remaining) == (len(first) + len(second), 0)
    assert calls[0] == len(first) > 2 and sum(calls) == len(first) + len(second)
    assert all(n <= 2 for n in calls[1:]) and ledger.verify().ok
