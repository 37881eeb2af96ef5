"""The local durable spool: hooks write events here, the forwarder drains it.

Layout under the spool directory (root-only, 0700)::

    tmp/       files being written; never forwarded, swept when older than an hour
    new/       <event id>.json, complete and fsynced, waiting to be forwarded
    failed/    <event id>.json and <event id>.why for events the ledger rejected
    forwarded/ <leaf index>.<event id>.json: events the ledger committed, kept for the
               retention period (mtime = when forwarded) so that `computeproof forward
               --replay-since` can send them again, in log order, after the ledger is
               restored from a backup; swept by the forwarder

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
        self.forwarded = join(path, "forwarded")

    def ensure(self) -> None:
        """Create the spool directories if missing."""
        try:
            for d in (self.path, self.tmp, self.new, self.failed, self.forwarded):
                make_dirs(d)
        except OSError as e:
            raise SpoolError(f"cannot create spool directory {self.path}: {e.strerror}") from e

    def write(self, event: dict[str, object]) -> str:
        """Write one event durably; return its path in new/. Idempotent per event id."""
        return self.write_many([event])[0]

    def write_many(self, events: "list[dict[str, object]]") -> list[str]:
        """Write events durably, each whole or not at all; their paths in new/.

        Every file is written before any is synced: on a journalling filesystem the first
        fsync commits the others' data too, so a batch costs about one sync, not one an
        event (the controller's collector writes three events a job)."""
        # every event's bytes first: one canonical JSON can refuse leaves no file behind
        encoded = [(f"{event['id']}.json", canonical_bytes(event) + b"\n") for event in events]
        opened: list[tuple[int, str, str]] = []  # (fd, tmp path, final path), fd open
        renamed = 0
        try:
            try:
                for name, data in encoded:
                    tmp = f"{self.tmp}/{name}.{posix.getpid()}"
                    try:
                        fd = posix.open(tmp, _CREATE, 0o600)
                    except FileNotFoundError:
                        self.ensure()
                        fd = posix.open(tmp, _CREATE, 0o600)
                    opened.append((fd, tmp, f"{self.new}/{name}"))
                    view = memoryview(data)
                    while view:
                        view = view[posix.write(fd, view) :]
                for fd, _, _ in opened:
                    posix.fsync(fd)
            finally:
                for fd, _, _ in opened:
                    posix.close(fd)
            for _, tmp, final in opened:
                posix.rename(tmp, final)
                renamed += 1
            _fsync_dir(self.new)
        except OSError as e:
            for _, tmp, _ in opened[renamed:]:  # nothing half-written is left behind
                try:  # noqa: SIM105 - contextlib costs the hook 2 ms of imports
                    posix.unlink(tmp)
                except OSError:
                    pass
            raise SpoolError(f"cannot write event to spool {self.path}: {e.strerror}") from e
        return [f"{self.new}/{event['id']}.json" for event in events]

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

    def keep(self, path: str, leaf: int) -> None:
        """Move a forwarded event from new/ to forwarded/, named by the leaf index the
        ledger gave it and dated now (its retention counts from its forwarding)."""
        name = f"{leaf if leaf >= 0 else 'x'}.{basename(path)}"
        try:
            posix.utime(path)
            posix.rename(path, f"{self.forwarded}/{name}")
        except FileNotFoundError:
            try:
                self.ensure()
                posix.rename(path, f"{self.forwarded}/{name}")
            except FileNotFoundError:  # forwarded by a concurrent forwarder
                pass
            except OSError as e:
                raise SpoolError(f"cannot keep {path} in {self.forwarded}: {e.strerror}") from e
        except OSError as e:
            raise SpoolError(f"cannot keep {path} in {self.forwarded}: {e.strerror}") from e

    def forwarded_since(self, since: float) -> "list[str]":
        """Paths of events forwarded at or after POSIX time ``since``, in log order (the
        leaf index the ledger gave each; any without one last, by time)."""
        found: list[tuple[int, float, str, str]] = []
        try:
            entries = list(posix.scandir(self.forwarded))
        except FileNotFoundError:
            return []
        for e in entries:
            if not e.name.endswith(".json"):
                continue
            mtime = e.stat().st_mtime
            if mtime < since:
                continue
            leaf_text = e.name.split(".", 1)[0]
            leaf = int(leaf_text) if leaf_text.isdigit() else 1 << 62
            found.append((leaf, mtime, e.name, e.path))
        found.sort()
        return [f[3] for f in found]

    def sweep_forwarded(self, retention_s: float, now: float, every_s: float = 3600.0) -> int:
        """Remove events forwarded more than ``retention_s`` seconds before ``now``; at
        most once every ``every_s`` seconds (a marker file's time says when it last ran),
        so a forwarding pass every few seconds does not list a week of events each time.
        Returns how many were removed."""
        marker = join(self.forwarded, ".swept")
        try:
            if now - posix.stat(marker).st_mtime < every_s:
                return 0
        except FileNotFoundError:
            pass
        except OSError as e:
            raise SpoolError(f"cannot read {marker}: {e.strerror}") from e
        removed = 0
        try:
            entries = list(posix.scandir(self.forwarded))
        except FileNotFoundError:
            return 0
        for entry in entries:
            if entry.name.endswith(".json") and entry.stat().st_mtime < now - retention_s:
                try:
                    posix.unlink(entry.path)
                    removed += 1
                except FileNotFoundError:
                    pass
        try:
            posix.close(posix.open(marker, _CREATE, 0o600))
            posix.utime(marker, (now, now))
        except OSError as e:
            raise SpoolError(f"cannot write {marker}: {e.strerror}") from e
        return removed

    def count_forwarded(self) -> int:
        """How many forwarded events are kept."""
        try:
            return sum(1 for n in posix.listdir(self.forwarded) if n.endswith(".json"))
        except FileNotFoundError:
            return 0

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
