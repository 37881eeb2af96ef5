"""Checking the anchors a receipt carries (receipts.py says what they are).

Offline (every `receipt verify`): each anchored checkpoint is signed by the receipt's ledger
key, its text hash and root are what the record says, and it extends the receipt's
checkpoint (the consistency proof). That shows the ledger claims the anchor; only the chain
shows the registry holds it.

On chain (`--check-anchors RPC_URL`): for each EVM anchor on the chain the node serves,
the transaction is mined and succeeded, in the recorded block, and its log at the recorded
index is a Commit from the recorded registry and recorder, under the recorded asset CID,
whose commit data is exactly this checkpoint. A Numbers anchor is checked on Numbers
Mainnet (chain 10507) when its commit transaction is known: the transaction holds a Commit
for the anchor's NID naming the recorded asset tree. Reading that asset tree (IPFS) to see
the checkpoint in it is not done here.
"""

from __future__ import annotations

import binascii
import json
from dataclasses import dataclass
from typing import Any

from computeproof import merkle
from computeproof.anchors import (
    CHECKPOINT_KINDS,
    AnchoredCheckpoint,
    AnchorRecord,
    parse_commit_text,
)
from computeproof.checkpoint import Checkpoint, open_checkpoint
from computeproof.envelope import b64decode_strict
from computeproof.errors import AnchorError, BundleError, ReceiptError

_EVM_FIELDS: dict[str, type] = {
    "chain_id": int, "contract": str, "tx_hash": str, "block_number": int, "block_hash": str,
    "log_index": int, "recorder": str, "asset_cid": str,
}  # fmt: skip


_HEX_DIGITS = frozenset("0123456789abcdefABCDEF")


def _hex(value: object, size: int) -> bool:
    """``0x`` and exactly ``2 * size`` hex digits (bytes.fromhex alone would skip
    whitespace, so 64 spaces would pass as a transaction hash)."""
    return (
        isinstance(value, str)
        and value.startswith("0x")
        and len(value) == 2 + 2 * size
        and _HEX_DIGITS.issuperset(value[2:])
    )


def _check_registry(record: AnchorRecord, where: str) -> None:
    reg = record.registry
    if record.kind == "evm":
        for name, kind in _EVM_FIELDS.items():
            if not isinstance(reg.get(name), kind) or isinstance(reg.get(name), bool):
                raise BundleError(
                    f"{where}: registry field '{name}' is missing or not {kind.__name__}"
                )
        for name, size in (("tx_hash", 32), ("block_hash", 32), ("contract", 20), ("recorder", 20)):
            if not _hex(reg[name], size):
                raise BundleError(f"{where}: registry field '{name}' is not {size} bytes of hex")
    elif record.kind == "numbers":
        if not isinstance(reg.get("nid"), str) or not reg["nid"]:
            raise BundleError(f"{where}: a Numbers anchor needs its NID")
        if "commit_tx" in reg and not _hex(reg["commit_tx"], 32):
            raise BundleError(f"{where}: registry field 'commit_tx' is not 32 bytes of hex")


@dataclass(frozen=True)
class AnchorSummary:
    """One anchor of a receipt, checked offline."""

    kind: str
    target: str
    size: int
    registry: dict[str, object]

    def to_json(self) -> dict[str, object]:
        """As `receipt verify --json` prints it."""
        return {"kind": self.kind, "target": self.target, "size": self.size,
                "registry": self.registry}  # fmt: skip


def check_receipt_anchors(
    anchors: object, cp: Checkpoint, ledger_key: bytes
) -> list[AnchorSummary]:
    """Check a receipt's ``anchors`` against its checkpoint ``cp`` and ledger key, offline;
    BundleError naming the first one that fails."""
    if anchors is None:
        return []
    if not isinstance(anchors, list):
        raise BundleError("anchors must be a list")
    out = []
    for i, entry in enumerate(anchors):
        where = f"anchors[{i}]"
        if not isinstance(entry, dict):
            raise BundleError(f"{where}: must be an object")
        try:
            record = AnchorRecord.from_json(entry.get("record"))
        except AnchorError as e:
            raise BundleError(f"{where}: {e}") from e
        where = f"anchors[{i}] ({record.kind} {record.target[:80]}, size {record.size})"
        if record.kind not in CHECKPOINT_KINDS:
            raise BundleError(f"{where}: a receipt carries checkpoint anchors only")
        if record.origin != cp.origin:
            raise BundleError(f"{where}: anchors log {record.origin[:80]!r}, not {cp.origin!r}")
        if record.size < cp.size:
            raise BundleError(f"{where}: anchors a checkpoint older than the receipt's ({cp.size})")
        _check_registry(record, where)
        note = entry.get("checkpoint")
        proof_b64 = entry.get("consistency_proof")
        if not isinstance(note, str) or not isinstance(proof_b64, list):
            raise BundleError(f"{where}: needs the anchored checkpoint and a consistency proof")
        try:
            anchored = open_checkpoint(note, cp.origin, ledger_key, origin=cp.origin)
            proof = [b64decode_strict(str(h), "consistency proof hash") for h in proof_b64]
            merkle.verify_consistency(cp.size, anchored.size, proof, cp.root, anchored.root)
        except (ReceiptError, binascii.Error) as e:
            raise BundleError(f"{where}: {e}") from e
        ac = AnchoredCheckpoint(anchored.origin, anchored.size, anchored.root, note)
        commit = ac.commit_data()
        if (record.size, record.root, record.checkpoint_sha256) != (
            commit["size"], commit["root"], commit["checkpoint_sha256"],
        ):  # fmt: skip
            raise BundleError(f"{where}: the record does not describe the anchored checkpoint")
        out.append(AnchorSummary(record.kind, record.target, record.size, dict(record.registry)))
    return out


@dataclass(frozen=True)
class ChainCheck:
    """The result of looking one anchor up on chain."""

    kind: str
    target: str
    size: int
    checked: bool  # False: on another chain than the node serves, or not checkable yet
    detail: str
    confirmations: int = 0

    def to_json(self) -> dict[str, object]:
        """As `--json` prints it."""
        return {"kind": self.kind, "target": self.target, "size": self.size,
                "checked": self.checked, "detail": self.detail,
                "confirmations": self.confirmations}  # fmt: skip


def _check_evm(w3: Any, record: AnchorRecord, where: str) -> int:
    from computeproof.anchors.evm import asset_cid_topic, call_chain, find_commit

    reg = record.registry
    logs = find_commit(w3, str(reg["tx_hash"]), str(reg["contract"]))
    log = next((c for c in logs if c.log_index == reg["log_index"]), None)
    if log is None:
        raise BundleError(
            f"{where}: the chain has no Commit from {reg['contract']} at log index "
            f"{reg['log_index']} of transaction {reg['tx_hash']}"
        )
    if (log.block_number, log.block_hash.lower()) != (
        reg["block_number"],
        str(reg["block_hash"]).lower(),
    ):
        raise BundleError(
            f"{where}: the transaction is in block {log.block_number}, not in the recorded one"
        )
    if log.recorder.lower() != str(reg["recorder"]).lower():
        raise BundleError(
            f"{where}: the Commit was recorded by {log.recorder}, not {reg['recorder']}"
        )
    if log.asset_cid_topic != asset_cid_topic(str(reg["asset_cid"])):
        raise BundleError(
            f"{where}: the Commit is under another asset CID than {reg['asset_cid']!r}"
        )
    try:
        data = parse_commit_text(log.commit_data)
    except AnchorError as e:
        raise BundleError(f"{where}: the Commit on chain is not this checkpoint: {e}") from e
    want = {"origin": record.origin, "size": record.size, "root": record.root,
            "checkpoint_sha256": record.checkpoint_sha256}  # fmt: skip
    for name, value in want.items():
        if data[name] != value:
            raise BundleError(
                f"{where}: the Commit on chain names {name} {str(data[name])[:80]!r}, the "
                f"receipt's anchor {str(value)[:80]!r}"
            )
    latest = int(call_chain("cannot read the latest block", lambda: w3.eth.block_number))
    return latest - log.block_number + 1


def _check_numbers(w3: Any, record: AnchorRecord, where: str) -> int:
    from computeproof.anchors.evm import asset_cid_topic, call_chain, find_commit

    reg = record.registry
    logs = [c for c in find_commit(w3, str(reg["commit_tx"]), None)
            if c.asset_cid_topic == asset_cid_topic(str(reg["nid"]))]  # fmt: skip
    if not logs:
        raise BundleError(
            f"{where}: transaction {reg['commit_tx']} holds no Commit for NID {reg['nid']}"
        )
    tree = reg.get("asset_tree_cid")
    if tree is not None:
        named = set()
        for c in logs:
            try:
                named.add(json.loads(c.commit_data).get("assetTreeCid"))
            except (ValueError, AttributeError):
                continue
        if tree not in named:
            raise BundleError(f"{where}: the Commit on chain names another asset tree than {tree}")
    latest = int(call_chain("cannot read the latest block", lambda: w3.eth.block_number))
    return latest - logs[0].block_number + 1


def check_anchors_on_chain(bundle: dict[str, Any], w3: Any) -> list[ChainCheck]:
    """Look each of a receipt's anchors up on the chain behind ``w3`` (the receipt having
    passed the offline checks). BundleError when an anchor on that chain does not hold;
    AnchorError when the node cannot be read. Anchors on other chains come back unchecked."""
    from computeproof.anchors.evm import NUMBERS_MAINNET_CHAIN_ID, call_chain

    chain_id = int(call_chain("cannot read the chain id", lambda: w3.eth.chain_id))
    out = []
    for i, entry in enumerate(bundle.get("anchors") or []):
        record = AnchorRecord.from_json(entry["record"])
        reg = record.registry
        where = f"anchors[{i}] ({record.kind} {record.target[:80]}, size {record.size})"
        if record.kind == "evm" and reg.get("chain_id") == chain_id:
            n = _check_evm(w3, record, where)
            out.append(ChainCheck(record.kind, record.target, record.size, True,
                                  f"Commit in transaction {reg['tx_hash']}", n))  # fmt: skip
        elif (
            record.kind == "numbers"
            and "commit_tx" in reg
            and (chain_id == reg.get("chain_id", NUMBERS_MAINNET_CHAIN_ID))
        ):
            n = _check_numbers(w3, record, where)
            out.append(ChainCheck(record.kind, record.target, record.size, True,
                                  f"Commit for NID {reg['nid']} in transaction "
                                  f"{reg['commit_tx']}", n))  # fmt: skip
        else:
            why = (
                "its commit transaction is not known yet (`computeproof anchor refresh`)"
                if record.kind == "numbers" and "commit_tx" not in reg
                else f"it is on another chain than {chain_id}"
            )
            out.append(ChainCheck(record.kind, record.target, record.size, False,
                                  f"not checked: {why}"))  # fmt: skip
    if not any(c.checked for c in out):
        raise BundleError(f"the receipt carries no anchor that chain {chain_id} can confirm")
    return out


def verify_with_anchors(
    data: bytes, trusted_ledger_key: bytes | None, rpc_url: str
) -> tuple[bool, dict[str, Any]]:
    """Verify a receipt offline, then its anchors on the chain at ``rpc_url``: (valid, what
    `--json` prints). AnchorError when the node cannot be reached or read."""
    from computeproof.anchors.evm import connect
    from computeproof.bundle import verify_bundle

    try:
        report = verify_bundle(data, trusted_ledger_key)
    except BundleError as e:
        return False, {"valid": False, "reason": str(e)}
    w3 = connect(rpc_url)
    try:
        checks = check_anchors_on_chain(json.loads(data), w3)
    except BundleError as e:
        return False, {"valid": False, "reason": str(e), "anchors": report.anchors}
    return True, {
        "valid": True,
        "job": report.job_key,
        "checkpoint_size": report.checkpoint_size,
        "anchors": report.anchors,
        "anchors_on_chain": [c.to_json() for c in checks],
    }
