"""The job index: one row per job run, folded from its events at ingest.

The index is a convenience for queries and reports; receipts and `ledger verify` check
the signed events themselves. Payload keys read here (all optional):

    scheduled    user, account, partition, qos, nodes, gpus, tres_allocated
                 ({"gres/gpu:a100": 2} names the GPU model), submit_time, start_time
    started      gpus (list of bound GPUs on that node)
    node_done    gpu_summary {"totals": {busy_ms, util_weighted_ms, energy_mj, measured_ms,
                 unmeasured_ms, ...}, "gpus": [{"name", ...}]} (the agent's summary schema)
    completed    state, exit_code, start_time, end_time, elapsed_s, gpus, gpu_model, nodes
    final_state  state, exit_code, start_time, end_time, elapsed_s, gpus, nodes
    any          synthetic (true for `bench ingest` jobs)
"""

from __future__ import annotations

from computeproof.event import job_key
from computeproof.privacy import is_commitment
from computeproof.store.interface import JobRow

# later lifecycle events win for the fields they carry
_RANK = {
    "scheduled": 0,
    "started": 1,
    "progress": 1,
    "artifact": 1,
    "node_done": 2,
    "completed": 3,
    "final_state": 4,
}
# index total <- agent summary "totals" key (GPU-milliseconds and millijoules, summed over nodes)
_SUM_FIELDS = (
    ("busy_gpu_ms", "busy_ms"),
    ("util_gpu_ms", "util_weighted_ms"),
    ("measured_gpu_ms", "measured_ms"),
    ("unmeasured_gpu_ms", "unmeasured_ms"),
    ("energy_mj", "energy_mj"),
)


# payload keys the index reads; workers send only these back to the ingesting process
INDEX_KEYS = frozenset(
    {
        "user",
        "account",
        "partition",
        "nodes",
        "gpus",
        "gpu_model",
        "submit_time",
        "start_time",
        "end_time",
        "elapsed_s",
        "exit_code",
        "state",
        "synthetic",
        "gpu_summary",
        "tres_allocated",
    }
)


def index_payload(event_type: str, payload: dict[str, object]) -> dict[str, object]:
    """The part of an event's payload the job index needs."""
    out = {k: v for k, v in payload.items() if k in INDEX_KEYS}
    summary = out.pop("gpu_summary", None)
    if event_type == "node_done" and isinstance(summary, dict):
        gpus = summary.get("gpus")
        names = (
            [g.get("name") for g in gpus if isinstance(g, dict)] if isinstance(gpus, list) else []
        )
        out["gpu_summary"] = {"totals": summary.get("totals"), "names": names}
    if event_type == "started":
        out.pop("gpus", None)
    return out


def new_row(cluster: str, job: str, job_id: int, run: int) -> JobRow:
    """An empty index row for one job run."""
    return JobRow(job_key(cluster, job_id, run), cluster, job, job_id, run)


def _text(value: object) -> str | None:
    if value is None or is_commitment(value):
        return None
    if isinstance(value, list):
        return ",".join(str(v) for v in value)
    return str(value)


def apply_event(
    row: JobRow,
    event_type: str,
    host: str,
    payload: dict[str, object],
    leaf_index: int,
    job: str | None = None,
) -> None:
    """Fold one event (its type, host, :func:`index_payload` and display id) into its row."""
    row.events += 1
    if job is not None and job != row.job and ("_" in job or "+" in job):
        row.job = job  # the controller knows the array/het display id; node hooks do not
    if row.first_leaf is None or leaf_index < row.first_leaf:
        row.first_leaf = leaf_index
    if row.last_leaf is None or leaf_index > row.last_leaf:
        row.last_leaf = leaf_index
    if event_type == "started":
        hosts = set(row.nodes.split(",")) if row.nodes else set()
        hosts.add(host)
        row.nodes = ",".join(sorted(hosts))
    if not payload:
        return
    get = payload.get
    if get("synthetic") is True:
        row.synthetic = True
    if row.user is None and "user" in payload:
        row.user = _text(payload["user"])
    if row.account is None and "account" in payload:
        row.account = _text(payload["account"])
    if row.partition is None and "partition" in payload:
        row.partition = _text(payload["partition"])
    if row.submit is None and get("submit_time"):
        row.submit = _text(payload["submit_time"])
    summary = get("gpu_summary")
    if isinstance(summary, dict) and isinstance(summary.get("totals"), dict):
        source = summary["totals"]
        totals = row.fields.setdefault("gpu_totals", {})
        assert isinstance(totals, dict)
        for name, key in _SUM_FIELDS:
            value = source.get(key)
            if isinstance(value, int) and not isinstance(value, bool):
                totals[name] = int(totals.get(name, 0)) + value
        names = [n for n in summary.get("names") or () if isinstance(n, str)]
        if names:
            row.fields["gpu_names"] = sorted(set(names) | set(row.fields.get("gpu_names") or ()))  # type: ignore[call-overload]
    tres = get("tres_allocated")
    if isinstance(tres, dict) and not row.gpu_model:
        models = sorted(k[len("gres/gpu:") :] for k in tres if k.startswith("gres/gpu:"))
        if models:
            row.gpu_model = ",".join(models)
    rank = _RANK.get(event_type, 0)
    if rank < int(row.fields.get("_rank", -1)):  # type: ignore[call-overload]
        return
    row.fields["_rank"] = rank
    if get("state"):
        row.state = str(payload["state"])
    elif row.state is None and event_type in ("scheduled", "started"):
        row.state = "RUNNING"
    if get("start_time"):
        row.start = _text(payload["start_time"])
    if get("end_time"):
        row.end = _text(payload["end_time"])
    if isinstance(get("elapsed_s"), int):
        row.elapsed_s = int(payload["elapsed_s"])  # type: ignore[call-overload]
    if get("exit_code") is not None:
        row.exit_code = _text(payload["exit_code"])
    if isinstance(get("gpus"), int):
        row.gpus = int(payload["gpus"])  # type: ignore[call-overload]
    if get("gpu_model"):
        row.gpu_model = _text(payload["gpu_model"])
    if get("nodes"):
        row.nodes = _text(payload["nodes"])
