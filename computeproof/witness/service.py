"""The witness's checks (https://c2sp.org/tlog-witness, add-checkpoint), without HTTP.

Request body::

    old <size>\\n                 the size of the latest checkpoint the client thinks we cosigned
    <base64 hash>\\n ...          0 to 63 lines: RFC 6962 consistency proof old -> new
    \\n
    <checkpoint, signed note>

Answers, in the spec's order: 400 malformed; 404 unknown origin; 403 no signature by a
key we trust for it; 400 old size larger than the checkpoint's; 409 (body: our size,
``text/x.tlog.size``) when old is not the size we cosigned last, or when the sizes are
equal and the roots are not; 422 when the consistency proof does not verify; else the
checkpoint becomes the latest (durably) and 200 carries one cosignature line (Ed25519
cosignature/v1, timestamped). Check and store are one step under the log's lock.
"""

from __future__ import annotations

import base64
import binascii
import json
import logging
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass

from computeproof import merkle
from computeproof.checkpoint import (
    Cosigner,
    cosign,
    cosigner_verifier_key,
    note_body,
    open_checkpoint,
    parse_verifier_key,
    read_checkpoint,
    verifier_key,
)
from computeproof.errors import CheckpointError, ProofError, WitnessError
from computeproof.keys import Signer
from computeproof.witness.logkey import sign_statement
from computeproof.witness.state import WitnessState

MAX_PROOF_LINES = 63
MAX_REQUEST_BYTES = 64 * 1024
SIZE_TYPE = "text/x.tlog.size"
log = logging.getLogger("computeproof.witness")


@dataclass(frozen=True)
class Response:
    """An HTTP answer: status, body and content type."""

    status: int
    body: bytes
    content_type: str = "text/plain; charset=utf-8"


def _text(status: int, message: str) -> Response:
    return Response(status, (message.rstrip("\n") + "\n").encode())


def parse_logs(vkeys: Sequence[str]) -> dict[str, list[tuple[str, bytes]]]:
    """``--log`` verifier keys (the log's key name is its origin) by origin."""
    logs: dict[str, list[tuple[str, bytes]]] = {}
    for text in vkeys:
        try:
            name, raw = parse_verifier_key(text)
        except CheckpointError as e:
            raise WitnessError(
                f"--log {text[:60]!r}: {e}; give the log's verifier key as "
                "`computeproof witness log-key` prints it on the ledger's host"
            ) from e
        logs.setdefault(name, []).append((name, raw))
    return logs


class Witness:
    """A witness: its name and key, the logs it knows, and its durable state."""

    def __init__(
        self,
        name: str,
        signer: Signer,
        logs: dict[str, list[tuple[str, bytes]]],
        state: WitnessState,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.name = name
        self.signer = signer
        self.logs = logs
        self.state = state
        self.clock = clock
        self.cosigner = Cosigner(name, signer.public_raw)
        cosigner_verifier_key(name, signer.public_raw)  # checks the name

    @property
    def vkey(self) -> str:
        """This witness's verifier key (type 0x04), for the logs' configurations."""
        return self.cosigner.vkey()

    def add_checkpoint(self, request: bytes) -> Response:
        """Handle one add-checkpoint request body."""
        try:
            old, proof, note = _parse_request(request)
            cp = read_checkpoint(note)
        except (CheckpointError, ValueError) as e:
            return _text(400, f"malformed request: {e}")
        keys = self.logs.get(cp.origin)
        if keys is None:
            return _text(404, f"unknown log {cp.origin[:200]!r}")
        if not any(_signed_by(note, name, raw, cp.origin) for name, raw in keys):
            return _text(403, "no signature by a key this witness trusts for the log")
        if old > cp.size:
            return _text(400, f"old size {old} is larger than the checkpoint's {cp.size}")
        if old == 0 and proof:
            return _text(400, "the consistency proof must be empty when the old size is 0")
        with self.state.locked(cp.origin):
            latest = self.state.latest(cp.origin)
            have = latest[0].size if latest is not None else 0
            if old != have:
                return self._refused(409, request, cp.origin, f"old size {old}, have {have}",
                                     Response(409, f"{have}\n".encode(), SIZE_TYPE))  # fmt: skip
            if latest is not None and old == cp.size and latest[0].root != cp.root:
                return self._refused(409, request, cp.origin,
                                     f"a different root for size {cp.size}: a fork",
                                     Response(409, f"{have}\n".encode(), SIZE_TYPE))  # fmt: skip
            if latest is not None and old > 0:  # equal sizes: the proof must be empty
                try:
                    merkle.verify_consistency(old, cp.size, proof, latest[0].root, cp.root)
                except ProofError as e:
                    return self._refused(422, request, cp.origin, str(e),
                                         _text(422, f"consistency proof: {e}"))  # fmt: skip
            if latest is None or cp.size > have:
                self.state.store(cp.origin, note)
        line = cosign(note_body(note), self.name, self.signer.private_key, int(self.clock()))
        return Response(200, line.encode())

    def _refused(
        self, status: int, request: bytes, origin: str, why: str, response: Response
    ) -> Response:
        # the log signed this request: it may prove the log's misbehaviour, keep it
        log.warning("refused a checkpoint of %r (%d): %s", origin[:200], status, why)
        self.state.keep_evidence(status, request)
        return response

    def log_key_statement(self, origin: str) -> Response:
        """The signed statement of the keys this witness accepts for ``origin`` (JSON)."""
        keys = self.logs.get(origin)
        if keys is None:
            return _text(404, f"unknown log {origin[:200]!r}")
        st = sign_statement(
            self.name, origin, [verifier_key(n, raw) for n, raw in keys], self.signer.private_key
        )
        return Response(200, json.dumps(st.to_json()).encode(), "application/json")


def _signed_by(note: str, name: str, raw: bytes, origin: str) -> bool:
    try:
        open_checkpoint(note, name, raw, origin=origin)
    except CheckpointError:
        return False
    return True


def _parse_request(request: bytes) -> tuple[int, list[bytes], str]:
    """(old size, proof hashes, checkpoint note) of an add-checkpoint body."""
    if len(request) > MAX_REQUEST_BYTES:
        raise ValueError(f"request of {len(request)} bytes, more than {MAX_REQUEST_BYTES}")
    try:
        text = request.decode("utf-8")
    except UnicodeDecodeError as e:
        raise ValueError("request is not UTF-8") from e
    head, sep, note = text.partition("\n\n")
    if not sep:
        raise ValueError("no empty line before the checkpoint")
    lines = head.split("\n")
    first = lines[0]
    if not first.startswith("old "):
        raise ValueError("the first line must be 'old <size>'")
    digits = first[4:]
    if not (digits.isascii() and digits.isdigit()) or (digits.startswith("0") and digits != "0"):
        raise ValueError("old size is not a decimal without leading zeros")
    if len(lines) - 1 > MAX_PROOF_LINES:
        raise ValueError(f"more than {MAX_PROOF_LINES} consistency proof lines")
    proof = []
    for line in lines[1:]:
        try:
            h = base64.b64decode(line.encode("ascii"), validate=True)
        except (binascii.Error, UnicodeEncodeError) as e:
            raise ValueError("a consistency proof line is not base64") from e
        if len(h) != 32:
            raise ValueError("a consistency proof hash is not 32 bytes")
        proof.append(h)
    return int(digits), proof, note
