"""The anchors a receipt carries.

A receipt is verified against one checkpoint (its ``log``). It carries, for each registry
the ledger anchors to, the first anchor of that checkpoint or of a later one, with:

    {"record": AnchorRecord.to_json(),
     "checkpoint": the anchored checkpoint's signed note,
     "consistency_proof": [base64, ...]}   # receipt's checkpoint -> anchored one ([] if same)

so a verifier can check, offline, that the anchored checkpoint extends the receipt's, and,
with a chain node, that the registry holds the anchored one (verify.py). A receipt exported
before its checkpoint was anchored gets its anchors later with `computeproof anchor attach`.
"""

from __future__ import annotations

import base64
import binascii
from typing import TYPE_CHECKING, Any

from computeproof.anchors import CHECKPOINT_KINDS, AnchorRecord, anchors_of
from computeproof.errors import AnchorError

if TYPE_CHECKING:
    from computeproof.ledger import Ledger


def receipt_anchors(ledger: Ledger, size: int) -> list[dict[str, object]]:
    """For each registry, its first anchor at or after log size ``size``, ready for a
    receipt verified against the checkpoint of that size."""
    notes = {row.size: row.note for row in ledger.store.checkpoints()}
    first: dict[str, AnchorRecord] = {}
    for record in anchors_of(ledger):
        if record.kind in CHECKPOINT_KINDS and record.size >= size:
            first.setdefault(record.target, record)  # anchors come by size
    out: list[dict[str, object]] = []
    for record in sorted(first.values(), key=lambda r: (r.size, r.target)):
        note = notes.get(record.size)
        if note is None:  # anchored checkpoints are always stored; never carry one unsigned
            continue
        proof = ledger.consistency_proof(size, record.size) if record.size > size else []
        out.append(
            {
                "record": record.to_json(),
                "checkpoint": note,
                "consistency_proof": [base64.b64encode(h).decode() for h in proof],
            }
        )
    return out


def attach_anchors(ledger: Ledger, bundle: dict[str, Any]) -> int:
    """Add to ``bundle`` (a receipt of this ledger) the anchors of its checkpoint or later
    ones; the number of anchors it carries now. AnchorError when the receipt's checkpoint
    is not one of this log's."""
    log = bundle.get("log")
    if not isinstance(log, dict) or not isinstance(log.get("size"), int):
        raise AnchorError("not a receipt bundle: no log size")
    size = int(log["size"])
    if log.get("origin") != ledger.origin:
        raise AnchorError(f"the receipt is from log {str(log.get('origin'))[:80]!r}, not this one")
    try:
        root = base64.b64decode(str(log.get("root")), validate=True)
    except binascii.Error as e:
        raise AnchorError("the receipt's log root is not base64") from e
    if size > ledger.size() or ledger.root(size) != root:
        raise AnchorError(
            f"the receipt's checkpoint (size {size}) is not in this ledger's log: wrong "
            "ledger, or the log was rewritten (run `computeproof ledger verify`)"
        )
    fresh = receipt_anchors(ledger, size)
    seen = {(a["record"]["target"], a["record"]["size"]) for a in fresh}  # type: ignore[index]
    kept = [
        a
        for a in bundle.get("anchors") or []
        if isinstance(a, dict)
        and isinstance(a.get("record"), dict)
        and (a["record"].get("target"), a["record"].get("size")) not in seen
    ]
    bundle["anchors"] = fresh + kept
    return len(bundle["anchors"])
