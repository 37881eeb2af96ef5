"""The last checkpoint the ledger signed, kept outside its database, beside its key.

A ledger never signs two inconsistent checkpoints. Its database cannot keep that promise
alone: put an older backup in place of the ledger file and the checkpoint table goes back
with it, so the ledger would sign a smaller tree, or a different one of a size it signed
before, as if nothing had happened. The newest signed note is therefore also written to
``<ledger key>.checkpoint`` (a temporary file, fsync, rename, fsync of the directory)
before it leaves the ledger, and every later checkpoint must extend it: a size at least as
large and a consistency proof from it. Whoever can replace this file can take the key
beside it; it is backed up with the key, never restored with the database.

Signing takes ``<ledger key>.checkpoint.lock`` (flock) for the check, the signature and
the write, so two processes signing at once cannot write the file backwards.
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Iterator

from computeproof.checkpoint import Checkpoint, read_checkpoint
from computeproof.errors import CheckpointError
from computeproof.filelock import exclusive

SUFFIX = ".checkpoint"
RESTORE_HINT = (
    "stop the forwarders, replay what they forwarded since the backup "
    "(`computeproof forward --replay-since DATE` on each host) and run "
    "`computeproof ledger verify` (conf/INSTALL.md, 'Restoring the ledger')"
)


def state_path(ledger_key_path: str) -> str:
    """Where the last signed checkpoint of the ledger with this key is kept."""
    return ledger_key_path + SUFFIX


class LastSigned:
    """The last checkpoint note a ledger key signed, in a file of its own."""

    def __init__(self, path: str) -> None:
        self.path = path
        self._cache: tuple[tuple[int, int, int], Checkpoint, str] | None = None

    def read(self) -> tuple[Checkpoint, str] | None:
        """The last signed checkpoint (parsed, not verified: the caller checks the
        signature) and its note; None when the ledger never signed one here. Cached by
        the file's identity, so a check on every append costs one stat."""
        try:
            st = os.stat(self.path)
        except FileNotFoundError:
            self._cache = None
            return None
        except OSError as e:
            raise CheckpointError(
                f"cannot read the last signed checkpoint {self.path}: {e.strerror}"
            ) from e
        ident = (st.st_ino, st.st_mtime_ns, st.st_size)
        if self._cache is not None and self._cache[0] == ident:
            return self._cache[1], self._cache[2]
        try:
            with open(self.path, encoding="utf-8") as f:
                note = f.read()
        except FileNotFoundError:
            return None
        except (OSError, UnicodeDecodeError) as e:
            raise CheckpointError(
                f"cannot read the last signed checkpoint {self.path}: {e}; restore it from "
                "the backup of the ledger key"
            ) from e
        try:
            cp = read_checkpoint(note)
        except CheckpointError as e:
            raise CheckpointError(
                f"the last signed checkpoint {self.path} is damaged ({e}); restore it from "
                "the backup of the ledger key"
            ) from e
        self._cache = (ident, cp, note)
        return cp, note

    def write(self, note: str) -> None:
        """Replace the file with ``note``, durably (the rename is fsynced too)."""
        directory = os.path.dirname(os.path.abspath(self.path))
        tmp = f"{self.path}.tmp.{os.getpid()}"
        try:
            fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
            try:
                os.write(fd, note.encode("utf-8"))
                os.fsync(fd)
            finally:
                os.close(fd)
            os.replace(tmp, self.path)
            dfd = os.open(directory, os.O_RDONLY | os.O_DIRECTORY)
            try:
                os.fsync(dfd)
            finally:
                os.close(dfd)
        except OSError as e:
            with contextlib.suppress(OSError):
                os.unlink(tmp)
            raise CheckpointError(
                f"cannot write the last signed checkpoint {self.path}: {e.strerror}; "
                "nothing was signed"
            ) from e
        self._cache = None

    @contextlib.contextmanager
    def locked(self) -> Iterator[None]:
        """Hold the lock that serializes check, signature and write across processes."""
        with exclusive(self.path + ".lock", CheckpointError):
            yield
