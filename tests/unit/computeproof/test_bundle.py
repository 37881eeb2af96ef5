"""Tests of computeproof/bundle.py: export, offline verification, and tampering with
every JSON value of an exported bundle."""

from __future__ import annotations

import base64
import contextlib
import copy
import json
import os
import re
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from computeproof.envelope import sign_event
from computeproof.errors import BundleError
from computeproof.keys import Signer
from computeproof.ledger import Ledger
from computeproof.privacy import commit_fields
from computeproof.store.sqlite import SQLiteStore

ORIGIN = "computeproof.test.ledger"
CTL = Signer.from_seed(bytes([1]) * 32)  # controller key: scheduled, completed
NODE = Signer.from_seed(bytes([3]) * 32)  # node key: started, progress, node_done


def _ledger(d: Path, origin: str = ORIGIN) -> Ledger:
    return Ledger(SQLiteStore(str(d / "ledger.db")), origin, str(d / "ledger.key"), workers=1)


def _fill(led: Ledger, make_lifecycle: Callable[..., list[dict[str, Any]]]) -> None:
    led.enroll(CTL.public_raw, ["ctl"])
    led.enroll(NODE.public_raw, ["node1"])
    for job in ("100", "101"):
        envs, openings = [], []
        for ev in make_lifecycle(job):
            payload, ops = commit_fields(ev["payload"], ("user",), ev["id"], CTL.salt_secret)
            signer = CTL if ev["host"] == "ctl" else NODE
            envs.append(sign_event({**ev, "payload": payload}, signer))
            openings.append(ops)
        assert len(led.append(envs, openings).accepted) == len(envs)


@pytest.fixture(scope="module")
def exported(
    tmp_path_factory: pytest.TempPathFactory, make_lifecycle: Callable[..., list[dict[str, Any]]]
) -> dict[str, Any]:
    """Bundles of job 100 (with and without disclosures) and of job 101, plus ledger keys."""
    d = tmp_path_factory.mktemp("bundle")
    with _ledger(d) as led:
        _fill(led, make_lifecycle)
        from computeproof.bundle import export_bundle

        out = {
            "plain": export_bundle(led, "100"),
            "disclosed": export_bundle(led, "100", disclose=True),
            "other_job": export_bundle(led, "101"),
            "ledger_key": led.ledger_public_key(),
        }
    e = tmp_path_factory.mktemp("foreign")
    with _ledger(e, origin="other.ledger") as other:
        _fill(other, make_lifecycle)
        from computeproof.bundle import export_bundle

        out["foreign"] = export_bundle(other, "100")
        out["foreign_key"] = other.ledger_public_key()
    return out


def _verify(bundle: object, key: bytes | None = None) -> Any:
    from computeproof.bundle import verify_bundle

    return verify_bundle(json.dumps(bundle), key)


def test_round_trip(exported: dict[str, Any]) -> None:
    b = exported["plain"]
    assert b["format"] == "computeproof.receipt/v1"
    assert b["job"]["job_key"] == "c1/100#0"
    assert (b["job"]["cluster"], b["job"]["job"], b["job"]["run"]) == ("c1", "100", 0)
    assert b["log"]["origin"] == ORIGIN and b["log"]["size"] == 10
    assert [k["hosts"] for k in b["keys"]] in (["ctl"], ["node1"]) or len(b["keys"]) == 2
    assert [e["leaf_index"] for e in b["entries"]] == [0, 1, 2, 3, 4]
    assert "disclosures" not in b and b["anchors"] == []
    report = _verify(b, exported["ledger_key"])
    assert report.job_key == "c1/100#0" and report.checkpoint_size == 10
    assert report.lifecycle == {
        "scheduled": 1,
        "started": 1,
        "progress": 1,
        "node_done": 1,
        "completed": 1,
    }
    assert [e["leaf_index"] for e in report.events] == [0, 1, 2, 3, 4]
    assert report.disclosed == {}
    from computeproof.bundle import verify_bundle

    text = json.dumps(b)
    assert verify_bundle(text.encode()).job_key == verify_bundle(text).job_key  # bytes or str


def test_disclosures(exported: dict[str, Any]) -> None:
    b = exported["disclosed"]
    ((eid, fields),) = b["disclosures"].items()
    assert set(fields) == {"user"} and fields["user"]["value"] == "alice"
    report = _verify(b)
    assert report.disclosed == {eid: {"user": "alice"}}
    # the committed payload itself carries no user name
    scheduled = report.events[0]
    assert set(scheduled["payload"]["user"]) == {"sha256_commitment"}


@pytest.mark.parametrize(
    ("change", "message"),
    [
        (
            lambda f: f.update(value="bob"),
            r"disclosures\[[0-9a-f]+\]\[user\]: opening does not match",
        ),
        (lambda f: f.update(salt="00" * 32), r"disclosures\[[0-9a-f]+\]\[user\]"),
        (lambda f: f.update(salt="xyz"), "not hex"),
        (lambda f: f.pop("salt"), "no salt"),
    ],
)
def test_disclosures_that_do_not_open(
    exported: dict[str, Any], change: Callable, message: str
) -> None:
    b = copy.deepcopy(exported["disclosed"])
    change(next(iter(b["disclosures"].values()))["user"])
    with pytest.raises(BundleError, match=message):
        _verify(b)


def test_disclosure_of_a_foreign_event_or_field(exported: dict[str, Any]) -> None:
    b = copy.deepcopy(exported["disclosed"])
    b["disclosures"]["ab" * 32] = {"user": {"salt": "00", "value": "x"}}
    with pytest.raises(BundleError, match="is not in this receipt"):
        _verify(b)
    b = copy.deepcopy(exported["disclosed"])
    next(iter(b["disclosures"].values()))["account"] = {"salt": "00", "value": "physics"}
    with pytest.raises(BundleError, match=r"\[account\]: field is not a commitment"):
        _verify(b)


def test_entries_of_another_job(exported: dict[str, Any]) -> None:
    b = copy.deepcopy(exported["plain"])
    b["entries"].append(exported["other_job"]["entries"][0])
    with pytest.raises(BundleError, match=r"entries\[5\] \(leaf 5\): event belongs to c1/101#0"):
        _verify(b)
    b = copy.deepcopy(exported["other_job"])
    b["job"] = exported["plain"]["job"]
    with pytest.raises(BundleError, match="belongs to c1/101#0, not c1/100#0"):
        _verify(b)


def test_foreign_checkpoint(exported: dict[str, Any]) -> None:
    b = copy.deepcopy(exported["plain"])
    b["log"]["checkpoint"] = exported["foreign"]["log"]["checkpoint"]
    with pytest.raises(
        BundleError, match=r"log checkpoint: checkpoint is from log 'other\.ledger'"
    ):
        _verify(b)
    b["log"]["origin"] = "other.ledger"  # consistent origin, but another ledger's key
    with pytest.raises(BundleError, match="log checkpoint"):
        _verify(b)


def test_trusted_ledger_key(exported: dict[str, Any]) -> None:
    _verify(exported["foreign"], exported["foreign_key"])  # self-consistent on its own
    with pytest.raises(BundleError, match="not the trusted ledger key"):
        _verify(exported["foreign"], exported["ledger_key"])
    with pytest.raises(BundleError, match="not the trusted ledger key"):
        _verify(exported["plain"], exported["foreign_key"])


def test_entries_from_another_ledger(exported: dict[str, Any]) -> None:
    b = copy.deepcopy(exported["plain"])
    b["entries"][2] = copy.deepcopy(exported["foreign"]["entries"][2])
    b["entries"][2]["inclusion_proof"][0] = base64.b64encode(b"\x00" * 32).decode()
    with pytest.raises(BundleError, match=r"entries\[2\] \(leaf 2\)"):
        _verify(b)


@pytest.mark.parametrize(
    ("data", "message"),
    [
        (b"not json", "not JSON"),
        (b"\xff\xfe", "not JSON"),
        (b"[]", "not a receipt bundle"),
        (b'{"format": "other"}', "not a receipt bundle"),
        (b'{"format": "computeproof.receipt/v1"}', "receipt: missing field 'job'"),
    ],
)
def test_malformed(data: bytes, message: str) -> None:
    from computeproof.bundle import verify_bundle

    with pytest.raises(BundleError, match=message):
        verify_bundle(data)


@pytest.mark.parametrize(
    ("path", "value", "message"),
    [
        (("job", "run"), "0", "job: field 'run' must be int"),
        (("job", "run"), True, "job: field 'run' must be int"),
        (("log", "size"), 9, "size or root differ"),
        (("log", "root"), "!!", "log:"),
        (("log", "ledger_key"), "ed25519:AAAA", "log:"),
        (("keys",), [], "not enrolled"),
        (("entries",), [], "receipt has no entries"),
        (("entries", 0, "leaf_index"), "0", r"entries\[0\]: field 'leaf_index' must be int"),
        (("entries", 1, "leaf_index"), 0, "not in increasing leaf order"),
        (("entries", 0, "inclusion_proof"), "x", "must be list"),
        (("keys", 0, "key_id"), "ab" * 32, r"keys\[0\]: key id does not match"),
        (("keys", 0, "hosts"), ["node7"], "signing key is not enrolled for host"),
        (("disclosures",), [], "disclosures must be an object"),
    ],
)
def test_wrong_fields_are_named(
    exported: dict[str, Any], path: tuple[Any, ...], value: object, message: str
) -> None:
    b = copy.deepcopy(exported["plain"])
    target = b
    for p in path[:-1]:
        target = target[p]
    target[path[-1]] = value
    with pytest.raises(BundleError, match=message):
        _verify(b)


# -- every JSON value of a bundle --------------------------------------------------------

_B64 = re.compile(r"[A-Za-z0-9+/=]+")


def _paths(node: Any, path: tuple[Any, ...] = ()) -> list[tuple[Any, ...]]:
    if isinstance(node, dict):
        return [path] + [p for k, v in node.items() for p in _paths(v, (*path, k))]
    if isinstance(node, list):
        return [path] + [p for i, v in enumerate(node) for p in _paths(v, (*path, i))]
    return [path]


def _get(node: Any, path: tuple[Any, ...]) -> Any:
    for p in path:
        node = node[p]
    return node


def _same_base64(old: str, new: str, pos: int) -> bool:
    """True when the changed character sits in a base64 token that decodes to the same bytes
    (unused pad bits: RFC 4648 section 3.5, not checked by base64.b64decode)."""

    def token(s: str) -> str | None:
        for m in _B64.finditer(s):
            if m.start() <= pos < m.end():
                return m.group()
        return None

    a, b = token(old), token(new)
    if a is None or b is None:
        return False
    try:
        return base64.b64decode(a, validate=True) == base64.b64decode(b, validate=True)
    except ValueError:
        return False


def _b64_path(path: tuple[Any, ...]) -> bool:
    return (
        path in (("log", "root"), ("log", "ledger_key"))
        or (path[:1] == ("keys",) and path[-1:] == ("public_key",))
        or (path[:1] == ("entries",) and "inclusion_proof" in path)
    )


def _neutral(path: tuple[Any, ...], kind: str, old: Any, new: Any, pos: int) -> str | None:
    """Why a change is semantically neutral, or None when verification must fail."""
    if path in (("job", "job_key"), ("job", "job")):
        # finding: neither is compared with the events, so a bundle may carry a wrong label
        return "job.job_key and job.job are not read: the job is cluster, job_id and run"
    if kind == "reorder" and path == ("keys",):
        return "the keys list is a set: the verifier indexes it by key id"
    salt = path[:1] == ("disclosures",) and path[-1] == "salt" and kind == "char"
    if salt and str(old).lower() == str(new).lower():
        return "bytes.fromhex accepts upper-case hex"
    if kind == "char" and _b64_path(path) and _same_base64(str(old), str(new), pos):
        return "non-canonical base64 of the same bytes"
    if kind == "char" and path == ("log", "checkpoint"):
        last = str(old).rstrip("\n").rfind("\n")
        if pos > last and _same_base64(str(old), str(new), pos):
            return "non-canonical base64 of the checkpoint signature"
    return None


_ALPHABET = 'AZaz09+/=-_:. \n"\\{}\u00e9\u2014'


@st.composite
def _mutation(draw: st.DrawFn, bundle: dict[str, Any]) -> tuple[Any, ...]:
    paths = _paths(bundle)
    path = draw(st.sampled_from(paths))
    value = _get(bundle, path)
    if isinstance(value, str):
        if not value:
            return (path, "char", value, "x", 0)
        pos = draw(st.integers(0, len(value) - 1))
        ch = draw(st.sampled_from(_ALPHABET).filter(lambda c: c != value[pos]))
        return (path, "char", value, value[:pos] + ch + value[pos + 1 :], pos)
    if isinstance(value, bool) or value is None:
        return (path, "value", value, not value if value is not None else 0, 0)
    if isinstance(value, int):
        delta = draw(st.sampled_from([1, -1, 2, 1 << 20]))
        return (path, "int", value, value + delta, 0)
    if isinstance(value, list) and value:
        if len(value) > 1 and draw(st.booleans()):
            return (path, "reorder", value, value[1:] + value[:1], 0)
        i = draw(st.integers(0, len(value) - 1))
        return (path, "drop", value, value[:i] + value[i + 1 :], i)
    return (path, "none", value, value, 0)


def _set(bundle: dict[str, Any], path: tuple[Any, ...], value: Any) -> dict[str, Any]:
    b = copy.deepcopy(bundle)
    if not path:
        return value  # type: ignore[no-any-return]
    _get(b, path[:-1])[path[-1]] = value
    return b


@settings(max_examples=100, deadline=None)
@given(st.data())
def test_any_change_to_any_value_is_detected(exported: dict[str, Any], data: st.DataObject) -> None:
    original = exported["disclosed"]
    path, kind, old, new, pos = data.draw(_mutation(original))
    if kind == "none" or (kind == "drop" and path == ("entries",)):
        return  # dropping whole entries: see test_dropped_entry_is_detected (known bug)
    if kind == "drop" and path[:1] == ("disclosures",):
        return  # disclosing less is allowed
    if kind == "char" and not str(new).isascii() and _b64_path(path):
        return  # known bug: test_non_ascii_base64_field
    if kind == "char" and not str(new).isascii() and path[-1:] == ("envelope",):
        return  # known bug: test_envelope.py::test_non_ascii_base64_is_a_canonical_error
    mutated = _set(original, path, new)
    why = _neutral(path, kind, old, new, pos)
    if why is not None:
        with contextlib.suppress(BundleError):  # neutral changes may be refused, never crash
            _verify(mutated)
        return
    with pytest.raises(BundleError):
        _verify(mutated)


def test_reordering_keys_is_harmless(exported: dict[str, Any]) -> None:
    b = copy.deepcopy(exported["plain"])
    assert len(b["keys"]) == 2
    b["keys"].reverse()
    assert _verify(b).job_key == "c1/100#0"


# -- known bugs --------------------------------------------------------------------------


def test_dropped_entry_is_detected(exported: dict[str, Any]) -> None:
    b = copy.deepcopy(exported["plain"])
    del b["entries"][4]  # the 'completed' event
    with pytest.raises(BundleError):
        _verify(b)


def test_disclosure_opening_not_an_object(exported: dict[str, Any]) -> None:
    b = copy.deepcopy(exported["disclosed"])
    next(iter(b["disclosures"].values()))["user"] = "alice"
    with pytest.raises(BundleError):
        _verify(b)


def test_envelope_with_lone_surrogate(exported: dict[str, Any]) -> None:
    b = copy.deepcopy(exported["plain"])
    b["entries"][0]["envelope"] = "\ud800" + b["entries"][0]["envelope"]
    with pytest.raises(BundleError):
        _verify(b)


@pytest.mark.parametrize("path", [("log", "root"), ("entries", 0, "inclusion_proof", 0)])
def test_non_ascii_base64_field(exported: dict[str, Any], path: tuple[Any, ...]) -> None:
    b = copy.deepcopy(exported["plain"])
    _get(b, path[:-1])[path[-1]] = "\u00e9" + _get(b, path)[1:]
    with pytest.raises(BundleError):
        _verify(b)


def test_export_needs_the_job(tmp_path: Path) -> None:
    from computeproof.bundle import export_bundle
    from computeproof.errors import ReceiptError

    with _ledger(tmp_path) as led, pytest.raises(ReceiptError, match="no receipts for job 5"):
        export_bundle(led, "5")
    assert os.path.exists(tmp_path / "ledger.db")


def test_an_event_cannot_name_its_own_leaf_index(
    tmp_path: Path, make_lifecycle: Callable[..., list[dict[str, Any]]]
) -> None:
    """An enrolled host may sign an event with extra top-level keys; one named leaf_index
    must not stand in for the leaf the entry was proved at (the completeness check counts
    those leaves)."""
    from computeproof.bundle import export_bundle

    with _ledger(tmp_path) as led:
        led.enroll(CTL.public_raw, ["ctl"])
        led.enroll(NODE.public_raw, ["node1"])
        envs = []
        for ev in make_lifecycle("100"):
            if ev["type"] == "progress":
                ev = {**ev, "leaf_index": 999}
            envs.append(sign_event(ev, CTL if ev["host"] == "ctl" else NODE))
        assert len(led.append(envs).accepted) == len(envs)
        bundle = export_bundle(led, "100")
        key = led.ledger_public_key()
    report = _verify(bundle, key)
    assert [e["leaf_index"] for e in report.events] == [0, 1, 2, 3, 4]
