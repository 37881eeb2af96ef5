"""Checking the receipts a report counts: each envelope's signature (by a key enrolled for its
host), its inclusion proof against the report's checkpoint, and the job figures re-folded
from the verified events exactly as the ledger's job index folds them at ingest.
"""

from __future__ import annotations

import os
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field

from computeproof import merkle
from computeproof.checkpoint import Checkpoint
from computeproof.envelope import verify_envelope
from computeproof.errors import ReceiptError
from computeproof.event import job_key
from computeproof.jobindex import apply_event, index_payload, new_row
from computeproof.ledger import Ledger
from computeproof.reports.usage import JobUsage
from computeproof.store.interface import JobRow, LeafRow, NodeKey
from computeproof.workers import process_pool

PARALLEL_MIN = 2048  # fewer envelopes are checked in-process
_CHUNK = 512

# (leaf index, error) or (leaf index, None, job key, type, host, key id, index payload)
_Result = tuple[int, str | None, str, str, str, str, dict[str, object]]


def usage_of(row: JobRow) -> JobUsage:
    """The report figures of a job index row."""
    totals = row.fields.get("gpu_totals")
    busy = energy = None
    if isinstance(totals, dict):
        b, en = totals.get("busy_gpu_ms"), totals.get("energy_mj")
        busy = b if isinstance(b, int) else None
        energy = en if isinstance(en, int) else None
    return JobUsage(
        row.job_key,
        row.account,
        row.user,
        row.partition,
        row.gpu_model,
        row.state,
        row.gpus,
        row.start,
        row.end,
        row.elapsed_s,
        busy,
        energy,
        row.synthetic,
    )


def _check_chunk(args: tuple[list[tuple[int, bytes]], dict[str, bytes]]) -> list[_Result]:
    leaves, keys = args
    out: list[_Result] = []
    for index, data in leaves:
        try:
            e = verify_envelope(data, keys)
        except ReceiptError as err:
            out.append((index, str(err), "", "", "", "", {}))
            continue
        ev = e.event
        etype = str(ev["type"])
        payload = ev["payload"]
        assert isinstance(payload, dict)
        jk = job_key(str(ev["cluster"]), int(str(ev["job_id"])), int(str(ev["run"])))
        out.append(
            (
                index,
                None,
                jk,
                etype,
                str(ev["host"]),
                e.key_id,
                {"_job": ev["job"], "_job_id": ev["job_id"], **index_payload(etype, payload)},
            )
        )
    return out


@dataclass
class ReceiptCheck:
    """Jobs re-folded from verified receipts, and every problem found on the way."""

    jobs: dict[str, JobUsage] = field(default_factory=dict)
    leaves: dict[str, list[int]] = field(default_factory=dict)
    problems: list[str] = field(default_factory=list)
    envelopes: int = 0

    def bad(self, problem: str) -> None:
        """Record a problem (the first 50 are kept)."""
        if len(self.problems) < 50:
            self.problems.append(problem)
        elif len(self.problems) == 50:
            self.problems.append("... more problems not shown")


class _CachedNodes:
    """A node reader that remembers what it read (audit paths share their upper nodes)."""

    def __init__(self, ledger: Ledger) -> None:
        self.read_store = ledger.store.read_nodes
        self.cache: dict[NodeKey, bytes] = {}

    def __call__(self, keys: Sequence[NodeKey]) -> Mapping[NodeKey, bytes]:
        missing = [k for k in keys if k not in self.cache]
        if missing:
            if len(self.cache) > 500_000:
                self.cache.clear()
            self.cache.update(self.read_store(missing))
        return {k: self.cache[k] for k in keys if k in self.cache}


def check_receipts(
    ledger: Ledger,
    checkpoint: Checkpoint,
    jobs: Iterable[tuple[str, Sequence[LeafRow]]],
    workers: int | None = None,
) -> ReceiptCheck:
    """Verify each job's leaves (signature, host enrollment, inclusion in ``checkpoint``) and
    re-fold them into job figures."""
    result = ReceiptCheck()
    enrolled = ledger.store.enrolled()
    keys = {k: v.public_raw for k, v in enrolled.items()}
    reader = _CachedNodes(ledger)
    flat: list[tuple[str, LeafRow]] = []
    for jk, rows in jobs:
        result.leaves[jk] = [r.index for r in rows]
        flat.extend((jk, r) for r in rows)
    result.envelopes = len(flat)
    for jk, leaf in flat:
        if leaf.index >= checkpoint.size:
            result.bad(f"leaf {leaf.index} of job {jk} lies beyond checkpoint {checkpoint.size}")
            continue
        try:
            proof = merkle.inclusion_proof(leaf.index, checkpoint.size, reader)
            merkle.verify_inclusion(
                merkle.leaf_hash(leaf.envelope), leaf.index, checkpoint.size, proof, checkpoint.root
            )
        except ReceiptError as e:
            result.bad(f"leaf {leaf.index} of job {jk}: inclusion proof fails: {e}")
    chunks = [
        ([(r.index, r.envelope) for _, r in flat[i : i + _CHUNK]], keys)
        for i in range(0, len(flat), _CHUNK)
    ]
    n = workers if workers is not None else (os.cpu_count() or 1)
    checked: Iterable[list[_Result]]
    if n > 1 and len(flat) >= PARALLEL_MIN:
        with process_pool(n, preload=[__name__]) as pool:
            checked = list(pool.map(_check_chunk, chunks))
    else:
        checked = [_check_chunk(c) for c in chunks]
    folded: dict[str, JobRow] = {}
    for (jk, _leaf), res in zip(flat, (r for part in checked for r in part), strict=True):
        index, error, ev_job, etype, host, kid, payload = res
        if error is not None:
            result.bad(f"leaf {index} of job {jk}: {error}")
            continue
        hosts = enrolled[kid].hosts
        if "*" not in hosts and host not in hosts:
            result.bad(f"leaf {index}: signed by a key not enrolled for host {host}")
        if ev_job != jk:
            result.bad(f"leaf {index} is an event of job {ev_job}, not of {jk}")
            continue
        row = folded.get(jk)
        fold = dict(payload)
        job, job_id = str(fold.pop("_job")), int(str(fold.pop("_job_id")))
        if row is None:
            cluster = jk.split("/", 1)[0]
            run = int(jk.rsplit("#", 1)[1])
            row = folded[jk] = new_row(cluster, job, job_id, run)
        apply_event(row, etype, host, fold, index, job=job)
    result.jobs = {jk: usage_of(r) for jk, r in folded.items()}
    return result
