"""The ledger's worker pool never forks the process that owns it.

The agent forwards from a thread; a fork of a multi-threaded process copies whatever locks
the other threads held at that instant (a deadlock waiting to happen; Python 3.12+ warns
with a DeprecationWarning). The pool's workers must come from a forkserver instead.
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[3]

# Runs in a fresh interpreter: a thread is alive when the pool starts, as in the agent, and
# DeprecationWarnings are errors. Prints the command lines of this process's children.
SCRIPT = """
import os, threading
from computeproof.ledger import Ledger
from computeproof.store.sqlite import SQLiteStore
from computeproof.synthetic import host_signers, signed_jobs

stop = threading.Event()
forwarder = threading.Thread(target=stop.wait)
forwarder.start()
try:
    ledger = Ledger(SQLiteStore({db!r}), "test.pool", {db!r} + ".key", workers=2)
    for host, signer in host_signers(3).items():
        ledger.enroll(signer.public_raw, [host])
    envelopes = list(signed_jobs(1, 120, 3))
    result = ledger.append(envelopes)
    assert len(result.accepted) == len(envelopes), result.rejected[:3]
    assert ledger.verify().ok
    me = str(os.getpid())
    for pid in filter(str.isdigit, os.listdir("/proc")):
        try:
            stat = open(f"/proc/{{pid}}/stat").read()
            cmdline = open(f"/proc/{{pid}}/cmdline", "rb").read().replace(b"\\0", b" ")
        except OSError:
            continue
        if stat.rpartition(")")[2].split()[1] == me:
            print(cmdline.decode(errors="replace"))
    ledger.close()
finally:
    stop.set()
"""


def test_workers_are_not_forked_from_a_threaded_process(tmp_path: Path) -> None:
    proc = subprocess.run(
        [sys.executable, "-W", "error::DeprecationWarning", "-c",
         SCRIPT.format(db=str(tmp_path / "l.db"))],
        cwd=REPO, capture_output=True, text=True, timeout=300, check=False,
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr
    children = proc.stdout.splitlines()
    assert children, "the ledger used no worker processes"
    # a forked worker runs this very command line; the forkserver and the resource tracker
    # that multiprocessing starts instead run its own modules
    assert all("from multiprocessing." in c for c in children), children


def test_every_pool_of_the_library_comes_from_the_one_helper() -> None:
    """Reports, receipt checks, synthetic data and the bench fork workers too: each goes
    through computeproof.workers.process_pool, which picks the start method."""
    import ast

    offenders = []
    for path in sorted((REPO / "computeproof").rglob("*.py")):
        if path.name == "workers.py":
            continue
        for node in ast.walk(ast.parse(path.read_text())):
            func = node.func if isinstance(node, ast.Call) else None
            name = getattr(func, "id", None) or getattr(func, "attr", None)
            if name == "ProcessPoolExecutor":
                offenders.append(f"{path.relative_to(REPO)}:{node.lineno}")
    assert offenders == []


def test_process_pool_forks_only_a_single_threaded_process() -> None:
    script = (
        "import threading\n"
        "from computeproof.workers import process_pool\n"
        "with process_pool(1) as p: print(p._mp_context.get_start_method())\n"
        "stop = threading.Event(); t = threading.Thread(target=stop.wait); t.start()\n"
        "with process_pool(1, ['computeproof.workers']) as p:\n"
        "    print(p._mp_context.get_start_method())\n"
        "stop.set()\n"
    )
    out = subprocess.run(
        [sys.executable, "-c", script], cwd=REPO, capture_output=True, text=True, check=True
    ).stdout.split()
    assert out == ["fork", "forkserver"]
