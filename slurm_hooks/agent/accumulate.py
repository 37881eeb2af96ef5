"""Per-job, per-GPU accumulation of NVML readings into exact integer figures.

Time is integer milliseconds since the Unix epoch, supplied by the caller (an injected
clock in tests). A job's first reading of a GPU is its baseline and covers no time; each
later sampling pass at time t covers (previous pass, t]. Rules, per GPU:

- utilization read: the interval is measured: ``busy_ms`` += interval when utilization > 0,
  ``util_percent_ms`` += utilization x interval (``util_weighted_ms`` = that // 100);
  an interval longer than twice the sample interval (agent stopped, loop stalled) counts
  only up to twice the interval, the rest is ``unmeasured_ms``.
- utilization not read (NVML missing, hung, failed): the whole interval is ``unmeasured_ms``,
  never zero utilization.
- energy: from the total-energy counter (mJ) as the delta between two readings, which
  stays exact across gaps because the counter is cumulative (``energy_method`` "counter");
  only where the counter is NOT_SUPPORTED, power x interval ("power_integral", kept in uJ
  and floored to mJ when reported). "mixed" when a GPU used both. A counter that went
  backwards (driver reload) gives no delta for that span.
- ``max_memory_bytes``: the largest memory-used reading; ``throttle_reasons``: OR of all
  readings; ``ecc_*``: growth of the volatile ECC counts since the job's first reading;
  ``xids``: XID events seen while the GPU was bound to the job.
- ``foreign_processes``: processes on the GPU that belong to another job (job_id) or to
  none (job_id null; ``visible`` false when /proc does not show the pid), at most 32.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field, fields

from computeproof.errors import AgentError
from slurm_hooks.agent.binding import Binding
from slurm_hooks.agent.nvml import GpuInfo, GpuReading

SUMMARY_SCHEMA = "computeproof.agent.summary/v1"
MAX_FOREIGN = 32
MAX_XIDS = 64


@dataclass
class GpuTotals:
    """Accumulated figures of one GPU for one job (all integers, or None before a reading)."""

    minor: int
    slurm_index: int
    uuid: str | None = None
    name: str | None = None
    pci_bus_id: str | None = None
    samples: int = 0
    measured_ms: int = 0
    unmeasured_ms: int = 0
    busy_ms: int = 0
    util_percent_ms: int = 0
    max_memory_bytes: int = 0
    energy_method: str | None = None
    energy_counter_sum_mj: int = 0
    energy_power_uj: int = 0
    energy_measured_ms: int = 0
    energy_counter_mj: int | None = None
    energy_counter_ms: int | None = None
    last_sample_ms: int | None = None
    throttle_reasons: int = 0
    ecc_corrected_start: int | None = None
    ecc_corrected_last: int | None = None
    ecc_uncorrected_start: int | None = None
    ecc_uncorrected_last: int | None = None
    xids: list[int] = field(default_factory=list)
    read_errors: int = 0
    foreign_samples: int = 0
    foreign_processes: list[dict[str, object]] = field(default_factory=list)
    shared_with: list[int] = field(default_factory=list)

    @property
    def energy_mj(self) -> int:
        """Energy attributed so far, mJ."""
        return self.energy_counter_sum_mj + self.energy_power_uj // 1000

    @property
    def util_weighted_ms(self) -> int:
        """Utilization-weighted GPU-ms: sum of util% x interval / 100, floored."""
        return self.util_percent_ms // 100

    def to_dict(self) -> dict[str, object]:
        """The figures as canonical-JSON-ready values, derived figures included."""
        out: dict[str, object] = {}
        for f in fields(self):
            value = getattr(self, f.name)
            out[f.name] = list(value) if isinstance(value, list) else value
        out["energy_mj"] = self.energy_mj
        out["util_weighted_ms"] = self.util_weighted_ms
        out["ecc_corrected"] = _growth(self.ecc_corrected_start, self.ecc_corrected_last)
        out["ecc_uncorrected"] = _growth(self.ecc_uncorrected_start, self.ecc_uncorrected_last)
        return out

    @classmethod
    def from_dict(cls, data: dict[str, object]) -> GpuTotals:
        """Restore figures written by :meth:`to_dict`."""
        names = {f.name for f in fields(cls)}
        try:
            return cls(**{k: v for k, v in data.items() if k in names})  # type: ignore[arg-type]
        except TypeError as e:
            raise AgentError(f"persisted GPU figures are malformed: {e}") from e

    def add(
        self,
        t_ms: int,
        reading: GpuReading | None,
        interval_ms: int,
        job_id: int,
        job_of_pid: Callable[[int], int | None],
        pid_visible: Callable[[int], bool],
    ) -> None:
        """Fold one sampling pass at ``t_ms`` into the figures (``reading`` None: no reading)."""
        previous = self.last_sample_ms
        self.last_sample_ms = t_ms if previous is None else max(previous, t_ms)
        dt = 0 if previous is None else max(0, t_ms - previous)
        covered = min(dt, 2 * interval_ms)
        if reading is None or reading.utilization is None:
            self.unmeasured_ms += dt
            if reading is None:
                self.read_errors += 1
                return
        else:
            self.samples += 1
            self.measured_ms += covered
            self.unmeasured_ms += dt - covered
            if reading.utilization > 0:
                self.busy_ms += covered
            self.util_percent_ms += reading.utilization * covered
        if reading.errors:
            self.read_errors += 1
        if reading.memory_used is not None:
            self.max_memory_bytes = max(self.max_memory_bytes, reading.memory_used)
        self._add_energy(t_ms, reading, covered, previous is None)
        if reading.throttle_reasons is not None:
            self.throttle_reasons |= reading.throttle_reasons
        if reading.ecc_corrected is not None:
            if self.ecc_corrected_start is None:
                self.ecc_corrected_start = reading.ecc_corrected
            self.ecc_corrected_last = reading.ecc_corrected
        if reading.ecc_uncorrected is not None:
            if self.ecc_uncorrected_start is None:
                self.ecc_uncorrected_start = reading.ecc_uncorrected
            self.ecc_uncorrected_last = reading.ecc_uncorrected
        for xid in reading.xids:
            if len(self.xids) < MAX_XIDS:
                self.xids.append(xid)
        if reading.processes:
            self._check_processes(reading, job_id, job_of_pid, pid_visible)

    def _add_energy(self, t_ms: int, reading: GpuReading, covered: int, first: bool) -> None:
        if reading.energy_mj is not None:
            self.add_energy_counter(t_ms, reading.energy_mj)
        elif "energy_mj" in reading.unsupported and reading.power_mw is not None:
            self._method("power_integral")
            if not first:
                self.energy_power_uj += reading.power_mw * covered
                self.energy_measured_ms += covered

    def add_energy_counter(self, t_ms: int, counter_mj: int) -> None:
        """Fold one reading of the GPU's total-energy counter taken at ``t_ms``.

        Counter readings may arrive out of order (a fresh reading for a job's end races a
        sampling pass); one older than the last folded is ignored, so no span is counted
        twice."""
        self._method("counter")
        last, last_ms = self.energy_counter_mj, self.energy_counter_ms
        if last_ms is not None and t_ms < last_ms:
            return
        if last is not None and last_ms is not None and counter_mj >= last:
            self.energy_counter_sum_mj += counter_mj - last
            self.energy_measured_ms += max(0, t_ms - last_ms)
        self.energy_counter_mj, self.energy_counter_ms = counter_mj, t_ms

    def _method(self, method: str) -> None:
        if self.energy_method is None:
            self.energy_method = method
        elif self.energy_method != method:
            self.energy_method = "mixed"

    def _check_processes(
        self,
        reading: GpuReading,
        job_id: int,
        job_of_pid: Callable[[int], int | None],
        pid_visible: Callable[[int], bool],
    ) -> None:
        foreign = False
        known = {p["pid"] for p in self.foreign_processes}
        for proc in reading.processes or ():
            owner = job_of_pid(proc.pid)
            if owner == job_id:
                continue
            foreign = True
            if proc.pid not in known and len(self.foreign_processes) < MAX_FOREIGN:
                self.foreign_processes.append(
                    {"pid": proc.pid, "job_id": owner, "visible": pid_visible(proc.pid)}
                )
                known.add(proc.pid)
        if foreign:
            self.foreign_samples += 1


def _growth(start: int | None, last: int | None) -> int | None:
    if start is None or last is None:
        return None
    return max(0, last - start)


class JobAccumulator:
    """Everything the agent knows about one job on one node; persisted as its summary."""

    def __init__(self, binding: Binding, node: str, interval_ms: int) -> None:
        self.binding = binding
        self.node = node
        self.interval_ms = interval_ms
        self.gpus: dict[int, GpuTotals] = {
            g.minor: GpuTotals(minor=g.minor, slurm_index=g.slurm_index) for g in binding.gpus
        }
        self.first_sample_ms: int | None = None
        self.last_sample_ms: int | None = None
        self.last_progress_ms: int | None = None
        self.progress_seq = 0
        self.artifact_seq = 0
        self.artifact_bytes = 0  # bytes hashed for the job's artifact requests

    def needs_energy_baseline(self) -> bool:
        """Whether a GPU of the job has had no energy counter reading yet (nor is known to
        have no counter): its first reading must come at once, or energy is lost."""
        return any(
            g.energy_counter_ms is None and g.energy_method != "power_integral"
            for g in self.gpus.values()
        )

    def add_sample(
        self,
        t_ms: int,
        readings: dict[int, GpuReading] | None,
        gpu_info: dict[int, GpuInfo],
        jobs_of_minor: dict[int, list[int]],
        job_of_pid: Callable[[int], int | None],
        pid_visible: Callable[[int], bool] = lambda pid: True,
    ) -> None:
        """Fold one sampling pass (``readings`` by minor; None when the pass failed)."""
        if self.first_sample_ms is None:
            self.first_sample_ms = t_ms
        self.last_sample_ms = t_ms
        job_id = self.binding.job_id
        for minor, totals in self.gpus.items():
            info = gpu_info.get(minor)
            if info is not None and totals.uuid is None:
                totals.uuid, totals.name, totals.pci_bus_id = info.uuid, info.name, info.pci_bus_id
            reading = None if readings is None else readings.get(minor)
            totals.add(t_ms, reading, self.interval_ms, job_id, job_of_pid, pid_visible)
            for other in jobs_of_minor.get(minor, ()):
                if other != job_id and other not in totals.shared_with:
                    totals.shared_with.append(other)

    def totals(self) -> dict[str, object]:
        """Figures summed over the job's GPUs on this node."""
        gpus = list(self.gpus.values())
        methods = {g.energy_method for g in gpus if g.energy_method is not None}
        return {
            "samples": sum(g.samples for g in gpus),
            "measured_ms": sum(g.measured_ms for g in gpus),
            "unmeasured_ms": sum(g.unmeasured_ms for g in gpus),
            "busy_ms": sum(g.busy_ms for g in gpus),
            "util_weighted_ms": sum(g.util_weighted_ms for g in gpus),
            "energy_mj": sum(g.energy_mj for g in gpus),
            "energy_method": None
            if not methods
            else methods.pop()
            if len(methods) == 1
            else "mixed",
            "max_memory_bytes": max((g.max_memory_bytes for g in gpus), default=0),
            "foreign_processes": sum(len(g.foreign_processes) for g in gpus),
            "xids": sum(len(g.xids) for g in gpus),
        }

    def summary(self) -> dict[str, object]:
        """The job's node summary (schema in :mod:`slurm_hooks.agent.state`)."""
        b = self.binding
        return {
            "schema": SUMMARY_SCHEMA,
            "cluster": b.cluster,
            "job": b.job,
            "job_id": b.job_id,
            "run": b.run,
            "node": self.node,
            "uid": b.uid,
            "sample_interval_ms": self.interval_ms,
            "first_sample_ms": self.first_sample_ms,
            "last_sample_ms": self.last_sample_ms,
            "last_progress_ms": self.last_progress_ms,
            "progress_seq": self.progress_seq,
            "artifact_seq": self.artifact_seq,
            "artifact_bytes": self.artifact_bytes,
            "totals": self.totals(),
            "gpus": [self.gpus[m].to_dict() for m in sorted(self.gpus, key=self._slurm_order)],
        }

    def _slurm_order(self, minor: int) -> int:
        return self.gpus[minor].slurm_index

    def resume(self, data: dict[str, object]) -> bool:
        """Continue from a persisted summary of the same job run; False if it is another's."""
        b = self.binding
        if data.get("schema") != SUMMARY_SCHEMA or (
            data.get("job_id"),
            data.get("run"),
            data.get("job"),
        ) != (b.job_id, b.run, b.job):
            return False
        gpus = data.get("gpus")
        if not isinstance(gpus, list):
            return False
        restored = {}
        for g in gpus:
            if isinstance(g, dict):
                totals = GpuTotals.from_dict(g)
                restored[totals.minor] = totals
        if set(restored) != set(self.gpus):
            return False
        self.gpus = restored
        for name in ("first_sample_ms", "last_sample_ms", "last_progress_ms"):
            value = data.get(name)
            setattr(self, name, value if isinstance(value, int) else None)
        for name in ("progress_seq", "artifact_seq", "artifact_bytes"):
            value = data.get(name)
            setattr(self, name, value if isinstance(value, int) else 0)
        return True
