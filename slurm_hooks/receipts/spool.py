"""The local durable spool: hooks write events here, the forwarder drains it.

Layout under the spool directory (root-only, 0700)::

    tmp/    files being written; never forwarded, swept when older than an hour
    new/    <event id>.json, complete and fsynced, waiting to be forwarded
    failed/ <event id>.json and <event id>.why for events the ledger rejected

A write is tmp file -> fsync -> rename into new/ -> fsync of new/, so a crash leaves
either nothing or a whole event in new/, never a half-written one. Standard library
only: the hooks import this.
"""

from __future__ import annotations

import os

from slurm_hooks.errors import SpoolError
from slurm_hooks.receipts.canonical import canonical_bytes

TYPE_CHECKING = False
if TYPE_CHECKING:
    from collections.abc import Iterator


def _fsync_dir(path: str) -> None:
    fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


class Spool:
    """A spool directory. Creating it makes the subdirectories (mode 0700)."""

    def __init__(self, path: str) -> None:
        self.path = path
        self.tmp = os.path.join(path, "tmp")
        self.new = os.path.join(path, "new")
        self.failed = os.path.join(path, "failed")

    def ensure(self) -> None:
        """Create the spool directories if missing."""
        try:
            for d in (self.path, self.tmp, self.new, self.failed):
                os.makedirs(d, mode=0o700, exist_ok=True)
        except OSError as e:
            raise SpoolError(f"cannot create spool directory {self.path}: {e.strerror}") from e

    def write(self, event: dict[str, object]) -> str:
        """Write one event durably; return its path in new/. Idempotent per event id."""
        data = canonical_bytes(event) + b"\n"
        name = f"{event['id']}.json"
        final = os.path.join(self.new, name)
        tmp = os.path.join(self.tmp, f"{name}.{os.getpid()}")
        try:
            try:
                fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
            except FileNotFoundError:
                self.ensure()
                fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
            try:
                view = memoryview(data)
                while view:
                    view = view[os.write(fd, view) :]
                os.fsync(fd)
            finally:
                os.close(fd)
            os.rename(tmp, final)
            _fsync_dir(self.new)
        except OSError as e:
            try:  # noqa: SIM105 - contextlib costs the hook 2 ms of imports
                os.unlink(tmp)
            except OSError:
                pass
            raise SpoolError(f"cannot write event to spool {self.path}: {e.strerror}") from e
        return final

    def pending(self) -> Iterator[str]:
        """Paths of events waiting in new/, oldest first."""
        try:
            entries = [e for e in os.scandir(self.new) if e.name.endswith(".json")]
        except FileNotFoundError:
            return iter(())
        entries.sort(key=lambda e: (e.stat().st_mtime_ns, e.name))
        return (e.path for e in entries)

    def count_pending(self) -> int:
        """How many events wait in new/."""
        try:
            return sum(1 for n in os.listdir(self.new) if n.endswith(".json"))
        except FileNotFoundError:
            return 0

    def done(self, path: str) -> None:
        """Remove a forwarded event from new/."""
        try:  # noqa: SIM105 - contextlib costs the hook 2 ms of imports
            os.unlink(path)
        except FileNotFoundError:
            pass

    def fail(self, path: str, why: str) -> None:
        """Move a rejected event to failed/ with the reason beside it."""
        self.ensure()
        base = os.path.basename(path)
        with open(os.path.join(self.failed, base[:-5] + ".why"), "w") as f:
            f.write(why + "\n")
        os.replace(path, os.path.join(self.failed, base))

    def record_forward_status(self, line: str) -> None:
        """Remember the last forwarding pass's outcome for `spool status`."""
        self.ensure()
        tmp = os.path.join(self.tmp, "forward-status")
        with open(tmp, "w") as f:
            f.write(line + "\n")
        os.replace(tmp, os.path.join(self.path, "forward-status"))

    def forward_status(self) -> str | None:
        """The last forwarding pass's outcome, if any."""
        try:
            with open(os.path.join(self.path, "forward-status")) as f:
                return f.read().strip()
        except OSError:
            return None

    def retry_failed(self) -> int:
        """Move rejected events back to new/ for another forwarding pass; return how many."""
        moved = 0
        for name in sorted(os.listdir(self.failed)) if os.path.isdir(self.failed) else []:
            path = os.path.join(self.failed, name)
            if name.endswith(".json"):
                os.replace(path, os.path.join(self.new, name))
                moved += 1
            elif name.endswith(".why"):
                os.unlink(path)
        return moved

    def failures(self) -> list[tuple[str, str]]:
        """(event file, reason) for each event in failed/."""
        out = []
        try:
            names = sorted(os.listdir(self.failed))
        except FileNotFoundError:
            return []
        for n in names:
            if n.endswith(".why"):
                with open(os.path.join(self.failed, n)) as f:
                    out.append((n[:-4] + ".json", f.read().strip()))
        return out
