"""One exclusive lock file: what serializes a check-then-write across processes on a host
(the ledger key's last signed checkpoint, a witness's state, the collector's anchoring)."""

from __future__ import annotations

import contextlib
import fcntl
import os
from collections.abc import Callable, Iterator

from computeproof.errors import ComputeProofError


@contextlib.contextmanager
def exclusive(path: str, error: Callable[[str], ComputeProofError]) -> Iterator[None]:
    """Hold an exclusive flock on ``path`` (created 0600); ``error(message)`` is raised,
    naming the file, when it cannot be opened. Closing the descriptor releases it."""
    try:
        fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o600)
    except OSError as e:
        raise error(f"cannot open the lock {path}: {e.strerror}") from e
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        yield
    finally:
        os.close(fd)
