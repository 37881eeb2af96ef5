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

Witness cosignatures (https://c2sp.org/tlog-cosignature, Ed25519 cosignature/v1) are
signature lines too: key ID = SHA-256(name || 0x0A || 0x04 || key)[:4], signature =
base64(key ID || u64 big-endian POSIX time || Ed25519 over "cosignature/v1\\n" "time <t>\\n"
and the checkpoint body). A cosigner's verifier key has type 0x04.
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
    return _typed_key_hash(name, ED25519_TYPE, public_key_raw)


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
    return _parse_vkey(text, ED25519_TYPE, "Ed25519 note")


def _parse_vkey(text: str, key_type: int, kind: str) -> tuple[str, bytes]:
    # the name and the key ID end at the first two '+'; the base64 key may hold more
    parts = text.strip().split("+", 2)
    if len(parts) != 3:
        raise CheckpointError("verifier key must be <name>+<hex key ID>+<base64 key>")
    name, key_id_hex, encoded = parts
    _check_key_name(name)
    if len(key_id_hex) != 2 * _KEY_ID_SIZE or not all(c in "0123456789abcdef" for c in key_id_hex):
        raise CheckpointError(f"verifier key ID {key_id_hex!r} must be 8 lowercase hex digits")
    key = _b64decode(encoded, "verifier key")
    if len(key) != 33 or key[0] != key_type:
        raise CheckpointError(
            f"verifier key is not an {kind} key (type 0x{key_type:02x} and 32 bytes)"
        )
    public_key_raw = key[1:]
    if _typed_key_hash(name, key_type, public_key_raw).hex() != key_id_hex:
        raise CheckpointError(f"verifier key ID {key_id_hex} does not match its name and key")
    return name, public_key_raw


def _typed_key_hash(name: str, key_type: int, public_key_raw: bytes) -> bytes:
    _check_key_name(name)
    if len(public_key_raw) != 32:
        raise CheckpointError(f"Ed25519 public key is {len(public_key_raw)} bytes, not 32")
    data = name.encode() + b"\n" + bytes([key_type]) + public_key_raw
    return hashlib.sha256(data).digest()[:_KEY_ID_SIZE]


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


def read_checkpoint(text: str) -> Checkpoint:
    """Parse a signed checkpoint WITHOUT verifying any signature (for a note the caller
    wrote itself, or checks with :func:`open_checkpoint` later)."""
    body, _ = _split_note(text)
    return _parse_body(body)


def note_body(text: str) -> str:
    """The text of a signed note (everything before its signature lines), unverified."""
    return _split_note(text)[0]


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


# -- cosignatures (https://c2sp.org/tlog-cosignature, Ed25519 cosignature/v1) -------------

COSIGNATURE_TYPE = 0x04
COSIGNATURE_HEADER = "cosignature/v1\n"
_TIMESTAMP_SIZE = 8
MAX_TIMESTAMP = 2**63 - 1


@dataclass(frozen=True)
class Cosigner:
    """A witness as a verifier knows it: its name and raw Ed25519 public key."""

    name: str
    public_key_raw: bytes

    @property
    def key_id(self) -> bytes:
        """The 4-byte key ID of its cosignature lines."""
        return cosigner_key_hash(self.name, self.public_key_raw)

    def vkey(self) -> str:
        """Its verifier key text (type 0x04)."""
        return cosigner_verifier_key(self.name, self.public_key_raw)


def cosigner_key_hash(name: str, public_key_raw: bytes) -> bytes:
    """The key ID of an Ed25519 cosigner: SHA-256(name || 0x0A || 0x04 || key)[:4]."""
    return _typed_key_hash(name, COSIGNATURE_TYPE, public_key_raw)


def cosigner_verifier_key(name: str, public_key_raw: bytes) -> str:
    """A cosigner's verifier key "<name>+<hex key ID>+<base64(0x04 || key)>"."""
    encoded = base64.b64encode(bytes([COSIGNATURE_TYPE]) + public_key_raw).decode("ascii")
    return f"{name}+{cosigner_key_hash(name, public_key_raw).hex()}+{encoded}"


def parse_cosigner_key(text: str) -> Cosigner:
    """Parse a cosigner (witness) verifier key of type 0x04."""
    name, public_key_raw = _parse_vkey(text, COSIGNATURE_TYPE, "Ed25519 cosignature")
    return Cosigner(name, public_key_raw)


def cosignature_message(body: str, timestamp: int) -> bytes:
    """The bytes an Ed25519 cosignature/v1 signs: header, time line, checkpoint body."""
    if not 0 <= timestamp <= MAX_TIMESTAMP:
        raise CheckpointError(f"cosignature timestamp {timestamp} is out of range")
    return f"{COSIGNATURE_HEADER}time {timestamp}\n{body}".encode()


def cosign(body: str, name: str, private_key: Ed25519PrivateKey, timestamp: int) -> str:
    """A cosignature line ("— <name> <base64>", newline-terminated) on the checkpoint note
    text ``body``, made at POSIX time ``timestamp``."""
    public_key_raw = private_key.public_key().public_bytes_raw()
    signature = private_key.sign(cosignature_message(body, timestamp))
    blob = cosigner_key_hash(name, public_key_raw) + timestamp.to_bytes(8, "big") + signature
    return f"{SIGNATURE_PREFIX}{name} {base64.b64encode(blob).decode('ascii')}\n"


def add_signature_lines(note: str, lines: list[str]) -> str:
    """``note`` with extra signature lines (cosignatures) appended, each once."""
    _split_note(note)
    have = set(note.split("\n"))
    extra = "".join(line for line in dict.fromkeys(lines) if line.rstrip("\n") not in have)
    for line in extra.splitlines():
        if not line.startswith(SIGNATURE_PREFIX):
            raise CheckpointError(f"{line[:40]!r} is not a signature line")
    return note + extra


def verify_cosignatures(note: str, cosigners: list[Cosigner]) -> dict[str, int]:
    """The cosigners (by name) whose cosignature on ``note`` verifies, with its timestamp.
    Lines of other keys are ignored; a line of a listed key that does not verify rejects
    the note, as a bad signature of a known key does."""
    text, signatures = _split_note(note)
    _parse_body(text)
    found: dict[str, int] = {}
    for cosigner in cosigners:
        key_id = cosigner.key_id
        public_key = Ed25519PublicKey.from_public_bytes(cosigner.public_key_raw)
        for signer, blob in signatures:
            if signer != cosigner.name or blob[:_KEY_ID_SIZE] != key_id:
                continue
            if len(blob) != _KEY_ID_SIZE + _TIMESTAMP_SIZE + _SIGNATURE_SIZE:
                raise CheckpointError(f"cosignature of witness {signer} has the wrong length")
            timestamp = int.from_bytes(blob[_KEY_ID_SIZE : _KEY_ID_SIZE + _TIMESTAMP_SIZE], "big")
            if timestamp > MAX_TIMESTAMP:
                raise CheckpointError(f"cosignature of witness {signer}: timestamp out of range")
            try:
                public_key.verify(
                    blob[_KEY_ID_SIZE + _TIMESTAMP_SIZE :], cosignature_message(text, timestamp)
                )
            except InvalidSignature as e:
                raise CheckpointError(f"cosignature of witness {signer} does not verify") from e
            found[cosigner.name] = max(timestamp, found.get(cosigner.name, 0))
    return found
