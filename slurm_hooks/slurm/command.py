"""Run a Slurm client command with a hard timeout, without the subprocess module.

subprocess imports signal, threading, selectors and contextlib (~15 ms, more than the
interpreter's start); os.posix_spawn + poll does the same job for one short command.
Errors (spawn failure, timeout, non-zero exit) are raised as SlurmError.
"""

from __future__ import annotations

import os
import select
import time

from slurm_hooks.errors import SlurmError

_SIGKILL = 9
# A Slurm client needs its config (SLURM_CONF) but nothing of the caller's PATH etc.
_PASSED_ENV = ("SLURM_CONF", "TZ", "LANG", "LC_ALL")


def _kill(pid: int) -> None:
    """Kill the command's whole session (it was spawned with setsid) and reap it."""
    try:  # noqa: SIM105 - contextlib is an import the hooks do not pay for
        os.killpg(pid, _SIGKILL)
    except OSError:
        pass
    os.waitpid(pid, 0)


def run(
    argv: list[str], timeout: float, env: dict[str, str] | None = None, limit: int = 64 << 20
) -> bytes:
    """Run ``argv`` (absolute path), return its stdout; SlurmError on failure or timeout."""
    if env is None:
        env = {k: os.environ[k] for k in _PASSED_ENV if k in os.environ}
    deadline = time.monotonic() + timeout
    out_r, out_w = os.pipe()
    err_r, err_w = os.pipe()
    try:
        pid = os.posix_spawn(
            argv[0],
            argv,
            env,
            file_actions=[
                (os.POSIX_SPAWN_OPEN, 0, "/dev/null", os.O_RDONLY, 0),
                (os.POSIX_SPAWN_DUP2, out_w, 1),
                (os.POSIX_SPAWN_DUP2, err_w, 2),
            ],
            setsid=True,
        )
    except OSError as e:
        for fd in (out_r, out_w, err_r, err_w):
            os.close(fd)
        raise SlurmError(f"cannot run {argv[0]}: {e.strerror}") from e
    os.close(out_w)
    os.close(err_w)
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
                data = os.read(fd, 65536)
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
        os.close(out_r)
        os.close(err_r)
    if timed_out:
        _kill(pid)
        raise SlurmError(f"{os.path.basename(argv[0])} timed out after {timeout:g} s")
    # The pipes are closed; the child is exiting. Bound the wait anyway.
    while True:
        wpid, status = os.waitpid(pid, os.WNOHANG)
        if wpid:
            break
        if time.monotonic() > deadline:
            _kill(pid)
            raise SlurmError(f"{os.path.basename(argv[0])} timed out after {timeout:g} s")
        time.sleep(0.001)
    code = os.waitstatus_to_exitcode(status)
    if code != 0:
        err = b"".join(chunks[err_r]).decode("utf-8", "replace").strip().splitlines()
        why = err[-1] if err else f"exit status {code}"
        raise SlurmError(f"{os.path.basename(argv[0])} failed: {why}")
    return b"".join(chunks[out_r])
