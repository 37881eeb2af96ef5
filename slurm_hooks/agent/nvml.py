"""NVML through nvidia-ml-py (``pynvml``): GPU facts and one reading per GPU.

Every call here is synchronous and may block as long as the driver does; the sampler runs
them in a worker thread with a timeout (see :mod:`slurm_hooks.agent.sampler`). pynvml's
errors enter here and leave as ours::

    AgentError
    └── NvmlError              an NVML call failed (``code`` holds NVML's return code)
        └── NvmlUnavailable    libnvidia-ml.so.1 missing, or nvmlInit failed

A field NVML does not support on a GPU (NVML_ERROR_NOT_SUPPORTED) is ``None`` in the
reading and named in ``unsupported``; a field whose call failed otherwise is ``None`` and
its error is in ``errors``. Nothing is ever filled in with a made-up value.

The total-energy counter is by far the dearest call (on an H200, p50 2.7-3.0 ms and up to
19 ms, against microseconds for the other fields), and it is cumulative, so reading it less
often loses nothing: :meth:`Nvml.read` reads it only for the GPUs it is asked to
(``energy_mj`` is then ``None`` and not in ``unsupported`` for the others: "not read this
time"). A GPU that answered NOT_SUPPORTED once is not asked again.
"""

from __future__ import annotations

from collections.abc import Collection
from dataclasses import dataclass, field
from typing import Any

from computeproof.errors import AgentError

NVML_ERROR_NOT_SUPPORTED = 3
NVML_ERROR_TIMEOUT = 10
NVML_ERROR_LIBRARY_NOT_FOUND = 12
NVML_TEMPERATURE_GPU = 0
XID_EVENT = 0x8  # nvmlEventTypeXidCriticalError


class NvmlError(AgentError):
    """An NVML call failed; ``code`` is NVML's return code (None when not from NVML)."""

    def __init__(self, message: str, code: int | None = None) -> None:
        super().__init__(message)
        self.code = code


class NvmlUnavailable(NvmlError):
    """The NVML library is missing or could not be initialised."""


@dataclass(frozen=True)
class GpuInfo:
    """Static facts of one GPU, keyed by its minor number (/dev/nvidiaN)."""

    index: int
    minor: int
    uuid: str
    name: str
    pci_bus_id: str
    memory_total: int

    def as_dict(self) -> dict[str, object]:
        """The facts as a JSON-ready dict."""
        return {
            "index": self.index,
            "minor": self.minor,
            "uuid": self.uuid,
            "name": self.name,
            "pci_bus_id": self.pci_bus_id,
            "memory_total": self.memory_total,
        }


@dataclass(frozen=True)
class GpuProcess:
    """A compute process NVML reports on a GPU."""

    pid: int
    used_memory: int | None


@dataclass
class GpuReading:
    """One reading of one GPU; ``None`` fields were not read (see errors/unsupported)."""

    minor: int
    utilization: int | None = None
    memory_used: int | None = None
    power_mw: int | None = None
    energy_mj: int | None = None
    temperature_c: int | None = None
    processes: tuple[GpuProcess, ...] | None = None
    throttle_reasons: int | None = None
    ecc_corrected: int | None = None
    ecc_uncorrected: int | None = None
    xids: list[int] = field(default_factory=list)
    unsupported: set[str] = field(default_factory=set)
    errors: dict[str, str] = field(default_factory=dict)

    def as_dict(self) -> dict[str, object]:
        """The reading as a JSON-ready dict (integers, strings, lists, null)."""
        return {
            "minor": self.minor,
            "utilization": self.utilization,
            "memory_used": self.memory_used,
            "power_mw": self.power_mw,
            "energy_mj": self.energy_mj,
            "temperature_c": self.temperature_c,
            "processes": None
            if self.processes is None
            else [{"pid": p.pid, "used_memory": p.used_memory} for p in self.processes],
            "throttle_reasons": self.throttle_reasons,
            "ecc_corrected": self.ecc_corrected,
            "ecc_uncorrected": self.ecc_uncorrected,
            "xids": list(self.xids),
            "unsupported": sorted(self.unsupported),
            "errors": dict(sorted(self.errors.items())),
        }


def _text(value: Any) -> str:
    return value.decode() if isinstance(value, bytes) else str(value)


class Nvml:
    """An initialised NVML session: the GPUs in NVML order and their handles."""

    def __init__(self) -> None:
        self._pynvml: Any = None
        self._handles: dict[int, Any] = {}
        self._event_set: Any = None
        self._no_energy: set[int] = set()  # minors whose energy counter is NOT_SUPPORTED
        self.gpus: list[GpuInfo] = []
        self.driver_version = ""
        self.errors = 0  # NVML calls that failed (NOT_SUPPORTED is not a failure)

    def open(self) -> None:
        """Load and initialise NVML and read each GPU's static facts."""
        try:
            import pynvml
        except ImportError as e:
            raise NvmlUnavailable(
                "nvidia-ml-py is not installed (pip install 'computeproof[gpu]')"
            ) from e
        self._pynvml = pynvml
        try:
            pynvml.nvmlInit()
        except pynvml.NVMLError as e:
            code = getattr(e, "value", None)
            if code == NVML_ERROR_LIBRARY_NOT_FOUND:
                raise NvmlUnavailable("NVML library libnvidia-ml.so.1 not found", code) from e
            raise NvmlUnavailable(f"nvmlInit failed: {e}", code) from e
        try:
            self.driver_version = _text(pynvml.nvmlSystemGetDriverVersion())
            gpus = []
            for index in range(pynvml.nvmlDeviceGetCount()):
                handle = pynvml.nvmlDeviceGetHandleByIndex(index)
                minor = int(pynvml.nvmlDeviceGetMinorNumber(handle))
                pci = pynvml.nvmlDeviceGetPciInfo(handle)
                memory = pynvml.nvmlDeviceGetMemoryInfo(handle)
                gpus.append(
                    GpuInfo(
                        index=index,
                        minor=minor,
                        uuid=_text(pynvml.nvmlDeviceGetUUID(handle)),
                        name=_text(pynvml.nvmlDeviceGetName(handle)),
                        pci_bus_id=_text(pci.busId),
                        memory_total=int(memory.total),
                    )
                )
                self._handles[minor] = handle
            self.gpus = gpus
        except pynvml.NVMLError as e:
            self.close()
            raise NvmlError(f"cannot enumerate GPUs: {e}", getattr(e, "value", None)) from e
        self._open_events()

    def _open_events(self) -> None:
        pynvml = self._pynvml
        try:
            event_set = pynvml.nvmlEventSetCreate()
            for handle in self._handles.values():
                try:
                    pynvml.nvmlDeviceRegisterEvents(handle, XID_EVENT, event_set)
                except pynvml.NVMLError:
                    continue  # XID events not supported on this GPU
            self._event_set = event_set
        except pynvml.NVMLError:
            self._event_set = None

    def close(self) -> None:
        """Shut NVML down; errors on the way out are ignored."""
        if self._pynvml is None:
            return
        try:
            if self._event_set is not None:
                self._pynvml.nvmlEventSetFree(self._event_set)
            self._pynvml.nvmlShutdown()
        except self._pynvml.NVMLError:
            pass
        self._event_set = None
        self._handles = {}

    def read(self, energy: Collection[int] | None = None) -> dict[int, GpuReading]:
        """Read every GPU once; returns readings keyed by minor number. The energy counter
        is read only for the minors in ``energy`` (None: all of them)."""
        pynvml = self._pynvml
        readings: dict[int, GpuReading] = {}
        for minor, handle in self._handles.items():
            readings[minor] = self._read_one(minor, handle, energy is None or minor in energy)
        # XID events arrive on one set for all GPUs; drain what is pending, never wait.
        if self._event_set is not None:
            for _ in range(64):
                try:
                    data = pynvml.nvmlEventSetWait(self._event_set, 0)
                except pynvml.NVMLError:
                    break  # NVML_ERROR_TIMEOUT: nothing pending
                if data.eventType & XID_EVENT:
                    for minor, handle in self._handles.items():
                        if _same_handle(handle, data.device):
                            readings[minor].xids.append(int(data.eventData))
        return readings

    def read_energy(self, minors: Collection[int]) -> dict[int, int | None]:
        """Only the energy counters (mJ) of ``minors``; None where it could not be read."""
        out: dict[int, int | None] = {}
        for minor in minors:
            handle = self._handles.get(minor)
            if handle is None or minor in self._no_energy:
                out[minor] = None
                continue
            reading = GpuReading(minor=minor)
            self._read_energy(reading, handle)
            out[minor] = reading.energy_mj
        return out

    def _get(self, reading: GpuReading, handle: Any, name: str, call: Any, *args: Any) -> Any:
        """``call(handle, *args)``; NVML errors noted in ``reading`` and None returned."""
        pynvml = self._pynvml
        try:
            return call(handle, *args)
        except pynvml.NVMLError as e:
            if getattr(e, "value", None) == NVML_ERROR_NOT_SUPPORTED:
                reading.unsupported.add(name)
            else:
                reading.errors[name] = str(e)
                self.errors += 1
            return None

    def _read_energy(self, reading: GpuReading, handle: Any) -> None:
        energy = self._get(
            reading, handle, "energy_mj", self._pynvml.nvmlDeviceGetTotalEnergyConsumption
        )
        reading.energy_mj = None if energy is None else int(energy)
        if "energy_mj" in reading.unsupported:
            self._no_energy.add(reading.minor)

    def _read_one(self, minor: int, handle: Any, energy: bool = True) -> GpuReading:
        pynvml = self._pynvml
        reading = GpuReading(minor=minor)

        def get(name: str, call: Any, *args: Any) -> Any:
            return self._get(reading, handle, name, call, *args)

        util = get("utilization", pynvml.nvmlDeviceGetUtilizationRates)
        reading.utilization = None if util is None else int(util.gpu)
        memory = get("memory_used", pynvml.nvmlDeviceGetMemoryInfo)
        reading.memory_used = None if memory is None else int(memory.used)
        power = get("power_mw", pynvml.nvmlDeviceGetPowerUsage)
        reading.power_mw = None if power is None else int(power)
        if minor in self._no_energy:
            reading.unsupported.add("energy_mj")
        elif energy:
            self._read_energy(reading, handle)
        temperature = get("temperature_c", pynvml.nvmlDeviceGetTemperature, NVML_TEMPERATURE_GPU)
        reading.temperature_c = None if temperature is None else int(temperature)
        procs = get("processes", pynvml.nvmlDeviceGetComputeRunningProcesses)
        if procs is not None:
            reading.processes = tuple(
                GpuProcess(int(p.pid), None if p.usedGpuMemory is None else int(p.usedGpuMemory))
                for p in procs
            )
        throttle = get("throttle_reasons", pynvml.nvmlDeviceGetCurrentClocksEventReasons)
        reading.throttle_reasons = None if throttle is None else int(throttle)
        corrected = get(
            "ecc_corrected",
            pynvml.nvmlDeviceGetTotalEccErrors,
            pynvml.NVML_MEMORY_ERROR_TYPE_CORRECTED,
            pynvml.NVML_VOLATILE_ECC,
        )
        reading.ecc_corrected = None if corrected is None else int(corrected)
        uncorrected = get(
            "ecc_uncorrected",
            pynvml.nvmlDeviceGetTotalEccErrors,
            pynvml.NVML_MEMORY_ERROR_TYPE_UNCORRECTED,
            pynvml.NVML_VOLATILE_ECC,
        )
        reading.ecc_uncorrected = None if uncorrected is None else int(uncorrected)
        return reading


def _same_handle(a: Any, b: Any) -> bool:
    """Whether two nvmlDevice_t handles (ctypes pointers) point at the same device."""
    import ctypes

    return bool(ctypes.cast(a, ctypes.c_void_p).value == ctypes.cast(b, ctypes.c_void_p).value)
