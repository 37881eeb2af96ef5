"""Tests of computeproof/checkpoint.py: C2SP signed notes and checkpoints, Ed25519."""

from __future__ import annotations

import base64

import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey
from hypothesis import given, settings
from hypothesis import strategies as st

from computeproof.checkpoint import (
    Checkpoint,
    key_hash,
    open_checkpoint,
    open_note,
    parse_verifier_key,
    sign_checkpoint,
    sign_note,
    verifier_key,
)
from computeproof.errors import CheckpointError
from computeproof.merkle import EMPTY_ROOT

ORIGIN = "computeproof.example/cluster-a"
ROOT = bytes(range(32))

# golang.org/x/mod/sumdb/note note_test.go: a signer, its verifier key, a text and the exact
# signed note Go produces, plus a second signer's line (EnochRoot).
PETER_SKEY = "PRIVATE+KEY+PeterNeumann+c74f20a3+AYEKFALVFGyNhPJEMzD1QIDr+Y7hfZx09iUvxdXHKDFz"
PETER_VKEY = "PeterNeumann+c74f20a3+ARpc2QcUPDhMQegwxbzhKqiBfsVkmqq/LDE4izWy10TW"
ENOCH_VKEY = "EnochRoot+af0cfe78+ATtqJ7zOtqQtYqOo0CpvDXNlMhV3HeJDpjrASKGLWdop"
GO_TEXT = (
    "If you think cryptography is the answer to your problem,\n"
    "then you don't know what your problem is.\n"
)
PETER_SIG = (
    "\u2014 PeterNeumann x08go/ZJkuBS9UG/SffcvIAQxVBtiFupLLr8pAcElZInNIuGUgYN1FFYC2pZSNXgKvqfqd"
    "ngotpRZb6KE6RyyBwJnAM=\n"
)
ENOCH_SIG = (
    "\u2014 EnochRoot rwz+eBzmZa0SO3NbfRGzPCpDckykFXSdeX+MNtCOXm2/5n2tiOHp+vAF1aGrQ5ovTG01oOTGwnW"
    "Lox33WWd1RvMc+QQ=\n"
)


def _key(seed: int) -> Ed25519PrivateKey:
    return Ed25519PrivateKey.from_private_bytes(bytes([seed]) * 32)


def _public(key: Ed25519PrivateKey) -> bytes:
    return key.public_key().public_bytes_raw()


def _peter() -> Ed25519PrivateKey:
    encoded = PETER_SKEY.split("+", 4)[4]  # PRIVATE+KEY+<name>+<key ID>+<base64(0x01 || seed)>
    raw = base64.b64decode(encoded)
    assert raw[0] == 0x01
    return Ed25519PrivateKey.from_private_bytes(raw[1:])


# --- known answers ---------------------------------------------------------------------------


def test_ed25519_rfc8032_test_1() -> None:
    secret = bytes.fromhex("9d61b19deffd5a60ba844af492ec2cc44449c5697b326919703bac031cae7f60")
    public = bytes.fromhex("d75a980182b10ab7d54bfed3c964073a0ee172f3daa62325af021a68f707511a")
    signature = bytes.fromhex(
        "e5564300c360ac729086e2cc806e828a84877f1eb8e5d974d873e065224901555fb8821590a33bacc61e"
        "39701cf9b46bd25bf5f0595bbe24655141438e7a100b"
    )
    key = Ed25519PrivateKey.from_private_bytes(secret)
    assert _public(key) == public
    assert key.sign(b"") == signature
    Ed25519PublicKey.from_public_bytes(public).verify(signature, b"")


def test_go_note_signature_known_answer() -> None:
    key = _peter()
    assert verifier_key("PeterNeumann", _public(key)) == PETER_VKEY
    assert key_hash("PeterNeumann", _public(key)).hex() == "c74f20a3"
    assert sign_note(GO_TEXT, "PeterNeumann", key) == GO_TEXT + "\n" + PETER_SIG


def test_go_note_opens_with_either_signer() -> None:
    note = GO_TEXT + "\n" + PETER_SIG + ENOCH_SIG
    assert open_note(note, *parse_verifier_key(PETER_VKEY)) == GO_TEXT
    assert open_note(note, *parse_verifier_key(ENOCH_VKEY)) == GO_TEXT
    with pytest.raises(CheckpointError, match="no signature by key PeterNeumann"):
        open_note(GO_TEXT + "\n" + ENOCH_SIG, *parse_verifier_key(PETER_VKEY))


@pytest.mark.parametrize(
    "note",
    [
        GO_TEXT,
        GO_TEXT + "\n",
        GO_TEXT + "\n" + PETER_SIG[:-1],
        "\x01" + GO_TEXT + "\n" + PETER_SIG,
        GO_TEXT + "\n" + "\u2014 Bad Name x08go/ZJkuBS9UG/SffcvIAQxVBtiFupLLr8pAcElZInNIuGUgYN1FFYC"
        "2pZSNXgKvqfqdngotpRZb6KE6RyyBwJnAM=\n",
        GO_TEXT + "\n" + PETER_SIG + "Unexpected line.\n",
        GO_TEXT + "\n" + PETER_SIG[:60] + "ABCD" + PETER_SIG[60:],
        GO_TEXT + "\n" + PETER_SIG * 101,
    ],
    ids=["no-sigs", "blank-only", "no-final-newline", "control-char", "bad-name", "junk-line",
         "corrupt-sig", "too-many"],
)  # fmt: skip
def test_go_malformed_notes_rejected(note: str) -> None:
    with pytest.raises(CheckpointError):
        open_note(note, *parse_verifier_key(PETER_VKEY))


def test_checkpoint_body_matches_spec_example() -> None:
    root = base64.b64decode("CsUYapGGPo4dkMgIAUqom/Xajj7h2fB2MPA3j2jxq2I=")
    cp = Checkpoint("example.com/behind-the-sofa", 20852163, root)
    assert cp.body() == (
        b"example.com/behind-the-sofa\n20852163\nCsUYapGGPo4dkMgIAUqom/Xajj7h2fB2MPA3j2jxq2I=\n"
    )


# --- verifier keys ---------------------------------------------------------------------------


def test_verifier_key_round_trip() -> None:
    public = _public(_key(1))
    text = verifier_key(ORIGIN, public)
    name, key_id, _ = text.split("+")
    assert (name, key_id) == (ORIGIN, key_hash(ORIGIN, public).hex())
    assert parse_verifier_key(text) == (ORIGIN, public)


def test_verifier_key_whose_base64_holds_a_plus() -> None:
    """Only the first two '+' separate (Go's note.NewVerifier): base64 may hold more."""
    publics = (_public(_key(i)) for i in range(1, 256))
    public = next(p for p in publics if "+" in verifier_key(ORIGIN, p).split("+", 2)[2])
    assert parse_verifier_key(verifier_key(ORIGIN, public)) == (ORIGIN, public)


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("PeterNeumann+c74f20a3", "must be"),
        ("PeterNeumann+c74f20a4+ARpc2QcUPDhMQegwxbzhKqiBfsVkmqq/LDE4izWy10TW", "does not match"),
        ("PeterNeumann+C74F20A3+ARpc2QcUPDhMQegwxbzhKqiBfsVkmqq/LDE4izWy10TW", "lowercase"),
        ("PeterNeumann+173116ae+ZRpc2QcUPDhMQegwxbzhKqiBfsVkmqq/LDE4izWy10TW", "not an Ed25519"),
        ("Peter Neumann+c74f20a3+ARpc2QcUPDhMQegwxbzhKqiBfsVkmqq/LDE4izWy10TW", "key name"),
        ("PeterNeumann+c74f20a3+ARpc2QcUPDhMQegwxbzhKqiBfsVkmqq/LDE4izWy10T!", "base64"),
    ],
)
def test_bad_verifier_keys(text: str, message: str) -> None:
    with pytest.raises(CheckpointError, match=message):
        parse_verifier_key(text)


# --- checkpoints -----------------------------------------------------------------------------


def _signed(cp: Checkpoint | None = None, key: Ed25519PrivateKey | None = None) -> str:
    return sign_checkpoint(cp or Checkpoint(ORIGIN, 1234, ROOT), ORIGIN, key or _key(1))


def test_checkpoint_round_trip() -> None:
    cp = Checkpoint(ORIGIN, 1234, ROOT)
    note = sign_checkpoint(cp, ORIGIN, _key(1))
    body = f"{ORIGIN}\n1234\n{base64.b64encode(ROOT).decode()}\n"
    assert note.startswith(body + "\n\u2014 " + ORIGIN + " ")
    assert note.encode().count(b"\n\n\xe2\x80\x94 ") == 1  # U+2014 EM DASH, then a space
    signature = base64.b64decode(note.rsplit(" ", 1)[1])
    assert signature[:4] == key_hash(ORIGIN, _public(_key(1)))
    assert len(signature) == 68
    assert open_checkpoint(note, ORIGIN, _public(_key(1)), origin=ORIGIN) == cp
    assert open_checkpoint(note, ORIGIN, _public(_key(1))) == cp


def test_empty_tree_checkpoint() -> None:
    cp = Checkpoint(ORIGIN, 0, EMPTY_ROOT)
    assert open_checkpoint(_signed(cp), ORIGIN, _public(_key(1))) == cp


@settings(max_examples=30, deadline=None)
@given(
    origin=st.text(st.characters(min_codepoint=0x20, exclude_characters="\n"), min_size=1),
    size=st.integers(0, 2**64 - 1),
    root=st.binary(min_size=32, max_size=32),
)
def test_checkpoint_round_trip_property(origin: str, size: int, root: bytes) -> None:
    try:
        origin.encode()
    except UnicodeEncodeError:
        return  # lone surrogates are not text a note can carry
    cp = Checkpoint(origin, size, root)
    assert open_checkpoint(_signed(cp), ORIGIN, _public(_key(1)), origin=origin) == cp


@pytest.mark.parametrize(
    ("old", "new"),
    [(ORIGIN, ORIGIN + "x"), ("\n1234\n", "\n1235\n"), ("AAECAwQF", "AAECAwQG")],
    ids=["origin", "size", "root"],
)
def test_tampered_body_rejected(old: str, new: str) -> None:
    note = _signed()
    body, signatures = note.split("\n\n")
    tampered = body.replace(old, new, 1) + "\n\n" + signatures
    assert tampered != note
    with pytest.raises(CheckpointError, match="does not verify"):
        open_checkpoint(tampered, ORIGIN, _public(_key(1)))


def test_tampered_signature_rejected() -> None:
    note = _signed()
    head, signature = note[:-1].rsplit(" ", 1)
    raw = bytearray(base64.b64decode(signature))
    raw[10] ^= 1
    tampered = f"{head} {base64.b64encode(raw).decode()}\n"
    with pytest.raises(CheckpointError, match="does not verify"):
        open_checkpoint(tampered, ORIGIN, _public(_key(1)))


def test_signature_from_another_key_name_only() -> None:
    note = sign_checkpoint(Checkpoint(ORIGIN, 5, ROOT), "witness.example/w1", _key(2))
    with pytest.raises(CheckpointError, match=f"no signature by key {ORIGIN}"):
        open_checkpoint(note, ORIGIN, _public(_key(1)), origin=ORIGIN)


def test_same_name_but_another_key() -> None:
    note = _signed(key=_key(3))
    with pytest.raises(CheckpointError, match="by another key"):
        open_checkpoint(note, ORIGIN, _public(_key(1)))


def test_checkpoint_of_another_log() -> None:
    other = "computeproof.example/cluster-b"
    note = sign_checkpoint(Checkpoint(other, 5, ROOT), other, _key(2))
    with pytest.raises(CheckpointError, match=r"is from log 'computeproof\.example/cluster-b'"):
        open_checkpoint(note, ORIGIN, _public(_key(1)), origin=ORIGIN)
    # Even signed by our own key, another origin is not our log.
    note = sign_checkpoint(Checkpoint(other, 5, ROOT), ORIGIN, _key(1))
    with pytest.raises(CheckpointError, match=r"not from 'computeproof\.example/cluster-a'"):
        open_checkpoint(note, ORIGIN, _public(_key(1)), origin=ORIGIN)


def test_extra_unknown_signer_still_opens() -> None:
    cp = Checkpoint(ORIGIN, 99, ROOT)
    ours = sign_checkpoint(cp, ORIGIN, _key(1))
    body, our_line = ours.split("\n\n")
    witness_line = sign_checkpoint(cp, "witness.example/w1", _key(2)).split("\n\n")[1]
    for note in (ours + witness_line, body + "\n\n" + witness_line + our_line):
        assert open_checkpoint(note, ORIGIN, _public(_key(1)), origin=ORIGIN) == cp
    # The witness's own key opens it too.
    assert open_checkpoint(ours + witness_line, "witness.example/w1", _public(_key(2))) == cp


@pytest.mark.parametrize(
    ("body", "message"),
    [
        (f"{ORIGIN}\n0012\n{base64.b64encode(ROOT).decode()}\n", "leading zeros"),
        (f"{ORIGIN}\n-1\n{base64.b64encode(ROOT).decode()}\n", "not a decimal"),
        (f"{ORIGIN}\n+12\n{base64.b64encode(ROOT).decode()}\n", "not a decimal"),
        (f"{ORIGIN}\n\u0661\u0662\n{base64.b64encode(ROOT).decode()}\n", "not a decimal"),
        (f"{ORIGIN}\n12\n{base64.b64encode(ROOT[:31]).decode()}\n", "31 bytes"),
        (f"{ORIGIN}\n12\n{base64.b64encode(ROOT).decode()[:-2]}\n", "base64"),
        (f"{ORIGIN}\n12\n{base64.b64encode(ROOT).decode()}\nextension\n", "extension lines"),
        (f"{ORIGIN}\n12\n", "needs an origin"),
        (f"{ORIGIN}\n{2**64}\n{base64.b64encode(ROOT).decode()}\n", "out of range"),
    ],
    ids=["leading-zeros", "negative", "plus-sign", "arabic-digits", "short-root", "bad-base64",
         "extension", "missing-root", "too-large"],
)  # fmt: skip
def test_malformed_checkpoint_bodies(body: str, message: str) -> None:
    # Correctly signed, so only the checkpoint syntax can reject them.
    note = sign_note(body, ORIGIN, _key(1))
    assert open_note(note, ORIGIN, _public(_key(1))) == body
    with pytest.raises(CheckpointError, match=message):
        open_checkpoint(note, ORIGIN, _public(_key(1)))


def test_checkpoint_fields_validated() -> None:
    with pytest.raises(CheckpointError, match="origin"):
        Checkpoint("", 1, ROOT)
    with pytest.raises(CheckpointError, match="origin"):
        Checkpoint("a\nb", 1, ROOT)
    with pytest.raises(CheckpointError, match="out of range"):
        Checkpoint(ORIGIN, -1, ROOT)
    with pytest.raises(CheckpointError, match="31 bytes"):
        Checkpoint(ORIGIN, 1, ROOT[:31])
    with pytest.raises(CheckpointError, match="key name"):
        sign_checkpoint(Checkpoint(ORIGIN, 1, ROOT), "bad+name", _key(1))
    with pytest.raises(CheckpointError, match="end with a newline"):
        sign_note("no newline", ORIGIN, _key(1))
