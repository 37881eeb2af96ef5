"""A witness's durable memory: the latest checkpoint it cosigned, per log.

One file per log (named by the SHA-256 of its origin) holding the log-signed checkpoint
note, replaced by a temporary file, fsync, rename and fsync of the directory before the
cosignature is returned, as the protocol requires. Checking a request against the stored
checkpoint and storing the new one happen under one flock per log (threads of one
process take it through their own descriptors, so they exclude each other too): two
requests can never both pass the check and then store a smaller size last.

Refused requests whose log signature verified are kept in ``refused/`` (at most
``MAX_EVIDENCE`` files) as evidence of the log's misbehaviour.
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import time
from collections.abc import Iterator

from computeproof.checkpoint import Checkpoint, read_checkpoint
from computeproof.errors import WitnessError
from computeproof.filelock import exclusive

MAX_EVIDENCE = 1000


class WitnessState:
    """The directory where a witness keeps the latest checkpoint of each log."""

    def __init__(self, directory: str) -> None:
        self.directory = directory
        try:
            os.makedirs(directory, mode=0o700, exist_ok=True)
            os.makedirs(os.path.join(directory, "refused"), mode=0o700, exist_ok=True)
        except OSError as e:
            raise WitnessError(f"cannot create witness state directory {directory}: "
                               f"{e.strerror}") from e  # fmt: skip

    def _path(self, origin: str) -> str:
        return os.path.join(self.directory, hashlib.sha256(origin.encode()).hexdigest())

    @contextlib.contextmanager
    def locked(self, origin: str) -> Iterator[None]:
        """Hold the log's lock for a check-then-store."""
        with exclusive(self._path(origin) + ".lock", WitnessError):
            yield

    def latest(self, origin: str) -> tuple[Checkpoint, str] | None:
        """The latest checkpoint cosigned for ``origin`` and its note, or None."""
        try:
            with open(self._path(origin), encoding="utf-8") as f:
                note = f.read()
        except FileNotFoundError:
            return None
        except (OSError, UnicodeDecodeError) as e:
            raise WitnessError(f"cannot read the witness state of {origin!r}: {e}") from e
        cp = read_checkpoint(note)
        if cp.origin != origin:
            raise WitnessError(f"the witness state file of {origin!r} holds another log's")
        return cp, note

    def store(self, origin: str, note: str) -> None:
        """Durably make ``note`` the latest checkpoint of ``origin``."""
        path = self._path(origin)
        tmp = f"{path}.tmp.{os.getpid()}.{time.monotonic_ns()}"
        try:
            fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
            try:
                os.write(fd, note.encode("utf-8"))
                os.fsync(fd)
            finally:
                os.close(fd)
            os.replace(tmp, path)
            dfd = os.open(self.directory, os.O_RDONLY | os.O_DIRECTORY)
            try:
                os.fsync(dfd)
            finally:
                os.close(dfd)
        except OSError as e:
            with contextlib.suppress(OSError):
                os.unlink(tmp)
            raise WitnessError(f"cannot store the witness state of {origin!r}: {e.strerror}") from e

    def keep_evidence(self, status: int, request: bytes) -> None:
        """Keep a refused, log-signed request (best effort, bounded)."""
        directory = os.path.join(self.directory, "refused")
        with contextlib.suppress(OSError):
            if len(os.listdir(directory)) >= MAX_EVIDENCE:
                return
            name = os.path.join(directory, f"{time.time_ns()}-{status}.txt")
            fd = os.open(name, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
            try:
                os.write(fd, request)
            finally:
                os.close(fd)
