"""Worker process pools that never fork a multi-threaded process.

A fork copies whatever locks the process's other threads held at that instant, so a
child can deadlock (Python 3.12+ warns). The agent forwards from a thread and the
collector serves from several, so every pool comes from here: a process with one thread
(the CLI) forks, the cheapest start; otherwise the workers come from a forkserver that
preloads the modules the workers run.
"""

from __future__ import annotations

import multiprocessing
import os
from collections.abc import Sequence
from concurrent.futures import ProcessPoolExecutor


def process_pool(workers: int, preload: Sequence[str] = ()) -> ProcessPoolExecutor:
    """A pool of ``workers`` processes; ``preload`` names the modules its tasks live in."""
    if threads() == 1:
        return ProcessPoolExecutor(workers, mp_context=multiprocessing.get_context("fork"))
    context = multiprocessing.get_context("forkserver")
    context.set_forkserver_preload(list(preload))
    return ProcessPoolExecutor(workers, mp_context=context)


def threads() -> int:
    """This process's threads, as the kernel counts them (C threads included)."""
    try:
        return len(os.listdir("/proc/self/task"))
    except OSError:
        import threading

        return threading.active_count()
