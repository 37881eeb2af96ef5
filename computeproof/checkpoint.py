"""C2SP signed notes and transparency-log checkpoints, signed with Ed25519.

Formats (https://c2sp.org/signed-note, https://c2sp.org/tlog-checkpoint):

    <origin>\\n<tree size>\\n<base64 root>\\n      the checkpoint body, the signed note text
    \\n                                            blank line
    — <key name> <base64(key ID(4) || Ed25519 signature(64))>\\n    one line a signer

key ID = SHA-256(key name || 0x0A || 0x01 || 32-byte public key)[:4]; a verifier key is
"<name>+<hex key ID>+<base64(0x01 || public key)>" as in Go's golang.org/x/mod/sumdb/note.

Opening follows the spec: signature lines of unknown keys (another name, or the same name
with another key ID) are ignored, so witnesses may cosign; a line of the expected key that
fails to verify rejects the note. Checkpoints with extension lines are refused: this ledger
never writes them, and a ``Checkpoint`` must reproduce exactly the bytes that were signed.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
from dataclasses import dataclass

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey

from computeproof.errors import CheckpointError

ED25519_TYPE = 0x01
SIGNATURE_PREFIX = "\u2014 "  # EM DASH, space
MAX_SIGNATURES = 100  # the spec asks for at least 16; Go's note package allows 100
MAX_TREE_SIZE = 2**64 - 1  # tree sizes are uint64 in every other implementation
_KEY_ID_SIZE = 4
_SIGNATURE_SIZE = 64
_ROOT_SIZE = 32


def _check_key_name(name: str) -> None:
    if not name or "+" in name or any(c.isspace() for c in name) or not name.isprintable():
        raise CheckpointError(
            f"key name {name!r} must be non-empty, without spaces, '+' or control characters"
        )


def _check_text(text: str, what: str) -> None:
    # Signed notes are UTF-8 with no ASCII control characters but newline.
    if any(c < " " and c != "\n" for c in text):
        raise CheckpointError(f"{what} contains an ASCII control character other than newline")
    try:
        text.encode("utf-8")
    except UnicodeEncodeError as e:
        raise CheckpointError(f"{what} is not valid UTF-8 text") from e


@dataclass(frozen=True)
class Checkpoint:
    """A signed tree head: the log's origin line, its tree size and its RFC 9162 root."""

    origin: str
    size: int
    root: bytes

    def __post_init__(self) -> None:
        if not self.origin or "\n" in self.origin:
            raise CheckpointError("checkpoint origin must be one non-empty line")
        _check_text(self.origin, "checkpoint origin")
        if isinstance(self.size, bool) or not isinstance(self.size, int):
            raise CheckpointError(f"checkpoint size must be an int, not {type(self.size)}")
        if not 0 <= self.size <= MAX_TREE_SIZE:
            raise CheckpointError(f"checkpoint size {self.size} is out of range")
        if len(self.root) != _ROOT_SIZE:
            raise CheckpointError(f"checkpoint root is {len(self.root)} bytes, not {_ROOT_SIZE}")

    def body(self) -> bytes:
        """Return the note text: origin, decimal size and base64 root, one line each."""
        root = base64.b64encode(self.root).decode("ascii")
        return f"{self.origin}\n{self.size}\n{root}\n".encode()


def key_hash(name: str, public_key_raw: bytes) -> bytes:
    """Return the 4-byte signed-note key ID of an Ed25519 key with this name."""
    _check_key_name(name)
    if len(public_key_raw) != 32:
        raise CheckpointError(f"Ed25519 public key is {len(public_key_raw)} bytes, not 32")
    data = name.encode() + b"\n" + bytes([ED25519_TYPE]) + public_key_raw
    return hashlib.sha256(data).digest()[:_KEY_ID_SIZE]


def verifier_key(name: str, public_key_raw: bytes) -> str:
    """Return the verifier key text "<name>+<hex key ID>+<base64(0x01 || key)>"."""
    key_id = key_hash(name, public_key_raw).hex()
    encoded = base64.b64encode(bytes([ED25519_TYPE]) + public_key_raw).decode("ascii")
    return f"{name}+{key_id}+{encoded}"


def _b64decode(text: str, what: str) -> bytes:
    try:
        return base64.b64decode(text.encode("ascii"), validate=True)
    except (binascii.Error, UnicodeEncodeError) as e:
        raise CheckpointError(f"{what} is not valid base64") from e


def parse_verifier_key(text: str) -> tuple[str, bytes]:
    """Parse a verifier key into (key name, raw 32-byte Ed25519 public key), checking its key ID."""
    parts = text.strip().split("+")
    if len(parts) != 3:
        raise CheckpointError("verifier key must be <name>+<hex key ID>+<base64 key>")
    name, key_id_hex, encoded = parts
    _check_key_name(name)
    if len(key_id_hex) != 2 * _KEY_ID_SIZE or not all(c in "0123456789abcdef" for c in key_id_hex):
        raise CheckpointError(f"verifier key ID {key_id_hex!r} must be 8 lowercase hex digits")
    key = _b64decode(encoded, "verifier key")
    if len(key) != 33 or key[0] != ED25519_TYPE:
        raise CheckpointError("verifier key is not an Ed25519 key (type 0x01 and 32 bytes)")
    public_key_raw = key[1:]
    if key_hash(name, public_key_raw).hex() != key_id_hex:
        raise CheckpointError(f"verifier key ID {key_id_hex} does not match its name and key")
    return name, public_key_raw


def sign_note(text: str, name: str, private_key: Ed25519PrivateKey) -> str:
    """Return ``text`` as a signed note with one Ed25519 signature line by key ``name``."""
    _check_key_name(name)
    if not text.endswith("\n"):
        raise CheckpointError("note text must be non-empty and end with a newline")
    _check_text(text, "note text")
    public_key_raw = private_key.public_key().public_bytes_raw()
    signature = private_key.sign(text.encode())
    encoded = base64.b64encode(key_hash(name, public_key_raw) + signature).decode("ascii")
    return f"{text}\n{SIGNATURE_PREFIX}{name} {encoded}\n"


def sign_checkpoint(cp: Checkpoint, name: str, private_key: Ed25519PrivateKey) -> str:
    """Return the checkpoint as a signed note by key ``name`` (which SHOULD be its origin)."""
    return sign_note(cp.body().decode(), name, private_key)


def _split_note(note: str) -> tuple[str, list[tuple[str, bytes]]]:
    """Split a signed note into its text and its (key name, key ID || signature) lines."""
    _check_text(note, "signed note")
    # The text ends at the last blank line; it may itself contain blank lines.
    cut = note.rfind("\n\n")
    if cut < 0:
        raise CheckpointError("signed note has no blank line before its signatures")
    text, block = note[: cut + 1], note[cut + 2 :]
    if not block.endswith("\n"):
        raise CheckpointError("signed note must end with a newline after its last signature")
    lines = block[:-1].split("\n")
    if len(lines) > MAX_SIGNATURES:
        raise CheckpointError(
            f"signed note has {len(lines)} signatures, more than {MAX_SIGNATURES}"
        )
    signatures: list[tuple[str, bytes]] = []
    for line in lines:
        if not line.startswith(SIGNATURE_PREFIX):
            raise CheckpointError(f"signature line {line[:40]!r} does not start with an em dash")
        fields = line[len(SIGNATURE_PREFIX) :].split(" ")
        if len(fields) != 2:
            raise CheckpointError(f"signature line {line[:40]!r} is not '— <name> <signature>'")
        name, encoded = fields
        _check_key_name(name)
        signature = _b64decode(encoded, f"signature of key {name!r}")
        if len(signature) <= _KEY_ID_SIZE:
            raise CheckpointError(f"signature of key {name!r} is too short")
        signatures.append((name, signature))
    return text, signatures


def _verify(
    text: str, signatures: list[tuple[str, bytes]], name: str, public_key_raw: bytes
) -> None:
    key_id = key_hash(name, public_key_raw)
    public_key = Ed25519PublicKey.from_public_bytes(public_key_raw)
    verified = 0
    for signer, signature in signatures:
        # Lines of other keys are skipped (witness cosignatures, key rotation), even when
        # they share our name or our key ID, but not both.
        if signer != name or signature[:_KEY_ID_SIZE] != key_id:
            continue
        if len(signature) != _KEY_ID_SIZE + _SIGNATURE_SIZE:
            raise CheckpointError(f"signature of key {name} has the wrong length")
        try:
            public_key.verify(signature[_KEY_ID_SIZE:], text.encode())
        except InvalidSignature as e:
            raise CheckpointError(f"signature of key {name} does not verify") from e
        verified += 1
    if verified:
        return
    if any(signer == name for signer, _ in signatures):
        raise CheckpointError(
            f"signed note has a signature named {name} but by another key (key ID is not "
            f"{key_id.hex()})"
        )
    names = ", ".join(sorted({signer for signer, _ in signatures}))
    raise CheckpointError(f"signed note has no signature by key {name} (signed by: {names})")


def open_note(note: str, name: str, public_key_raw: bytes) -> str:
    """Verify a signed note's signature by key ``name`` and return its text."""
    text, signatures = _split_note(note)
    _verify(text, signatures, name, public_key_raw)
    return text


def _parse_body(text: str) -> Checkpoint:
    lines = text[:-1].split("\n")
    if len(lines) < 3:
        raise CheckpointError("checkpoint needs an origin, a tree size and a root hash line")
    if len(lines) > 3:
        raise CheckpointError("checkpoint has extension lines, which this ledger never writes")
    origin, size_text, root_text = lines
    if not (size_text.isascii() and size_text.isdigit()) or (
        size_text.startswith("0") and size_text != "0"
    ):
        raise CheckpointError(
            f"checkpoint tree size {size_text[:40]!r} is not a decimal without leading zeros"
        )
    root = _b64decode(root_text, "checkpoint root hash")
    if len(root) != _ROOT_SIZE:
        raise CheckpointError(f"checkpoint root hash is {len(root)} bytes, not {_ROOT_SIZE}")
    if base64.b64encode(root).decode("ascii") != root_text:
        # Non-canonical base64 would make body() differ from the signed bytes.
        raise CheckpointError("checkpoint root hash is not canonical base64")
    return Checkpoint(origin, int(size_text), root)


def open_checkpoint(
    text: str, name: str, public_key_raw: bytes, origin: str | None = None
) -> Checkpoint:
    """Verify a signed checkpoint by key ``name`` and return it; check its origin when given."""
    body, signatures = _split_note(text)
    checkpoint = _parse_body(body)
    # Checked before the signature so that a checkpoint of another log, signed by that
    # log's key, is reported as what it is rather than as a missing signature.
    if origin is not None and checkpoint.origin != origin:
        raise CheckpointError(
            f"checkpoint is from log {checkpoint.origin[:100]!r}, not from {origin!r}"
        )
    _verify(body, signatures, name, public_key_raw)
    if checkpoint.body() != body.encode():
        raise CheckpointError("checkpoint body does not re-encode to the signed bytes")
    return checkpoint
