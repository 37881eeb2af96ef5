"""What the dashboard shows, computed from job index rows and signed events: no HTML here.

Every value a job's user controls (job name, paths, progress messages, artifact names)
is hostile: :func:`display_text` turns any event value into text a page can show as it
is (control, format and bidirectional characters made visible as escapes, non-UTF-8
bytes shown escaped and marked, private commitments marked). HTML escaping is the
templates' (Jinja2 autoescape) and the scripts' (textContent) job on top of that.

GPU charts come from the agent's ``progress`` events and the Epilog's ``node_done``
summary: each carries the figures accumulated per GPU since the job's first sample
(schema ``computeproof.agent.summary/v1``), so the difference between two consecutive
events is one interval's exact figures: mean utilization = d util_percent_ms /
d measured_ms, mean power = d energy_mj / d energy_measured_ms (mJ per ms = W), and the
peak memory so far. Nothing is interpolated or invented between events.
"""

from __future__ import annotations

import base64
import binascii
import json
import unicodedata
from dataclasses import dataclass, field
from typing import Any

from computeproof.event import NON_UTF8
from computeproof.privacy import COMMITMENT_KEY, is_commitment
from computeproof.store.interface import JobRow

MAX_SHOWN = 300  # characters of one value in a table cell (the full value is on the job page)

# state -> colour class; anything else is "other"
_STATE_CLASS = {
    "RUNNING": "running",
    "PENDING": "pending",
    "COMPLETED": "completed",
    "FAILED": "failed",
    "NODE_FAIL": "failed",
    "OUT_OF_MEMORY": "failed",
    "BOOT_FAIL": "failed",
    "DEADLINE": "timeout",
    "TIMEOUT": "timeout",
    "PREEMPTED": "cancelled",
    "CANCELLED": "cancelled",
    "REQUEUED": "pending",
}
STATES = (
    "RUNNING",
    "COMPLETED",
    "FAILED",
    "CANCELLED",
    "TIMEOUT",
    "NODE_FAIL",
    "OUT_OF_MEMORY",
    "PREEMPTED",
)

_VISIBLE = {"\n": "\\n", "\r": "\\r", "\t": "\\t"}
_HIDDEN_CATEGORIES = frozenset({"Cc", "Cf", "Cs", "Co", "Cn", "Zl", "Zp"})


def status_class(state: str | None) -> str:
    """The colour class of a job state ("CANCELLED by 123" counts as cancelled)."""
    if not state:
        return "other"
    word = state.split()[0].upper()
    return _STATE_CLASS.get(word, "other")


def visible(text: str) -> str:
    """``text`` with every control, format (bidirectional overrides, zero-width), private
    use, unassigned or line-separator character written as a backslash escape, so what
    a page shows is what the string holds."""
    if text.isprintable():
        return text
    out = []
    for ch in text:
        if ch in _VISIBLE:
            out.append(_VISIBLE[ch])
        elif ch == " " or unicodedata.category(ch) not in _HIDDEN_CATEGORIES:
            out.append(ch)
        elif ord(ch) < 0x100:
            out.append(f"\\x{ord(ch):02x}")
        elif ord(ch) < 0x10000:
            out.append(f"\\u{ord(ch):04x}")
        else:
            out.append(f"\\U{ord(ch):08x}")
    return "".join(out)


def non_utf8_text(value: object) -> str | None:
    """The text of a ``{"non_utf8": base64}`` value (bytes that are not UTF-8 shown as
    ``\\xNN``), or None when ``value`` is not one."""
    if not (isinstance(value, dict) and set(value) == {NON_UTF8}):
        return None
    encoded = value[NON_UTF8]
    if not isinstance(encoded, str):
        return "(malformed non-UTF-8 value)"
    try:
        raw = base64.b64decode(encoded, validate=True)
    except (binascii.Error, ValueError):
        return "(malformed non-UTF-8 value)"
    return visible(raw.decode("utf-8", "backslashreplace"))


def display_text(value: object, limit: int | None = None) -> str:
    """Any event value as one line of plain text (see the module docstring)."""
    if value is None:
        text = ""
    elif isinstance(value, bool):
        text = "true" if value else "false"
    elif isinstance(value, str):
        text = visible(value)
    elif isinstance(value, int | float):
        text = str(value)
    elif (raw := non_utf8_text(value)) is not None:
        text = raw + " [not UTF-8]"
    elif is_commitment(value):
        text = "[private]"
    elif isinstance(value, list):
        text = ", ".join(display_text(v) for v in value)
    else:
        text = json_text(value, indent=None)
    if limit is not None and len(text) > limit:
        return text[: limit - 1] + "\u2026"
    return text


def json_text(value: object, indent: int | None = 1) -> str:
    """``value`` as JSON for a page: readable non-ASCII, but every character
    :func:`visible` would escape written as a JSON ``\\u`` escape (still valid JSON)."""
    text = json.dumps(value, indent=indent, ensure_ascii=False, sort_keys=True, default=str)
    if text.isprintable() or all(
        ch in "\n " or unicodedata.category(ch) not in _HIDDEN_CATEGORIES for ch in text
    ):
        return text
    return "".join(
        ch
        if ch in "\n " or unicodedata.category(ch) not in _HIDDEN_CATEGORIES
        else "".join(f"\\u{u:04x}" for u in _utf16(ch))
        for ch in text
    )


def _utf16(ch: str) -> list[int]:
    data = ch.encode("utf-16-be", "surrogatepass")
    return [int.from_bytes(data[i : i + 2], "big") for i in range(0, len(data), 2)]


def _int(value: object) -> int | None:
    return value if isinstance(value, int) and not isinstance(value, bool) else None


def _list(value: object) -> list[Any]:
    return value if isinstance(value, list) else []


def job_summary(row: JobRow) -> dict[str, Any]:
    """A job index row as the jobs table and the JSON of ``/ui/jobs`` show it."""
    totals = row.fields.get("gpu_totals")
    totals = totals if isinstance(totals, dict) else {}
    busy, measured = _int(totals.get("busy_gpu_ms")), _int(totals.get("measured_gpu_ms"))
    energy = _int(totals.get("energy_mj"))
    return {
        "job_key": row.job_key,
        "job": display_text(row.job),
        "job_id": row.job_id,
        "run": row.run,
        "cluster": display_text(row.cluster),
        "user": display_text(row.user),
        "account": display_text(row.account),
        "partition": display_text(row.partition),
        "state": display_text(row.state) or "UNKNOWN",
        "status": status_class(row.state),
        "gpus": row.gpus,
        "gpu_model": display_text(row.gpu_model),
        "nodes": display_text(row.nodes, MAX_SHOWN),
        "submit": row.submit,
        "start": row.start,
        "end": row.end,
        "elapsed_s": row.elapsed_s,
        "elapsed": duration_text(row.elapsed_s),
        "exit_code": display_text(row.exit_code),
        "events": row.events,
        "synthetic": row.synthetic,
        "busy_gpu_hours": None if busy is None else round(busy / 3_600_000, 4),
        "efficiency": None if busy is None or not measured else round(busy / measured, 4),
        "energy_kwh": None if energy is None else round(energy / 3.6e9, 6),
    }


def duration_text(seconds: int | None) -> str:
    """``3725`` -> ``1:02:05``; days as ``2d 03:04:05``."""
    if seconds is None or seconds < 0:
        return ""
    days, rest = divmod(seconds, 86_400)
    h, rest = divmod(rest, 3600)
    m, s = divmod(rest, 60)
    return (f"{days}d " if days else "") + f"{h}:{m:02d}:{s:02d}"


# -- the lifecycle log -------------------------------------------------------------------


def event_detail(etype: str, payload: dict[str, Any]) -> str:
    """One line saying what an event recorded (as `computeproof jobs show` prints it)."""
    if etype == "started":
        gpus = _list(payload.get("gpus"))
        minors = ",".join(display_text(g.get("minor")) for g in gpus if isinstance(g, dict))
        return f"GPUs {minors or 'none'} (minor)"
    if etype in ("completed", "final_state"):
        seen = payload.get("state_seen") or payload.get("state_at_epilog")
        state = display_text(payload.get("state")) or f"{display_text(seen) or '?'} (when seen)"
        reason = f" reason {display_text(payload['reason'])}" if payload.get("reason") else ""
        return (
            f"state {state} exit {display_text(payload.get('exit_code', '?'))}{reason} "
            f"elapsed {display_text(payload.get('elapsed_s', '?'))}s "
            f"GPUs {display_text(payload.get('gpus', '?'))}"
        )
    if etype == "progress":
        bits = [
            f"{k}={display_text(payload[k], 200)}"
            for k in ("percent", "epoch", "epochs", "message")
            if k in payload
        ]
        if payload.get("source") == "agent":
            bits.append("GPU figures so far")
        return " ".join(bits) or "progress"
    if etype == "artifact":
        items = _list(payload.get("artifacts"))
        return "; ".join(
            f"{display_text(a.get('path'), 120)} sha256 {display_text(a.get('sha256'))[:16]}..."
            for a in items
            if isinstance(a, dict)
        )
    if etype == "node_done":
        return f"GPU summary from {display_text(payload.get('gpu_summary_source', '?'))}"
    if etype == "scheduled":
        return (
            f"partition {display_text(payload.get('partition', '?'))} "
            f"nodes {display_text(payload.get('nodes', '?'), 200)}"
        )
    return ""


@dataclass
class LogLine:
    """One signed event of a job's lifecycle, as the terminal-style log shows it."""

    n: int
    time: str
    type: str
    host: str
    leaf_index: int
    seq: int
    event_id: str
    detail: str
    payload_json: str
    private: list[tuple[str, str]] = field(default_factory=list)  # (field, shown value)


def lifecycle(
    events: list[tuple[int, dict[str, Any]]],
    openings: dict[str, dict[str, object]] | None = None,
) -> list[LogLine]:
    """The log lines of (leaf index, event) pairs in log order; ``openings`` (event id ->
    field -> checked value) fills in private fields for viewers allowed to see them."""
    out = []
    for n, (leaf, ev) in enumerate(events, 1):
        payload = ev.get("payload") if isinstance(ev.get("payload"), dict) else {}
        assert isinstance(payload, dict)
        private: list[tuple[str, str]] = []
        for name, value in sorted(payload.items()):
            if is_commitment(value):
                disclosed = (openings or {}).get(str(ev["id"]), {})
                private.append(
                    (name, display_text(disclosed[name]) if name in disclosed else "[private]")
                )
        out.append(
            LogLine(
                n=n,
                time=display_text(ev.get("time")),
                type=display_text(ev.get("type")),
                host=display_text(ev.get("host")),
                leaf_index=leaf,
                seq=int(ev.get("seq", 0)),
                event_id=str(ev.get("id")),
                detail=event_detail(str(ev.get("type")), payload),
                payload_json=json_text(payload),
                private=private,
            )
        )
    return out


def job_facts(events: list[tuple[int, dict[str, Any]]]) -> dict[str, str]:
    """Descriptive fields of the job from its events (first event that has each)."""
    names = (
        "job_name",
        "work_dir",
        "qos",
        "group",
        "time_limit_s",
        "submit_time",
        "start_time",
        "end_time",
        "reason",
        "exit_code",
        "state",
    )
    out: dict[str, str] = {}
    for _, ev in events:
        payload = ev.get("payload")
        if not isinstance(payload, dict):
            continue
        for name in names:
            if name in payload and payload[name] is not None:
                out[name] = display_text(payload[name], 2000)  # later events win
    return out


# -- artifacts ---------------------------------------------------------------------------


@dataclass(frozen=True)
class Artifact:
    """A file whose digest a job recorded through the agent."""

    path: str
    sha256: str
    size: int | None
    host: str
    time: str
    leaf_index: int


def artifacts(events: list[tuple[int, dict[str, Any]]]) -> list[Artifact]:
    """Every artifact the job's ``artifact`` events list, in log order."""
    out = []
    for leaf, ev in events:
        if ev.get("type") != "artifact":
            continue
        items = ev["payload"].get("artifacts")
        for a in items if isinstance(items, list) else []:
            if isinstance(a, dict):
                out.append(
                    Artifact(
                        path=display_text(a.get("path"), 2000),
                        sha256=display_text(a.get("sha256"), 200),
                        size=_int(a.get("size")),
                        host=display_text(ev.get("host")),
                        time=display_text(ev.get("time")),
                        leaf_index=leaf,
                    )
                )
    return out


# -- GPU figures over the run -------------------------------------------------------------


@dataclass
class GpuSeries:
    """One GPU of one node over the run: interval means between consecutive agent figures."""

    node: str
    minor: int
    uuid: str = ""
    name: str = ""
    # (interval start ms, interval end ms, mean utilization %, mean power W); None: unread
    intervals: list[tuple[int, int, float | None, float | None]] = field(default_factory=list)
    memory: list[tuple[int, int]] = field(default_factory=list)  # (ms, peak bytes so far)
    busy_ms: int | None = None
    measured_ms: int | None = None
    unmeasured_ms: int | None = None
    energy_mj: int | None = None
    energy_method: str = ""
    max_memory_bytes: int | None = None
    final: bool = False  # the last figures came from node_done (the whole run)

    @property
    def label(self) -> str:
        """``node1 GPU 0 (NVIDIA A100)``."""
        return f"{self.node} GPU {self.minor}" + (f" ({self.name})" if self.name else "")

    @property
    def mean_utilization(self) -> float | None:
        """Utilization-weighted mean over the measured time, percent."""
        total = sum((b - a) * u for a, b, u, _ in self.intervals if u is not None)
        span = sum(b - a for a, b, u, _ in self.intervals if u is not None)
        return round(total / span, 1) if span else None


_CUMULATIVE = ("measured_ms", "util_percent_ms", "energy_mj", "energy_measured_ms")


def _snapshots(
    events: list[tuple[int, dict[str, Any]]],
) -> dict[str, list[tuple[int, int | None, list[dict[str, Any]], bool]]]:
    """Per node: (time ms, first sample ms, per-GPU figures, final) from agent progress
    events and node_done summaries, in time order."""
    by_node: dict[str, list[tuple[int, int | None, list[dict[str, Any]], bool]]] = {}
    for _, ev in events:
        payload = ev.get("payload")
        if not isinstance(payload, dict):
            continue
        if ev.get("type") == "progress" and payload.get("source") == "agent":
            t, first, gpus, final = (
                payload.get("time_ms"),
                payload.get("first_sample_ms"),
                payload.get("gpus"),
                False,
            )
        elif ev.get("type") == "node_done" and isinstance(payload.get("gpu_summary"), dict):
            summary = payload["gpu_summary"]
            t, first, gpus, final = (
                summary.get("last_sample_ms"),
                summary.get("first_sample_ms"),
                summary.get("gpus"),
                True,
            )
        else:
            continue
        t_ms = _int(t)
        if t_ms is None or not isinstance(gpus, list):
            continue
        rows = [g for g in gpus if isinstance(g, dict) and _int(g.get("minor")) is not None]
        by_node.setdefault(str(ev.get("host")), []).append((t_ms, _int(first), rows, final))
    for snaps in by_node.values():
        snaps.sort(key=lambda s: (s[0], s[3]))
    return by_node


def gpu_series(events: list[tuple[int, dict[str, Any]]]) -> list[GpuSeries]:
    """Every GPU's figures over the run (see the module docstring), by node then minor."""
    out: list[GpuSeries] = []
    for node, snaps in sorted(_snapshots(events).items()):
        gpus: dict[int, GpuSeries] = {}
        last: dict[int, tuple[int, dict[str, int]]] = {}
        for t, first, rows, final in snaps:
            for g in rows:
                minor = int(g["minor"])
                s = gpus.get(minor)
                if s is None:
                    s = gpus[minor] = GpuSeries(node=display_text(node), minor=minor)
                s.uuid = display_text(g.get("uuid")) or s.uuid
                s.name = display_text(g.get("name")) or s.name
                now = {k: v for k in _CUMULATIVE if (v := _int(g.get(k))) is not None}
                start, before = last.get(minor, (first if first is not None else t, {}))
                if any(now.get(k, 0) < before.get(k, 0) for k in _CUMULATIVE):
                    last[minor] = (t, now)  # figures restarted (another agent): new baseline
                    continue
                if t > start:
                    dm = now.get("measured_ms", 0) - before.get("measured_ms", 0)
                    du = now.get("util_percent_ms", 0) - before.get("util_percent_ms", 0)
                    de = now.get("energy_mj", 0) - before.get("energy_mj", 0)
                    dem = now.get("energy_measured_ms", 0) - before.get("energy_measured_ms", 0)
                    util = round(du / dm, 2) if dm > 0 and "util_percent_ms" in now else None
                    power = round(de / dem, 2) if dem > 0 and "energy_mj" in now else None
                    s.intervals.append((start, t, util, power))
                    last[minor] = (t, now)
                mem = _int(g.get("max_memory_bytes"))
                if mem is not None:
                    s.memory.append((t, mem))
                    s.max_memory_bytes = mem
                s.busy_ms = _int(g.get("busy_ms"))
                s.measured_ms = _int(g.get("measured_ms"))
                s.unmeasured_ms = _int(g.get("unmeasured_ms"))
                s.energy_mj = _int(g.get("energy_mj"))
                s.energy_method = display_text(g.get("energy_method"))
                s.final = final
        out.extend(gpus[m] for m in sorted(gpus))
    return out


def energy_totals(series: list[GpuSeries]) -> dict[str, Any]:
    """Energy and busy time summed over the job's GPUs (their latest figures)."""
    energy = [s.energy_mj for s in series if s.energy_mj is not None]
    busy = [s.busy_ms for s in series if s.busy_ms is not None]
    measured = [s.measured_ms for s in series if s.measured_ms is not None]
    methods = sorted({s.energy_method for s in series if s.energy_method})
    return {
        "energy_kwh": round(sum(energy) / 3.6e9, 6) if energy else None,
        "energy_mj": sum(energy) if energy else None,
        "busy_gpu_hours": round(sum(busy) / 3_600_000, 4) if busy else None,
        "efficiency": round(sum(busy) / sum(measured), 4) if busy and sum(measured) else None,
        "methods": ", ".join(methods),
        "final": bool(series) and all(s.final for s in series),
    }


def commitment_hex(value: object) -> str | None:
    """The hex digest of a commitment value, else None."""
    return str(value[COMMITMENT_KEY]) if is_commitment(value) else None  # type: ignore[index]
