"""Sampling passes over NVML that never block the caller longer than a timeout.

NVML calls run in one worker thread. A pass waits at most ``timeout_s`` for it; when a
call hangs, the pass returns a gap and later passes return gaps at once (no new calls are
queued behind a hung one) until the hung call comes back. When NVML is missing or fails,
each pass tries to open it again, so the agent recovers when the driver does.
"""

from __future__ import annotations

import contextlib
import queue
import threading
import time
from collections.abc import Callable
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
        self.gpus: dict[int, GpuInfo] = {}
        self.driver_version = ""

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

    def sample(self) -> Sample:
        """Run one pass; a failure or timeout gives a Sample with readings None."""
        t_ms = self.clock()
        try:
            nvml = self._open()
            readings = self._call("read", nvml.read)
        except NvmlTimeout as e:
            return Sample(t_ms, None, str(e), dict(self.gpus), self.driver_version)
        except NvmlError as e:
            self._drop()
            return Sample(t_ms, None, str(e), dict(self.gpus), self.driver_version)
        except Exception as e:  # an NVML binding bug must not stop the agent: report the gap
            self._drop()
            return Sample(t_ms, None, f"NVML failed: {e!r}", dict(self.gpus), self.driver_version)
        return Sample(t_ms, readings, None, dict(self.gpus), self.driver_version)

    def _drop(self) -> None:
        nvml, self._nvml = self._nvml, None
        if nvml is not None:
            with contextlib.suppress(AgentError):
                self._call("nvmlShutdown", nvml.close)

    def close(self) -> None:
        """Shut NVML down (without waiting for a hung call)."""
        self._drop()
