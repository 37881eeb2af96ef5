"""Signed events: an in-toto Statement v1 in a DSSE envelope, canonical (RFC 8785) bytes.

    statement = {"_type": "https://in-toto.io/Statement/v1",
                 "subject": [{"name": "slurm-job:<cluster>/<job>#<run>",
                              "digest": {"sha256": sha256(name)}}],
                 "predicateType": PREDICATE_TYPE, "predicate": <event>}
    envelope  = {"payload": base64(JCS(statement)), "payloadType": PAYLOAD_TYPE,
                 "signatures": [{"keyid": <hex>, "sig": base64(Ed25519(PAE))}]}

The stored leaf is JCS(envelope); the Merkle leaf hash covers those exact bytes.
Envelopes are written with standard base64; on input, the payload and signature may be
standard or URL-safe base64 (the DSSE envelope spec: verifiers must accept either).
"""

from __future__ import annotations

import base64
import binascii
import functools
import hashlib
import json
from dataclasses import dataclass
from types import ModuleType
from typing import Any

from computeproof.canonical import MAX_SAFE_INTEGER, canonical_bytes
from computeproof.errors import CanonicalError, SignatureError, UnknownKeyError
from computeproof.event import check_event, job_key
from computeproof.keys import Signer, verify

STATEMENT_TYPE = "https://in-toto.io/Statement/v1"
PREDICATE_TYPE = "https://computeproof.dev/slurm-job-event/v1"
PAYLOAD_TYPE = "application/vnd.in-toto+json"


def pae(payload_type: str, payload: bytes) -> bytes:
    """DSSE v1 pre-authentication encoding."""
    t = payload_type.encode()
    return b"DSSEv1 %d %s %d %s" % (len(t), t, len(payload), payload)


def subject_name(event: dict[str, object]) -> str:
    """The statement subject: one run of one job."""
    return "slurm-job:" + job_key(str(event["cluster"]), int(event["job_id"]), int(event["run"]))  # type: ignore[call-overload]


def statement(event: dict[str, object]) -> dict[str, object]:
    """The in-toto Statement v1 whose predicate is ``event``."""
    name = subject_name(event)
    return {
        "_type": STATEMENT_TYPE,
        "subject": [
            {"name": name, "digest": {"sha256": hashlib.sha256(name.encode()).hexdigest()}}
        ],
        "predicateType": PREDICATE_TYPE,
        "predicate": event,
    }


def sign_event(event: dict[str, object], signer: Signer) -> bytes:
    """Sign ``event``: return the canonical bytes of its DSSE envelope."""
    payload = canonical_bytes(statement(event))
    sig = signer.sign(pae(PAYLOAD_TYPE, payload))
    return canonical_bytes(
        {
            "payload": base64.b64encode(payload).decode(),
            "payloadType": PAYLOAD_TYPE,
            "signatures": [{"keyid": signer.key_id, "sig": base64.b64encode(sig).decode()}],
        }
    )


@dataclass(frozen=True)
class Opened:
    """An envelope whose structure was checked: the event, the signer and the signed bytes."""

    event: dict[str, Any]  # validated by check_event
    key_id: str
    signature: bytes
    signed: bytes  # the PAE bytes the signature covers


def _reject_float(text: str) -> float:
    raise CanonicalError(f"float {text} found: canonical events carry integers in base units")


def _reject_constant(text: str) -> float:
    raise CanonicalError(f"{text} is not valid canonical JSON")


def _parse_int(text: str) -> int:
    value = int(text)
    if not -MAX_SAFE_INTEGER <= value <= MAX_SAFE_INTEGER:
        raise CanonicalError(f"integer {text} is outside the I-JSON range +-(2**53-1)")
    return value


@functools.cache
def _fast_json() -> tuple[ModuleType, int] | None:
    """orjson and its canonical-output options, imported on first use (it is the fast path
    for statements that are canonical already; the standard library is the exact one)."""
    try:
        import orjson
    except ImportError:  # pragma: no cover - orjson is a dependency; stay correct without it
        return None
    return orjson, orjson.OPT_SORT_KEYS | orjson.OPT_STRICT_INTEGER


def _has_float(value: object) -> bool:
    """Whether a parsed JSON value holds a float anywhere."""
    stack = [value]
    pop, push = stack.pop, stack.extend
    while stack:
        item = pop()
        kind = type(item)
        if kind is dict:
            push(item.values())  # type: ignore[attr-defined]
        elif kind is list:
            push(item)  # type: ignore[arg-type]
        elif kind is float:
            return True
    return False


_DECODER = json.JSONDecoder(
    parse_float=_reject_float, parse_constant=_reject_constant, parse_int=_parse_int
)


_PAD = ("=", 61)  # as str and as bytes item
# last data character before "=" (2 bits over) and before "==" (4 bits over), bits zero
_ZERO_TAIL = (frozenset("AEIMQUYcgkosw048") | frozenset(b"AEIMQUYcgkosw048"),
              frozenset("AQgw") | frozenset(b"AQgw"))  # fmt: skip


def b64decode_strict(text: str | bytes, what: str) -> bytes:
    """Standard base64 with padding, in its one canonical spelling (unused bits zero)."""
    try:
        raw = binascii.a2b_base64(text, strict_mode=True)
    except (binascii.Error, ValueError) as e:
        raise CanonicalError(f"{what} is not valid base64: {e}") from e
    # canonical: padded to a multiple of 4, and the bits the padding leaves over are zero
    n = len(text)
    if n != (len(raw) + 2) // 3 * 4 or (
        n
        and text[-1] in _PAD
        and text[-3 if text[-2] in _PAD else -2] not in _ZERO_TAIL[text[-2] in _PAD]
    ):
        raise CanonicalError(f"{what} is not in canonical base64 form")
    return raw


_URL_SAFE = str.maketrans("-_", "+/")
_URL_SAFE_BYTES = bytes.maketrans(b"-_", b"+/")


def b64decode_dsse(text: str | bytes, what: str) -> bytes:
    """A DSSE envelope field: standard or URL-safe base64, as the DSSE envelope spec
    requires verifiers to accept (one alphabet, padded, canonical: see
    :func:`b64decode_strict`). The standard alphabet is tried first: it is what this
    project signs, so the ingest path pays nothing for the other."""
    try:
        return b64decode_strict(text, what)
    except CanonicalError:
        if isinstance(text, str):
            url_safe = ("-" in text or "_" in text) and not ("+" in text or "/" in text)
            standard: str | bytes = text.translate(_URL_SAFE)
        else:
            url_safe = (b"-" in text or b"_" in text) and not (b"+" in text or b"/" in text)
            standard = text.translate(_URL_SAFE_BYTES)
        if not url_safe:
            raise
    return b64decode_strict(standard, what)


def _loads(data: bytes, what: str) -> object:
    try:
        return _DECODER.decode(data.decode("utf-8"))
    except (ValueError, UnicodeDecodeError) as e:
        raise CanonicalError(f"{what} is not JSON: {e}") from e


def _loads_canonical(data: bytes) -> Any | None:
    """The parsed value when ``data`` is provably RFC 8785 already, else None.

    orjson's sorted, 53-bit-strict output equals RFC 8785 for ASCII text without floats
    (ASCII keys sort the same by code point and by UTF-16 unit; its escapes are JCS's):
    so a round trip that gives back ``data`` byte for byte proves it canonical (integers
    past 2**53, and past 2**64, which orjson reads as floats, fail it). Anything else
    (None) takes the exact standard-library path, with its precise error messages.
    """
    fast = _fast_json()
    if fast is None or not data.isascii():
        return None
    orjson, canonical = fast
    try:
        value = orjson.loads(data)
        if _has_float(value) or orjson.dumps(value, option=canonical) != data:
            return None
    except (TypeError, ValueError):  # orjson's decode and encode errors subclass these
        return None
    return value


def _is_canonical(value: object, data: bytes) -> bool:
    # json.dumps with sorted keys equals RFC 8785 for this integer-only data when every
    # character is in the BMP (code-point order = UTF-16 order); anything else, and any
    # mismatch, goes through the exact encoder.
    try:
        if data.isascii():
            fast = json.dumps(value, sort_keys=True, separators=(",", ":"), ensure_ascii=False)
            if fast.encode() == data:
                return True
        return canonical_bytes(value) == data
    except (UnicodeError, CanonicalError):
        return False


_HEX = frozenset("0123456789abcdef")


_ENV_PREFIX = b'{"payload":"'
_ENV_MID = b'","payloadType":"' + PAYLOAD_TYPE.encode() + b'","signatures":[{"keyid":"'
_ENV_SIG = b'","sig":"'
_ENV_SUFFIX = b'"}]}'


def _split_envelope(data: bytes) -> tuple[bytes, str, bytes] | None:
    """(payload b64, key id, sig b64) when ``data`` has the one canonical envelope shape."""
    if not (data.startswith(_ENV_PREFIX) and data.endswith(_ENV_SUFFIX)):
        return None
    mid = data.find(_ENV_MID, len(_ENV_PREFIX))
    if mid < 0:
        return None
    rest = data[mid + len(_ENV_MID) : -len(_ENV_SUFFIX)]
    if rest[64 : 64 + len(_ENV_SIG)] != _ENV_SIG:
        return None
    payload, sig = data[len(_ENV_PREFIX) : mid], rest[64 + len(_ENV_SIG) :]
    if not (payload.isascii() and sig.isascii()):
        return None
    try:
        return payload, rest[:64].decode("ascii"), sig
    except UnicodeDecodeError:
        return None


def open_envelope(data: bytes) -> Opened:
    """Parse and check an envelope's structure; the signature is checked by the caller."""
    parts = _split_envelope(data)
    if parts is None:
        return _open_envelope_json(data)
    payload_b64, kid, sig_b64 = parts
    if not _HEX.issuperset(kid):
        raise SignatureError("envelope signature key id is not a 64-digit hex SHA-256")
    payload = b64decode_dsse(payload_b64, "envelope payload")
    signature = b64decode_dsse(sig_b64, "envelope signature")
    return _open_statement(payload, kid, signature)


def _open_envelope_json(data: bytes) -> Opened:
    # the slow path: any envelope not in the canonical shape ends here with a precise reason
    env = _loads(data, "envelope")
    if not isinstance(env, dict) or set(env) != {"payload", "payloadType", "signatures"}:
        raise CanonicalError("envelope must have exactly payload, payloadType, signatures")
    if env["payloadType"] != PAYLOAD_TYPE:
        raise CanonicalError(f"envelope payloadType {env['payloadType']!r} is not {PAYLOAD_TYPE}")
    sigs = env["signatures"]
    if not isinstance(sigs, list) or len(sigs) != 1 or not isinstance(sigs[0], dict):
        raise SignatureError("envelope must carry exactly one signature")
    if set(sigs[0]) != {"keyid", "sig"}:
        raise SignatureError("envelope signature must have exactly keyid and sig")
    kid, sig_b64, payload_b64 = sigs[0]["keyid"], sigs[0]["sig"], env["payload"]
    if not isinstance(kid, str) or len(kid) != 64 or not _HEX.issuperset(kid):
        raise SignatureError("envelope signature key id is not a 64-digit hex SHA-256")
    if not isinstance(sig_b64, str) or not isinstance(payload_b64, str):
        raise CanonicalError("envelope payload and signature must be base64 strings")
    payload = b64decode_dsse(payload_b64, "envelope payload")
    signature = b64decode_dsse(sig_b64, "envelope signature")
    expected = (
        f'{{"payload":"{payload_b64}","payloadType":"{PAYLOAD_TYPE}",'
        f'"signatures":[{{"keyid":"{kid}","sig":"{sig_b64}"}}]}}'
    )
    if expected.encode() != data:
        raise CanonicalError("envelope bytes are not canonical JSON (RFC 8785)")
    return _open_statement(payload, kid, signature)


def _open_statement(payload: bytes, kid: str, signature: bytes) -> Opened:
    st = _loads_canonical(payload)
    canonical = st is not None
    if not canonical:
        st = _loads(payload, "envelope payload")
    if not isinstance(st, dict) or st.get("_type") != STATEMENT_TYPE:
        raise CanonicalError("envelope payload is not an in-toto Statement v1")
    if set(st) != {"_type", "subject", "predicateType", "predicate"}:
        raise CanonicalError("statement must have exactly _type, subject, predicateType, predicate")
    if st["predicateType"] != PREDICATE_TYPE:
        raise CanonicalError(f"statement predicateType {st['predicateType']!r} is unknown")
    event = check_event(st["predicate"])
    name = subject_name(event)
    want_subject = [{"name": name, "digest": {"sha256": hashlib.sha256(name.encode()).hexdigest()}}]
    if st["subject"] != want_subject:
        raise CanonicalError(f"statement subject does not name its event's job ({name})")
    if not canonical and not _is_canonical(st, payload):
        raise CanonicalError("statement bytes are not canonical JSON (RFC 8785)")
    return Opened(event, kid, signature, pae(PAYLOAD_TYPE, payload))


def verify_envelope(data: bytes, keys: dict[str, bytes]) -> Opened:
    """Open an envelope and verify its signature against ``keys`` (key id -> raw key)."""
    opened = open_envelope(data)
    public = keys.get(opened.key_id)
    if public is None:
        raise UnknownKeyError(
            f"signed by key {opened.key_id[:16]}..., which is not enrolled in this ledger "
            "(or revoked); enroll it with `computeproof keys enroll`"
        )
    if not verify(public, opened.signature, opened.signed):
        raise SignatureError(
            f"signature by key {opened.key_id[:16]}... does not verify for event "
            f"{opened.event['id']}"
        )
    return opened
