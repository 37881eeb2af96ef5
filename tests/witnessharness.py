"""A real witness (`computeproof witness serve`) on 127.0.0.1, as the witness and dashboard
tests run it."""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Sequence
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]


class WitnessProcess:
    """One `computeproof witness serve` on 127.0.0.1 that witnesses the logs whose verifier
    keys are ``logs``; the kernel picks its port at the first start."""

    def __init__(self, directory: Path, name: str, logs: Sequence[str]) -> None:
        self.directory = directory
        self.name = name
        self.logs = list(logs)
        self.proc: subprocess.Popen[str] | None = None
        self.vkey = ""
        self.url = ""
        self.port = 0

    def start(self) -> None:
        """Start it (again on the port it had, so a ledger's endpoint stays right); its
        first two output lines give its verifier key and its URL."""
        args = [sys.executable, "-m", "slurm_hooks", "witness", "serve",
                "--key", str(self.directory / "witness.key"),
                "--state", str(self.directory / "state"), "--name", self.name,
                "--port", str(self.port)]  # fmt: skip
        for log in self.logs:
            args += ["--log", log]
        env = {k: v for k, v in os.environ.items() if not k.startswith("COMPUTEPROOF_")}
        env["PYTHONPATH"] = str(REPO)
        with open(self.directory / "stderr.log", "ab") as err:
            self.proc = subprocess.Popen(args, stdout=subprocess.PIPE, stderr=err, text=True,
                                         env=env, cwd=self.directory)  # fmt: skip
        assert self.proc.stdout is not None
        first, second = self.proc.stdout.readline(), self.proc.stdout.readline()
        if not first.startswith("witness ") or "listening on " not in second:
            self.stop()
            log = (self.directory / "stderr.log").read_text()
            raise AssertionError(f"witness did not start: {first}{second}{log}")
        self.vkey = first.split()[1]
        self.url = second.split("listening on ")[1].split()[0]
        self.port = int(self.url.rsplit(":", 1)[1].split("/")[0])

    def stop(self) -> None:
        """Terminate it (bounded: 20 s)."""
        if self.proc is not None:
            self.proc.terminate()
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(10)
            self.proc = None

    @property
    def entry(self) -> str:
        """This witness as a ledger's `witnesses` config entry."""
        return f"{self.url} {self.vkey}"
