"""Tests of computeproof/httpsig.py: RFC 9421 request signatures with Ed25519, RFC 9530
Content-Digest, and what the verifier refuses."""

from __future__ import annotations

import base64
import hashlib

import pytest
from cryptography.hazmat.primitives import serialization

from computeproof.httpsig import (
    NonceCache,
    RequestAuthError,
    content_digest,
    sign_request,
    signature_base,
    verify_request,
)
from computeproof.keys import Signer

# RFC 9421 appendix B.1.4, test-key-ed25519
RFC_KEY = b"""-----BEGIN PRIVATE KEY-----
MC4CAQAwBQYDK2VwBCIEIJ+DYvh6SEqVTm50DFtMDoQikTmiCqirVv9mWG9qfSnF
-----END PRIVATE KEY-----
"""


def test_rfc9421_b26_signature_base_and_signature() -> None:
    """Appendix B.2.6 ("Signing a Request Using ed25519"): the same signature base and,
    Ed25519 being deterministic, the same signature."""
    key = serialization.load_pem_private_key(RFC_KEY, None)
    signer = Signer(key)  # type: ignore[arg-type]
    components = ("date", "@method", "@path", "@authority", "content-type", "content-length")
    values = {
        "date": "Tue, 20 Apr 2021 02:07:55 GMT",
        "@method": "POST",
        "@path": "/foo",
        "@authority": "example.com",
        "content-type": "application/json",
        "content-length": "18",
    }
    params = (
        '("date" "@method" "@path" "@authority" "content-type" "content-length")'
        ';created=1618884473;keyid="test-key-ed25519"'
    )
    base = signature_base(components, values, params)
    assert base == (
        b'"date": Tue, 20 Apr 2021 02:07:55 GMT\n"@method": POST\n"@path": /foo\n'
        b'"@authority": example.com\n"content-type": application/json\n'
        b'"content-length": 18\n"@signature-params": ' + params.encode()
    )
    assert base64.b64encode(signer.sign(base)).decode() == (
        "wqcAqbmYJ2ji2glfAMaRy4gruYYnx2nEFN2HN6jrnDnQCK1u02Gb04v9EDgwUPiu4A0w6vuQv5lIp5WPpBKRCw=="
    )


def test_rfc9530_content_digest() -> None:
    # RFC 9530 appendix B.2: {"hello": "world"} and its SHA-256
    body = b'{"hello": "world"}\n'
    assert (
        content_digest(body)
        == "sha-256=:" + base64.b64encode(hashlib.sha256(body).digest()).decode() + ":"
    )
    assert content_digest(body) == "sha-256=:RK/0qy18MlBSVnWgjwz6lZEWjP/lF5HF9bvEF8FabDg=:"


HOST = Signer.from_seed(b"\x05" * 32)
OTHER = Signer.from_seed(b"\x06" * 32)
NOW = 1_800_000_000


def _keys(kid: str) -> bytes | None:
    return HOST.public_raw if kid == HOST.key_id else None


def _verify(headers: dict[str, str], body: bytes = b"{}", method: str = "POST",
            path: str = "/v1/events", query: str = "", nonces: NonceCache | None = None,
            now: int = NOW) -> object:  # fmt: skip
    lower = {k.lower(): v for k, v in headers.items()}
    return verify_request(method, path, query, lower, body, _keys, nonces or NonceCache(300),
                          300, now)  # fmt: skip


def _signed(body: bytes | None = b"{}", **kw: object) -> dict[str, str]:
    return sign_request(HOST, "POST", "/v1/events", "", body, created=NOW, **kw)  # type: ignore[arg-type]


def test_round_trip_with_and_without_a_body() -> None:
    signed = _verify(_signed())
    assert signed.key_id == HOST.key_id and signed.created == NOW  # type: ignore[attr-defined]
    get = sign_request(HOST, "GET", "/v1/jobs", "user=a&user=b", None, created=NOW)
    assert "Content-Digest" not in get
    _verify(get, b"", "GET", "/v1/jobs", "user=a&user=b")


@pytest.mark.parametrize(
    ("change", "reason"),
    [
        (lambda h: h.pop("Signature"), "unsigned"),
        (lambda h: h.pop("Signature-Input"), "unsigned"),
        (lambda h: h.update({"Signature": "cp=:AAAA:"}), "bad_signature"),
        (lambda h: h.update({"Signature": "x=" + h["Signature"].split("=", 1)[1]}), "malformed"),
        (lambda h: h.update({"Content-Digest": content_digest(b"[]")}), "bad_digest"),
        (lambda h: h.pop("Content-Digest"), "bad_digest"),
        (lambda h: h.update({"Signature-Input": h["Signature-Input"].replace('"@query" ', "")}),
         "malformed"),
        (lambda h: h.update({"Signature-Input": h["Signature-Input"].replace("ed25519", "rsa")}),
         "malformed"),
        (lambda h: h.update({"Signature-Input": h["Signature-Input"] + ', x=("@method")'}),
         "malformed"),
        (lambda h: h.update({"Signature-Input": h["Signature-Input"].replace(
            f"created={NOW}", f"created={NOW + 1}")}), "bad_signature"),
    ],
)  # fmt: skip
def test_refusals(change: object, reason: str) -> None:
    headers = _signed()
    change(headers)  # type: ignore[operator]
    with pytest.raises(RequestAuthError) as info:
        _verify(headers)
    assert info.value.reason == reason, str(info.value)


def test_the_signature_binds_method_path_query_and_body() -> None:
    headers = _signed()
    for kw in ({"method": "PUT"}, {"path": "/v1/other"}, {"query": "x=1"}, {"body": b"{ }"}):
        with pytest.raises(RequestAuthError) as info:
            _verify(dict(headers), **kw)  # type: ignore[arg-type]
        assert info.value.reason in ("bad_signature", "bad_digest")


def test_a_replay_is_refused_and_a_stale_signature_too() -> None:
    nonces = NonceCache(300)
    headers = _signed()
    _verify(headers, nonces=nonces)
    with pytest.raises(RequestAuthError, match="replay"):
        _verify(headers, nonces=nonces)
    for now in (NOW + 301, NOW - 301):
        with pytest.raises(RequestAuthError, match="outside the 300 s window") as info:
            _verify(_signed(), now=now)
        assert info.value.reason == "stale"


def test_an_unknown_key_is_named() -> None:
    headers = sign_request(OTHER, "POST", "/v1/events", "", b"{}", created=NOW)
    with pytest.raises(RequestAuthError, match="not enrolled") as info:
        _verify(headers)
    assert info.value.reason == "unknown_key"


def test_nonce_cache_forgets_what_is_past_the_window() -> None:
    cache = NonceCache(10, limit=3)
    assert cache.add("k", "n1", 0) and cache.add("k", "n2", 1) and not cache.add("k", "n1", 2)
    assert cache.add("k", "n3", 2)
    with pytest.raises(RequestAuthError, match="too many"):
        cache.add("k", "n4", 5)  # full, and nothing is old enough to drop
    assert cache.add("k", "n4", 100)  # everything before 80 dropped
    assert cache.add("k", "n1", 100)  # forgotten: past the window, the clock check refuses it
