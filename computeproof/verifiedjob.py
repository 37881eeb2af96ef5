"""One job as `jobs show` presents it: every figure from its verified receipt.

The job index (jobindex.py) is derived data: a database edit changes it without touching
a signature. So the job's receipt is exported and verified under the key this ledger
signs with, its summary is folded from the verified events exactly as ingest folds the
index, and the events listed are the verified ones. The index row is only used to find
the job, and compared with what the receipts give: a difference is reported, never shown
as a figure. When the receipt does not verify, what is shown comes from the log and the
index, labelled as not verified.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from typing import Any

from computeproof.bundle import export_bundle, verify_bundle
from computeproof.errors import BundleError
from computeproof.jobindex import apply_event, index_payload, new_row
from computeproof.jobview import gpu_figures, job_json
from computeproof.ledger import Ledger, job_row_differences
from computeproof.store.interface import JobRow
from computeproof.trust import LedgerKeyRoot, TrustDecision, TrustRoots


@dataclass
class JobView:
    """A job run's summary and events, and whether they come from a verified receipt."""

    row: JobRow  # folded from the verified events (else the index row, unverified)
    events: list[dict[str, object]]  # each event with its "leaf_index", in log order
    verified: bool
    reason: str | None = None  # why the receipt did not verify
    trust: TrustDecision | None = None
    checkpoint_size: int = 0
    index_differences: list[str] = field(default_factory=list)  # index row vs receipts
    notes: list[str] = field(default_factory=list)


def job_view(ledger: Ledger, job: str) -> JobView:
    """The job run named ``job`` (latest run wins), verified; see the module docstring."""
    row = ledger.resolve_job(job)
    bundle = export_bundle(ledger, job)
    own = LedgerKeyRoot(
        ledger.signer().public_raw, f"the key this ledger signs with ({ledger.ledger_key_path})"
    )
    try:
        report = verify_bundle(json.dumps(bundle), roots=TrustRoots((own,)))
    except BundleError as e:
        events: list[dict[str, object]] = [
            {"leaf_index": leaf.index, **ev} for leaf, ev in ledger.job_events(row)
        ]
        return JobView(row, events, False, str(e))
    first = report.events[0]
    folded = new_row(row.cluster, str(first["job"]), row.job_id, row.run)
    for ev in report.events:
        etype, payload, leaf = str(ev["type"]), ev["payload"], ev["leaf_index"]
        assert isinstance(payload, dict) and isinstance(leaf, int)  # check_event vouched
        apply_event(folded, etype, str(ev["host"]), index_payload(etype, payload), leaf,
                    str(ev["job"]))  # fmt: skip
    view = JobView(folded, report.events, True, None, report.trust, report.checkpoint_size)
    current = ledger.store.get_jobs([row.job_key]).get(row.job_key)
    if current is None:
        view.index_differences.append("the job index has no row for this job")
    elif current.last_leaf is not None and current.last_leaf >= report.checkpoint_size:
        view.notes.append(
            f"events were appended after checkpoint {report.checkpoint_size}; they are not "
            "shown (run the command again)"
        )
    else:
        view.index_differences = job_row_differences(current, folded)
    return view


def view_json(view: JobView) -> dict[str, Any]:
    """The job as `jobs show --json` prints it (and the collector's GET /v1/jobs/{job})."""
    return {
        "job_id": view.row.job,
        "cluster": view.row.cluster,
        "run": view.row.run,
        "summary": job_json(view.row),
        "gpus": gpu_figures([(None, e) for e in view.events]),
        "events": [
            {
                "type": e["type"],
                "time": e["time"],
                "host": e["host"],
                "leaf_index": e["leaf_index"],
                "seq": e["seq"],
                "payload": e["payload"],
            }
            for e in view.events
        ],
        "verification": {
            "ok": view.verified,
            "reason": view.reason,
            "checkpoint_size": view.checkpoint_size,
            "trust": None if view.trust is None else view.trust.to_json(),
            "index_differences": view.index_differences,
            "notes": view.notes,
        },
    }
