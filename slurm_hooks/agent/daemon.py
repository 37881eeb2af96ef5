"""The per-node GPU agent: sampling loop, per-job accumulators, progress and artifact events.

One agent runs per slurmd node (several nodes may share a host in the test cluster). Each
pass reads the node's bindings, samples NVML, folds the readings into each bound job's
figures, persists the summaries (see :mod:`slurm_hooks.agent.state`) and, every
``progress_interval``, writes a ``progress`` event per running job to the spool.

Persistence and sequence numbers: a summary and its NVML baselines (last energy counter
reading, last sample time) are written together atomically, so a restarted agent resumes
from a consistent point: time it was down is ``unmeasured_ms``, energy comes from the
counter delta, nothing is counted twice. A sequence number is persisted (fsync) before the
event that uses it is spooled, so a crash can skip a number but never reuse one.

Orphans: the Epilog removes a job's binding. When it never runs on a node (slurmd killed,
the Epilog timed out), the binding would keep the job "running" here and the agent would
sign progress events for it forever. So a job sampled for ``orphan_check_interval`` with no
slurmstepd on the host is looked up in Slurm (one ``squeue`` call, at most that often); if
Slurm has ended this run of it on this node, the agent stops sampling it, persists its final
summary (a late Epilog still reads it) and removes the binding. If Slurm cannot be asked,
sampling goes on: only Slurm's word ends a job here.

Forwarding: with ``forward_interval`` set, the agent also drains the spool into the ledger
that often, in a thread of its own (a slow ledger never holds up sampling), taking turns
with any other forwarder on the spool's lock. A failure is logged when it starts and when
it ends, not every pass; the events wait in the spool meanwhile.
"""

from __future__ import annotations

import logging
import os
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from computeproof.config import Config
from computeproof.errors import AgentError, ComputeProofError
from computeproof.event import new_event
from computeproof.spool import Spool
from slurm_hooks.agent.accumulate import JobAccumulator
from slurm_hooks.agent.binding import (
    Binding,
    jobs_by_minor,
    load_bindings,
    read_binding,
    scan_bindings,
)
from slurm_hooks.agent.nvml import GpuInfo
from slurm_hooks.agent.procs import ProcessTable
from slurm_hooks.agent.ratelog import RateLimitedLog
from slurm_hooks.agent.sampler import Sample, Sampler, wall_clock_ms
from slurm_hooks.agent.state import read_summary, summary_path, sweep, write_summary
from slurm_hooks.finalstate import NOT_FINAL
from slurm_hooks.jobinfo import AccountingRecord, JobInfo

if TYPE_CHECKING:  # imported when forwarding first runs: it brings in cryptography
    from computeproof.forward import ForwardResult, LoggedForwarder

log = logging.getLogger("computeproof.agent")
limited = RateLimitedLog(log)

PERSIST_EVERY_MS = 5_000
# A fresh energy reading for a job's end waits at most this long for a pass in progress:
# the Epilog gives the agent 0.7 s in all.
FRESH_ENERGY_WAIT_S = 0.3
FRESH_ENERGY_MIN_MS = 1_000  # a counter read this recently is fresh enough
GPU_MAP = "gpus"  # <run_dir>/<node>/gpus: "minor index uuid" lines for the hooks (jobmap.py)


def ended_here(record: AccountingRecord | None, node: str, run: int) -> str | None:
    """Why Slurm's live record says run ``run`` of the job no longer runs on ``node``, or
    None when it may still (COMPLETING included: the Epilog is about to run)."""
    if record is None:
        return "Slurm no longer knows the job"
    restarts = record.get("restarts")
    if restarts is not None and restarts > run:
        return f"Slurm requeued it (run {restarts} now)"
    state = record.get("state") or ""
    if state == "PENDING" or state not in NOT_FINAL:  # PENDING again: it was requeued
        return f"Slurm shows it {state}"
    nodes = record.get("nodes") or []
    if nodes and node not in nodes:
        return f"Slurm runs it on {','.join(nodes)}, not {node}"
    return None


class CallerRefused(AgentError):
    """A socket caller is not allowed to do what it asked (no job, wrong uid)."""


@dataclass(frozen=True)
class Artifact:
    """An output file's digest as the agent computed it from the caller's descriptor;
    ``path_verified``: the path the caller named leads, in the caller's own view of the
    filesystem, to the very file it passed (same device and inode)."""

    path: str
    sha256: str
    size: int
    path_verified: bool = False


@dataclass
class SocketStats:
    """What the socket server counts, for the exporter."""

    requests: dict[tuple[str, str], int] = field(default_factory=dict)  # (op, result) -> n
    refused: dict[str, int] = field(default_factory=dict)  # reason -> connections refused
    open_connections: int = 0

    def count(self, table: dict[Any, int], key: Any) -> None:
        """Add one to ``table[key]``."""
        table[key] = table.get(key, 0) + 1


class Periodic:
    """A task the sampling loop starts every ``interval_ms`` (0: never), each run in a
    thread of its own so that a slow Slurm or ledger never holds up sampling; a run still
    going when the next is due is not doubled."""

    def __init__(self, name: str, interval_ms: int, task: Callable[[int], object]) -> None:
        self.name = name
        self.interval_ms = interval_ms
        self.task = task
        self._next_ms = 0
        self._thread: threading.Thread | None = None

    def due(self, now_ms: int) -> None:
        """Start a run when one is due and none is running."""
        if not self.interval_ms or now_ms < self._next_ms:
            return
        if self._thread is not None and self._thread.is_alive():
            return
        self._next_ms = now_ms + self.interval_ms
        self._thread = threading.Thread(
            target=self._run, args=(now_ms,), name=self.name, daemon=True
        )
        self._thread.start()

    def _run(self, now_ms: int) -> None:
        try:
            self.task(now_ms)
        except Exception:  # the agent outlives any one bad run
            log.exception("%s failed", self.name)

    def join(self, timeout: float | None = None) -> None:
        """Wait for a running run to finish (tests and shutdown)."""
        if self._thread is not None:
            self._thread.join(timeout)


class Agent:
    """State and behaviour of one node's agent; the socket server and loop drive it."""

    def __init__(
        self,
        config: Config,
        node: str,
        sampler: Sampler | None = None,
        clock: Callable[[], int] = wall_clock_ms,
        processes: ProcessTable | None = None,
        spool: Spool | None = None,
        job_info: JobInfo | None = None,
    ) -> None:
        self.config = config
        self.node = node
        self.clock = clock
        self.interval_ms = max(1, config.sample_interval) * 1000
        self.progress_ms = max(1, config.progress_interval) * 1000
        self.energy_ms = config.energy_interval * 1000
        self._energy_due_ms: int | None = None  # next pass that reads every energy counter
        self.sampler = sampler or Sampler(
            timeout_s=min(2.0, max(0.5, config.sample_interval / 2)), clock=clock
        )
        self.processes = processes or ProcessTable()
        self.spool = spool or Spool(config.spool_dir)
        self.jobs: dict[int, JobAccumulator] = {}
        self.bindings: dict[int, Binding] = {}
        self.last_sample: Sample | None = None
        self.last_good_sample: Sample | None = None  # the last pass with readings
        self.last_pass_s = 0.0  # how long the last pass took (NVML included)
        self.gaps = 0
        self.socket_stats = SocketStats()
        self.last_energy: dict[int, int] = {}  # minor -> last energy counter read, mJ
        self._gpu_map_written: dict[int, GpuInfo] = {}
        self._persisted_ms: dict[int, int] = {}
        self._lock = threading.Lock()
        self.orphan_check_ms = config.orphan_check_interval * 1000
        self._orphan_check = Periodic("orphan check", self.orphan_check_ms, self.end_orphans)
        self._forward = Periodic(
            "forwarding", config.forward_interval * 1000, lambda _: self.forward_once()
        )
        self._job_info = job_info
        # job id -> (run, display id) of bindings ended as orphans: not sampled again
        self.orphans: dict[int, tuple[int, str]] = {}
        self._forwarder: LoggedForwarder | None = None  # made when forwarding first runs

    # -- sampling ---------------------------------------------------------------------------

    def _sync_bindings(self) -> None:
        scan = scan_bindings(self.config, self.node)
        for problem in scan.problems:
            limited.warning("binding problem", "%s", problem)
        bindings = scan.bindings
        # A job is over on this node only when its binding is gone: not when the directory
        # could not be listed or its file not be read (EMFILE, EIO), which ends nothing.
        keep = set(self.jobs) if not scan.complete else scan.unreadable
        for job_id in sorted(set(self.jobs) - set(bindings) - keep):
            ended = self.jobs.pop(job_id)
            self._persist(ended, durable=True)  # the job ended on this node: final figures
            self._persisted_ms.pop(job_id, None)
        if scan.complete:
            for job_id in [j for j in self.orphans if j not in bindings and j not in keep]:
                del self.orphans[job_id]  # its binding is gone at last
        for job_id, binding in bindings.items():
            if self.orphans.get(job_id) == (binding.run, binding.job):
                continue  # its binding could not be removed; Slurm ended it here
            known = self.jobs.get(job_id)
            if known is not None and (known.binding.run, known.binding.job) == (
                binding.run,
                binding.job,
            ):
                continue
            acc = JobAccumulator(binding, self.node, self.interval_ms)
            try:
                persisted = read_summary(summary_path(self.config, self.node, job_id))
            except AgentError as e:
                log.warning("ignoring persisted state: %s", e)
                persisted = None
            if persisted is not None and acc.resume(persisted):
                log.info("job %s: resumed from persisted state", binding.job)
            self.jobs[job_id] = acc
        kept = {j: self.bindings[j] for j in keep if j in self.bindings and j not in bindings}
        self.bindings = {**bindings, **kept}

    def _energy_minors(self, t_ms: int) -> set[int] | None:
        """The GPUs whose energy counter this pass reads: all of them every
        ``energy_interval`` (None), else those of a job that needs its first reading or is
        due a progress event; the counter is cumulative, so nothing is lost between."""
        if self._energy_due_ms is None or t_ms >= self._energy_due_ms or not self.energy_ms:
            self._energy_due_ms = t_ms + self.energy_ms
            return None
        minors: set[int] = set()
        for acc in self.jobs.values():
            if acc.needs_energy_baseline() or self._due_progress(acc, t_ms):
                minors.update(acc.gpus)
        return minors

    def pass_once(self) -> Sample:
        """One sampling pass: bindings, NVML, accumulate, persist, progress events."""
        started = time.monotonic()
        with self._lock:
            self._sync_bindings()
            energy = self._energy_minors(self.clock())
        sample = self.sampler.sample(energy)  # outside the lock: may take up to its timeout
        if sample.error:
            self.gaps += 1
            limited.warning("no GPU reading", "no GPU reading this pass: %s", sample.error)
        elif sample.gpus != self._gpu_map_written:
            self._write_gpu_map(sample.gpus)
        with self._lock:
            self.last_sample = sample
            if not sample.error:
                self.last_good_sample = sample
            for minor, reading in (sample.readings or {}).items():
                if reading.energy_mj is not None:
                    self.last_energy[minor] = reading.energy_mj
            by_minor = jobs_by_minor(self.bindings)
            owners: dict[int, int | None] = {}

            def job_of(pid: int) -> int | None:
                if pid not in owners:
                    owners[pid] = self.processes.job_of(pid)
                return owners[pid]

            def visible(pid: int) -> bool:
                return self.processes.info(pid) is not None

            for acc in self.jobs.values():
                acc.add_sample(sample.t_ms, sample.readings, sample.gpus, by_minor, job_of, visible)
            for job_id, acc in self.jobs.items():
                if self._due_progress(acc, sample.t_ms):
                    self._emit_agent_progress(acc, sample.t_ms)
                elif (
                    sample.t_ms - self._persisted_ms.get(job_id, -PERSIST_EVERY_MS)
                    >= PERSIST_EVERY_MS
                ):
                    self._persist(acc)
        self._orphan_check.due(sample.t_ms)
        self._forward.due(sample.t_ms)
        self.last_pass_s = time.monotonic() - started
        return sample

    def _write_gpu_map(self, gpus: dict[int, GpuInfo]) -> None:
        """Leave ``minor index uuid`` lines for the hooks, which cannot ask NVML (jobmap.py)."""
        path = os.path.join(self.config.node_dir(self.node), GPU_MAP)
        text = "".join(
            f"{g.minor} {g.index} {g.uuid}\n" for g in sorted(gpus.values(), key=lambda g: g.minor)
        )
        try:
            os.makedirs(os.path.dirname(path), mode=0o755, exist_ok=True)
            tmp = f"{path}.tmp"
            with open(tmp, "w", encoding="utf-8") as f:
                f.write(text)
            os.replace(tmp, path)
            self._gpu_map_written = dict(gpus)
        except OSError as e:
            limited.warning("gpu map", "cannot write %s: %s", path, e.strerror)

    def forward_once(self) -> ForwardResult | None:
        """One forwarding pass of the spool into the ledger; None when it failed (logged
        once per failure) or another forwarder was at work. Anything unexpected is left
        to the Periodic that runs it, which logs it."""
        if self._forwarder is None:
            from computeproof.forward import LoggedForwarder

            self._forwarder = LoggedForwarder(self.config, log)
        return self._forwarder.once()

    def join_forward(self, timeout: float | None = None) -> None:
        """Wait for a running forwarding pass to finish (tests and shutdown)."""
        self._forward.join(timeout)

    def join_orphan_check(self, timeout: float | None = None) -> None:
        """Wait for a running orphan check to finish (tests; the loop never waits)."""
        self._orphan_check.join(timeout)

    def end_orphans(self, now_ms: int) -> list[int]:
        """Stop sampling the jobs Slurm has ended on this node whose Epilog never removed
        their binding (see the module docstring); return their ids."""
        with self._lock:
            sampled_long = [
                acc
                for acc in self.jobs.values()
                if acc.first_sample_ms is not None
                and now_ms - acc.first_sample_ms >= self.orphan_check_ms
            ]
        if not sampled_long:
            return []
        stepds = self.processes.stepd_jobs()
        ended: list[int] = []
        for acc in sampled_long:
            b = acc.binding
            if b.job_id in stepds:
                continue
            try:
                if self._job_info is None:
                    from slurm_hooks.backend import job_info

                    self._job_info = job_info(self.config)
                why = ended_here(self._job_info.job_live(b.job_id), self.node, b.run)
            except ComputeProofError as e:
                log.warning("job %s: cannot ask Slurm whether it still runs here (%s); "
                            "sampling it on", b.job, e)  # fmt: skip
                continue
            if why is not None and self._end_orphan(acc):
                ended.append(b.job_id)
                log.warning(
                    "job %s run %d: %s, but its Epilog has not removed its binding on node %s: "
                    "stopped sampling it and removed %s (its summary stays for a late Epilog)",
                    b.job, b.run, why, self.node, self.config.binding_path(self.node, b.job_id),
                )  # fmt: skip
        return ended

    def _end_orphan(self, acc: JobAccumulator) -> bool:
        """Forget ``acc``'s job: final summary persisted, binding file removed if unchanged."""
        b = acc.binding
        with self._lock:
            if self.jobs.get(b.job_id) is not acc:
                return False  # the Epilog or a new run got there first
            del self.jobs[b.job_id]
            self.bindings.pop(b.job_id, None)
            self._persist(acc, durable=True)
            self._persisted_ms.pop(b.job_id, None)
            self.orphans[b.job_id] = (b.run, b.job)
        path = self.config.binding_path(self.node, b.job_id)
        try:
            current = read_binding(path)
        except AgentError:
            return True  # gone already; an unreadable one is reported by every pass
        if (current.run, current.job) == (b.run, b.job):  # not a new run's binding
            try:
                os.unlink(path)
            except FileNotFoundError:
                pass
            except OSError as e:
                log.warning("job %s: binding %s not removed: %s", b.job, path, e.strerror)
        return True

    def _due_progress(self, acc: JobAccumulator, t_ms: int) -> bool:
        start = acc.last_progress_ms if acc.last_progress_ms is not None else acc.first_sample_ms
        return start is not None and t_ms - start >= self.progress_ms

    def _persist(self, acc: JobAccumulator, durable: bool = False) -> None:
        path = summary_path(self.config, self.node, acc.binding.job_id)
        try:
            write_summary(path, acc.summary(), durable=durable)
            self._persisted_ms[acc.binding.job_id] = self.clock()
        except ComputeProofError as e:
            log.error("%s", e)

    def _next_seq(self, acc: JobAccumulator, kind: str) -> int:
        """Take the next sequence number of ``kind`` and persist it before it is used."""
        if kind == "progress":
            seq, acc.progress_seq = acc.progress_seq, acc.progress_seq + 1
        else:
            seq, acc.artifact_seq = acc.artifact_seq, acc.artifact_seq + 1
        write_summary(
            summary_path(self.config, self.node, acc.binding.job_id), acc.summary(), durable=True
        )
        self._persisted_ms[acc.binding.job_id] = self.clock()
        return seq

    def _event(
        self, acc: JobAccumulator, type: str, seq: int, payload: dict[str, object]
    ) -> dict[str, object]:
        b = acc.binding
        event = new_event(
            type,
            b.cluster or self.config.cluster,
            b.job,
            b.job_id,
            self.node,
            payload,
            seq=seq,
            run=b.run,
        )
        self.spool.write(event)
        return event

    def _emit_agent_progress(self, acc: JobAccumulator, t_ms: int) -> None:
        acc.last_progress_ms = t_ms
        summary = acc.summary()
        payload: dict[str, object] = {
            "source": "agent",
            "time_ms": t_ms,
            "first_sample_ms": summary["first_sample_ms"],
            "sample_interval_ms": self.interval_ms,
            "totals": summary["totals"],
            "gpus": summary["gpus"],
        }
        try:
            seq = self._next_seq(acc, "progress")
            self._event(acc, "progress", seq, payload)
        except ComputeProofError as e:
            log.error("job %s: progress event not written: %s", acc.binding.job, e)

    # -- requests from the socket ---------------------------------------------------------

    def summary(self, job_id: int, uid: int | None = None) -> dict[str, object]:
        """The job's node summary: live when the job is bound, else the persisted one.

        For a live job the energy counters are read afresh first (the Epilog asks at the
        job's end, and the sampling passes read them only every ``energy_interval``): for
        root when the last reading is a second old, for the job's owner when it is ten
        (an owner asking in a loop must not keep the agent in the dearest NVML call)."""
        with self._lock:
            acc = self.jobs.get(job_id)
        if acc is not None and uid in (None, 0):
            self.refresh_energy(acc, FRESH_ENERGY_MIN_MS)
        elif acc is not None and uid == acc.binding.uid:
            self.refresh_energy(acc, 10 * FRESH_ENERGY_MIN_MS)
        with self._lock:
            acc = self.jobs.get(job_id)
            summary = acc.summary() if acc is not None else None
        if summary is None:
            summary = read_summary(summary_path(self.config, self.node, job_id))
        if summary is None:
            raise AgentError(f"no summary for job {job_id} on node {self.node}")
        if uid not in (None, 0) and summary.get("uid") != uid:
            raise CallerRefused(f"uid {uid} does not own job {job_id}")
        return summary

    def refresh_energy(self, acc: JobAccumulator, older_than_ms: int = FRESH_ENERGY_MIN_MS) -> None:
        """Fold a fresh reading of the energy counters of ``acc``'s GPUs whose last one is
        ``older_than_ms`` old, if NVML gives one within FRESH_ENERGY_WAIT_S."""
        now = self.clock()
        minors = [
            m
            for m, g in acc.gpus.items()
            if g.energy_method != "power_integral"
            and (g.energy_counter_ms is None or now - g.energy_counter_ms >= older_than_ms)
        ]
        if not minors:
            return
        t_ms, counters = self.sampler.read_energy(minors, FRESH_ENERGY_WAIT_S)
        with self._lock:
            if self.jobs.get(acc.binding.job_id) is not acc:
                return
            for minor, counter in counters.items():
                totals = acc.gpus.get(minor)
                if totals is not None and totals.energy_counter_ms is not None:
                    totals.add_energy_counter(t_ms, counter)

    def is_running(self, acc: JobAccumulator) -> bool:
        """Whether ``acc`` is still a job bound on this node (its Epilog has not ended it)."""
        with self._lock:
            return self.jobs.get(acc.binding.job_id) is acc

    def reserve_artifact_bytes(self, acc: JobAccumulator, size: int) -> None:
        """Count ``size`` bytes against the job's artifact budget, or refuse them."""
        limit = self.config.artifact_job_bytes
        with self._lock:
            if acc.artifact_bytes + size > limit:
                raise CallerRefused(
                    f"job {acc.binding.job} has had {acc.artifact_bytes} bytes of artifacts "
                    f"hashed; {size} more would pass its limit of {limit} "
                    "(artifact_job_bytes in the agent's config)"
                )
            acc.artifact_bytes += size

    def release_artifact_bytes(self, acc: JobAccumulator, size: int) -> None:
        """Give back bytes reserved for hashing that was refused before it began."""
        with self._lock:
            acc.artifact_bytes = max(0, acc.artifact_bytes - size)

    def caller_job(self, pid: int, uid: int) -> JobAccumulator:
        """The running job the calling process belongs to, or CallerRefused."""
        job_id = self.processes.job_of(pid)
        if job_id is None:
            raise CallerRefused(
                f"process {pid} belongs to no Slurm job on node {self.node}; "
                "run this command inside a job (sbatch/srun)"
            )
        with self._lock:
            acc = self.jobs.get(job_id)
        if acc is None:
            self.refresh()
            with self._lock:
                acc = self.jobs.get(job_id)
        if acc is None:
            raise CallerRefused(f"job {job_id} has no GPU binding on node {self.node}")
        if uid != 0 and uid != acc.binding.uid:
            raise CallerRefused(f"uid {uid} does not own job {job_id}")
        return acc

    def refresh(self) -> None:
        """Re-read the bindings now (a job that started since the last pass)."""
        with self._lock:
            self._sync_bindings()

    def record_progress(
        self,
        pid: int,
        uid: int,
        percent: int | None,
        epoch: int | None,
        epochs: int | None,
        message: str | None,
    ) -> dict[str, object]:
        """Write a job-reported ``progress`` event for the caller's job; return it."""
        acc = self.caller_job(pid, uid)
        payload: dict[str, object] = {
            "source": "job",
            "pid": pid,
            "uid": uid,
            "time_ms": self.clock(),
        }
        if percent is not None:
            payload["percent"] = percent
        if epoch is not None:
            payload["epoch"] = epoch
        if epochs is not None:
            payload["epochs"] = epochs
        if message:
            payload["message"] = message
        with self._lock:
            seq = self._next_seq(acc, "progress")
            return self._event(acc, "progress", seq, payload)

    def record_artifacts(
        self, pid: int, uid: int, artifacts: list[Artifact], acc: JobAccumulator | None = None
    ) -> dict[str, object]:
        """Write one ``artifact`` event listing the files' digests; return it. ``acc``: the
        caller's job as found before hashing, which must still be running."""
        if acc is None:
            acc = self.caller_job(pid, uid)
        payload: dict[str, object] = {
            "pid": pid,
            "uid": uid,
            "time_ms": self.clock(),
            "artifacts": [
                {"path": a.path, "sha256": a.sha256, "size": a.size,
                 "path_verified": a.path_verified}
                for a in artifacts
            ],
        }  # fmt: skip
        with self._lock:
            if self.jobs.get(acc.binding.job_id) is not acc:
                raise CallerRefused(f"job {acc.binding.job} ended on node {self.node}")
            seq = self._next_seq(acc, "artifact")
            return self._event(acc, "artifact", seq, payload)

    def gpu_table(self) -> list[dict[str, object]]:
        """The node's GPUs (from the last pass) and the job holding each."""
        with self._lock:
            sample = self.last_sample
            by_minor = jobs_by_minor(self.bindings)
        gpus = sorted((sample.gpus if sample else {}).values(), key=lambda g: g.index)
        holder = {minor: jobs[0] for minor, jobs in by_minor.items()}
        return [{**g.as_dict(), "job_id": holder.get(g.minor)} for g in gpus]

    # -- the loop ---------------------------------------------------------------------------

    def run(self, stop: threading.Event) -> None:
        """Sample every sample_interval until ``stop`` is set; persist everything on the way out."""
        sweep(self.config, self.node, set())
        next_due = time.monotonic()
        while not stop.is_set():
            try:
                self.pass_once()
            except Exception:  # the agent outlives any one bad pass
                log.exception("sampling pass failed")
            next_due += self.interval_ms / 1000
            now = time.monotonic()
            if next_due < now:
                next_due = now + self.interval_ms / 1000
            stop.wait(next_due - now)
        with self._lock:
            for acc in self.jobs.values():
                self._persist(acc, durable=True)
        self.sampler.close()
        self.join_forward(timeout=30)  # a batch half-appended is safe, but let it finish


def inspect(
    config: Config, node: str, sampler: Sampler | None = None, processes: ProcessTable | None = None
) -> dict[str, object]:
    """One sampling pass with attribution and no accumulation: what the node looks like now."""
    sampler = sampler or Sampler()
    processes = processes or ProcessTable()
    bindings, problems = load_bindings(config, node)
    by_minor = jobs_by_minor(bindings)
    sample = sampler.sample()
    sampler.close()
    gpus = []
    for info in sorted(sample.gpus.values(), key=lambda g: g.index):
        job_ids = by_minor.get(info.minor, [])
        reading = (sample.readings or {}).get(info.minor)
        procs = []
        for p in (reading.processes or ()) if reading else ():
            owner = processes.job_of(p.pid)
            procs.append(
                {
                    "pid": p.pid,
                    "used_memory": p.used_memory,
                    "job_id": owner,
                    "foreign": bool(job_ids) and owner not in job_ids,
                }
            )
        gpus.append(
            {
                **info.as_dict(),
                "job_ids": job_ids,
                "reading": None if reading is None else reading.as_dict(),
                "processes": procs,
            }
        )
    bound = {m for m in by_minor}
    return {
        "node": node,
        "time_ms": sample.t_ms,
        "driver_version": sample.driver_version,
        "error": sample.error,
        "binding_problems": problems,
        "unknown_minors": sorted(bound - set(sample.gpus)) if sample.gpus else [],
        "gpus": gpus,
    }
