"""Private fields as salted SHA-256 commitments.

A site lists payload fields it keeps private (job name, command, work dir, user). Before
signing, each such field's value is replaced by ``{"sha256_commitment": hex}`` where
hex = SHA-256(salt || canonical JSON of the value) and salt is 32 random bytes. The
opening (salt and value) stays in the ledger, outside the Merkle leaves, so an admin can
disclose one field of one event without disclosing any other.
"""

from __future__ import annotations

import hashlib
import hmac
import os

from computeproof.canonical import canonical_bytes
from computeproof.errors import ProofError

COMMITMENT_KEY = "sha256_commitment"


def commitment(salt: bytes, value: object) -> str:
    """The hex commitment to ``value`` under ``salt``."""
    return hashlib.sha256(salt + canonical_bytes(value)).hexdigest()


def derived_salt(secret: bytes, event_id: str, name: str) -> bytes:
    """A salt that is secret but deterministic per (event, field), so a re-forwarded event
    gets byte-identical commitments and the ledger sees a duplicate, not a conflict."""
    return hmac.new(secret, f"{event_id}/{name}".encode(), hashlib.sha256).digest()


def commit_fields(
    payload: dict[str, object],
    private_fields: tuple[str, ...],
    event_id: str = "",
    secret: bytes | None = None,
) -> tuple[dict[str, object], dict[str, dict[str, object]]]:
    """Replace private fields by commitments; return the new payload and the openings.

    With ``secret`` the salts derive from it and ``event_id``; without, they are random.
    """
    if not private_fields:
        return payload, {}
    out = dict(payload)
    openings: dict[str, dict[str, object]] = {}
    for name in private_fields:
        if name in payload:
            salt = os.urandom(32) if secret is None else derived_salt(secret, event_id, name)
            out[name] = {COMMITMENT_KEY: commitment(salt, payload[name])}
            openings[name] = {"salt": salt.hex(), "value": payload[name]}
    return out, openings


def is_commitment(value: object) -> bool:
    """True when ``value`` is a commitment object."""
    return isinstance(value, dict) and set(value) == {COMMITMENT_KEY}


def check_opening(committed: object, opening: dict[str, object]) -> object:
    """Return the disclosed value if ``opening`` opens ``committed``, else raise ProofError."""
    if not is_commitment(committed):
        raise ProofError("field is not a commitment")
    salt = opening.get("salt")
    if not isinstance(salt, str):
        raise ProofError("opening has no salt")
    try:
        salt_bytes = bytes.fromhex(salt)
    except ValueError as e:
        raise ProofError("opening salt is not hex") from e
    value = opening.get("value")
    if commitment(salt_bytes, value) != committed[COMMITMENT_KEY]:  # type: ignore[index]
        raise ProofError("opening does not match the commitment")
    return value
