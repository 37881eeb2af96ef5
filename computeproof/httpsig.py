"""HTTP Message Signatures (RFC 9421) with Ed25519, and Content-Digest (RFC 9530): how a
forwarder or producer proves to the collector which enrolled host sends a request.

A signed request carries::

    Content-Digest: sha-256=:<base64 SHA-256 of the body>:
    Signature-Input: cp=("@method" "@path" "@query" "content-digest");created=1764000000;\
nonce="<random>";keyid="<hex key id>";alg="ed25519"
    Signature: cp=:<base64 Ed25519 signature of the signature base>:

The signature base is RFC 9421 section 2.5's: one ``"<component>": <value>`` line a
covered component, then the ``"@signature-params"`` line. The key id is the enrolled
host key's (hex SHA-256 of the raw public key), so the collector needs no second PKI.
The verifier (:func:`verify_request`) requires ``created`` within its clock window and
a nonce it has not seen in that window, so a captured request cannot be replayed.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import re
import secrets
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass

from computeproof.errors import SignatureError
from computeproof.keys import Signer, verify

LABEL = "cp"
ALG = "ed25519"
# what every signed request covers; a request with a body covers its digest as well
COMPONENTS = ("@method", "@path", "@query")
BODY_COMPONENTS = (*COMPONENTS, "content-digest")


class RequestAuthError(SignatureError):
    """A request's signature is missing, malformed, stale, replayed or does not verify;
    ``reason`` is a short label for metrics."""

    def __init__(self, message: str, reason: str) -> None:
        super().__init__(message)
        self.reason = reason


def content_digest(body: bytes) -> str:
    """The RFC 9530 Content-Digest header value of ``body`` (SHA-256)."""
    return "sha-256=:" + base64.b64encode(hashlib.sha256(body).digest()).decode() + ":"


def _query_value(query: str) -> str:
    # RFC 9421 2.2.7: the query with its leading "?", or "?" alone when it is empty
    return "?" + query


def signature_base(
    components: tuple[str, ...],
    values: Mapping[str, str],
    params: str,
) -> bytes:
    """The RFC 9421 signature base over ``components`` (their values in ``values``) with
    the serialized ``@signature-params`` member value ``params``."""
    lines = [f'"{c}": {values[c]}' for c in components]
    lines.append(f'"@signature-params": {params}')
    return "\n".join(lines).encode("utf-8")


def _params(components: tuple[str, ...], created: int, nonce: str, key_id: str) -> str:
    inner = " ".join(f'"{c}"' for c in components)
    return f'({inner});created={created};nonce="{nonce}";keyid="{key_id}";alg="{ALG}"'


def sign_request(
    signer: Signer,
    method: str,
    path: str,
    query: str,
    body: bytes | None,
    created: int | None = None,
    nonce: str | None = None,
) -> dict[str, str]:
    """The headers that sign a request (``path`` as sent, percent-encoded; ``query``
    without its "?"): Content-Digest (with a body), Signature-Input, Signature."""
    created = int(time.time()) if created is None else created
    nonce = secrets.token_urlsafe(18) if nonce is None else nonce
    components = BODY_COMPONENTS if body is not None else COMPONENTS
    values = {"@method": method.upper(), "@path": path or "/", "@query": _query_value(query)}
    headers: dict[str, str] = {}
    if body is not None:
        headers["Content-Digest"] = values["content-digest"] = content_digest(body)
    params = _params(components, created, nonce, signer.key_id)
    sig = signer.sign(signature_base(components, values, params))
    headers["Signature-Input"] = f"{LABEL}={params}"
    headers["Signature"] = f"{LABEL}=:{base64.b64encode(sig).decode()}:"
    return headers


@dataclass(frozen=True)
class SignedBy:
    """Who signed a verified request."""

    key_id: str
    created: int
    nonce: str


_MEMBER = re.compile(
    r'^\s*([a-z*][a-z0-9_.*-]{0,63})=\((?P<inner>(?:"[^"\\]*"(?: "[^"\\]*")*)?)\)'
    r"(?P<params>(?:;[a-z*][a-z0-9_.*-]*=(?:\"[^\"\\]*\"|-?[0-9]{1,15}))*)\s*$"
)
_PARAM = re.compile(r';([a-z*][a-z0-9_.*-]*)=("[^"\\]*"|-?[0-9]{1,15})')
_SIGNATURE = re.compile(r"^\s*([a-z*][a-z0-9_.*-]{0,63})=:([A-Za-z0-9+/]*={0,2}):\s*$")


class NonceCache:
    """Nonces seen within the clock window, so a request is accepted once. Bounded:
    entries older than the window are dropped as new ones come."""

    def __init__(self, window_s: int, limit: int = 1_000_000) -> None:
        self.window_s = window_s
        self.limit = limit
        self._seen: dict[tuple[str, str], float] = {}

    def add(self, key_id: str, nonce: str, now: float) -> bool:
        """Record a nonce; False when it was seen in the window (a replay)."""
        if (key_id, nonce) in self._seen:
            return False
        if len(self._seen) >= self.limit:
            self._prune(now)
            if len(self._seen) >= self.limit:
                raise RequestAuthError(
                    "too many signed requests in the clock window; retry shortly", "busy"
                )
        self._seen[(key_id, nonce)] = now
        if len(self._seen) % 4096 == 0:
            self._prune(now)
        return True

    def _prune(self, now: float) -> None:
        # dict order is insertion order: old entries come first
        horizon = now - 2 * self.window_s
        for k in [k for k, t in self._seen.items() if t < horizon]:
            del self._seen[k]


def verify_request(
    method: str,
    path: str,
    query: str,
    headers: Mapping[str, str],
    body: bytes,
    public_key: Callable[[str], bytes | None],
    nonces: NonceCache,
    window_s: int = 300,
    now: float | None = None,
) -> SignedBy:
    """Check a request's RFC 9421 signature; ``public_key`` maps a key id to an enrolled,
    unrevoked key (None: unknown). Raises RequestAuthError saying what is wrong."""
    now = time.time() if now is None else now
    sig_input = headers.get("signature-input")
    sig_header = headers.get("signature")
    if not sig_input or not sig_header:
        raise RequestAuthError(
            "request is not signed: send Signature-Input and Signature headers (RFC 9421) "
            "made with the host key",
            "unsigned",
        )
    member = _MEMBER.match(sig_input)
    sig_member = _SIGNATURE.match(sig_header)
    if member is None or sig_member is None or "," in sig_input:
        raise RequestAuthError(
            "Signature-Input or Signature is not one RFC 9421 signature", "malformed"
        )
    if member.group(1) != sig_member.group(1):
        raise RequestAuthError("Signature and Signature-Input name different labels", "malformed")
    components = tuple(c.strip('"') for c in (member.group("inner") or "").split())
    params: dict[str, str | int] = {}
    for name, value in _PARAM.findall(member.group("params")):
        params[name] = value[1:-1] if value.startswith('"') else int(value)
    # a body is always covered through its digest; an empty one may be
    allowed = (BODY_COMPONENTS,) if body else (COMPONENTS, BODY_COMPONENTS)
    if sorted(components) not in [sorted(a) for a in allowed]:
        raise RequestAuthError(
            f"the signature must cover exactly {' '.join(allowed[-1])}", "malformed"
        )
    if params.get("alg", ALG) != ALG:
        raise RequestAuthError(f"signature algorithm must be {ALG}", "malformed")
    key_id, created, nonce = params.get("keyid"), params.get("created"), params.get("nonce")
    if not isinstance(key_id, str) or not isinstance(created, int) or not isinstance(nonce, str):
        raise RequestAuthError("the signature needs keyid, created and nonce", "malformed")
    if not 8 <= len(nonce) <= 128:
        raise RequestAuthError("the signature nonce must have 8 to 128 characters", "malformed")
    if "expires" in params and (not isinstance(params["expires"], int) or params["expires"] < now):
        raise RequestAuthError("the signature has expired", "stale")
    if abs(now - created) > window_s:
        raise RequestAuthError(
            f"the signature was created {int(now - created)} s from now, outside the "
            f"{window_s} s window: check the host's clock",
            "stale",
        )
    values = {"@method": method.upper(), "@path": path or "/", "@query": _query_value(query)}
    if "content-digest" in components:
        digest = headers.get("content-digest")
        if digest is None or digest.strip() != content_digest(body):
            raise RequestAuthError(
                "Content-Digest is missing or does not match the body", "bad_digest"
            )
        values["content-digest"] = digest.strip()
    public = public_key(key_id)
    if public is None:
        raise RequestAuthError(
            f"request signed by key {key_id[:16]}..., which is not enrolled (or revoked) in "
            "this ledger; enroll it with `computeproof keys enroll`",
            "unknown_key",
        )
    try:
        signature = base64.b64decode(sig_member.group(2), validate=True)
    except (binascii.Error, ValueError) as e:
        raise RequestAuthError("the signature is not base64", "malformed") from e
    raw_params = sig_input.split("=", 1)[1].strip()
    if not verify(public, signature, signature_base(components, values, raw_params)):
        raise RequestAuthError("the request signature does not verify", "bad_signature")
    if not nonces.add(key_id, nonce, now):
        raise RequestAuthError("this signed request was seen before (a replay)", "replay")
    return SignedBy(key_id, created, nonce)
