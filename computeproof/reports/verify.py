"""`computeproof report verify`: recompute every figure of a report from the receipts it lists.

Checks, in order: the embedded checkpoint is signed by this ledger's key and matches the
report's size and root; the current log extends it (consistency proof against the current
root and against the newest signed checkpoint); every listed leaf is the event of its job,
signed by a key enrolled for its host and included in the checkpoint (inclusion proof); the
listed leaves are all of the job's events up to the checkpoint; the job index holds no
other job the report should have counted; and the totals, groups and chart series
recomputed from the verified events equal the report's. Whether the ledger's key itself is
trusted is decided against the verifier's trust roots (computeproof/trust.py): without
one, a report that matches its receipts is UNTRUSTED, not VERIFIED.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass, field
from decimal import Decimal
from typing import Any

from computeproof import merkle
from computeproof.checkpoint import Checkpoint
from computeproof.errors import ComputeProofError, ReportError
from computeproof.ledger import Ledger
from computeproof.reports.build import REPORT_FORMAT
from computeproof.reports.grants import grants_from_json
from computeproof.reports.ratecard import ratecard_from_json
from computeproof.reports.receiptcheck import check_receipts
from computeproof.reports.source import candidate_jobs
from computeproof.reports.usage import Aggregator, ReportParams
from computeproof.store.interface import LeafRow
from computeproof.trust import TrustDecision, TrustRoots, decide

FIGURE_PARTS = ("totals", "groups", "series")
_EMBED = re.compile(
    r'<script type="application/json" id="computeproof-report">(.*?)</script>', re.S
)


@dataclass
class VerifyResult:
    """The outcome of verifying a report: ok, what was checked, and what did not match."""

    ok: bool = True
    checked: list[str] = field(default_factory=list)
    problems: list[str] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)
    trust: TrustDecision | None = None  # the ledger key against the verifier's roots

    @property
    def trusted(self) -> bool:
        """Whether a trust root vouches for the ledger key the report was checked with."""
        return self.trust is not None and self.trust.trusted

    def bad(self, problem: str) -> None:
        """Record a problem (the first 100 are kept)."""
        self.ok = False
        if len(self.problems) < 100:
            self.problems.append(problem)


def load_report(path: str) -> dict[str, Any]:
    """Read a JSON report, or the JSON block embedded in an HTML report."""
    try:
        with open(path, encoding="utf-8") as f:
            text = f.read()
    except OSError as e:
        raise ReportError(f"cannot read report {path}: {e.strerror}") from e
    except UnicodeDecodeError as e:
        raise ReportError(f"{path} is not a JSON or HTML report (not UTF-8 text)") from e
    if not text.lstrip().startswith("{"):
        m = _EMBED.search(text)
        if m is None:
            raise ReportError(
                f"{path}: no embedded report data (a PDF or CSV cannot be "
                "verified; verify the JSON or HTML report)"
            )
        text = m.group(1)
    try:
        doc = json.loads(text)
    except ValueError as e:
        raise ReportError(f"{path}: report data is not valid JSON: {e}") from e
    except RecursionError as e:
        raise ReportError(f"{path}: report data is nested too deeply to be a report") from e
    if not isinstance(doc, dict) or doc.get("format") != REPORT_FORMAT:
        raise ReportError(f"{path}: not a ComputeProof usage report ({REPORT_FORMAT})")
    return doc


def params_from_json(doc: dict[str, Any]) -> ReportParams:
    """The parameters a report was computed with, rebuilt from its embedded copy."""
    try:
        p = doc["parameters"]
        grid = p["grid_intensity_g_per_kwh"]
        return ReportParams(
            from_ms=int(p["from_ms"]),
            to_ms=int(p["to_ms"]),
            accounts=tuple(p["accounts"]),
            users=tuple(p["users"]),
            grants=tuple(p["grants"]),
            group_by=tuple(p["group_by"]),
            include_synthetic=bool(p["include_synthetic"]),
            grid_intensity_g_per_kwh=None if grid is None else Decimal(str(grid)),
            ratecard=None if doc["rate_card"] is None else ratecard_from_json(doc["rate_card"]),
            grant_map=None if doc["grant_map"] is None else grants_from_json(doc["grant_map"]),
        )
    except (KeyError, TypeError, ValueError, ArithmeticError) as e:
        raise ReportError(f"report parameters are malformed: {e}") from e


def _compare(path: str, want: object, got: object, result: VerifyResult) -> None:
    if isinstance(want, dict) and isinstance(got, dict):
        for k in sorted(set(want) | set(got)):
            _compare(f"{path}.{k}", want.get(k), got.get(k), result)
    elif isinstance(want, list) and isinstance(got, list) and len(want) == len(got):
        for i, (w, g) in enumerate(zip(want, got, strict=True)):
            _compare(f"{path}[{i}]", w, g, result)
    elif want != got or type(want) is not type(got):
        result.bad(
            f"{path}: the report says {json.dumps(want)}, the receipts give {json.dumps(got)}"
        )


def _check_trust(
    ledger: Ledger, doc: dict[str, Any], roots: TrustRoots, result: VerifyResult
) -> None:
    """Judge the ledger key the report's checkpoint verified under against ``roots``."""
    emb = doc.get("checkpoint") or {}
    public = ledger.ledger_public_key()
    statements = emb.get("witness_statements") or []
    if public is None or not isinstance(statements, list):
        result.bad("the report's checkpoint carries no usable ledger key or witness statements")
        return
    try:
        result.trust = decide(roots, ledger.origin, public, str(emb.get("note") or ""),
                              statements)  # fmt: skip
    except ComputeProofError as e:
        result.bad(f"trust: {e}")
        return
    if result.trust.problem is not None:
        result.bad(f"trust: {result.trust.problem}")
    elif result.trust.trusted:
        result.checked.append(result.trust.summary())


def _check_checkpoint(ledger: Ledger, doc: dict[str, Any], result: VerifyResult) -> Checkpoint:
    emb = doc.get("checkpoint") or {}
    note = emb.get("note") or ""
    if not note:
        raise ReportError(
            "the report embeds no signed checkpoint (it was produced UNVERIFIED); "
            "it cannot be verified"
        )
    try:
        cp = ledger.open_checkpoint(note)
    except ComputeProofError as e:
        result.bad(f"embedded checkpoint: {e}")
        raise ReportError(
            f"the report's checkpoint does not verify under this ledger's key: {e}"
        ) from e
    if cp.size != emb.get("size") or cp.root.hex() != emb.get("root_hex"):
        result.bad("embedded checkpoint: size/root fields differ from its signed note")
    result.checked.append(f"checkpoint {cp.size} signed by the ledger key")
    size_now = ledger.size()
    try:
        if cp.size > size_now:
            raise ReportError(
                f"the log has {size_now} leaves, fewer than the checkpoint's "
                f"{cp.size}: it was truncated"
            )
        root_now = ledger.root(size_now)
        proof = ledger.consistency_proof(cp.size, size_now)
        merkle.verify_consistency(cp.size, size_now, proof, cp.root, root_now)
        for row in ledger.store.checkpoints()[-1:]:
            if row.size >= cp.size:
                newest = ledger.open_checkpoint(row.note)
                proof = ledger.consistency_proof(cp.size, newest.size)
                merkle.verify_consistency(cp.size, newest.size, proof, cp.root, newest.root)
        result.checked.append(f"the current log ({size_now} leaves) extends checkpoint {cp.size}")
    except ComputeProofError as e:
        result.bad(f"the current log does not extend the report's checkpoint: {e}")
    return cp


def _listed_leaves(ledger: Ledger, job_key: str, listed: list[int]) -> list[LeafRow]:
    rows = {r.index: r for r in ledger.store.job_leaves(job_key)}
    out = []
    for i in listed:
        row = rows.get(i)
        if row is None:
            row = next(iter(ledger.store.leaves(i, i + 1)), None)
        if row is not None:
            out.append(row)
    return out


def verify_report(
    ledger: Ledger,
    doc: dict[str, Any],
    workers: int | None = None,
    roots: TrustRoots | None = None,
) -> VerifyResult:
    """Recompute every figure of ``doc`` from its receipts in ``ledger``; see the module doc.
    ``roots`` decide whether the ledger key is trusted (none: the result is untrusted)."""
    result = VerifyResult()
    params = params_from_json(doc)
    cp = _check_checkpoint(ledger, doc, result)
    _check_trust(ledger, doc, roots or TrustRoots(), result)
    if not (doc.get("ledger_check") or {}).get("ok", False):
        result.warnings.append("the report was produced with --allow-unverified")
    try:
        listed = [(str(jk), [int(i) for i in leaves]) for jk, leaves in doc["receipts"]["jobs"]]
    except (KeyError, TypeError, ValueError) as e:
        raise ReportError(f"the report's receipt list is malformed: {e}") from e
    agg = Aggregator(params)
    names = {jk for jk, _ in listed}
    envelopes = 0
    for start in range(0, len(listed), 2000):
        batch = listed[start : start + 2000]
        res = check_receipts(
            ledger, cp, ((jk, _listed_leaves(ledger, jk, leaves)) for jk, leaves in batch), workers
        )
        envelopes += res.envelopes
        for p in res.problems:
            result.bad(p)
        for jk, leaves in batch:
            log_leaves = [r.index for r in ledger.store.job_leaves(jk) if r.index < cp.size]
            if sorted(leaves) != log_leaves:
                result.bad(
                    f"job {jk}: the report lists leaves {leaves}, the log holds "
                    f"{log_leaves} up to the checkpoint"
                )
            usage = res.jobs.get(jk)
            if usage is None:
                result.bad(f"job {jk}: no verified receipt")
            elif not agg.add(usage):
                result.bad(f"job {jk} is listed but its receipts count nothing in this report")
    result.checked.append(
        f"{envelopes} receipts of {len(listed)} jobs: signature, host "
        f"enrollment and inclusion in checkpoint {cp.size}"
    )
    membership = Aggregator(params)
    for usage, leaves, _ in candidate_jobs(ledger, params):
        if usage.job_key not in names and leaves and leaves[0] < cp.size and membership.add(usage):
            result.bad(f"job {usage.job_key} belongs in this report but is not listed")
    result.checked.append("no job of the ledger that matches the report is left out")
    got = agg.figures()
    for part in FIGURE_PARTS:
        _compare(part, doc.get(part), got[part], result)
    result.checked.append("totals, groups and chart series recomputed from the receipts")
    return result
