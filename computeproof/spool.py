"""The local durable spool: hooks write events here, the forwarder drains it.

Layout under the spool directory (root-only, 0700)::

    tmp/       files being written; never forwarded, swept when older than an hour
    new/       <event id>.json, complete and fsynced, waiting to be forwarded; or a
               batch, <first event id>.jsonl: one event a line (the controller's collector
               writes each poll's events so: one file and one sync, not one an event)
    failed/    <event id>.json and <event id>.why for events the ledger rejected
    forwarded/ <leaf index>.<event id>.json: events the ledger committed, kept for the
               retention period (mtime = when forwarded) so that `computeproof forward
               --replay-since` can send them again, in log order, after the ledger is
               restored from a backup; swept by the forwarder. A batch is kept whole as
               <lowest leaf>.<name>.jsonl with <lowest leaf>.<name>.leaves beside it (the
               leaf index of each of its lines)

A write is tmp file -> fsync -> rename into new/ -> fsync of new/, so a crash leaves
either nothing or a whole event (or batch) in new/, never a half-written one. Standard
library only, over the posix module rather than os (computeproof.posixfs): the hooks
import this.
"""

import posix

from computeproof.canonical import canonical_bytes, canonical_bytes_fast
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
BATCH = ".jsonl"  # a file of several events, one a line


def is_spooled(name: str) -> bool:
    """Whether a file name in new/, failed/ or forwarded/ holds events."""
    return name.endswith(".json") or name.endswith(BATCH)


def read_events(path: str) -> "list[bytes]":
    """The events of a spool file, each as its bytes (a batch holds one a line)."""
    with open(path, "rb") as f:
        data = f.read()
    if not path.endswith(BATCH):
        return [data]
    return [line for line in data.split(b"\n") if line]


def _write_whole(path: str, data: bytes) -> None:
    """Write ``path`` and fsync it (the caller renames it into place)."""
    fd = posix.open(path, _CREATE, 0o600)
    try:
        view = memoryview(data)
        while view:
            view = view[posix.write(fd, view) :]
        posix.fsync(fd)
    finally:
        posix.close(fd)


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

    def write_batch(self, events: "list[dict[str, object]]", name: str = "") -> str:
        """Write several events as one file in new/ (``name``, else the first event's id,
        + .jsonl), whole or not at all: one file and one sync for all of them. Returns its
        path. The forwarder takes a batch as it takes single events. Encoded through json's
        C encoder where that gives the reference's bytes (canonical_bytes_fast): the
        writers of batches are long-lived."""
        data = b"".join(canonical_bytes_fast(event) + b"\n" for event in events)
        final = f"{self.new}/{name or events[0]['id']}{BATCH}"
        tmp = f"{self.tmp}/{basename(final)}.{posix.getpid()}"
        try:
            try:
                _write_whole(tmp, data)
            except FileNotFoundError:
                self.ensure()
                _write_whole(tmp, data)
            posix.rename(tmp, final)
            _fsync_dir(self.new)
        except OSError as e:
            try:  # noqa: SIM105 - contextlib costs the hook 2 ms of imports
                posix.unlink(tmp)
            except OSError:
                pass
            raise SpoolError(f"cannot write events to spool {self.path}: {e.strerror}") from e
        return final

    def pending(self) -> "Iterator[str]":
        """Paths of event files (single events and batches) waiting in new/, oldest first."""
        try:
            entries = [e for e in posix.scandir(self.new) if is_spooled(e.name)]
        except FileNotFoundError:
            return iter(())
        entries.sort(key=lambda e: (e.stat().st_mtime_ns, e.name))
        return (e.path for e in entries)

    def _count(self, directory: str) -> int:
        """How many events the files of ``directory`` hold (a batch: its lines)."""
        try:
            names = posix.listdir(directory)
        except FileNotFoundError:
            return 0
        count = 0
        for n in names:
            if n.endswith(".json"):
                count += 1
            elif n.endswith(BATCH):
                try:  # noqa: SIM105 - contextlib costs the hook 2 ms of imports
                    count += len(read_events(f"{directory}/{n}"))
                except FileNotFoundError:
                    pass  # forwarded meanwhile
        return count

    def count_pending(self) -> int:
        """How many events wait in new/."""
        return self._count(self.new)

    def done(self, path: str) -> None:
        """Remove a forwarded event from new/."""
        try:  # noqa: SIM105 - contextlib costs the hook 2 ms of imports
            posix.unlink(path)
        except FileNotFoundError:
            pass

    def keep(self, path: str, leaf: int, leaves: "list[int] | None" = None) -> None:
        """Move a forwarded event from new/ to forwarded/, named by the leaf index the
        ledger gave it and dated now (its retention counts from its forwarding). A batch
        is named by its lowest leaf, and ``leaves`` (one a line) are written beside it."""
        name = f"{leaf if leaf >= 0 else 'x'}.{basename(path)}"
        if leaves is not None:
            try:
                self._write_leaves(f"{self.forwarded}/{name[: -len(BATCH)]}.leaves", leaves)
            except OSError as e:
                raise SpoolError(f"cannot keep {path} in {self.forwarded}: {e.strerror}") from e
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

    def _write_leaves(self, path: str, leaves: "list[int]") -> None:
        try:
            _write_whole(path, " ".join(str(n) for n in leaves).encode())
        except FileNotFoundError:
            self.ensure()
            _write_whole(path, " ".join(str(n) for n in leaves).encode())

    def forwarded_since(self, since: float) -> "list[str]":
        """Paths of event files forwarded at or after POSIX time ``since``, in log order
        of their (lowest) leaf index; any without one last, by time."""
        return [label for _, _, label, _ in self._forwarded(since, expand=False)]

    def forwarded_events_since(self, since: float) -> "list[tuple[str, bytes]]":
        """(label, event bytes) of every event forwarded at or after POSIX time ``since``,
        in log order (the leaf index the ledger gave each, batches' events included; any
        without one last, by time)."""
        return [(label, data) for _, _, label, data in self._forwarded(since, expand=True)]

    def _forwarded(self, since: float, expand: bool) -> "list[tuple[int, float, str, bytes]]":
        found: list[tuple[int, float, str, bytes]] = []
        try:
            entries = list(posix.scandir(self.forwarded))
        except FileNotFoundError:
            return []
        for e in entries:
            if not is_spooled(e.name):
                continue
            try:
                mtime = e.stat().st_mtime
            except FileNotFoundError:
                continue
            if mtime < since:
                continue
            leaf_text = e.name.split(".", 1)[0]
            leaf = int(leaf_text) if leaf_text.isdigit() else 1 << 62
            if not expand:
                found.append((leaf, mtime, e.path, b""))
                continue
            try:
                events = read_events(e.path)
            except FileNotFoundError:
                continue  # swept meanwhile
            leaves = [leaf] * len(events)
            if e.name.endswith(BATCH):
                try:
                    with open(e.path[: -len(BATCH)] + ".leaves", "rb") as f:
                        listed = [int(n) for n in f.read().split()]
                    if len(listed) == len(events):
                        leaves = listed
                except (OSError, ValueError):
                    pass  # the batch's lowest leaf for all: its order within stays
            for n, data in zip(leaves, events, strict=True):
                found.append((n, mtime, f"{e.name}", data))
        found.sort(key=lambda f: (f[0], f[1], f[2]))
        return found

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
            kept = is_spooled(entry.name) or entry.name.endswith(".leaves")
            if kept and entry.stat().st_mtime < now - retention_s:
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
        return self._count(self.forwarded)

    def fail(self, path: str, why: str) -> None:
        """Move a rejected event to failed/ with the reason beside it."""
        self.ensure()
        base = basename(path)
        with open(f"{self.failed}/{base.rsplit('.', 1)[0]}.why", "w") as f:
            f.write(why + "\n")
        posix.replace(path, f"{self.failed}/{base}")

    def fail_event(self, event_id: str, data: bytes, why: str) -> None:
        """Write one rejected event of a batch to failed/ with the reason beside it."""
        self.ensure()
        with open(f"{self.failed}/{event_id}.why", "w") as f:
            f.write(why + "\n")
        tmp = f"{self.tmp}/{event_id}.json.{posix.getpid()}"
        _write_whole(tmp, data)
        posix.replace(tmp, f"{self.failed}/{event_id}.json")

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
            if is_spooled(name):
                moved += len(read_events(path))
                posix.replace(path, f"{self.new}/{name}")
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
                    batch = n[:-4] + BATCH in names
                    out.append((n[:-4] + (BATCH if batch else ".json"), f.read().strip()))
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
