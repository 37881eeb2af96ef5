"""Sampling passes over NVML that never block the caller longer than a timeout.

NVML calls run in one worker thread. A pass waits at most ``timeout_s`` for it; when a
call hangs, the pass returns a gap and later passes return gaps at once (no new calls are
queued behind a hung one) until the hung call comes back. When NVML is missing or fails,
each pass tries to open it again, so the agent recovers when the driver does.

Two threads use a sampler: the sampling loop (:meth:`Sampler.sample`) and a socket request
wanting a fresh energy reading at a job's end (:meth:`Sampler.read_energy`); a lock takes
them in turn, and the second never waits longer than it was told to.
"""

from __future__ import annotations

import contextlib
import queue
import threading
import time
from collections.abc import Callable, Collection
from dataclasses import dataclass, field
from typing import TypeVar

from computeproof.errors import AgentError
from slurm_hooks.agent.nvml import GpuInfo, GpuReading, Nvml, NvmlError

T = TypeVar("T")


class NvmlTimeout(AgentError):
    """An NVML call did not return within its timeout."""


class _Call:
    """One function for the worker thread, and its outcome."""

    def __init__(self, name: str, fn: Callable[[], object]) -> None:
        self.name = name
        self.fn = fn
        self.done = threading.Event()
        self.result: object = None
        self.error: BaseException | None = None
        self.since = time.monotonic()


def _work(calls: queue.SimpleQueue[_Call]) -> None:
    while True:
        call = calls.get()
        try:
            call.result = call.fn()
        except BaseException as e:  # handed to the waiting thread
            call.error = e
        call.done.set()


@dataclass
class Sample:
    """One sampling pass: readings by minor number, or None and the reason."""

    t_ms: int
    readings: dict[int, GpuReading] | None
    error: str | None = None
    gpus: dict[int, GpuInfo] = field(default_factory=dict)
    driver_version: str = ""


def wall_clock_ms() -> int:
    """Milliseconds since the Unix epoch."""
    return time.time_ns() // 1_000_000


class Sampler:
    """Opens NVML lazily, reads every GPU once a pass, survives hangs and failures."""

    def __init__(
        self,
        timeout_s: float = 2.0,
        clock: Callable[[], int] = wall_clock_ms,
        nvml_factory: Callable[[], Nvml] = Nvml,
    ) -> None:
        self.timeout_s = timeout_s
        self.clock = clock
        self._factory = nvml_factory
        self._nvml: Nvml | None = None
        # A daemon thread, not an executor: a hung NVML call must not block the exit.
        self._calls: queue.SimpleQueue[_Call] = queue.SimpleQueue()
        self._worker = threading.Thread(
            target=_work, args=(self._calls,), name="computeproof-nvml", daemon=True
        )
        self._worker.start()
        self._pending: _Call | None = None
        self._lock = threading.Lock()
        self.gpus: dict[int, GpuInfo] = {}
        self.driver_version = ""
        self.failures = 0  # passes that got no reading
        self._errors_before = 0  # NVML call failures of sessions already closed

    def _call(self, name: str, fn: Callable[[], T]) -> T:
        pending = self._pending
        if pending is not None and not pending.done.is_set():
            stuck = time.monotonic() - pending.since
            raise NvmlTimeout(f"NVML call {pending.name} still hung after {stuck:.0f} s")
        call = _Call(name, fn)
        self._pending = call
        self._calls.put(call)
        if not call.done.wait(self.timeout_s):
            raise NvmlTimeout(f"NVML call {name} did not return within {self.timeout_s:g} s")
        if call.error is not None:
            raise call.error
        return call.result  # type: ignore[return-value]

    def _open(self) -> Nvml:
        if self._nvml is None:
            nvml = self._factory()
            self._call("nvmlInit", nvml.open)
            self._nvml = nvml
            self.gpus = {g.minor: g for g in nvml.gpus}
            self.driver_version = nvml.driver_version
        return self._nvml

    @property
    def nvml_errors(self) -> int:
        """NVML calls that failed in the open session (NOT_SUPPORTED excluded)."""
        nvml = self._nvml
        return self._errors_before + (0 if nvml is None else nvml.errors)

    def sample(self, energy: Collection[int] | None = None) -> Sample:
        """Run one pass; a failure or timeout gives a Sample with readings None. The
        energy counter is read for the minors in ``energy`` only (None: every GPU)."""
        with self._lock:
            t_ms = self.clock()
            error: str | None = None
            try:
                nvml = self._open()
                readings = self._call("read", lambda: nvml.read(energy))
            except NvmlTimeout as e:
                error = str(e)
            except NvmlError as e:
                self._drop()
                error = str(e)
            except Exception as e:  # an NVML binding bug must not stop the agent: a gap
                self._drop()
                error = f"NVML failed: {e!r}"
            if error is not None:
                self.failures += 1
                return Sample(t_ms, None, error, dict(self.gpus), self.driver_version)
            return Sample(t_ms, readings, None, dict(self.gpus), self.driver_version)

    def read_energy(self, minors: Collection[int], wait_s: float) -> tuple[int, dict[int, int]]:
        """(time, {minor: energy counter mJ}) for ``minors`` now, waiting at most ``wait_s``
        for a pass in progress; empty when NVML is not open, busy, hung or failing."""
        if not self._lock.acquire(timeout=wait_s):
            return self.clock(), {}
        try:
            nvml = self._nvml
            if nvml is None:
                return self.clock(), {}
            t_ms = self.clock()
            try:
                values = self._call("read_energy", lambda: nvml.read_energy(minors))
            except Exception:  # a fresh energy reading is a bonus; the pass reports faults
                return t_ms, {}
            return t_ms, {m: v for m, v in values.items() if v is not None}
        finally:
            self._lock.release()

    def _drop(self) -> None:
        nvml, self._nvml = self._nvml, None
        if nvml is not None:
            self._errors_before += nvml.errors
            with contextlib.suppress(AgentError):
                self._call("nvmlShutdown", nvml.close)

    def close(self) -> None:
        """Shut NVML down (without waiting for a hung call)."""
        with self._lock:
            self._drop()
