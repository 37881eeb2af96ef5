"""How a hook (or the controller's collector) reports a failure: one line to syslog and
stderr, and a counter an admin can alert on.

The counter is kept twice, under the same names, ``hook-failures`` (a decimal count) and
``hook-failures.last`` (the latest line): in the spool, where `spool status` has always
read it, and in the run directory (tmpfs on a real node), because the failure that most
needs counting is a full spool disk, where the spool's own counter cannot be written.
Standard library only, over posix: the hooks import this.
"""

import posix
import sys

from computeproof import posixfs

FAILURE_COUNTER = "hook-failures"


def failure_line(kind: str, message: str, job_id: int | None = None) -> str:
    """The one line a failure is reported as."""
    return f"computeproof {kind}: job {job_id if job_id is not None else '?'}: {message}"


def log(kind: str, message: str, job_id: int | None = None) -> None:
    """One line to syslog (daemon facility, via /dev/log) and stderr; never raises."""
    line = failure_line(kind, message, job_id)
    try:
        import syslog

        syslog.openlog("computeproof-hook", syslog.LOG_PID, syslog.LOG_DAEMON)
        # surrogates (a non-UTF-8 path in the message) would make syslog refuse the line
        syslog.syslog(syslog.LOG_ERR, line.encode("utf-8", "backslashreplace").decode("utf-8"))
    except Exception:
        pass
    try:
        sys.stderr.write(line + "\n")
        sys.stderr.flush()
    except Exception:
        pass


def _bump(directory: str, line: str) -> bool:
    """Add one to ``<directory>/hook-failures`` under an flock and keep ``line`` as the
    last; False when the directory cannot take it (missing, read-only, full)."""
    try:
        import fcntl

        path = posixfs.join(directory, FAILURE_COUNTER)
        fd = posix.open(path, posix.O_RDWR | posix.O_CREAT, 0o600)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX)
            raw = posix.read(fd, 64).strip()
            n = int(raw) + 1 if raw.isdigit() else 1
            posix.lseek(fd, 0, 0)
            posix.ftruncate(fd, 0)
            if posix.write(fd, b"%d\n" % n) <= 0:
                return False
            if line:
                data = (line + "\n").encode("utf-8", "backslashreplace")
                last = posix.open(path + ".last", posix.O_WRONLY | posix.O_CREAT | posix.O_TRUNC,
                                  0o600)  # fmt: skip
                try:
                    posix.write(last, data)
                finally:
                    posix.close(last)
        finally:
            posix.close(fd)
    except (OSError, ValueError):
        return False
    return True


def count_failure(spool_dir: str, line: str = "", run_dir: str | None = None) -> None:
    """Count a failure in ``<spool_dir>/hook-failures`` and, when given, in
    ``<run_dir>/hook-failures``; best effort, never raises.

    The run dir's counter is created with its directory when missing (tmpfs after a
    reboot); the spool's is not (a spool that is not there is itself the failure).
    """
    _bump(spool_dir, line)
    if run_dir and not _bump(run_dir, line):
        try:
            posixfs.make_dirs(run_dir, 0o755)
        except OSError:
            return
        _bump(run_dir, line)
