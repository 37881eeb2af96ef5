"""The job index: one row per job run, folded from its events at ingest.

The index is a convenience for queries and reports; receipts and `ledger verify` check
the signed events themselves. Payload keys read here (all optional):

    scheduled    user, account, partition, qos, nodes, gpus, gpu_model, submit_time,
                 start_time, job_name
    started      gpus (list of bound GPUs on that node)
    node_done    gpu_summary {busy_gpu_ms, util_gpu_ms, energy_mj, ...}
    completed    state, exit_code, start_time, end_time, elapsed_s, gpus, gpu_model, nodes
    final_state  state, exit_code, start_time, end_time, elapsed_s, gpus, nodes
    any          synthetic (true for `bench ingest` jobs)
"""

from __future__ import annotations

from slurm_hooks.receipts.event import job_key
from slurm_hooks.receipts.privacy import is_commitment
from slurm_hooks.receipts.store.interface import JobRow

# later lifecycle events win for the fields they carry
_RANK = {"scheduled": 0, "started": 1, "progress": 1, "artifact": 1, "node_done": 2,
         "completed": 3, "final_state": 4}  # fmt: skip
_SUM_FIELDS = ("busy_gpu_ms", "util_gpu_ms", "energy_mj", "unmeasured_gpu_ms")


def new_row(event: dict[str, object]) -> JobRow:
    """An empty index row for the job run of ``event``."""
    cluster, job, run = str(event["cluster"]), str(event["job"]), int(event["run"])  # type: ignore[call-overload]
    return JobRow(job_key(cluster, job, run), cluster, job, int(event["job_id"]), run)  # type: ignore[call-overload]


def _text(value: object) -> str | None:
    if value is None or is_commitment(value):
        return None
    if isinstance(value, list):
        return ",".join(str(v) for v in value)
    return str(value)


def apply_event(row: JobRow, event: dict[str, object], leaf_index: int) -> None:
    """Fold one event into its job's index row."""
    payload = event["payload"]
    assert isinstance(payload, dict)
    etype = str(event["type"])
    rank = _RANK.get(etype, 0)
    seen_rank = int(row.fields.get("_rank", -1))  # type: ignore[call-overload]
    row.events += 1
    row.first_leaf = leaf_index if row.first_leaf is None else min(row.first_leaf, leaf_index)
    row.last_leaf = leaf_index if row.last_leaf is None else max(row.last_leaf, leaf_index)
    if payload.get("synthetic") is True:
        row.synthetic = True
    for attr, key in (("user", "user"), ("account", "account"), ("partition", "partition")):
        if getattr(row, attr) is None and payload.get(key) is not None:
            setattr(row, attr, _text(payload[key]))
    if payload.get("submit_time") and row.submit is None:
        row.submit = _text(payload["submit_time"])
    if etype == "started":
        hosts = set(filter(None, (row.nodes or "").split(",")))
        hosts.add(str(event["host"]))
        row.nodes = ",".join(sorted(hosts))
    if etype == "node_done":
        summary = payload.get("gpu_summary")
        if isinstance(summary, dict):
            totals = row.fields.setdefault("gpu_totals", {})
            assert isinstance(totals, dict)
            for name in _SUM_FIELDS:
                value = summary.get(name)
                if isinstance(value, int):
                    totals[name] = int(totals.get(name, 0)) + value
            if summary.get("gpu_model") and not row.gpu_model:
                row.gpu_model = str(summary["gpu_model"])
    if rank >= seen_rank:
        if payload.get("state"):
            row.state = str(payload["state"])
        elif etype in ("scheduled", "started") and row.state is None:
            row.state = "RUNNING"
        for attr, key in (("start", "start_time"), ("end", "end_time")):
            if payload.get(key):
                setattr(row, attr, _text(payload[key]))
        if isinstance(payload.get("elapsed_s"), int):
            row.elapsed_s = int(payload["elapsed_s"])  # type: ignore[call-overload]
        if payload.get("exit_code") is not None:
            row.exit_code = _text(payload["exit_code"])
        if isinstance(payload.get("gpus"), int):
            row.gpus = int(payload["gpus"])  # type: ignore[call-overload]
        if payload.get("gpu_model"):
            row.gpu_model = _text(payload["gpu_model"])
        if payload.get("nodes") and etype != "started":
            row.nodes = _text(payload["nodes"])
        row.fields["_rank"] = rank
    if etype == "scheduled" and row.start is None and payload.get("start_time"):
        row.start = _text(payload["start_time"])
