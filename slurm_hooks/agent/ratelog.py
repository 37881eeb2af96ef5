"""Log lines a job user can provoke: escaped, and rate-limited per cause.

Anything a caller sends (progress text, artifact paths, an unknown op) may hold newlines,
terminal escapes or bytes that are not valid Unicode; :func:`printable` makes such a value
one safe line. A caller can also provoke the same complaint thousands of times a second;
:class:`RateLimitedLog` writes at most ``burst`` lines per cause per window and then one
line saying how many it held back. Causes are fixed strings chosen by our code, never
caller data, so the table of causes stays small. Standard library only (the job tool
imports :func:`printable`).
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable

MAX_CAUSES = 256


def printable(text: str, limit: int = 200) -> str:
    """``text`` as one line: control, format and unpaired surrogate characters escaped
    (``\\n``, ``\\x1b``, ``\\udcff``), cut to ``limit`` characters with a marker."""
    cut = text[:limit]
    out = "".join(ch if ch.isprintable() else repr(ch)[1:-1] for ch in cut)
    if len(text) > limit:
        out += f"...[{len(text) - limit} more characters]"
    return out


class RateLimitedLog:
    """At most ``burst`` lines per cause per ``window_s`` seconds on ``logger``."""

    def __init__(
        self,
        logger: logging.Logger,
        burst: int = 5,
        window_s: float = 60.0,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.logger = logger
        self.burst = burst
        self.window_s = window_s
        self.clock = clock
        self._lock = threading.Lock()
        # cause -> [window start, lines written in it, lines held back in it]
        self._causes: dict[str, list[float]] = {}

    def log(self, level: int, cause: str, message: str, *args: object) -> bool:
        """Log ``message % args`` under ``cause`` unless over the limit; True if written."""
        now = self.clock()
        held_back = 0
        with self._lock:
            entry = self._causes.get(cause)
            if entry is None or now - entry[0] >= self.window_s:
                if entry is not None:
                    held_back = int(entry[2])
                elif len(self._causes) >= MAX_CAUSES:
                    self._causes.clear()
                entry = [now, 0.0, 0.0]
                self._causes[cause] = entry
            if entry[1] >= self.burst:
                entry[2] += 1
                return False
            entry[1] += 1
        if held_back:
            self.logger.log(
                level, "%s: %d more like this in the last %g s not logged",
                cause, held_back, self.window_s,
            )  # fmt: skip
        self.logger.log(level, message, *args)
        return True

    def warning(self, cause: str, message: str, *args: object) -> bool:
        """:meth:`log` at WARNING."""
        return self.log(logging.WARNING, cause, message, *args)

    def error(self, cause: str, message: str, *args: object) -> bool:
        """:meth:`log` at ERROR."""
        return self.log(logging.ERROR, cause, message, *args)
