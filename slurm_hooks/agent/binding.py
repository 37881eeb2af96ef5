"""GPU-to-job bindings the Prolog writes: ``<run_dir>/<node>/jobs/<job_id>.json``.

A binding is canonical JSON::

    {"cluster": "c", "job": "100_4", "job_id": 101, "run": 0, "uid": 1000,
     "user": "alice", "account": "physics", "node": "c1", "time": "2026-01-01T00:00:00Z",
     "gpus": [{"slurm_index": 0, "minor": 4, "device": "/dev/nvidia4"}]}

GPUs are named by minor number, never by NVML index. The Epilog removes the file when the
job ends on the node.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass, field

from computeproof.config import Config
from computeproof.errors import AgentError


class BindingError(AgentError):
    """A binding file is unreadable or malformed."""


@dataclass(frozen=True)
class BoundGpu:
    """One GPU of a job: Slurm's index within the job and the device minor number."""

    slurm_index: int
    minor: int
    device: str


@dataclass(frozen=True)
class Binding:
    """A job's GPUs on one node, as the Prolog recorded them."""

    cluster: str
    job: str
    job_id: int
    run: int
    uid: int
    user: str
    node: str
    gpus: tuple[BoundGpu, ...]
    time: str
    account: str = ""  # Slurm account, when the Prolog recorded it (metrics labels)

    @property
    def minors(self) -> tuple[int, ...]:
        """The bound GPUs' minor numbers."""
        return tuple(g.minor for g in self.gpus)


def _int(data: dict[str, object], name: str, path: str) -> int:
    value = data.get(name)
    if not isinstance(value, int) or isinstance(value, bool) or value < 0:
        raise BindingError(f"{path}: '{name}' must be a non-negative integer, not {value!r}")
    return value


def _str(data: dict[str, object], name: str, path: str) -> str:
    value = data.get(name, "")
    if not isinstance(value, str):
        raise BindingError(f"{path}: '{name}' must be a string, not {value!r}")
    return value


def parse_binding(data: object, path: str = "<binding>") -> Binding:
    """Validate a decoded binding document and return it as a Binding."""
    if not isinstance(data, dict):
        raise BindingError(f"{path}: a binding must be a JSON object")
    gpus_raw = data.get("gpus")
    if not isinstance(gpus_raw, list):
        raise BindingError(f"{path}: 'gpus' must be a list")
    gpus = []
    for g in gpus_raw:
        if not isinstance(g, dict):
            raise BindingError(f"{path}: each GPU must be a JSON object")
        gpus.append(
            BoundGpu(_int(g, "slurm_index", path), _int(g, "minor", path), _str(g, "device", path))
        )
    job_id = _int(data, "job_id", path)
    return Binding(
        cluster=_str(data, "cluster", path),
        job=_str(data, "job", path) or str(job_id),
        job_id=job_id,
        run=_int(data, "run", path) if "run" in data else 0,
        uid=_int(data, "uid", path),
        user=_str(data, "user", path),
        node=_str(data, "node", path),
        gpus=tuple(gpus),
        time=_str(data, "time", path),
        account=_str(data, "account", path),
    )


def read_binding(path: str) -> Binding:
    """Read and validate one binding file."""
    try:
        with open(path, "rb") as f:
            data = json.loads(f.read())
    except FileNotFoundError as e:
        raise BindingError(f"binding {path} does not exist") from e
    except OSError as e:
        raise BindingError(f"cannot read binding {path}: {e.strerror}") from e
    except ValueError as e:
        raise BindingError(f"binding {path} is not valid JSON: {e}") from e
    return parse_binding(data, path)


def jobs_dir(config: Config, node: str) -> str:
    """The directory where the Prolog writes ``node``'s bindings."""
    return os.path.dirname(config.binding_path(node, 0))


@dataclass
class BindingScan:
    """One look at a node's bindings directory.

    ``complete`` is False when the directory could not be listed (EMFILE, EIO): then no
    job may be taken as ended. ``unreadable`` holds the job ids whose file exists but could
    not be read or parsed: such a job is not ended either, only not (re)loaded."""

    bindings: dict[int, Binding] = field(default_factory=dict)
    problems: list[str] = field(default_factory=list)
    complete: bool = True
    unreadable: set[int] = field(default_factory=set)


def scan_bindings(config: Config, node: str) -> BindingScan:
    """All current bindings on ``node`` by job id, what could not be read, and whether the
    directory listing itself succeeded."""
    directory = jobs_dir(config, node)
    scan = BindingScan()
    try:
        names = os.listdir(directory)
    except FileNotFoundError:
        return scan
    except OSError as e:
        scan.complete = False
        scan.problems.append(f"cannot list {directory}: {e.strerror}")
        return scan
    for name in sorted(names):
        if not name.endswith(".json") or name.startswith("."):
            continue
        try:
            binding = read_binding(os.path.join(directory, name))
        except BindingError as e:
            if "does not exist" not in str(e):  # removed by the Epilog meanwhile
                scan.problems.append(str(e))
                stem = name[: -len(".json")]
                if stem.isdigit():
                    scan.unreadable.add(int(stem))
            continue
        scan.bindings[binding.job_id] = binding
    return scan


def load_bindings(config: Config, node: str) -> tuple[dict[int, Binding], list[str]]:
    """All current bindings on ``node`` by job id, and one message per unreadable file."""
    scan = scan_bindings(config, node)
    return scan.bindings, scan.problems


def jobs_by_minor(bindings: dict[int, Binding]) -> dict[int, list[int]]:
    """Minor number -> the job ids bound to that GPU (more than one when shared)."""
    out: dict[int, list[int]] = {}
    for job_id in sorted(bindings):
        for minor in bindings[job_id].minors:
            out.setdefault(minor, []).append(job_id)
    return out
