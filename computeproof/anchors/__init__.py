"""Public anchoring: commit the ledger's latest signed checkpoint to a public registry.

One public transaction per anchoring period, not one per event: the checkpoint's root
commits to every event before it, and a receipt verified against an earlier checkpoint
reaches the anchored one through a consistency proof. Registries (one module each):

    evm.py        any EVM chain with an ERC-7053 registry, through web3.py
    numbers.py    Numbers Mainnet through the Capture API, through httpx
    devchain.py   a local eth-tester chain served over JSON-RPC on loopback (demo, tests)
    verify.py     receipt checks: offline (consistency, signatures) and on chain
    receipts.py   the anchors a receipt carries

What is committed (``commit data``, canonical JSON, the same for every registry):

    {"format": "computeproof.anchor/v1", "origin": ..., "size": N, "root": base64,
     "checkpoint_sha256": hex SHA-256 of the checkpoint text (the signed note body)}

An :class:`AnchorRecord` exists only from a registry's real answer (a chain receipt, a
Capture API response): a failed request raises AnchorError and stores nothing. Nothing
here imports web3 or httpx; the registry modules do, when used.
"""

from __future__ import annotations

import base64
import binascii
import contextlib
import hashlib
import json
import sys
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field, replace
from typing import TYPE_CHECKING, Any, Protocol

from computeproof.canonical import canonical_str
from computeproof.checkpoint import Checkpoint
from computeproof.errors import AnchorError
from computeproof.event import utc_now
from computeproof.store.interface import AnchorRow

if TYPE_CHECKING:
    from computeproof.ledger import Ledger

COMMIT_FORMAT = "computeproof.anchor/v1"
KINDS = ("evm", "numbers", "numbers-event")
CHECKPOINT_KINDS = ("evm", "numbers")  # the kinds a receipt carries


@contextlib.contextmanager
def keep_recursion_limit() -> Iterator[None]:
    """Run imports of web3, eth-account or eth-tester inside this. py_ecc and py-evm, which
    they import, raise the interpreter's recursion limit to 100,000 for the whole process,
    and then deeply nested input (a hostile receipt) overflows the C stack, a segfault,
    instead of raising RecursionError. This puts the limit back."""
    limit = sys.getrecursionlimit()
    try:
        yield
    finally:
        sys.setrecursionlimit(limit)


@dataclass(frozen=True)
class AnchoredCheckpoint:
    """The checkpoint an anchor commits to: the log's origin, size and root, and the signed
    note (kept so receipts can show the ledger signed what was anchored)."""

    origin: str
    size: int
    root: bytes
    note: str

    @property
    def checkpoint_sha256(self) -> str:
        """Hex SHA-256 of the checkpoint text (origin, size, root lines: the signed body).
        Cosignatures added to the note later do not change it."""
        return hashlib.sha256(Checkpoint(self.origin, self.size, self.root).body()).hexdigest()

    def commit_data(self) -> dict[str, object]:
        """What the registry records for this checkpoint."""
        return {
            "format": COMMIT_FORMAT,
            "origin": self.origin,
            "size": self.size,
            "root": base64.b64encode(self.root).decode(),
            "checkpoint_sha256": self.checkpoint_sha256,
        }

    def commit_text(self) -> str:
        """The commit data as canonical JSON, the exact string put on chain."""
        return canonical_str(self.commit_data())


def parse_commit_text(text: str) -> dict[str, Any]:
    """Parse commit data found in a registry; AnchorError unless it is ours and well formed
    (the canonical form, so one checkpoint has exactly one commit string)."""
    try:
        data = json.loads(text)
    except ValueError as e:
        raise AnchorError(f"commit data is not JSON: {text[:80]!r}") from e
    if not isinstance(data, dict) or data.get("format") != COMMIT_FORMAT:
        raise AnchorError(f"commit data is not a ComputeProof checkpoint: {text[:80]!r}")
    want = {"format": str, "origin": str, "size": int, "root": str, "checkpoint_sha256": str}
    for name, kind in want.items():
        if not isinstance(data.get(name), kind) or isinstance(data.get(name), bool):
            raise AnchorError(f"commit data: '{name}' is missing or not a {kind.__name__}")
    if set(data) != set(want) or canonical_str(data) != text:
        raise AnchorError("commit data is not in its canonical form")
    return data


@dataclass(frozen=True)
class AnchorRecord:
    """One anchor: which checkpoint (origin, size, root, checkpoint text hash), in which
    registry (kind, target), and where the registry holds it (``registry``: for "evm"
    chain_id, contract, tx_hash, block_number, block_hash, log_index, recorder, asset_cid;
    for "numbers" nid, commit_message and, once the commit history shows it, commit_tx).
    Only fields a real response gave are present: none is ever filled in by us."""

    kind: str
    target: str
    origin: str
    size: int
    root: str  # base64, as in checkpoints and receipts
    checkpoint_sha256: str
    registry: Mapping[str, object]
    anchored_at: str = field(default_factory=utc_now)
    id: int = 0  # the store's id; 0 before it is stored

    def to_json(self) -> dict[str, object]:
        """The record as receipts and `anchor list --json` carry it."""
        return {
            "kind": self.kind,
            "target": self.target,
            "origin": self.origin,
            "size": self.size,
            "root": self.root,
            "checkpoint_sha256": self.checkpoint_sha256,
            "registry": dict(self.registry),
            "anchored_at": self.anchored_at,
        }

    @classmethod
    def from_json(cls, data: object, anchor_id: int = 0) -> AnchorRecord:
        """Parse a record (from the store or a receipt); AnchorError naming what is wrong."""
        if not isinstance(data, dict):
            raise AnchorError("anchor record must be an object")
        want = {
            "kind": str, "target": str, "origin": str, "size": int, "root": str,
            "checkpoint_sha256": str, "registry": dict, "anchored_at": str,
        }  # fmt: skip
        for name, kind in want.items():
            value = data.get(name)
            if not isinstance(value, kind) or isinstance(value, bool):
                raise AnchorError(f"anchor record: '{name}' is missing or not a {kind.__name__}")
        if data["kind"] not in KINDS:
            raise AnchorError(f"anchor record: unknown kind {str(data['kind'])[:40]!r}")
        try:
            if len(base64.b64decode(data["root"], validate=True)) != 32:
                raise AnchorError("anchor record: root is not 32 bytes")
        except (binascii.Error, ValueError) as e:  # ValueError: text that is not ASCII
            raise AnchorError("anchor record: root is not base64") from e
        return cls(
            kind=data["kind"],
            target=data["target"],
            origin=data["origin"],
            size=data["size"],
            root=data["root"],
            checkpoint_sha256=data["checkpoint_sha256"],
            registry=dict(data["registry"]),
            anchored_at=data["anchored_at"],
            id=anchor_id,
        )

    @classmethod
    def for_checkpoint(
        cls, kind: str, target: str, cp: AnchoredCheckpoint, registry: Mapping[str, object]
    ) -> AnchorRecord:
        """A record of ``cp`` in a registry."""
        return cls(
            kind=kind,
            target=target,
            origin=cp.origin,
            size=cp.size,
            root=base64.b64encode(cp.root).decode(),
            checkpoint_sha256=cp.checkpoint_sha256,
            registry=dict(registry),
        )

    def row(self) -> AnchorRow:
        """The store's row for this record."""
        return AnchorRow(
            self.kind, self.target, self.size, canonical_str(self.to_json()), self.anchored_at,
            self.id,
        )  # fmt: skip


def record_from_row(row: AnchorRow) -> AnchorRecord:
    """The record a store row holds."""
    try:
        data = json.loads(row.record)
    except ValueError as e:
        raise AnchorError(f"anchor {row.id} in the ledger is not JSON") from e
    return AnchorRecord.from_json(data, row.id)


class Anchorer(Protocol):
    """A public registry that can record a checkpoint (evm.EvmAnchorer,
    numbers.NumbersAnchorer)."""

    kind: str

    @property
    def target(self) -> str:
        """Which registry this is (chain and contract; Capture API and asset scope), so a
        checkpoint already anchored there is not paid for twice."""
        ...

    def anchor(self, cp: AnchoredCheckpoint, previous: Sequence[AnchorRecord]) -> AnchorRecord:
        """Commit ``cp``; return the registry's record of it or raise AnchorError.
        ``previous``: this registry's earlier records, oldest first."""
        ...


def ledger_checkpoint(ledger: Ledger) -> AnchoredCheckpoint:
    """The ledger's latest checkpoint (signing one at the current size if needed)."""
    row = ledger.latest_checkpoint()
    return AnchoredCheckpoint(ledger.origin, row.size, row.root, row.note)


def anchors_of(
    ledger: Ledger, kind: str | None = None, target: str | None = None
) -> list[AnchorRecord]:
    """The ledger's anchor records, by size."""
    return [record_from_row(r) for r in ledger.store.anchors(kind, target)]


def anchor_checkpoint(
    ledger: Ledger, anchorer: Anchorer, force: bool = False
) -> tuple[AnchorRecord, bool]:
    """Anchor the latest checkpoint with ``anchorer`` and store the record. Returns the
    record and True, or, when this registry already holds a checkpoint of the current size
    (nothing new to pay for) and not ``force``, that record and False."""
    cp = ledger_checkpoint(ledger)
    previous = anchors_of(ledger, anchorer.kind, anchorer.target)
    if previous and previous[-1].size == cp.size and not force:
        return previous[-1], False
    record = anchorer.anchor(cp, previous)
    if (record.size, record.root, record.origin) != (
        cp.size, base64.b64encode(cp.root).decode(), cp.origin,
    ):  # fmt: skip
        raise AnchorError("the registry's record names another checkpoint than the one sent")
    anchor_id = ledger.store.add_anchor(record.row())
    return replace(record, id=anchor_id), True


def anchor_latest(ledger: Ledger, anchorer: Anchorer) -> AnchorRecord:
    """Commit the ledger's latest checkpoint to ``anchorer``'s registry unless it is there
    already; the stored record (the periodic task of a collector calls this)."""
    return anchor_checkpoint(ledger, anchorer)[0]
