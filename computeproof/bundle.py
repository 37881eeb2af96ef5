"""Receipt bundles: everything needed to verify one job's receipt offline.

    {"format": "computeproof.receipt/v1",
     "job": {"cluster", "job" (display id), "job_id", "run", "job_key"},
     "log": {"origin", "size", "root" (base64), "ledger_key" ("ed25519:..."),
             "checkpoint" (signed note, with witness cosignature lines when it has some),
             "witness_statements": [{"witness", "statement", "signature"}]},  # optional
     "keys": [{"key_id", "public_key", "hosts"}],
     "entries": [{"leaf_index", "envelope" (the canonical envelope text),
                  "inclusion_proof": [base64, ...]}],
     "disclosures": {event id: {field: {"salt", "value"}}},   # optional
     "anchors": [{"record", "checkpoint", "consistency_proof"}]}  # optional
                                              # (computeproof/anchors/receipts.py)

Verification needs no database and no network: it checks the checkpoint signature,
every envelope signature against the bundle's keys, that each event belongs to the job,
and each inclusion proof against the checkpoint's root. All of that holds under the
bundle's own ledger key; whether that key is the ledger's is decided against the
verifier's trust roots (computeproof/trust.py): a pinned or configured ledger key, or a
quorum of witnesses whose cosignatures the checkpoint carries.
"""

from __future__ import annotations

import base64
import binascii
import json
from dataclasses import dataclass, field
from typing import Any

from computeproof import merkle
from computeproof.canonical import canonical_bytes
from computeproof.checkpoint import Checkpoint, add_signature_lines, open_checkpoint
from computeproof.envelope import b64decode_strict, verify_envelope
from computeproof.errors import BundleError, ReceiptError
from computeproof.event import job_key
from computeproof.keys import format_public_key, key_id, parse_public_key, verify
from computeproof.privacy import check_opening
from computeproof.trust import LedgerKeyRoot, TrustDecision, TrustRoots, decide

FORMAT = "computeproof.receipt/v1"


def export_bundle(ledger: object, job: str, disclose: bool = False) -> dict[str, object]:
    """Build the receipt bundle of job ``job`` from a :class:`Ledger`."""
    from computeproof.anchors.receipts import receipt_anchors
    from computeproof.ledger import Ledger

    assert isinstance(ledger, Ledger)
    row = ledger.resolve_job(job)
    cp = ledger.latest_checkpoint()
    public = ledger.ledger_public_key()
    assert public is not None
    leaves = ledger.store.job_leaves(row.job_key)
    enrolled = ledger.store.enrolled()
    used: dict[str, object] = {}
    entries = []
    disclosures: dict[str, object] = {}
    for leaf in leaves:
        if leaf.index >= cp.size:
            continue
        env = json.loads(leaf.envelope)
        kid = env["signatures"][0]["keyid"]
        k = enrolled[kid]
        used[kid] = {
            "key_id": kid,
            "public_key": format_public_key(k.public_raw),
            "hosts": list(k.hosts),
        }
        proof = ledger.inclusion_proof(leaf.index, cp.size)
        entries.append(
            {
                "leaf_index": leaf.index,
                "envelope": leaf.envelope.decode("utf-8"),
                "inclusion_proof": [base64.b64encode(h).decode() for h in proof],
            }
        )
        if disclose:
            ops = ledger.store.openings(leaf.event_id)
            if ops:
                disclosures[leaf.event_id] = {
                    f: {"salt": salt, "value": json.loads(value)}
                    for f, (salt, value) in ops.items()
                }
    bundle: dict[str, object] = {
        "format": FORMAT,
        "job": {
            "cluster": row.cluster,
            "job": row.job,
            "job_id": row.job_id,
            "run": row.run,
            "job_key": row.job_key,
        },
        "log": {
            "origin": ledger.origin,
            "size": cp.size,
            "root": base64.b64encode(cp.root).decode(),
            "ledger_key": format_public_key(public),
            "checkpoint": add_signature_lines(
                cp.note, list(ledger.store.cosignatures(cp.size).values())
            ),
        },
        "keys": sorted(used.values(), key=lambda k: str(k["key_id"])),  # type: ignore[index]
        "entries": entries,
        "anchors": receipt_anchors(ledger, cp.size),
    }
    statements = ledger.witness_statements(ledger.store.cosignatures(cp.size))
    if statements:  # only with witnesses: a bundle without them keeps its old shape
        bundle["log"]["witness_statements"] = statements  # type: ignore[index]
    bundle["index"] = sign_index(
        ledger.signer(),
        receipt_index(
            bundle,
            [leaf.index for leaf in leaves if leaf.index < cp.size],
            [leaf.event_id for leaf in leaves if leaf.index < cp.size],
        ),
    )  # fmt: skip
    if disclosures:
        bundle["disclosures"] = disclosures
    return bundle


@dataclass
class BundleReport:
    """The outcome of verifying a bundle."""

    job_key: str
    checkpoint_size: int
    job: str = ""  # Slurm's display id ("100_4")
    events: list[dict[str, object]] = field(default_factory=list)
    disclosed: dict[str, dict[str, object]] = field(default_factory=dict)
    lifecycle: dict[str, int] = field(default_factory=dict)
    trust: TrustDecision | None = None  # the ledger key against the verifier's roots
    anchors: list[dict[str, object]] = field(default_factory=list)  # checked offline


def _field(obj: object, name: str, kind: type, where: str) -> Any:
    if not isinstance(obj, dict) or name not in obj:
        raise BundleError(f"{where}: missing field '{name}'")
    value = obj[name]
    if not isinstance(value, kind) or (kind is int and isinstance(value, bool)):
        raise BundleError(f"{where}: field '{name}' must be {kind.__name__}")
    return value


INDEX_CONTEXT = b"computeproof receipt index v1\n"


def receipt_index(
    bundle: dict[str, Any], leaf_indices: list[int], event_ids: list[str]
) -> dict[str, object]:
    """The ledger's statement of which leaves are the job run's events at the checkpoint.

    Signed by the ledger key, it makes a bundle complete: dropping an entry, or relabelling
    the job, no longer verifies."""
    job, log = bundle["job"], bundle["log"]
    return {
        "origin": log["origin"],
        "checkpoint_size": log["size"],
        "root": log["root"],
        "job": {k: job[k] for k in ("cluster", "job", "job_id", "run", "job_key")},
        "entries": [{"leaf_index": i, "event_id": e} for i, e in zip(leaf_indices, event_ids,
                                                                      strict=True)],
    }  # fmt: skip


def sign_index(signer: Any, statement: dict[str, object]) -> dict[str, object]:
    """The signed receipt index: the statement and the ledger's Ed25519 signature."""
    sig = signer.sign(INDEX_CONTEXT + canonical_bytes(statement))
    return {"statement": statement, "signature": base64.b64encode(sig).decode()}


def verify_bundle(
    data: bytes | str,
    trusted_ledger_key: bytes | None = None,
    roots: TrustRoots | None = None,
) -> BundleReport:
    """Verify a receipt bundle offline; raise BundleError naming what and where. The
    report's ``trust`` says whether its ledger key is trusted: by ``trusted_ledger_key``
    (a pinned key) or ``roots``; with neither, a bundle that verifies is untrusted. Roots
    it does not meet are a BundleError."""
    if trusted_ledger_key is not None:
        pinned = LedgerKeyRoot(trusted_ledger_key, "pinned with --ledger-key")
        roots = TrustRoots((pinned,), *(() if roots is None else (roots.witnesses, roots.quorum)))
    try:
        return _verify_bundle(data, roots or TrustRoots())
    except BundleError:
        raise
    except (ValueError, TypeError, AttributeError, KeyError, UnicodeError) as e:
        # untrusted input: whatever slipped past the field checks is still one clear line
        raise BundleError(f"malformed receipt: {type(e).__name__}: {e}") from e


def _verify_bundle(data: bytes | str, roots: TrustRoots) -> BundleReport:
    try:
        bundle = json.loads(data)
    except (ValueError, UnicodeDecodeError) as e:
        raise BundleError(f"receipt is not JSON: {e}") from e
    except RecursionError as e:
        raise BundleError("not a receipt: JSON nested too deeply") from e
    if not isinstance(bundle, dict) or bundle.get("format") != FORMAT:
        raise BundleError(f"not a receipt bundle (format must be {FORMAT!r})")
    job = _field(bundle, "job", dict, "receipt")
    cluster = str(_field(job, "cluster", str, "job"))
    job_id = int(_field(job, "job_id", int, "job"))
    run = int(_field(job, "run", int, "job"))
    want_key = job_key(cluster, job_id, run)
    log = _field(bundle, "log", dict, "receipt")
    origin = str(_field(log, "origin", str, "log"))
    try:
        ledger_key = parse_public_key(str(_field(log, "ledger_key", str, "log")))
        root = b64decode_strict(str(_field(log, "root", str, "log")), "log root")
    except (ReceiptError, binascii.Error) as e:
        raise BundleError(f"log: {e}") from e
    if roots.ledger_keys and all(k.public_raw != ledger_key for k in roots.ledger_keys):
        # the browser's verifier (dashboard verify.js) gives the same message, word for word
        raise BundleError("log: the bundle's ledger key is not the trusted ledger key")
    try:
        note = str(_field(log, "checkpoint", str, "log"))
        cp: Checkpoint = open_checkpoint(note, origin, ledger_key, origin=origin)
    except ReceiptError as e:
        raise BundleError(f"log checkpoint: {e}") from e
    # read only with witness roots; anything else there is ignored, as unknown fields are
    statements = log.get("witness_statements")
    statements = statements if isinstance(statements, list) else []
    if cp.size != _field(log, "size", int, "log") or cp.root != root:
        raise BundleError("log: size or root differ from the signed checkpoint")
    keys: dict[str, bytes] = {}
    hosts: dict[str, list[str]] = {}
    for i, k in enumerate(_field(bundle, "keys", list, "receipt")):
        where = f"keys[{i}]"
        try:
            raw = parse_public_key(str(_field(k, "public_key", str, where)))
        except ReceiptError as e:
            raise BundleError(f"{where}: {e}") from e
        if key_id(raw) != _field(k, "key_id", str, where):
            raise BundleError(f"{where}: key id does not match the public key")
        keys[key_id(raw)] = raw
        hosts[key_id(raw)] = [str(h) for h in _field(k, "hosts", list, where)]
    entries = _field(bundle, "entries", list, "receipt")
    assert isinstance(entries, list)
    if not entries:
        raise BundleError("receipt has no entries")
    report = BundleReport(
        job_key=want_key, checkpoint_size=cp.size, job=str(_field(job, "job", str, "job"))
    )
    seen: set[str] = set()
    last_index = -1
    for i, entry in enumerate(entries):
        where = f"entries[{i}]"
        index = int(_field(entry, "leaf_index", int, where))
        where = f"entries[{i}] (leaf {index})"
        if index <= last_index:
            raise BundleError(f"{where}: entries are not in increasing leaf order")
        last_index = index
        try:
            envelope = str(_field(entry, "envelope", str, where)).encode("utf-8")
        except UnicodeEncodeError as e:
            raise BundleError(f"{where}: envelope is not valid Unicode text") from e
        try:
            opened = verify_envelope(envelope, keys)
            proof = [
                b64decode_strict(str(h), "inclusion proof hash")
                for h in _field(entry, "inclusion_proof", list, where)
            ]
            merkle.verify_inclusion(merkle.leaf_hash(envelope), index, cp.size, proof, cp.root)
        except (ReceiptError, binascii.Error) as e:
            raise BundleError(f"{where}: {e}") from e
        event = opened.event
        allowed = hosts[opened.key_id]
        if "*" not in allowed and event["host"] not in allowed:
            raise BundleError(f"{where}: signing key is not enrolled for host {event['host']}")
        ek = job_key(str(event["cluster"]), int(event["job_id"]), int(event["run"]))
        if ek != want_key:
            raise BundleError(f"{where}: event belongs to {ek}, not {want_key}")
        if event["id"] in seen:
            raise BundleError(f"{where}: event {event['id']} appears twice")
        seen.add(str(event["id"]))
        # the entry's index, not a "leaf_index" key an event may carry of its own: the
        # completeness check below must count the leaves the proofs were checked at
        report.events.append({**event, "leaf_index": index})
        report.lifecycle[str(event["type"])] = report.lifecycle.get(str(event["type"]), 0) + 1
    disclosures = bundle.get("disclosures", {})
    if not isinstance(disclosures, dict):
        raise BundleError("disclosures must be an object")
    by_id = {str(e["id"]): e for e in report.events}
    for eid, fields in disclosures.items():
        if eid not in by_id or not isinstance(fields, dict):
            raise BundleError(f"disclosures: event {eid} is not in this receipt")
        payload = by_id[eid]["payload"]
        assert isinstance(payload, dict)
        for name, opening in fields.items():
            if not isinstance(opening, dict):
                raise BundleError(f"disclosures[{eid}][{name}]: opening must be an object")
            try:
                value = check_opening(payload.get(name), opening)
            except ReceiptError as e:
                raise BundleError(f"disclosures[{eid}][{name}]: {e}") from e
            report.disclosed.setdefault(eid, {})[name] = value
    _check_index(bundle, report, ledger_key)
    try:
        report.trust = decide(roots, origin, ledger_key, note, statements)
    except ReceiptError as e:
        raise BundleError(f"log checkpoint: {e}") from e
    if report.trust.problem is not None:
        raise BundleError(f"trust: {report.trust.problem}")
    from computeproof.anchors.verify import check_receipt_anchors

    checked = check_receipt_anchors(bundle.get("anchors"), cp, ledger_key)
    report.anchors = [a.to_json() for a in checked]
    return report


def _check_index(bundle: dict[str, Any], report: BundleReport, ledger_key: bytes) -> None:
    """The signed index must name exactly this job and exactly these entries."""
    index = _field(bundle, "index", dict, "receipt")
    statement = _field(index, "statement", dict, "index")
    try:
        sig = b64decode_strict(str(_field(index, "signature", str, "index")), "index signature")
    except ReceiptError as e:
        raise BundleError(f"index: {e}") from e
    if not verify(ledger_key, sig, INDEX_CONTEXT + canonical_bytes(statement)):
        raise BundleError("index: the ledger's signature over the receipt index does not verify")
    want = receipt_index(
        bundle,
        [int(e["leaf_index"]) for e in report.events],  # type: ignore[call-overload]
        [str(e["id"]) for e in report.events],
    )
    for name in ("origin", "checkpoint_size", "root", "job"):
        if statement.get(name) != want[name]:
            raise BundleError(f"index: the signed {name} differs from the bundle's")
    if statement.get("entries") != want["entries"]:
        signed = {
            e.get("leaf_index") for e in statement.get("entries") or [] if isinstance(e, dict)
        }
        have = {int(e["leaf_index"]) for e in report.events}  # type: ignore[call-overload]
        missing = sorted(i for i in signed - have if isinstance(i, int))
        raise BundleError(
            "index: entries differ from the ledger's signed list of this job's events"
            + (f" (missing leaves {missing})" if missing else "")
        )
    if bundle["job"]["job_key"] != report.job_key:
        raise BundleError(f"job: job_key {bundle['job']['job_key']!r} is not {report.job_key!r}")
