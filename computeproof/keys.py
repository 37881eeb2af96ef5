"""Ed25519 host and ledger keys (cryptography): files, key ids, signing and verification.

A private key file is PKCS#8 PEM, mode 0600. A public key is written as one line
``ed25519:<base64 raw 32 bytes>``; its key id is the hex SHA-256 of the raw key.
"""

from __future__ import annotations

import base64
import hashlib
import os

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import (
    Ed25519PrivateKey,
    Ed25519PublicKey,
)

from computeproof.errors import KeyError_, SignatureError

PUBLIC_PREFIX = "ed25519:"


def key_id(public_raw: bytes) -> str:
    """The key id of a raw Ed25519 public key: hex SHA-256."""
    return hashlib.sha256(public_raw).hexdigest()


def format_public_key(public_raw: bytes) -> str:
    """``ed25519:<base64>``, the form printed by `keys init` and read by `keys enroll`."""
    return PUBLIC_PREFIX + base64.b64encode(public_raw).decode()


def parse_public_key(text: str) -> bytes:
    """Parse ``ed25519:<base64>`` (or bare base64) into 32 raw bytes."""
    text = text.strip()
    if text.startswith(PUBLIC_PREFIX):
        text = text[len(PUBLIC_PREFIX) :]
    try:
        raw = base64.b64decode(text, validate=True)
    except ValueError as e:
        raise KeyError_(f"public key {text[:20]!r}... is not base64") from e
    if len(raw) != 32:
        raise KeyError_(f"public key has {len(raw)} bytes; an Ed25519 key has 32")
    return raw


class Signer:
    """An Ed25519 private key with its key id."""

    def __init__(self, private_key: Ed25519PrivateKey) -> None:
        self.private_key = private_key
        self.public_raw = private_key.public_key().public_bytes(
            serialization.Encoding.Raw, serialization.PublicFormat.Raw
        )
        self.key_id = key_id(self.public_raw)
        seed = private_key.private_bytes(
            serialization.Encoding.Raw,
            serialization.PrivateFormat.Raw,
            serialization.NoEncryption(),
        )
        # a secret distinct from the signing seed, for deterministic commitment salts
        self.salt_secret = hashlib.sha256(b"computeproof commitment salt\x00" + seed).digest()

    @classmethod
    def generate(cls) -> Signer:
        """A fresh random key."""
        return cls(Ed25519PrivateKey.generate())

    @classmethod
    def from_seed(cls, seed: bytes) -> Signer:
        """A key from a 32-byte seed (tests, synthetic benchmark hosts)."""
        return cls(Ed25519PrivateKey.from_private_bytes(seed))

    def sign(self, message: bytes) -> bytes:
        """Sign ``message``; 64 bytes."""
        return self.private_key.sign(message)

    def pem(self) -> bytes:
        """The private key as unencrypted PKCS#8 PEM."""
        return self.private_key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )


def write_key(path: str, signer: Signer, overwrite: bool = False) -> None:
    """Write a private key file with mode 0600; refuse to overwrite unless asked."""
    flags = os.O_WRONLY | os.O_CREAT | (os.O_TRUNC if overwrite else os.O_EXCL)
    parent = os.path.dirname(os.path.abspath(path))
    if os.path.isdir(path):
        raise KeyError_(
            f"key path {path} is a directory; give a file in it "
            f"(e.g. {os.path.join(path, 'host.key')})"
        )
    try:
        # 0755, as /etc/ssh: the key itself is 0600, and its default directory,
        # /etc/computeproof, also holds the config.toml that computeproof-job reads as the
        # job's user
        os.makedirs(parent, mode=0o755, exist_ok=True)
    except OSError as e:
        raise KeyError_(f"cannot write key file {path}: cannot create directory {parent}: "
                        f"{e.strerror}") from e  # fmt: skip
    try:
        fd = os.open(path, flags, 0o600)
    except FileExistsError as e:
        raise KeyError_(f"key file {path} already exists; use --force to replace it") from e
    except NotADirectoryError as e:
        raise KeyError_(f"cannot write key file {path}: a parent path is not a directory") from e
    except OSError as e:
        raise KeyError_(f"cannot write key file {path}: {e.strerror}") from e
    with os.fdopen(fd, "wb") as f:
        f.write(signer.pem())
        f.flush()
        os.fsync(f.fileno())
    os.chmod(path, 0o600)


def load_signer(path: str) -> Signer:
    """Load a private key file written by :func:`write_key`."""
    try:
        with open(path, "rb") as f:
            data = f.read()
    except FileNotFoundError as e:
        raise KeyError_(
            f"key file {path} does not exist; create it with `computeproof keys init --out {path}`"
        ) from e
    except OSError as e:
        raise KeyError_(f"cannot read key file {path}: {e.strerror}") from e
    try:
        key = serialization.load_pem_private_key(data, password=None)
    except (ValueError, TypeError) as e:
        raise KeyError_(f"key file {path} is not an unencrypted PEM private key") from e
    if not isinstance(key, Ed25519PrivateKey):
        raise KeyError_(f"key file {path} holds a {type(key).__name__}, not an Ed25519 key")
    return Signer(key)


def load_or_create_signer(path: str) -> Signer:
    """Load the key at ``path``, creating it first if it does not exist."""
    if not os.path.exists(path):
        write_key(path, Signer.generate())
    return load_signer(path)


_PUBLIC_KEYS: dict[bytes, Ed25519PublicKey] = {}


def _public_key(public_raw: bytes) -> Ed25519PublicKey:
    key = _PUBLIC_KEYS.get(public_raw)
    if key is None:
        key = Ed25519PublicKey.from_public_bytes(public_raw)
        if len(_PUBLIC_KEYS) < 4096:  # a ledger enrolls one key a host
            _PUBLIC_KEYS[public_raw] = key
    return key


def verify(public_raw: bytes, signature: bytes, message: bytes) -> bool:
    """True when ``signature`` is a valid Ed25519 signature of ``message``."""
    try:
        _public_key(public_raw).verify(signature, message)
    except (InvalidSignature, ValueError):
        return False
    return True


def require_valid(public_raw: bytes, signature: bytes, message: bytes, what: str) -> None:
    """Raise SignatureError naming ``what`` unless the signature verifies."""
    if not verify(public_raw, signature, message):
        raise SignatureError(f"{what}: Ed25519 signature does not verify")
