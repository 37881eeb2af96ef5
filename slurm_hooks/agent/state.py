"""The agent's persisted per-job summaries: the Epilog's fallback when the agent is silent.

One file per job on a node, canonical JSON, replaced atomically (tmp file, rename)::

    summary_path(config, node, job_id) == <run_dir>/<node>/agent/<job_id>.json

The file holds exactly the summary the socket's ``summary`` op returns, so the Epilog can
embed either unchanged. Schema ``computeproof.agent.summary/v1`` (integers in base units;
times are Unix epoch milliseconds; null where nothing was read)::

    {"schema": "computeproof.agent.summary/v1",
     "cluster": str, "job": str, "job_id": int, "run": int, "node": str, "uid": int,
     "sample_interval_ms": int,
     "first_sample_ms": int|null, "last_sample_ms": int|null, "last_progress_ms": int|null,
     "progress_seq": int, "artifact_seq": int,     # next sequence numbers to use
     "artifact_bytes": int,                        # bytes hashed for artifact requests
     "totals": {"samples", "measured_ms", "unmeasured_ms", "busy_ms", "util_weighted_ms",
                "energy_mj", "max_memory_bytes", "foreign_processes", "xids": int,
                "energy_method": "counter"|"power_integral"|"mixed"|null},
     "gpus": [{                                     # in Slurm index order
        "minor": int, "slurm_index": int, "uuid", "name", "pci_bus_id": str|null,
        "samples": int,                  # readings with utilization (first one: baseline)
        "measured_ms", "unmeasured_ms": int,        # GPU time with / without a reading
        "busy_ms": int,                  # GPU-ms with utilization > 0
        "util_percent_ms", "util_weighted_ms": int, # sum util% x ms; that // 100
        "max_memory_bytes": int,
        "energy_mj": int, "energy_method": str|null, "energy_measured_ms": int,
        "energy_counter_sum_mj": int, "energy_power_uj": int,
        "energy_counter_mj", "energy_counter_ms": int|null,  # last counter reading, when
        "last_sample_ms": int|null,
        "throttle_reasons": int,         # OR of NVML clock event reason bits
        "ecc_corrected", "ecc_uncorrected": int|null,        # growth during the job
        "ecc_corrected_start", "ecc_corrected_last",
        "ecc_uncorrected_start", "ecc_uncorrected_last": int|null,
        "xids": [int], "read_errors": int,
        "foreign_samples": int,
        "foreign_processes": [{"pid": int, "job_id": int|null, "visible": bool}],
        "shared_with": [int]}]}           # other jobs bound to the same GPU
"""

from __future__ import annotations

import json
import os
import time

from computeproof.canonical import canonical_bytes
from computeproof.config import Config
from computeproof.errors import AgentError

KEEP_SECONDS = 7 * 24 * 3600


def state_dir(config: Config, node: str) -> str:
    """The directory of ``node``'s persisted summaries."""
    return os.path.join(config.node_dir(node), "agent")


def summary_path(config: Config, node: str, job_id: int) -> str:
    """Where the agent persists job ``job_id``'s summary on ``node``."""
    return os.path.join(state_dir(config, node), f"{job_id}.json")


def write_summary(path: str, summary: dict[str, object], durable: bool = False) -> None:
    """Replace the summary file atomically; ``durable`` also fsyncs file and directory."""
    data = canonical_bytes(summary) + b"\n"
    directory = os.path.dirname(path)
    tmp = f"{path}.tmp"
    try:
        try:
            fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        except FileNotFoundError:
            os.makedirs(directory, mode=0o700, exist_ok=True)
            fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        try:
            os.write(fd, data)
            if durable:
                os.fsync(fd)
        finally:
            os.close(fd)
        os.rename(tmp, path)
        if durable:
            dfd = os.open(directory, os.O_RDONLY | os.O_DIRECTORY)
            try:
                os.fsync(dfd)
            finally:
                os.close(dfd)
    except OSError as e:
        raise AgentError(f"cannot write agent state {path}: {e.strerror}") from e


def read_summary(path: str) -> dict[str, object] | None:
    """The persisted summary at ``path``, or None when there is none."""
    try:
        with open(path, "rb") as f:
            data = json.loads(f.read())
    except FileNotFoundError:
        return None
    except OSError as e:
        raise AgentError(f"cannot read agent state {path}: {e.strerror}") from e
    except ValueError as e:
        raise AgentError(f"agent state {path} is not valid JSON: {e}") from e
    if not isinstance(data, dict):
        raise AgentError(f"agent state {path} is not a JSON object")
    return data


def sweep(config: Config, node: str, keep: set[int], now: float | None = None) -> int:
    """Remove summaries of jobs not in ``keep`` older than a week; return how many."""
    directory = state_dir(config, node)
    now = time.time() if now is None else now
    removed = 0
    try:
        entries = list(os.scandir(directory))
    except OSError:
        return 0
    for entry in entries:
        stem = entry.name.split(".", 1)[0]
        if stem.isdigit() and int(stem) in keep:
            continue
        try:
            if now - entry.stat().st_mtime > KEEP_SECONDS:
                os.unlink(entry.path)
                removed += 1
        except OSError:
            continue
    return removed
