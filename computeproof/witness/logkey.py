"""A witness's signed statement of the log keys it verifies a log's checkpoints with.

A cosignature (C2SP tlog-cosignature) covers the checkpoint body only: origin, size and
root, not the key that signed it. A verifier that trusts a witness but not (yet) the
ledger key learns from the cosignature that the tree is genuine, but a bundle whose
receipt index was re-signed with a fresh key would still pass. So a ComputeProof witness
also signs, with the same key and its own header line (the spec lets a cosigner key sign
other formats with a different newline-terminated prefix)::

    computeproof-witness-log-key/v1
    <origin>
    <log verifier key>            one line a key the witness accepts for this origin

and receipts carry it. A quorum of trusted witnesses that cosigned the checkpoint AND
name the bundle's ledger key for its origin makes that key trusted.
"""

from __future__ import annotations

import base64
import binascii
from dataclasses import dataclass

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey

from computeproof.checkpoint import Cosigner, parse_verifier_key
from computeproof.errors import CheckpointError

HEADER = "computeproof-witness-log-key/v1\n"


@dataclass(frozen=True)
class LogKeyStatement:
    """A witness's statement: which keys it accepts for a log's checkpoints."""

    witness: str  # the witness's name (its cosigner key name)
    origin: str
    log_keys: tuple[tuple[str, bytes], ...]  # (key name, raw Ed25519 key)
    text: str
    signature: bytes

    def to_json(self) -> dict[str, str]:
        """The record receipts and reports carry."""
        return {
            "witness": self.witness,
            "statement": self.text,
            "signature": base64.b64encode(self.signature).decode("ascii"),
        }


def statement_text(origin: str, log_vkeys: list[str]) -> str:
    """The statement's text for a log and the verifier keys the witness accepts for it."""
    if not origin or "\n" in origin or not log_vkeys:
        raise CheckpointError("a log key statement needs one origin line and a log key")
    return HEADER + origin + "\n" + "".join(v + "\n" for v in log_vkeys)


def sign_statement(
    witness: str, origin: str, log_vkeys: list[str], private_key: Ed25519PrivateKey
) -> LogKeyStatement:
    """The witness's signed statement (its cosigner key, its own header)."""
    text = statement_text(origin, log_vkeys)
    return _parse(witness, text, private_key.sign(text.encode()))


def _parse(witness: str, text: str, signature: bytes) -> LogKeyStatement:
    if not text.startswith(HEADER) or not text.endswith("\n"):
        raise CheckpointError(f"witness {witness}: not a {HEADER.strip()} statement")
    lines = text[len(HEADER) : -1].split("\n")
    if len(lines) < 2 or len(lines) > 17:
        raise CheckpointError(f"witness {witness}: a log key statement has an origin and 1-16 keys")
    keys = tuple(parse_verifier_key(v) for v in lines[1:])
    return LogKeyStatement(witness, lines[0], keys, text, signature)


def statement_from_json(record: object) -> LogKeyStatement:
    """Parse a carried statement record (its signature is checked by :func:`verified`)."""
    if not isinstance(record, dict):
        raise CheckpointError("a witness statement must be an object")
    witness, text, sig = record.get("witness"), record.get("statement"), record.get("signature")
    if not (isinstance(witness, str) and isinstance(text, str) and isinstance(sig, str)):
        raise CheckpointError("a witness statement has witness, statement and signature strings")
    try:
        signature = base64.b64decode(sig, validate=True)
    except (binascii.Error, ValueError) as e:
        raise CheckpointError(f"witness {witness}: statement signature is not base64") from e
    return _parse(witness, text, signature)


def verified(statement: LogKeyStatement, cosigner: Cosigner) -> bool:
    """Whether ``cosigner`` (a trusted witness) signed this statement."""
    if statement.witness != cosigner.name:
        return False
    try:
        Ed25519PublicKey.from_public_bytes(cosigner.public_key_raw).verify(
            statement.signature, statement.text.encode()
        )
    except InvalidSignature:
        return False
    return True
