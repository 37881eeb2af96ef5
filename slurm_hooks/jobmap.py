"""GPU-to-job files other monitoring reads, kept by the Prolog and Epilog (opt-in).

Both come from the same binding the agent samples by, so every tool names the same job:

- Princeton jobstats (``jobstats_gpustat_dir``, jobstats reads /run/gpustat): for each GPU
  the job holds, a file named by the GPU's UUID and one named by its NVML index, each
  holding ``JOBID UID`` on one line. Their GPU exporter labels its series with it.
- NVIDIA dcgm-exporter ``--hpc-job-mapping-dir`` (``dcgm_job_mapping_dir``): a file per
  GPU named by its NVML index, one job id a line (several when jobs share the GPU). It
  adds an ``hpc_job`` label to that GPU's series.

The Prolog knows a job's GPUs by device minor number; the UUID and NVML index come from
``<run_dir>/<node>/gpus`` (``minor index uuid`` lines the agent writes from NVML), else from
/proc/driver/nvidia/gpus (the driver lists minor and UUID per PCI bus id, and NVML
numbers GPUs in PCI bus id order). The Epilog needs nothing but the job id: it removes the
lines and files that name it.

Standard library only and cheap (posix, fcntl; no os, no json): it runs inside the hooks.
Nothing here raises: each function returns the problems it met, for the hook to log; a
monitoring aid must never fail a job.
"""

import posix

from computeproof import posixfs

TYPE_CHECKING = False
if TYPE_CHECKING:
    from typing import Protocol

    class _Config(Protocol):
        run_dir: str
        jobstats_gpustat_dir: str
        dcgm_job_mapping_dir: str


DRIVER_GPUS = "/proc/driver/nvidia/gpus"
GPU_MAP = "gpus"  # the agent's file in <run_dir>/<node>/ (daemon.GPU_MAP)
LOCK = ".lock"


def _read(path: str, limit: int = 1 << 16) -> str:
    fd = posix.open(path, posix.O_RDONLY)
    try:
        return posix.read(fd, limit).decode("utf-8", "replace")
    finally:
        posix.close(fd)


def _write(path: str, text: str) -> None:
    """Replace ``path`` atomically with a world-readable file (exporters run unprivileged)."""
    tmp = f"{posixfs.dirname(path)}/.{posixfs.basename(path)}.{posix.getpid()}"
    flags = posix.O_WRONLY | posix.O_CREAT | posix.O_TRUNC | posix.O_NOFOLLOW
    fd = posix.open(tmp, flags, 0o644)
    try:
        posix.fchmod(fd, 0o644)
        posix.write(fd, text.encode())
    finally:
        posix.close(fd)
    posix.rename(tmp, path)


def _ensure_dir(path: str) -> None:
    if not posixfs.is_dir(path):
        posixfs.make_dirs(path, 0o755)
        posix.chmod(path, 0o755)  # whatever the umask: the exporters read it unprivileged


def gpu_identities(
    run_dir: str, node: str, driver_gpus: str = DRIVER_GPUS
) -> dict[int, tuple[int, str]]:
    """minor number -> (NVML index, UUID) of this node's GPUs: from the agent's map, else
    from the driver's /proc listing; empty when neither is there."""
    out: dict[int, tuple[int, str]] = {}
    try:
        for line in _read(posixfs.join(run_dir, node, GPU_MAP)).splitlines():
            words = line.split()
            if len(words) == 3 and words[0].isdigit() and words[1].isdigit():
                out[int(words[0])] = (int(words[1]), words[2])
    except OSError:
        pass
    if out:
        return {m: (i, u) for m, (i, u) in out.items() if "/" not in u and not u.startswith(".")}
    try:
        buses = sorted(posix.listdir(driver_gpus))
    except OSError:
        return out
    for index, bus in enumerate(buses):
        minor, uuid = None, ""
        try:
            text = _read(posixfs.join(driver_gpus, bus, "information"))
        except OSError:
            continue
        for line in text.splitlines():
            key, _, value = line.partition(":")
            if key.strip() == "Device Minor" and value.strip().isdigit():
                minor = int(value.strip())
            elif key.strip() == "GPU UUID":
                uuid = value.strip()
        if minor is not None and uuid:
            out[minor] = (index, uuid)
    return {m: (i, u) for m, (i, u) in out.items() if "/" not in u and not u.startswith(".")}


def _locked(directory: str) -> int:
    """An exclusive lock on ``directory``'s lock file (released by closing the fd)."""
    import fcntl

    fd = posix.open(posixfs.join(directory, LOCK), posix.O_RDWR | posix.O_CREAT, 0o644)
    fcntl.flock(fd, fcntl.LOCK_EX)
    return fd


def job_started(
    run_dir: str,
    node: str,
    gpustat_dir: str,
    dcgm_dir: str,
    job_id: int,
    uid: int | None,
    minors: list[int],
    driver_gpus: str = DRIVER_GPUS,
) -> list[str]:
    """Prolog: record that job ``job_id`` of ``uid`` holds the GPUs ``minors``."""
    if not minors or not (gpustat_dir or dcgm_dir):
        return []
    problems: list[str] = []
    ids = gpu_identities(run_dir, node, driver_gpus)
    known = [ids[m] for m in minors if m in ids]
    if len(known) < len(minors):
        missing = sorted(m for m in minors if m not in ids)
        problems.append(
            f"no NVML index or UUID known for GPU minor(s) {missing} (is the agent running?); "
            "their jobstats/dcgm job files are not written"
        )
    if gpustat_dir and known:
        line = f"{job_id} {uid if uid is not None else ''}".rstrip() + "\n"
        try:
            _ensure_dir(gpustat_dir)
            for index, uuid in known:
                _write(posixfs.join(gpustat_dir, uuid), line)
                _write(posixfs.join(gpustat_dir, str(index)), line)
        except OSError as e:
            problems.append(f"cannot write jobstats files in {gpustat_dir}: {e.strerror}")
    if dcgm_dir and known:
        try:
            _ensure_dir(dcgm_dir)
            lock = _locked(dcgm_dir)
            try:
                for index, _uuid in known:
                    path = posixfs.join(dcgm_dir, str(index))
                    try:
                        jobs = _read(path).split()
                    except FileNotFoundError:
                        jobs = []
                    if str(job_id) not in jobs:
                        _write(path, "".join(f"{j}\n" for j in [*jobs, str(job_id)]))
            finally:
                posix.close(lock)
        except OSError as e:
            problems.append(f"cannot write dcgm job files in {dcgm_dir}: {e.strerror}")
    return problems


def job_ended(gpustat_dir: str, dcgm_dir: str, job_id: int) -> list[str]:
    """Epilog: remove every jobstats file and dcgm line that names job ``job_id``."""
    problems: list[str] = []
    mine = str(job_id)
    if gpustat_dir:
        try:
            for name in posix.listdir(gpustat_dir):
                if name.startswith("."):
                    continue
                path = posixfs.join(gpustat_dir, name)
                try:
                    words = _read(path, 256).split()
                except OSError:
                    continue
                if words[:1] == [mine]:
                    posix.unlink(path)
        except FileNotFoundError:
            pass
        except OSError as e:
            problems.append(f"cannot clear jobstats files in {gpustat_dir}: {e.strerror}")
    if dcgm_dir:
        try:
            lock = _locked(dcgm_dir)
            try:
                for name in posix.listdir(dcgm_dir):
                    if not name.isdigit():
                        continue
                    path = posixfs.join(dcgm_dir, name)
                    jobs = _read(path).split()
                    if mine not in jobs:
                        continue
                    rest = [j for j in jobs if j != mine]
                    if rest:
                        _write(path, "".join(f"{j}\n" for j in rest))
                    else:
                        posix.unlink(path)
            finally:
                posix.close(lock)
        except FileNotFoundError:
            pass
        except OSError as e:
            problems.append(f"cannot clear dcgm job files in {dcgm_dir}: {e.strerror}")
    return problems


def prolog(
    config: "_Config", node: str, job_id: int, uid: int | None, gpus: list[dict[str, object]]
) -> list[str]:
    """:func:`job_started` for the Prolog's binding GPUs (``{"minor": N, ...}`` each)."""
    minors = [m for g in gpus if isinstance(m := g.get("minor"), int)]
    return job_started(
        config.run_dir,
        node,
        config.jobstats_gpustat_dir,
        config.dcgm_job_mapping_dir,
        job_id,
        uid,
        minors,
    )


def epilog(config: "_Config", job_id: int) -> list[str]:
    """:func:`job_ended` with the configured directories."""
    return job_ended(config.jobstats_gpustat_dir, config.dcgm_job_mapping_dir, job_id)
