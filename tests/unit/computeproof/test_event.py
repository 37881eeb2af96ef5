"""Tests of computeproof/event.py: deterministic ids, event shape, time format."""

from __future__ import annotations

import datetime as dt
import hashlib
import re

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from computeproof.canonical import MAX_SAFE_INTEGER, canonical_bytes
from computeproof.errors import CanonicalError
from computeproof.event import (
    EVENT_TYPES,
    FIELDS,
    SCHEMA,
    check_event,
    event_id,
    job_key,
    new_event,
    utc_now,
)

TIME = "2026-01-02T03:04:05.000006Z"


def _reference_id(
    cluster: str, job: str, job_id: int, run: int, type: str, host: str, seq: int
) -> str:
    ident = [SCHEMA, cluster, job, job_id, run, type, host, seq]
    return hashlib.sha256(canonical_bytes(ident)).hexdigest()


def test_event_id_known_answer() -> None:
    eid = event_id("c1", "100_4", 101, 0, "started", "node1", 0)
    assert eid == _reference_id("c1", "100_4", 101, 0, "started", "node1", 0)
    text = b'["computeproof.event/v1","c1","100_4",101,0,"started","node1",0]'
    assert eid == hashlib.sha256(text).hexdigest()


_text = st.text(min_size=1, max_size=10)  # surrogates are excluded by default
_nat = st.integers(min_value=0, max_value=MAX_SAFE_INTEGER)


@settings(max_examples=100, deadline=None)
@given(_text, _text, _nat, _nat, st.sampled_from(EVENT_TYPES), _text, _nat)
def test_event_id_is_sha256_of_canonical_identity(
    cluster: str, job: str, job_id: int, run: int, type: str, host: str, seq: int
) -> None:
    assert event_id(cluster, job, job_id, run, type, host, seq) == _reference_id(
        cluster, job, job_id, run, type, host, seq
    )


def test_new_event_fields_and_determinism() -> None:
    ev = new_event("started", "c1", "100", 100, "node1", {"gpus": []}, seq=2, run=1, time=TIME)
    assert set(ev) == {*FIELDS, "payload"}
    assert ev["schema"] == SCHEMA and ev["time"] == TIME and ev["seq"] == 2 and ev["run"] == 1
    assert ev["id"] == event_id("c1", "100", 100, 1, "started", "node1", 2)
    again = new_event(
        "started",
        "c1",
        "100",
        100,
        "node1",
        {"other": 1},
        seq=2,
        run=1,
        time="2030-01-01T00:00:00Z",
    )
    assert again["id"] == ev["id"]  # time and payload are not part of the identity
    assert check_event(ev) is ev


@pytest.mark.parametrize(
    "change",
    [
        {"cluster": "c2"},
        {"job": "101"},
        {"job_id": 101},
        {"run": 1},
        {"type": "completed"},
        {"host": "node2"},
        {"seq": 1},
    ],
)
def test_every_identity_field_changes_the_id(change: dict[str, object]) -> None:
    base = {
        "cluster": "c1",
        "job": "100",
        "job_id": 100,
        "run": 0,
        "type": "started",
        "host": "node1",
        "seq": 0,
    }
    assert event_id(**{**base, **change}) != event_id(**base)  # type: ignore[arg-type]


def test_new_event_time_defaults_to_now() -> None:
    ev = new_event("progress", "c1", "1", 1, "n", {})
    assert re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{6}Z", str(ev["time"]))


def test_unknown_type_refused() -> None:
    with pytest.raises(CanonicalError, match="unknown event type"):
        new_event("submitted", "c1", "1", 1, "n", {})


def test_utc_now_format_and_value() -> None:
    now = utc_now()
    assert re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{6}Z", now)
    parsed = dt.datetime.strptime(now, "%Y-%m-%dT%H:%M:%S.%fZ").replace(tzinfo=dt.UTC)
    assert abs((dt.datetime.now(dt.UTC) - parsed).total_seconds()) < 60


def test_job_key() -> None:
    assert job_key("c1", 101) == "c1/101#0"
    assert job_key("c1", 201, 3) == "c1/201#3"


def _good() -> dict[str, object]:
    return new_event("completed", "c1", "100", 100, "ctl", {"state": "COMPLETED"}, time=TIME)


@pytest.mark.parametrize(
    ("mutate", "message"),
    [
        (lambda e: e.pop("payload"), "lacks field 'payload'"),
        (lambda e: e.pop("id"), "lacks field 'id'"),
        (lambda e: e.pop("time"), "lacks field 'time'"),
        (lambda e: e.update(schema="computeproof.event/v2"), "schema"),
        (lambda e: e.update(type="bogus"), "unknown event type"),
        (lambda e: e.update(cluster=""), "'cluster' must be a non-empty string"),
        (lambda e: e.update(host=7), "'host' must be a non-empty string"),
        (lambda e: e.update(time=None), "'time' must be a non-empty string"),
        (lambda e: e.update(job_id=-1), "'job_id' must be a non-negative integer"),
        (lambda e: e.update(seq=True), "'seq' must be a non-negative integer"),
        (lambda e: e.update(run="0"), "'run' must be a non-negative integer"),
        (lambda e: e.update(payload=[1]), "payload must be a JSON object"),
        (lambda e: e.update(host="node9"), "does not match its fields"),
        (lambda e: e.update(id="0" * 64), "does not match its fields"),
    ],
)
def test_check_event_rejects(mutate: object, message: str) -> None:
    ev = _good()
    mutate(ev)  # type: ignore[operator]
    with pytest.raises(CanonicalError, match=re.escape(message)):
        check_event(ev)


@pytest.mark.parametrize("bad", [None, [], "event", 3])
def test_check_event_rejects_non_objects(bad: object) -> None:
    with pytest.raises(CanonicalError, match="not a JSON object"):
        check_event(bad)


def test_ids_of_escaped_identity_strings() -> None:
    # quotes, backslashes and control characters must be escaped as RFC 8785 does
    for s in ('a"b', "a\\b", "a\nb", "a\x01b", "\u00e9\U0001f600"):
        assert event_id(s, s, 1, 0, "started", s, 0) == _reference_id(s, s, 1, 0, "started", s, 0)


def test_text_value_keeps_valid_text_and_encodes_other_bytes_losslessly() -> None:
    import base64

    from computeproof.canonical import canonical_bytes
    from computeproof.event import text_value

    assert text_value("train") == "train"
    assert text_value("réseau\n\u2028") == "réseau\n\u2028"
    raw = b"job\xff\xfe\nJobName=x"
    decoded = raw.decode("utf-8", "surrogateescape")
    value = text_value(decoded)
    assert isinstance(value, dict)
    assert base64.b64decode(value["non_utf8"]) == raw
    canonical_bytes(value)  # now representable
    lone = text_value("a\ud800b")  # a lone surrogate from a JSON escape
    assert isinstance(lone, dict)
    assert base64.b64decode(lone["non_utf8"]) == "a\ud800b".encode("utf-8", "surrogatepass")


def test_new_event_records_non_utf8_payload_strings_as_objects() -> None:
    from computeproof.canonical import canonical_bytes
    from computeproof.event import new_event

    name = b"\xc3\x28bad".decode("utf-8", "surrogateescape")
    event = new_event(
        "started", "c1", "5", 5, "n1", {"job_name": name, "nodes": [name, "ok"], "n": 1}
    )
    payload = event["payload"]
    assert isinstance(payload, dict)
    assert payload["job_name"] == {"non_utf8": "wyhiYWQ="}
    assert payload["nodes"] == [{"non_utf8": "wyhiYWQ="}, "ok"] and payload["n"] == 1
    canonical_bytes(event)
