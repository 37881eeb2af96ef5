"""Tests of computeproof/keys.py: RFC 8032 vectors, key files, public key text."""

from __future__ import annotations

import base64
import hashlib
import os
import stat
from pathlib import Path

import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec

from computeproof.errors import KeyError_, SignatureError
from computeproof.keys import (
    PUBLIC_PREFIX,
    Signer,
    format_public_key,
    key_id,
    load_or_create_signer,
    load_signer,
    parse_public_key,
    require_valid,
    verify,
    write_key,
)

# RFC 8032 section 7.1, TEST 1-3: secret key, public key, message, signature
RFC8032 = [
    (
        "9d61b19deffd5a60ba844af492ec2cc44449c5697b326919703bac031cae7f60",
        "d75a980182b10ab7d54bfed3c964073a0ee172f3daa62325af021a68f707511a",
        "",
        "e5564300c360ac729086e2cc806e828a84877f1eb8e5d974d873e065224901555fb8821590a33bacc61e39701cf9b46bd25bf5f0595bbe24655141438e7a100b",
    ),
    (
        "4ccd089b28ff96da9db6c346ec114e0f5b8a319f35aba624da8cf6ed4fb8a6fb",
        "3d4017c3e843895a92b70aa74d1b7ebc9c982ccf2ec4968cc0cd55f12af4660c",
        "72",
        "92a009a9f0d4cab8720e820b5f642540a2b27b5416503f8fb3762223ebdb69da085ac1e43e15996e458f3613d0f11d8c387b2eaeb4302aeeb00d291612bb0c00",
    ),
    (
        "c5aa8df43f9f837bedb7442f31dcb7b166d38535076f094b85ce3a2e0b4458f7",
        "fc51cd8e6218a1a38da47ed00230f0580816ed13ba3303ac5deb911548908025",
        "af82",
        "6291d657deec24024827e69c3abe01a30ce548a284743a445e3680d7db5ac3ac18ff9b538d16f290ae67f760984dc6594a7c15e9716ed28dc027beceea1ec40a",
    ),
]


@pytest.mark.parametrize(("secret", "public", "message", "signature"), RFC8032)
def test_rfc8032_vectors(secret: str, public: str, message: str, signature: str) -> None:
    signer = Signer.from_seed(bytes.fromhex(secret))
    assert signer.public_raw.hex() == public
    assert signer.sign(bytes.fromhex(message)).hex() == signature
    assert signer.key_id == hashlib.sha256(bytes.fromhex(public)).hexdigest()
    assert verify(bytes.fromhex(public), bytes.fromhex(signature), bytes.fromhex(message))


def test_verify_rejects() -> None:
    _secret, public, message, signature = (bytes.fromhex(x) for x in RFC8032[1])
    other = bytes.fromhex(RFC8032[2][1])
    assert not verify(public, signature, message + b"\x00")
    assert not verify(other, signature, message)
    assert not verify(public, signature[:-1] + bytes([signature[-1] ^ 1]), message)
    assert not verify(public, signature[:63], message)  # wrong length
    assert not verify(b"\x01" * 31, signature, message)  # not a public key at all
    with pytest.raises(SignatureError, match="the thing"):
        require_valid(public, signature, b"other", "the thing")
    require_valid(public, signature, message, "ok")


def test_public_key_text_round_trip() -> None:
    raw = bytes.fromhex(RFC8032[0][1])
    text = format_public_key(raw)
    assert text == PUBLIC_PREFIX + base64.b64encode(raw).decode()
    assert parse_public_key(text) == raw
    assert parse_public_key(f"  {text}\n") == raw
    assert parse_public_key(base64.b64encode(raw).decode()) == raw  # bare base64
    assert key_id(raw) == hashlib.sha256(raw).hexdigest()


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("ed25519:not base64!", "not base64"),
        ("ed25519:" + base64.b64encode(b"\x01" * 31).decode(), "31 bytes"),
        ("ed25519:" + base64.b64encode(b"\x01" * 33).decode(), "33 bytes"),
        ("", "0 bytes"),
        ("ed25519:\u00e9\u00e9\u00e9\u00e9", "not base64"),
    ],
)
def test_parse_public_key_rejects(text: str, message: str) -> None:
    with pytest.raises(KeyError_, match=message):
        parse_public_key(text)


def test_write_and_load_key(tmp_path: Path) -> None:
    path = tmp_path / "sub" / "dir" / "host.key"  # parents are created
    signer = Signer.generate()
    write_key(str(path), signer)
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert path.read_bytes().startswith(b"-----BEGIN PRIVATE KEY-----")
    loaded = load_signer(str(path))
    assert loaded.public_raw == signer.public_raw
    assert loaded.key_id == signer.key_id
    assert loaded.salt_secret == signer.salt_secret
    assert verify(signer.public_raw, loaded.sign(b"m"), b"m")


def test_write_key_refuses_overwrite(tmp_path: Path) -> None:
    path = tmp_path / "host.key"
    first, second = Signer.generate(), Signer.generate()
    write_key(str(path), first)
    before = path.read_bytes()
    with pytest.raises(KeyError_, match="already exists"):
        write_key(str(path), second)
    assert path.read_bytes() == before
    write_key(str(path), second, overwrite=True)
    assert load_signer(str(path)).public_raw == second.public_raw
    assert stat.S_IMODE(path.stat().st_mode) == 0o600


def test_write_key_makes_a_directory_others_can_enter(tmp_path: Path) -> None:
    # the default key directory, /etc/computeproof, also holds the config that
    # computeproof-job reads as the job's user; the key file itself is 0600
    umask = os.umask(0o022)
    try:
        write_key(str(tmp_path / "etc" / "host.key"), Signer.generate())
    finally:
        os.umask(umask)
    assert stat.S_IMODE((tmp_path / "etc").stat().st_mode) == 0o755
    assert stat.S_IMODE((tmp_path / "etc" / "host.key").stat().st_mode) == 0o600


@pytest.mark.parametrize("overwrite", [False, True])
def test_write_key_to_a_directory_says_so(tmp_path: Path, overwrite: bool) -> None:
    with pytest.raises(KeyError_, match=r"is a directory; give a file in it \(e\.g\. .*host\.key"):
        write_key(str(tmp_path), Signer.generate(), overwrite=overwrite)


def test_write_key_unwritable(tmp_path: Path) -> None:
    blocker = tmp_path / "file"
    blocker.write_text("x")
    with pytest.raises(KeyError_, match=r"host\.key"):
        write_key(str(blocker / "host.key"), Signer.generate())
    assert blocker.read_text() == "x"


def test_write_key_parent_is_a_file_message(tmp_path: Path) -> None:
    blocker = tmp_path / "file"
    blocker.write_text("x")
    with pytest.raises(KeyError_, match="cannot write key file"):
        write_key(str(blocker / "host.key"), Signer.generate())


def test_load_signer_missing_names_the_path(tmp_path: Path) -> None:
    path = str(tmp_path / "absent.key")
    with pytest.raises(KeyError_) as info:
        load_signer(path)
    message = str(info.value)
    assert "does not exist" in message
    assert f"keys init --out {path}" in message  # the hint names the real path


def test_load_signer_directory(tmp_path: Path) -> None:
    with pytest.raises(KeyError_, match="cannot read key file"):
        load_signer(str(tmp_path))


def test_load_signer_garbage(tmp_path: Path) -> None:
    path = tmp_path / "bad.key"
    path.write_bytes(b"this is not a PEM file\n")
    with pytest.raises(KeyError_, match="not an unencrypted PEM private key"):
        load_signer(str(path))


def test_load_signer_encrypted(tmp_path: Path) -> None:
    path = tmp_path / "enc.key"
    pem = Signer.generate().private_key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.BestAvailableEncryption(b"secret"),
    )
    path.write_bytes(pem)
    with pytest.raises(KeyError_, match="not an unencrypted PEM private key"):
        load_signer(str(path))


def test_load_signer_wrong_algorithm(tmp_path: Path) -> None:
    path = tmp_path / "ec.key"
    path.write_bytes(
        ec.generate_private_key(ec.SECP256R1()).private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
    )
    with pytest.raises(KeyError_, match="not an Ed25519 key"):
        load_signer(str(path))


def test_load_or_create_signer(tmp_path: Path) -> None:
    path = str(tmp_path / "ledger.key")
    created = load_or_create_signer(path)
    assert os.path.exists(path)
    assert load_or_create_signer(path).public_raw == created.public_raw


def test_generate_and_salt_secret() -> None:
    a, b = Signer.generate(), Signer.generate()
    assert a.public_raw != b.public_raw and len(a.public_raw) == 32
    seed = bytes(range(32))
    s1, s2 = Signer.from_seed(seed), Signer.from_seed(seed)
    assert s1.salt_secret == s2.salt_secret and len(s1.salt_secret) == 32
    assert s1.salt_secret != seed  # never the signing seed itself
    assert Signer.from_seed(bytes(32)).salt_secret != s1.salt_secret
    assert load_signer_round_trip(s1) == s1.public_raw


def load_signer_round_trip(signer: Signer) -> bytes:
    key = serialization.load_pem_private_key(signer.pem(), password=None)
    return Signer(key).public_raw  # type: ignore[arg-type]
