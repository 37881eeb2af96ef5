"""The few os and os.path helpers the Slurm hooks need, over the posix module.

``import os`` costs a hook about 1 ms of CPU (it imports _collections_abc, posixpath and
stat), a tenth of the whole hook: see bench/bench_hook.py. The hook path calls the posix
module (which os re-exports) directly and these helpers for the Python-level parts of
os. They behave like their os namesakes for the absolute paths the hooks use.
"""

import posix


def join(path: str, *parts: str) -> str:
    """os.path.join."""
    for part in parts:
        if part.startswith("/") or not path:
            path = part
        elif path.endswith("/"):
            path += part
        else:
            path += "/" + part
    return path


def dirname(path: str) -> str:
    """os.path.dirname."""
    head = path[: path.rfind("/") + 1]
    return head.rstrip("/") or head


def basename(path: str) -> str:
    """os.path.basename."""
    return path[path.rfind("/") + 1 :]


def exists(path: str) -> bool:
    """os.path.exists."""
    try:
        posix.stat(path)
    except (OSError, ValueError):
        return False
    return True


def lexists(path: str) -> bool:
    """os.path.lexists."""
    try:
        posix.lstat(path)
    except (OSError, ValueError):
        return False
    return True


def is_dir(path: str) -> bool:
    """os.path.isdir."""
    try:
        return (posix.stat(path).st_mode & 0o170000) == 0o040000  # S_IFDIR
    except (OSError, ValueError):
        return False


def make_dirs(path: str, mode: int = 0o700) -> None:
    """os.makedirs(path, mode, exist_ok=True)."""
    try:
        posix.mkdir(path, mode)
    except FileNotFoundError:
        parent = dirname(path.rstrip("/"))
        if not parent or parent == path:
            raise
        make_dirs(parent, mode)
        make_dirs(path, mode)
    except FileExistsError:
        if not is_dir(path):
            raise


def environ() -> dict[str, str]:
    """The process environment as os.environ decodes it (UTF-8, surrogateescape)."""
    return {
        k.decode("utf-8", "surrogateescape"): v.decode("utf-8", "surrogateescape")
        for k, v in posix.environ.items()
    }


def setenv(name: str, value: str) -> None:
    """Set a variable for child processes and for an os module imported later."""
    raw = value.encode("utf-8", "surrogateescape")
    posix.putenv(name, raw)
    posix.environ[name.encode("utf-8", "surrogateescape")] = raw


def node_path(path: str, env: dict[str, str], host: str) -> str:
    """``path`` with ``%n`` replaced by this node's name, as Slurm's ``SlurmdSpoolDir``
    does: ``SLURMD_NODENAME`` (set for hooks and agents of a slurmd node), else ``host``.
    One configuration file then serves several nodes, or several slurmd on one host."""
    if "%n" not in path:
        return path
    node = env.get("SLURMD_NODENAME") or host
    if not node or "/" in node or node in (".", ".."):
        raise ValueError(f"cannot put node name {node!r} into path {path}")
    return path.replace("%n", node)
