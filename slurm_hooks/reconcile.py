"""`computeproof reconcile`: Slurm accounting (sacct) against the ledger's receipts.

Findings: GPU jobs Slurm accounted that have no receipts, or incomplete ones (a finished job
needs scheduled, started, completed and final_state events); receipts of jobs Slurm does not
know; and GPU-count or elapsed-time mismatches beyond a tolerance of 1 s. Accounting comes
from slurm_hooks' job info (``sacct --json`` or pyslurm).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field

from computeproof.config import Config
from computeproof.ledger import Ledger
from computeproof.store.interface import JobFilter, JobRow
from slurm_hooks.jobinfo import AccountingRecord

REQUIRED_EVENTS = ("scheduled", "started", "completed", "final_state")
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
    from slurm_hooks.jobinfo import job_info

    return job_info(config).accounting(since, until)


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
        types = {leaf.type for leaf in ledger.store.job_leaves(row.job_key)}
        need = REQUIRED_EVENTS if finished else REQUIRED_EVENTS[:2]
        absent = [t for t in need if t not in types]
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
