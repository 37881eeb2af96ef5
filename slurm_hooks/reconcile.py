"""`computeproof reconcile`: Slurm accounting (sacct) against the ledger's receipts.

Findings: GPU jobs Slurm accounted that have no receipts, or incomplete ones: a finished job
that ran needs scheduled, completed and final_state from the controller and, from every node
Slurm ran it on, started and node_done (named ``started@c2``, ``node_done@c1``: a node whose
Epilog never reported is a gap in the job's GPU measurement); a job that ended without ever
running needs completed and final_state. Also: receipts of jobs Slurm does not know, and
GPU-count or elapsed-time mismatches beyond a tolerance of 1 s. Accounting comes from
slurm_hooks' job info (``sacct --json`` or pyslurm).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field

from computeproof.config import Config
from computeproof.ledger import Ledger
from computeproof.store.interface import JobFilter, JobRow
from slurm_hooks.jobinfo import AccountingRecord

REQUIRED_EVENTS = ("scheduled", "started", "completed", "final_state")
CONTROLLER_EVENTS = ("scheduled", "completed", "final_state")
NODE_EVENTS = ("started", "node_done")
ELAPSED_TOLERANCE_S = 1
_UNFINISHED = frozenset(
    {
        "PENDING",
        "RUNNING",
        "REQUEUED",
        "RESIZING",
        "SUSPENDED",
        "CONFIGURING",
        "COMPLETING",
        "SIGNALING",
        "STAGE_OUT",
    }
)


@dataclass
class Reconciliation:
    """What differs between Slurm accounting and the ledger."""

    slurm_gpu_jobs: int = 0
    ledger_jobs: int = 0
    missing: list[dict[str, object]] = field(default_factory=list)
    incomplete: list[dict[str, object]] = field(default_factory=list)
    unknown_to_slurm: list[dict[str, object]] = field(default_factory=list)
    mismatched: list[dict[str, object]] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        """True when every accounted GPU job has complete, matching receipts."""
        return not (self.missing or self.incomplete or self.unknown_to_slurm or self.mismatched)

    def to_json(self) -> dict[str, object]:
        """The findings as JSON."""
        return {
            "ok": self.ok,
            "slurm_gpu_jobs": self.slurm_gpu_jobs,
            "ledger_jobs": self.ledger_jobs,
            "missing": self.missing,
            "incomplete": self.incomplete,
            "unknown_to_slurm": self.unknown_to_slurm,
            "mismatched": self.mismatched,
        }


def slurm_accounting(config: Config, since: int, until: int) -> list[AccountingRecord]:
    """Slurm's accounting records between two instants (epoch seconds)."""
    from slurm_hooks.backend import job_info

    return job_info(config).accounting(since, until)


def missing_events(
    leaves: Sequence[tuple[str, str]], rec: AccountingRecord, finished: bool
) -> list[str]:
    """The events a run's receipts lack, given its leaves' (type, host): the controller's
    by type, the nodes' as ``type@node`` for each node accounting ran the job on."""
    types = {t for t, _ in leaves}
    ran = bool(rec.get("start_epoch")) and bool(rec.get("nodes"))
    if not finished:
        need = ["scheduled"] if ran else []
        return [t for t in need if t not in types] + _node_gaps(leaves, rec, ("started",))
    if not ran:
        return [t for t in ("completed", "final_state") if t not in types]
    absent = [t for t in CONTROLLER_EVENTS if t not in types]
    return absent + _node_gaps(leaves, rec, NODE_EVENTS)


def _node_gaps(
    leaves: Sequence[tuple[str, str]], rec: AccountingRecord, kinds: Sequence[str]
) -> list[str]:
    have = set(leaves)
    return [f"{kind}@{node}" for node in rec.get("nodes") or () for kind in kinds
            if (kind, node) not in have]  # fmt: skip


def _latest_runs(rows: Sequence[JobRow]) -> dict[str, JobRow]:
    out: dict[str, JobRow] = {}
    for r in rows:
        if r.job not in out or r.run > out[r.job].run:
            out[r.job] = r
    return out


def reconcile(
    ledger: Ledger, cluster: str, records: Sequence[AccountingRecord], since: str
) -> Reconciliation:
    """Compare ``records`` (Slurm accounting since ``since``, RFC 3339) with the ledger."""
    result = Reconciliation()
    gpu_jobs = {str(r.get("job")): r for r in records if (r.get("gpus") or 0) > 0}
    result.slurm_gpu_jobs = len(gpu_jobs)
    rows = [
        r for r in ledger.jobs(JobFilter(since=since)) if r.cluster == cluster and not r.synthetic
    ]
    ledger_jobs = _latest_runs(rows)
    result.ledger_jobs = len(ledger_jobs)
    all_ids = {str(r.get("job")) for r in records}
    for job, rec in sorted(gpu_jobs.items()):
        state = str(rec.get("state") or "")
        finished = state.split()[0] not in _UNFINISHED if state else False
        row = ledger_jobs.get(job)
        base: dict[str, object] = {
            "job": job,
            "state": state,
            "user": rec.get("user"),
            "account": rec.get("account"),
            "gpus": rec.get("gpus"),
        }
        if row is None:
            if rec.get("start_epoch") or finished:
                result.missing.append(base)
            continue
        absent = missing_events(
            [(leaf.type, leaf.host) for leaf in ledger.store.job_leaves(row.job_key)],
            rec,
            finished,
        )
        if absent:
            result.incomplete.append({**base, "missing_events": absent})
        problems = []
        if row.gpus is not None and row.gpus != rec.get("gpus"):
            problems.append(f"GPUs: Slurm {rec.get('gpus')}, receipts {row.gpus}")
        elapsed = rec.get("elapsed_s")
        if (
            finished
            and elapsed is not None
            and row.elapsed_s is not None
            and abs(row.elapsed_s - elapsed) > ELAPSED_TOLERANCE_S
        ):
            problems.append(f"elapsed: Slurm {elapsed} s, receipts {row.elapsed_s} s")
        if problems:
            result.mismatched.append({**base, "problems": problems})
    for job, row in sorted(ledger_jobs.items()):
        if job not in all_ids and row.start is not None and row.start >= since:
            result.unknown_to_slurm.append(
                {"job": job, "job_key": row.job_key, "state": row.state, "gpus": row.gpus}
            )
    return result
