"""Building a verifiable usage report from a ledger.

What `computeproof report` checks before it counts anything (a full `ledger verify` of a
large ledger takes minutes, so the report checks what its figures depend on):

1. the checkpoint: the ledger's newest checkpoint covering the whole log (signed now if the
   log grew, which the ledger refuses when the log no longer matches its last checkpoint);
   its signature under the ledger key; the root recomputed from the stored tree; every
   earlier checkpoint's signature and root (so the log extends each of them);
2. the receipts counted (mode "receipts", the default): every event of every counted job is
   verified (signature by a key enrolled for its host, inclusion proof against the
   checkpoint) and re-folded into the job's figures, which must equal the job index's;
   mode "sample" does the same for a reproducible random sample of counted jobs (seeded by
   the checkpoint root) for very large reports, and the report says so.

Any failure refuses the report, unless allow_unverified: then the report is produced from
the job index, marked UNVERIFIED on page one with the problems listed.
"""

from __future__ import annotations

import base64
import random
from collections.abc import Iterator, Sequence
from typing import Literal

from computeproof.checkpoint import Checkpoint, add_signature_lines
from computeproof.errors import ComputeProofError, ReportError
from computeproof.event import utc_now
from computeproof.ledger import Ledger
from computeproof.reports.receiptcheck import check_receipts, usage_of
from computeproof.reports.source import (
    Candidate,
    candidate_jobs,
    candidates_in_part,
)
from computeproof.reports.usage import Aggregator, JobUsage, ReportParams
from computeproof.store.interface import LeafRow

REPORT_FORMAT = "computeproof-usage-report/v1"
CheckMode = Literal["receipts", "sample"]
CHECK_BATCH = 2000  # jobs whose receipts are checked together


def check_checkpoints(ledger: Ledger) -> tuple[Checkpoint, str, list[str]]:
    """The checkpoint a report is computed at, its signed note, and the problems found."""
    problems: list[str] = []
    try:
        row = ledger.latest_checkpoint()
    except ComputeProofError as e:
        problems.append(f"no checkpoint covers the log: {e}")
        size = ledger.size()
        return Checkpoint(ledger.origin, size, ledger.root(size)), "", problems
    try:
        cp = ledger.open_checkpoint(row.note)
    except ComputeProofError as e:
        problems.append(f"checkpoint {row.size}: {e}")
        cp = Checkpoint(ledger.origin, row.size, row.root)
    for old in ledger.store.checkpoints():
        if old.size > ledger.size():
            problems.append(
                f"checkpoint {old.size} covers more leaves than the log has: the log was truncated"
            )
            continue
        try:
            opened = ledger.open_checkpoint(old.note)
            if opened.size != old.size or ledger.root(old.size) != opened.root:
                problems.append(
                    f"checkpoint {old.size}: the stored tree does not reproduce its signed root"
                )
        except ComputeProofError as e:
            problems.append(f"checkpoint {old.size}: {e}")
    return cp, row.note, problems


def _job_leaves(ledger: Ledger, job_key: str, size: int) -> list[LeafRow]:
    return [r for r in ledger.store.job_leaves(job_key) if r.index < size]


def _differs(index: JobUsage, signed: JobUsage | None) -> str | None:
    if signed is None:
        return "no verified event"
    for name in JobUsage._fields:
        if getattr(index, name) != getattr(signed, name):
            return (
                f"job index says {name}={getattr(index, name)!r}, its receipts say "
                f"{getattr(signed, name)!r}"
            )
    return None


def _batches(
    items: Sequence[tuple[str, JobUsage, list[int]]],
) -> Iterator[Sequence[tuple[str, JobUsage, list[int]]]]:
    for i in range(0, len(items), CHECK_BATCH):
        yield items[i : i + CHECK_BATCH]


PARALLEL_MIN_JOBS = 50_000  # below this one process folds faster than two plus the merge

Folded = tuple[Aggregator, list[tuple[str, list[int]]], list[tuple[str, JobUsage, list[int]]]]


def _fold(params: ReportParams, candidates: Iterator[Candidate], size: int) -> Folded:
    """Fold candidates into an aggregator; jobs with events past the checkpoint go aside."""
    agg = Aggregator(params)
    receipts: list[tuple[str, list[int]]] = []
    late: list[tuple[str, JobUsage, list[int]]] = []
    for usage, leaves, last_leaf in candidates:
        if last_leaf >= size:  # events appended after the checkpoint: count it as of then
            late.append((usage.job_key, usage, [i for i in leaves if i < size]))
        elif agg.add(usage):
            receipts.append((usage.job_key, leaves))
    return agg, receipts, late


def _fold_part(args: tuple[str, ReportParams, tuple[int, int], int]) -> Folded:
    url, params, part, size = args
    return _fold(params, candidates_in_part(url, params, part), size)


def _parallel_fold(
    ledger: Ledger, params: ReportParams, size: int, workers: int | None
) -> Folded | None:
    """Fold a large job index on every core, one part of it each; None when a single
    process is the better choice (a store with no parallel reader, a small index, one core)."""
    import os

    from computeproof.workers import process_pool

    n = workers or os.cpu_count() or 1
    url = ledger.store.reader_url()
    parts = ledger.store.partitions(n) if n > 1 and url is not None else []
    if url is None or len(parts) < 2 or parts[-1][1] - parts[0][0] < PARALLEL_MIN_JOBS:
        return None
    with process_pool(len(parts), preload=[__name__]) as pool:
        folded = list(pool.map(_fold_part, [(url, params, part, size) for part in parts]))
    agg, receipts, late = folded[0]
    for other_agg, other_receipts, other_late in folded[1:]:
        agg.merge(other_agg)
        receipts.extend(other_receipts)
        late.extend(other_late)
    return agg, receipts, late


def build_report(
    ledger: Ledger,
    params: ReportParams,
    check: CheckMode = "receipts",
    allow_unverified: bool = False,
    sample_size: int = 1000,
    workers: int | None = None,
) -> dict[str, object]:
    """Count the ledger's jobs for ``params`` at a checked checkpoint; the report document."""
    cp, note, problems = check_checkpoints(ledger)
    rng = random.Random(cp.root)
    folded = None if check == "receipts" else _parallel_fold(ledger, params, cp.size, workers)
    if folded is not None:
        agg, receipts, late = folded
        # the sample, reproducible from the checkpoint root, is drawn after the merge
        picks = sorted(rng.sample(range(len(receipts)), min(sample_size, len(receipts))))
        chosen = [receipts[i] for i in picks]
        rows = ledger.store.get_jobs([jk for jk, _ in chosen])
        to_check = [(jk, usage_of(rows[jk]), leaves) for jk, leaves in chosen if jk in rows]
    else:
        agg = Aggregator(params)
        receipts = []
        to_check = []
        late = []
        for usage, leaves, last_leaf in candidate_jobs(ledger, params):
            if last_leaf >= cp.size:  # events appended after the checkpoint: count as of then
                late.append((usage.job_key, usage, [i for i in leaves if i < cp.size]))
                continue
            if not agg.add(usage):
                continue
            receipts.append((usage.job_key, leaves))
            item = (usage.job_key, usage, leaves)
            if check == "receipts" or len(to_check) < sample_size:
                to_check.append(item)
            else:  # reservoir sample, reproducible from the checkpoint root
                j = rng.randrange(len(receipts))
                if j < sample_size:
                    to_check[j] = item
    if late:
        refold = check_receipts(
            ledger,
            cp,
            ((jk, _job_leaves(ledger, jk, cp.size)) for jk, _, leaves in late if leaves),
            workers,
        )
        problems.extend(refold.problems)
        for jk, _, _ in late:
            signed = refold.jobs.get(jk)
            if signed is not None and agg.add(signed):
                receipts.append((jk, refold.leaves[jk]))
    checked_jobs = envelopes = 0
    for batch in _batches(to_check):
        res = check_receipts(
            ledger, cp, ((jk, _job_leaves(ledger, jk, cp.size)) for jk, _, _ in batch), workers
        )
        problems.extend(res.problems)
        envelopes += res.envelopes
        for jk, usage, leaves in batch:
            checked_jobs += 1
            if res.leaves.get(jk) != leaves:
                problems.append(f"job {jk}: the leaf list of the job index differs from the log's")
            why = _differs(usage, res.jobs.get(jk))
            if why is not None:
                problems.append(f"job {jk}: {why}")
        if len(problems) > 50:
            break
    ok = not problems
    if not ok and not allow_unverified:
        raise ReportError(
            f"the ledger failed the report's checks ({len(problems)} problem(s); first: "
            f"{problems[0]}); run `computeproof ledger verify`, or pass --allow-unverified "
            "to produce the report anyway, marked UNVERIFIED"
        )
    cosignatures = ledger.store.cosignatures(cp.size)
    notes = agg.notes()
    if cp.size == 0:
        notes.insert(0, "the ledger is empty: no receipts yet")
    return {
        "format": REPORT_FORMAT,
        "generated": utc_now(),
        "parameters": params.to_json(),
        "rate_card": params.ratecard.to_json() if params.ratecard is not None else None,
        "grant_map": params.grant_map.to_json() if params.grant_map is not None else None,
        "checkpoint": {
            "origin": cp.origin,
            "size": cp.size,
            "root_hex": cp.root.hex(),
            "root": base64.b64encode(cp.root).decode(),
            # with the witnesses' cosignatures (docs/trust.md), as receipts carry it
            "note": add_signature_lines(note, list(cosignatures.values())) if note else note,
            "witness_statements": ledger.witness_statements(cosignatures),
        },
        "ledger_check": {
            "mode": check,
            "ok": ok,
            "allow_unverified": allow_unverified,
            "jobs_checked": checked_jobs,
            "jobs_counted": len(receipts),
            "envelopes_checked": envelopes,
            "problems": problems[:50],
        },
        "notes": notes,
        **agg.figures(),
        "receipts": {
            "leaf_hash": "RFC 9162 SHA-256(0x00 || envelope)",
            "jobs": [[jk, leaves] for jk, leaves in receipts],
        },
    }
