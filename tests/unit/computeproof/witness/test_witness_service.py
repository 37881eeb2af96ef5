"""The witness's checks (computeproof/witness/service.py) against the C2SP tlog-witness
spec: cosign a checkpoint that extends the last one; refuse a rollback (409 with its
size), a fork (409, or 422 for a bad consistency proof), an unknown log (404), a foreign
key (403), a malformed request (400); keep the state durably."""

from __future__ import annotations

import base64
import threading
from pathlib import Path

import pytest

from computeproof import merkle
from computeproof.checkpoint import (
    Checkpoint,
    add_signature_lines,
    cosignature_message,
    parse_cosigner_key,
    read_checkpoint,
    sign_checkpoint,
    verifier_key,
    verify_cosignatures,
)
from computeproof.errors import CheckpointError
from computeproof.keys import Signer
from computeproof.witness.logkey import statement_from_json, verified
from computeproof.witness.service import Witness, parse_logs
from computeproof.witness.state import WitnessState

ORIGIN = "example.test/log"
LOG = Signer.from_seed(bytes([11]) * 32)
OTHER = Signer.from_seed(bytes([12]) * 32)
WITNESS = Signer.from_seed(bytes([13]) * 32)
NOW = 1_790_000_000


class Log:
    """A Merkle log in memory that signs checkpoints as a ledger does."""

    def __init__(self, seed: bytes = b"a", signer: Signer = LOG) -> None:
        self.tree = merkle.MemoryNodes()
        self.seed = seed
        self.signer = signer

    def grow(self, n: int) -> None:
        start = self.tree.size
        self.tree.append([merkle.leaf_hash(self.seed + b"%d" % i) for i in range(start, start + n)])

    def note(self, size: int | None = None) -> str:
        size = self.tree.size if size is None else size
        cp = Checkpoint(ORIGIN, size, self.tree.root(size))
        return sign_checkpoint(cp, ORIGIN, self.signer.private_key)

    def proof(self, old: int, new: int | None = None) -> list[bytes]:
        new = self.tree.size if new is None else new
        return [] if old == 0 else merkle.consistency_proof(old, new, self.tree.read)


def request(old: int, proof: list[bytes], note: str) -> bytes:
    lines = "".join(base64.b64encode(h).decode() + "\n" for h in proof)
    return f"old {old}\n{lines}\n{note}".encode()


@pytest.fixture
def witness(tmp_path: Path) -> Witness:
    logs = parse_logs([verifier_key(ORIGIN, LOG.public_raw)])
    return Witness("witness.test/w1", WITNESS, logs, WitnessState(str(tmp_path)), lambda: NOW)


def _cosigned(w: Witness, note: str, body: bytes) -> int:
    lines = [line + "\n" for line in body.decode().split("\n") if line]
    return verify_cosignatures(add_signature_lines(note, lines), [w.cosigner])[w.name]


def test_cosigns_the_first_checkpoint_and_each_extension(witness: Witness) -> None:
    log = Log()
    log.grow(4)
    r = witness.add_checkpoint(request(0, [], log.note()))
    assert r.status == 200 and _cosigned(witness, log.note(), r.body) == NOW
    log.grow(5)
    r = witness.add_checkpoint(request(4, log.proof(4), log.note()))
    assert r.status == 200 and _cosigned(witness, log.note(), r.body) == NOW
    again = witness.add_checkpoint(request(9, [], log.note()))  # the same one: cosigned again
    assert again.status == 200


def test_the_cosignature_is_c2sp_cosignature_v1(witness: Witness) -> None:
    """Known structure: key ID over name and type 0x04, a big-endian timestamp, Ed25519
    over "cosignature/v1\\ntime T\\n" and the checkpoint body."""
    log = Log()
    log.grow(3)
    r = witness.add_checkpoint(request(0, [], log.note()))
    name, blob = r.body.decode().rstrip("\n")[2:].split(" ")
    raw = base64.b64decode(blob)
    assert name == witness.name and len(raw) == 4 + 8 + 64
    assert raw[:4] == witness.cosigner.key_id and int.from_bytes(raw[4:12], "big") == NOW
    body = log.note().split("\n\n")[0] + "\n"
    msg = cosignature_message(body, NOW)
    assert msg.startswith(b"cosignature/v1\ntime 1790000000\nexample.test/log\n3\n")
    from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey

    Ed25519PublicKey.from_public_bytes(WITNESS.public_raw).verify(raw[12:], msg)
    assert parse_cosigner_key(witness.vkey) == witness.cosigner


def test_refuses_a_rollback(witness: Witness) -> None:
    log = Log()
    log.grow(8)
    assert witness.add_checkpoint(request(0, [], log.note())).status == 200
    # a log rolled back to 4 leaves, as if the witness had never seen more
    for old in (0, 4):
        r = witness.add_checkpoint(request(old, log.proof(old, 4) if old else [], log.note(4)))
        assert (r.status, r.body, r.content_type) == (409, b"8\n", "text/x.tlog.size")
    r = witness.add_checkpoint(request(8, [], log.note(4)))
    assert r.status == 400 and b"larger" in r.body


def test_refuses_a_fork(witness: Witness) -> None:
    log, fork = Log(b"a"), Log(b"b")
    log.grow(8)
    fork.grow(8)
    assert witness.add_checkpoint(request(0, [], log.note())).status == 200
    r = witness.add_checkpoint(request(8, [], fork.note()))  # same size, other root
    assert (r.status, r.body) == (409, b"8\n")
    fork.grow(4)  # a larger fork: its proof from 8 cannot lead to the root cosigned at 8
    r = witness.add_checkpoint(request(8, fork.proof(8), fork.note()))
    assert r.status == 422 and b"consistency proof" in r.body
    assert witness.state.latest(ORIGIN)[0].root == log.tree.root()  # type: ignore[index]


def test_refuses_a_bad_proof(witness: Witness) -> None:
    log = Log()
    log.grow(5)
    assert witness.add_checkpoint(request(0, [], log.note())).status == 200
    log.grow(6)
    proof = log.proof(5)
    for bad in (
        [bytes([proof[0][0] ^ 1]) + proof[0][1:], *proof[1:]],  # a flipped bit
        proof[:-1],  # truncated
        [*proof, proof[0]],  # trailing garbage
    ):
        r = witness.add_checkpoint(request(5, bad, log.note()))
        assert r.status == 422, bad
    assert witness.add_checkpoint(request(5, proof, log.note())).status == 200


@pytest.mark.parametrize(
    ("body", "status", "needle"),
    [
        (b"old 01\n\n", 400, b"leading zeros"),
        (b"old x\n\n", 400, b"decimal"),
        (b"new 0\n\n", 400, b"old <size>"),
        (b"old 0\n", 400, b"empty line"),
        (b"old 0\n!!!!\n\nx", 400, b"base64"),
        (b"old 0\nAAAA\n\nx", 400, b"32 bytes"),
        (b"\xff\xfe", 400, b"UTF-8"),
        (b"old 0\n" + b"A" * 70_000, 400, b"more than"),
    ],
    ids=[
        "leading-zero",
        "not-decimal",
        "not-old",
        "no-empty-line",
        "not-base64",
        "short-hash",
        "not-utf8",
        "too-large",
    ],
)
def test_malformed_requests(witness: Witness, body: bytes, status: int, needle: bytes) -> None:
    r = witness.add_checkpoint(body)
    assert r.status == status and needle in r.body, r.body


def test_unknown_log_and_foreign_key(witness: Witness) -> None:
    stranger = Log(signer=OTHER)
    stranger.grow(2)
    r = witness.add_checkpoint(request(0, [], stranger.note()))
    assert r.status == 403  # our origin, another key
    cp = Checkpoint("other.test/log", 1, b"\x00" * 32)
    r = witness.add_checkpoint(request(0, [], sign_checkpoint(cp, "other.test/log",
                                                              LOG.private_key)))  # fmt: skip
    assert r.status == 404
    log = Log()
    log.grow(2)
    r = witness.add_checkpoint(request(0, log.proof(0) or [b"\x00" * 32], log.note()))
    assert r.status == 400  # old size 0 takes no proof


def test_state_is_durable_across_restarts(tmp_path: Path) -> None:
    logs = parse_logs([verifier_key(ORIGIN, LOG.public_raw)])
    log = Log()
    log.grow(6)
    first = Witness("w", WITNESS, logs, WitnessState(str(tmp_path)))
    assert first.add_checkpoint(request(0, [], log.note())).status == 200
    second = Witness("w", WITNESS, logs, WitnessState(str(tmp_path)))
    r = second.add_checkpoint(request(0, [], log.note(3)))
    assert (r.status, r.body) == (409, b"6\n")
    assert read_checkpoint(second.state.latest(ORIGIN)[1]).size == 6  # type: ignore[index]
    assert len(list((tmp_path / "refused").iterdir())) == 1  # the evidence is kept


def test_concurrent_requests_never_store_a_smaller_size(witness: Witness) -> None:
    """Check and store are one step (the spec's race): threads submitting growing
    checkpoints leave the largest one cosigned, and each 200 was for a size at least as
    large as every size cosigned before it."""
    log = Log()
    log.grow(64)
    results: list[tuple[int, int]] = []

    def submit(size: int) -> None:
        for _ in range(20):
            have = witness.state.latest(ORIGIN)
            old = have[0].size if have else 0
            if old >= size:
                return
            r = witness.add_checkpoint(request(old, log.proof(old, size), log.note(size)))
            if r.status == 200:
                results.append((size, old))
                return
            assert r.status == 409

    threads = [threading.Thread(target=submit, args=(n,)) for n in range(8, 65, 8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    assert witness.state.latest(ORIGIN)[0].size == 64  # type: ignore[index]


def test_log_key_statement(witness: Witness) -> None:
    r = witness.log_key_statement(ORIGIN)
    assert r.status == 200
    import json

    st = statement_from_json(json.loads(r.body))
    assert verified(st, witness.cosigner) and st.origin == ORIGIN
    assert st.log_keys == ((ORIGIN, LOG.public_raw),)
    assert not verified(st, parse_cosigner_key(
        Witness("witness.test/w1", OTHER, {}, witness.state).vkey))  # fmt: skip
    assert witness.log_key_statement("nope").status == 404


def test_parse_logs_names_a_bad_key() -> None:
    from computeproof.errors import WitnessError

    with pytest.raises(WitnessError, match="--log"):
        parse_logs(["not a key"])
    with pytest.raises(CheckpointError):
        parse_cosigner_key(verifier_key(ORIGIN, LOG.public_raw))  # a log key is not a cosigner
