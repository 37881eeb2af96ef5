"""Tests of computeproof/envelope.py: DSSE + in-toto signing, opening, rejection."""

from __future__ import annotations

import base64
import hashlib
import json

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from computeproof.canonical import canonical_bytes
from computeproof.envelope import (
    PAYLOAD_TYPE,
    PREDICATE_TYPE,
    STATEMENT_TYPE,
    open_envelope,
    pae,
    sign_event,
    statement,
    subject_name,
    verify_envelope,
)
from computeproof.errors import CanonicalError, ReceiptError, SignatureError
from computeproof.event import job_key, new_event
from computeproof.keys import Signer

SIGNER = Signer.from_seed(bytes([1]) * 32)
OTHER = Signer.from_seed(bytes([2]) * 32)
KEYS = {SIGNER.key_id: SIGNER.public_raw}
EVENT = new_event(
    "started",
    "c1",
    "100_4",
    101,
    "node1",
    {"gpus": [{"minor": 0}], "n": 7},
    run=1,
    time="2026-01-01T00:00:00.000000Z",
)
ENVELOPE = sign_event(EVENT, SIGNER)


def _wrap(
    payload: bytes,
    signer: Signer = SIGNER,
    keyid: str | None = None,
    payload_type: str = PAYLOAD_TYPE,
) -> bytes:
    """A canonical envelope around arbitrary statement bytes, validly signed by ``signer``."""
    sig = signer.sign(pae(payload_type, payload))
    return canonical_bytes(
        {
            "payload": base64.b64encode(payload).decode(),
            "payloadType": payload_type,
            "signatures": [
                {"keyid": keyid or signer.key_id, "sig": base64.b64encode(sig).decode()}
            ],
        }
    )


def _env() -> dict[str, object]:
    return json.loads(ENVELOPE)  # type: ignore[no-any-return]


def test_pae_dsse_spec_example() -> None:
    # the example of the DSSE v1 protocol description
    assert pae("http://example.com/HelloWorld", b"hello world") == (
        b"DSSEv1 29 http://example.com/HelloWorld 11 hello world"
    )
    assert pae("", b"") == b"DSSEv1 0  0 "


def test_sign_and_open_round_trip() -> None:
    env = _env()
    assert set(env) == {"payload", "payloadType", "signatures"}
    assert env["payloadType"] == PAYLOAD_TYPE
    assert canonical_bytes(env) == ENVELOPE  # stored form is canonical
    payload = base64.b64decode(str(env["payload"]))
    st_ = json.loads(payload)
    assert payload == canonical_bytes(st_)
    assert st_["_type"] == STATEMENT_TYPE and st_["predicateType"] == PREDICATE_TYPE
    assert st_["predicate"] == EVENT
    name = "slurm-job:" + job_key("c1", 101, 1)
    assert subject_name(EVENT) == name
    assert st_["subject"] == [
        {"name": name, "digest": {"sha256": hashlib.sha256(name.encode()).hexdigest()}}
    ]
    opened = verify_envelope(ENVELOPE, KEYS)
    assert opened.event == EVENT
    assert opened.key_id == SIGNER.key_id
    assert opened.signed == pae(PAYLOAD_TYPE, payload)
    assert SIGNER.public_raw and len(opened.signature) == 64
    assert sign_event(EVENT, SIGNER) == ENVELOPE  # Ed25519 is deterministic


def test_signing_refuses_floats() -> None:
    with pytest.raises(CanonicalError, match="float"):
        sign_event({**EVENT, "payload": {"util": 0.5}}, SIGNER)


@pytest.mark.parametrize(
    "cut", [0, 1, 10, len(ENVELOPE) // 2, len(ENVELOPE) - 3, len(ENVELOPE) - 1]
)
def test_truncated(cut: int) -> None:
    with pytest.raises(CanonicalError):
        verify_envelope(ENVELOPE[:cut], KEYS)


@pytest.mark.parametrize(
    "text",
    [
        json.dumps(json.loads(ENVELOPE), indent=1),
        json.dumps(json.loads(ENVELOPE), separators=(", ", ": ")),
        json.dumps(dict(reversed(list(json.loads(ENVELOPE).items()))), separators=(",", ":")),
        ENVELOPE.decode() + "\n",
        " " + ENVELOPE.decode(),
        ENVELOPE.decode().replace('"payloadType"', '"payload\\u0054ype"'),
    ],
)
def test_non_canonical_envelope(text: str) -> None:
    assert json.loads(text) == json.loads(ENVELOPE)  # same JSON, other bytes
    with pytest.raises(CanonicalError, match="not canonical"):
        verify_envelope(text.encode(), KEYS)


def test_non_canonical_statement() -> None:
    payload = json.dumps(statement(EVENT), indent=1).encode()
    with pytest.raises(CanonicalError, match="statement bytes are not canonical"):
        verify_envelope(_wrap(payload), KEYS)


def test_resigned_by_unenrolled_key() -> None:
    with pytest.raises(SignatureError, match="not enrolled"):
        verify_envelope(sign_event(EVENT, OTHER), KEYS)


def test_resigned_by_other_key_under_the_enrolled_key_id() -> None:
    forged = _wrap(canonical_bytes(statement(EVENT)), OTHER, keyid=SIGNER.key_id)
    with pytest.raises(SignatureError, match="does not verify"):
        verify_envelope(forged, KEYS)


def test_wrong_key_id() -> None:
    env = _env()
    env["signatures"][0]["keyid"] = "ab" * 32  # type: ignore[index]
    with pytest.raises(SignatureError, match="not enrolled"):
        verify_envelope(canonical_bytes(env), KEYS)


@pytest.mark.parametrize("keyid", ["AB" * 32, "ab" * 31, "xy" * 32, 7])
def test_malformed_key_id(keyid: object) -> None:
    env = _env()
    env["signatures"][0]["keyid"] = keyid  # type: ignore[index]
    with pytest.raises(SignatureError, match="key id"):
        open_envelope(canonical_bytes(env))


def test_two_signatures() -> None:
    env = _env()
    second = json.loads(sign_event(EVENT, OTHER))["signatures"][0]
    env["signatures"] = [*env["signatures"], second]  # type: ignore[misc]
    # the canonical-shape fast path takes the second signature for base64 garbage in the
    # first, so the reason is "not valid base64" rather than "exactly one signature"
    with pytest.raises((SignatureError, CanonicalError), match=r"one signature|base64"):
        verify_envelope(canonical_bytes(env), {**KEYS, OTHER.key_id: OTHER.public_raw})
    # in any other shape the precise reason comes out
    text = json.dumps(env, indent=1).encode()
    with pytest.raises(SignatureError, match="exactly one signature"):
        open_envelope(text)


@pytest.mark.parametrize("sigs", [[], {}, "sig", [[]]])
def test_no_usable_signature(sigs: object) -> None:
    env = _env()
    env["signatures"] = sigs
    with pytest.raises(SignatureError, match="exactly one signature"):
        open_envelope(canonical_bytes(env))


def test_signature_with_extra_field() -> None:
    env = _env()
    env["signatures"][0]["extra"] = 1  # type: ignore[index]
    with pytest.raises(SignatureError, match="exactly keyid and sig"):
        open_envelope(canonical_bytes(env))


def test_payload_type_changed() -> None:
    env = _env()
    env["payloadType"] = "application/json"
    with pytest.raises(CanonicalError, match="payloadType"):
        verify_envelope(canonical_bytes(env), KEYS)
    # even when the signature covers the other type
    resigned = _wrap(canonical_bytes(statement(EVENT)), payload_type="application/json")
    with pytest.raises(CanonicalError, match="payloadType"):
        verify_envelope(resigned, KEYS)


def test_extra_envelope_field() -> None:
    env = {**_env(), "extra": 1}
    with pytest.raises(CanonicalError, match="exactly payload, payloadType, signatures"):
        open_envelope(canonical_bytes(env))


def test_payload_changed_keeps_old_signature() -> None:
    env = _env()
    other = {**EVENT, "payload": {"gpus": [{"minor": 1}], "n": 7}}
    env["payload"] = base64.b64encode(canonical_bytes(statement(other))).decode()
    with pytest.raises(SignatureError, match="does not verify"):
        verify_envelope(canonical_bytes(env), KEYS)


def test_subject_not_matching_event() -> None:
    st_ = statement(EVENT)
    st_["subject"] = statement({**EVENT, "job_id": 999, "run": 0})["subject"]
    with pytest.raises(CanonicalError, match="subject does not name"):
        verify_envelope(_wrap(canonical_bytes(st_)), KEYS)
    st_["subject"] = [{"name": subject_name(EVENT), "digest": {"sha256": "00" * 32}}]
    with pytest.raises(CanonicalError, match="subject does not name"):
        verify_envelope(_wrap(canonical_bytes(st_)), KEYS)


def test_event_id_not_matching_fields() -> None:
    forged = {**EVENT, "host": "node2"}  # keeps node1's id
    with pytest.raises(CanonicalError, match="does not match its fields"):
        verify_envelope(_wrap(canonical_bytes(statement(forged))), KEYS)


def test_float_in_payload() -> None:
    text = canonical_bytes(statement(EVENT)).replace(b'"n":7', b'"n":7.0')
    assert b'"n":7.0' in text
    with pytest.raises(CanonicalError, match="float"):
        verify_envelope(_wrap(text), KEYS)
    with pytest.raises(CanonicalError, match="not valid canonical JSON"):
        verify_envelope(_wrap(text.replace(b'"n":7.0', b'"n":NaN')), KEYS)


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"_type": "https://in-toto.io/Statement/v0.1"}, "not an in-toto Statement v1"),
        ({"predicateType": "https://example.com/other"}, "predicateType"),
        ({"extra": 1}, "exactly _type, subject, predicateType, predicate"),
    ],
)
def test_statement_shape(change: dict[str, object], message: str) -> None:
    st_ = {**statement(EVENT), **change}
    with pytest.raises(CanonicalError, match=message):
        verify_envelope(_wrap(canonical_bytes(st_)), KEYS)


def test_payload_not_base64_or_not_json() -> None:
    env = _env()
    env["payload"] = "!!!!"
    with pytest.raises(CanonicalError, match="base64"):
        open_envelope(canonical_bytes(env))
    with pytest.raises(CanonicalError, match="not JSON"):
        open_envelope(_wrap(b"\xff\xfe not json"))
    with pytest.raises(CanonicalError, match="not JSON"):
        open_envelope(b"\xff" + ENVELOPE)


# -- properties --------------------------------------------------------------------------


@settings(max_examples=100, deadline=None)
@given(st.integers(min_value=0, max_value=len(ENVELOPE) - 1), st.integers(1, 255))
def test_any_byte_change_is_rejected(pos: int, delta: int) -> None:
    data = bytearray(ENVELOPE)
    data[pos] = (data[pos] + delta) % 256
    try:
        opened = verify_envelope(bytes(data), KEYS)
    except ReceiptError:
        return
    # only the known base64 malleability (see the xfail test below) gets through: then the
    # signed bytes and the signature are exactly the original ones
    orig = verify_envelope(ENVELOPE, KEYS)
    assert (opened.signed, opened.signature, opened.event) == (
        orig.signed,
        orig.signature,
        orig.event,
    )


# -- known bugs --------------------------------------------------------------------------


def _malleate_last_b64_char(text: str) -> str:
    """Change the unused low bits of the last data character before '=' padding."""
    alphabet = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/"
    body = text.rstrip("=")
    last = alphabet[alphabet.index(body[-1]) ^ 1]
    return body[:-1] + last + text[len(body) :]


def test_non_canonical_base64_signature_is_rejected() -> None:
    env = _env()
    sig = env["signatures"][0]["sig"]  # type: ignore[index]
    env["signatures"][0]["sig"] = _malleate_last_b64_char(sig)  # type: ignore[index]
    forged = canonical_bytes(env)
    assert forged != ENVELOPE
    with pytest.raises(CanonicalError):
        verify_envelope(forged, KEYS)


def test_integer_beyond_ijson_range_is_rejected() -> None:
    text = canonical_bytes(statement(EVENT)).replace(b'"n":7', b'"n":%d' % 2**60)
    with pytest.raises(CanonicalError):
        verify_envelope(_wrap(text), KEYS)


def test_astral_key_order_is_rejected() -> None:
    ev = {**EVENT, "payload": {"\U0001f600": 1, "\ufb01": 2}}
    text = json.dumps(statement(ev), sort_keys=True, separators=(",", ":"), ensure_ascii=False)
    assert text.encode() != canonical_bytes(statement(ev))
    with pytest.raises(CanonicalError):
        verify_envelope(_wrap(text.encode()), KEYS)


def test_lone_surrogate_escape_is_rejected() -> None:
    text = canonical_bytes(statement(EVENT)).replace(b'"n":7', b'"n":"\\ud800"')
    with pytest.raises(CanonicalError):
        open_envelope(_wrap(text))


@pytest.mark.parametrize("field", ["payload", "sig"])
def test_non_ascii_base64_is_a_canonical_error(field: str) -> None:
    env = _env()
    if field == "payload":
        env["payload"] = "\u00e9" + str(env["payload"])[1:]
    else:
        env["signatures"][0]["sig"] = "\u00e9" + env["signatures"][0]["sig"][1:]  # type: ignore[index]
    with pytest.raises(CanonicalError):
        open_envelope(canonical_bytes(env))


# -- URL-safe base64 (DSSE: verifiers must accept either alphabet) -----------------------


def _url_safe_envelope(shape: str) -> tuple[bytes, dict[str, object]]:
    """ENVELOPE-equivalent signed bytes whose payload and signature use URL-safe base64,
    in the canonical shape (the fast path) or with the keys out of order (the slow path)."""
    # a payload with bytes that encode to '+' and '/' in the standard alphabet
    ev = {**EVENT, "payload": {"gpus": [{"minor": 0}], "n": 7, "note": "\u00ff\u00fe>>>???"}}
    ev = new_event("started", "c1", "100_4", 101, "node1", ev["payload"], run=1,  # type: ignore[arg-type]
                   time="2026-01-01T00:00:00.000000Z")  # fmt: skip
    payload = canonical_bytes(statement(ev))
    sig = SIGNER.sign(pae(PAYLOAD_TYPE, payload))
    p64 = base64.urlsafe_b64encode(payload).decode()
    s64 = base64.urlsafe_b64encode(sig).decode()
    assert set("-_") & set(p64 + s64), "the test needs URL-safe characters"
    env = {"payload": p64, "payloadType": PAYLOAD_TYPE,
           "signatures": [{"keyid": SIGNER.key_id, "sig": s64}]}  # fmt: skip
    data = canonical_bytes(env)
    if shape == "slow":  # same content, a leading space: not the fast path's shape
        data = b" " + data
    return data, ev


def test_url_safe_base64_envelope_verifies() -> None:
    data, ev = _url_safe_envelope("fast")
    opened = verify_envelope(data, KEYS)
    assert opened.event == ev


def test_url_safe_base64_on_the_slow_path_is_still_checked_for_canonical_bytes() -> None:
    data, _ = _url_safe_envelope("slow")
    with pytest.raises(CanonicalError, match="not canonical"):
        verify_envelope(data, KEYS)


def test_url_safe_base64_on_the_json_path_verifies() -> None:
    data, ev = _url_safe_envelope("fast")
    env = json.loads(data)
    # the JSON path (envelopes not in the fast path's byte shape) takes URL-safe too
    from computeproof.envelope import _open_envelope_json

    assert _open_envelope_json(canonical_bytes(env)).event == ev


def test_mixed_base64_alphabets_are_rejected() -> None:
    data, _ = _url_safe_envelope("fast")
    env = json.loads(data)
    sig = str(env["signatures"][0]["sig"])
    std = base64.b64encode(base64.urlsafe_b64decode(sig)).decode()
    mixed = next((sig[:i] + std[i] + sig[i + 1 :] for i in range(len(sig)) if std[i] in "+/"), None)
    if mixed is None or not (set(mixed) & set("-_")):
        pytest.skip("signature has no character that differs between the alphabets")
    env["signatures"][0]["sig"] = mixed
    with pytest.raises(CanonicalError, match="base64"):
        verify_envelope(canonical_bytes(env), KEYS)


def test_url_safe_base64_must_be_canonical() -> None:
    data, _ = _url_safe_envelope("fast")
    env = json.loads(data)
    env["signatures"][0]["sig"] = str(env["signatures"][0]["sig"]).rstrip("=")  # unpadded
    with pytest.raises(CanonicalError, match="base64"):
        verify_envelope(canonical_bytes(env), KEYS)
