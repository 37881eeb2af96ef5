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
