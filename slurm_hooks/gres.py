"""Slurm's GPU index -> device file -> device minor number, from gres.conf.

SLURM_JOB_GPUS holds GRES indices: positions in the node's list of configured GPU
device files, in gres.conf order. NVML numbers GPUs differently, so the binding is made
by the device file's minor number (os.stat(...).st_rdev), which the agent matches to the
NVML device (nvmlDeviceGetMinorNumber). gres.conf sits next to slurm.conf (SLURM_CONF).
Standard library only: the Prolog imports this.
"""

import posix

from computeproof.errors import SlurmError
from computeproof.posixfs import dirname, join
from slurm_hooks.slurmenv import expand_hostlist


def gres_conf_path(slurm_conf: str | None) -> str:
    """gres.conf beside slurm.conf (SLURM_CONF), else Slurm's default /etc/slurm/gres.conf."""
    base = dirname(slurm_conf) if slurm_conf else "/etc/slurm"
    return join(base, "gres.conf")


def parse_gres_line(line: str) -> dict[str, str]:
    """The key=value pairs of one gres.conf line, keys lower-cased (Slurm ignores case)."""
    line = line.split("#", 1)[0].strip()
    out: dict[str, str] = {}
    for word in line.split():
        key, sep, value = word.partition("=")
        if not sep:
            raise SlurmError(f"gres.conf: {word!r} is not key=value")
        out[key.lower()] = value
    return out


def gpu_device_files(text: str, node: str) -> list[str]:
    """Device files of ``node``'s GPUs, in GRES index order, from gres.conf text."""
    files: list[str] = []
    for raw in text.splitlines():
        fields = parse_gres_line(raw)
        if fields.get("name") != "gpu":
            continue
        names = fields.get("nodename")
        if names is not None and node not in expand_hostlist(names):
            continue
        if "file" in fields:
            files.extend(expand_hostlist(fields["file"]))
    return files


def device_minor(path: str) -> int:
    """The minor number of a character device file; SlurmError if it is not one."""
    try:
        st = posix.stat(path)
    except OSError as e:
        raise SlurmError(f"GPU device {path}: {e.strerror}") from e
    if (st.st_mode & 0o170000) != 0o020000:  # S_IFCHR, without importing stat
        raise SlurmError(f"GPU device {path} is not a character device")
    return posix.minor(st.st_rdev)


def resolve_gpus(indices: list[int], files: list[str]) -> list[dict[str, object]]:
    """One {"slurm_index", "minor", "device"} per index; minor/device None if unresolvable."""
    out: list[dict[str, object]] = []
    for index in indices:
        device: str | None = files[index] if index < len(files) else None
        minor: int | None = None
        if device is not None:
            try:
                minor = device_minor(device)
            except SlurmError:
                minor = None
        out.append({"slurm_index": index, "minor": minor, "device": device})
    return out
