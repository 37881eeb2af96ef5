"""Run a Slurm client command with a hard timeout, without the subprocess module.

subprocess imports signal, threading, selectors and contextlib (~15 ms, more than the
interpreter's start); posix_spawn + poll does the same job for one short command.
It calls the posix module, not os (computeproof.posixfs says why). Errors (spawn failure,
timeout, non-zero exit) are raised as SlurmError.
"""

import posix
import select
import time

from computeproof.errors import SlurmError
from computeproof.posixfs import basename

TYPE_CHECKING = False
if TYPE_CHECKING:
    from collections.abc import Mapping

_SIGKILL = 9
# A Slurm client needs its config (SLURM_CONF) but nothing of the caller's PATH etc.
_PASSED_ENV = ("SLURM_CONF", "LANG", "LC_ALL")


def client_env(environ: "Mapping[str, str]") -> dict[str, str]:
    """What a Slurm client is given of ``environ``: SLURM_CONF and the locale, and TZ=UTC.

    Slurm prints and reads times without a zone; in UTC no hour reads twice when clocks
    go back, so every time we read from a client is parsed as UTC (scontrol.parse_time)."""
    env = {k: environ[k] for k in _PASSED_ENV if k in environ}
    env["TZ"] = "UTC"
    return env


def _kill(pid: int) -> None:
    """Kill the command's whole session (it was spawned with setsid) and reap it."""
    try:  # noqa: SIM105 - contextlib is an import the hooks do not pay for
        posix.killpg(pid, _SIGKILL)
    except OSError:
        pass
    posix.waitpid(pid, 0)


def run(
    argv: list[str], timeout: float, env: dict[str, str] | None = None, limit: int = 64 << 20
) -> bytes:
    """Run ``argv`` (absolute path), return its stdout; SlurmError on failure or timeout.
    ``env`` None passes :func:`client_env` of this process's environment."""
    if env is None:
        import os  # os.environ, which tests and daemons may have changed; hooks pass env

        env = client_env(os.environ)
    deadline = time.monotonic() + timeout
    out_r, out_w = posix.pipe()
    err_r, err_w = posix.pipe()
    try:
        pid = posix.posix_spawn(
            argv[0],
            argv,
            env,
            file_actions=[
                (posix.POSIX_SPAWN_OPEN, 0, "/dev/null", posix.O_RDONLY, 0),
                (posix.POSIX_SPAWN_DUP2, out_w, 1),
                (posix.POSIX_SPAWN_DUP2, err_w, 2),
            ],
            setsid=True,
        )
    except OSError as e:
        for fd in (out_r, out_w, err_r, err_w):
            posix.close(fd)
        raise SlurmError(f"cannot run {argv[0]}: {e.strerror}") from e
    posix.close(out_w)
    posix.close(err_w)
    chunks: dict[int, list[bytes]] = {out_r: [], err_r: []}
    size = 0
    poller = select.poll()
    poller.register(out_r, select.POLLIN)
    poller.register(err_r, select.POLLIN)
    open_fds = 2
    timed_out = False
    try:
        while open_fds:
            left = deadline - time.monotonic()
            if left <= 0:
                timed_out = True
                break
            for fd, _ in poller.poll(max(1, int(left * 1000))):
                data = posix.read(fd, 65536)
                if not data:
                    poller.unregister(fd)
                    open_fds -= 1
                    continue
                chunks[fd].append(data)
                size += len(data)
                if size > limit:
                    timed_out = True
                    open_fds = 0
                    break
    finally:
        posix.close(out_r)
        posix.close(err_r)
    if timed_out:
        _kill(pid)
        raise SlurmError(f"{basename(argv[0])} timed out after {timeout:g} s")
    # The pipes are closed; the child is exiting. Bound the wait anyway.
    while True:
        wpid, status = posix.waitpid(pid, posix.WNOHANG)
        if wpid:
            break
        if time.monotonic() > deadline:
            _kill(pid)
            raise SlurmError(f"{basename(argv[0])} timed out after {timeout:g} s")
        time.sleep(0.001)
    code = posix.waitstatus_to_exitcode(status)
    if code != 0:
        err = b"".join(chunks[err_r]).decode("utf-8", "replace").strip().splitlines()
        why = err[-1] if err else f"exit status {code}"
        if "configuration source" in why:  # no slurm.conf where the client looked
            why += " (set SLURM_CONF to the cluster's slurm.conf)"
        raise SlurmError(f"{basename(argv[0])} failed: {why}")
    return b"".join(chunks[out_r])
