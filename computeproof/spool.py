"""The local durable spool: hooks write events here, the forwarder drains it.

Layout under the spool directory (root-only, 0700)::

    tmp/    files being written; never forwarded, swept when older than an hour
    new/    <event id>.json, complete and fsynced, waiting to be forwarded
    failed/ <event id>.json and <event id>.why for events the ledger rejected

A write is tmp file -> fsync -> rename into new/ -> fsync of new/, so a crash leaves
either nothing or a whole event in new/, never a half-written one. Standard library
only, over the posix module rather than os (computeproof.posixfs): the hooks import this.
"""

import posix

from computeproof.canonical import canonical_bytes
from computeproof.errors import SpoolError
from computeproof.posixfs import basename, is_dir, join, make_dirs

TYPE_CHECKING = False
if TYPE_CHECKING:
    from collections.abc import Iterator


def _fsync_dir(path: str) -> None:
    fd = posix.open(path, posix.O_RDONLY | posix.O_DIRECTORY)
    try:
        posix.fsync(fd)
    finally:
        posix.close(fd)


_CREATE = posix.O_WRONLY | posix.O_CREAT | posix.O_TRUNC


class Spool:
    """A spool directory. Creating it makes the subdirectories (mode 0700)."""

    def __init__(self, path: str) -> None:
        self.path = path
        self.tmp = join(path, "tmp")
        self.new = join(path, "new")
        self.failed = join(path, "failed")

    def ensure(self) -> None:
        """Create the spool directories if missing."""
        try:
            for d in (self.path, self.tmp, self.new, self.failed):
                make_dirs(d)
        except OSError as e:
            raise SpoolError(f"cannot create spool directory {self.path}: {e.strerror}") from e

    def write(self, event: dict[str, object]) -> str:
        """Write one event durably; return its path in new/. Idempotent per event id."""
        data = canonical_bytes(event) + b"\n"
        name = f"{event['id']}.json"
        final = f"{self.new}/{name}"
        tmp = f"{self.tmp}/{name}.{posix.getpid()}"
        try:
            try:
                fd = posix.open(tmp, _CREATE, 0o600)
            except FileNotFoundError:
                self.ensure()
                fd = posix.open(tmp, _CREATE, 0o600)
            try:
                view = memoryview(data)
                while view:
                    view = view[posix.write(fd, view) :]
                posix.fsync(fd)
            finally:
                posix.close(fd)
            posix.rename(tmp, final)
            _fsync_dir(self.new)
        except OSError as e:
            try:  # noqa: SIM105 - contextlib costs the hook 2 ms of imports
                posix.unlink(tmp)
            except OSError:
                pass
            raise SpoolError(f"cannot write event to spool {self.path}: {e.strerror}") from e
        return final

    def pending(self) -> "Iterator[str]":
        """Paths of events waiting in new/, oldest first."""
        try:
            entries = [e for e in posix.scandir(self.new) if e.name.endswith(".json")]
        except FileNotFoundError:
            return iter(())
        entries.sort(key=lambda e: (e.stat().st_mtime_ns, e.name))
        return (e.path for e in entries)

    def count_pending(self) -> int:
        """How many events wait in new/."""
        try:
            return sum(1 for n in posix.listdir(self.new) if n.endswith(".json"))
        except FileNotFoundError:
            return 0

    def done(self, path: str) -> None:
        """Remove a forwarded event from new/."""
        try:  # noqa: SIM105 - contextlib costs the hook 2 ms of imports
            posix.unlink(path)
        except FileNotFoundError:
            pass

    def fail(self, path: str, why: str) -> None:
        """Move a rejected event to failed/ with the reason beside it."""
        self.ensure()
        base = basename(path)
        with open(f"{self.failed}/{base[:-5]}.why", "w") as f:
            f.write(why + "\n")
        posix.replace(path, f"{self.failed}/{base}")

    def record_forward_status(self, line: str) -> None:
        """Remember the last forwarding pass's outcome for `spool status`."""
        self.ensure()
        tmp = f"{self.tmp}/forward-status"
        with open(tmp, "w") as f:
            f.write(line + "\n")
        posix.replace(tmp, join(self.path, "forward-status"))

    def forward_status(self) -> str | None:
        """The last forwarding pass's outcome, if any."""
        try:
            with open(join(self.path, "forward-status")) as f:
                return f.read().strip()
        except OSError:
            return None

    def retry_failed(self) -> int:
        """Move rejected events back to new/ for another forwarding pass; return how many."""
        moved = 0
        for name in sorted(posix.listdir(self.failed)) if is_dir(self.failed) else []:
            path = f"{self.failed}/{name}"
            if name.endswith(".json"):
                posix.replace(path, f"{self.new}/{name}")
                moved += 1
            elif name.endswith(".why"):
                posix.unlink(path)
        return moved

    def failures(self) -> list[tuple[str, str]]:
        """(event file, reason) for each event in failed/."""
        out = []
        try:
            names = sorted(posix.listdir(self.failed))
        except FileNotFoundError:
            return []
        for n in names:
            if n.endswith(".why"):
                with open(f"{self.failed}/{n}") as f:
                    out.append((n[:-4] + ".json", f.read().strip()))
        return out


FAILURE_COUNTER = "hook-failures"  # written by the Slurm hooks (slurm_hooks/hooks.py)


def read_failure_counter(directory: str) -> "tuple[int, str | None]":
    """The hooks' failure count kept in ``directory`` and the latest failure's line.

    The hooks keep one in the spool and one on the run directory's tmpfs, which still
    counts when the spool's disk is full."""
    count = 0
    try:
        with open(join(directory, FAILURE_COUNTER), "rb") as f:
            raw = f.read(64).strip()
        count = int(raw) if raw.isdigit() else 0
    except OSError:
        pass
    last = None
    try:
        with open(join(directory, FAILURE_COUNTER + ".last"), "rb") as f:
            last = f.read(4096).decode("utf-8", "replace").strip() or None
    except OSError:
        pass
    return count, last
