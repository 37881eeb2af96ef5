"""The posix_spawn command runner: output, failures and timeouts."""

from __future__ import annotations

import time

import pytest

from computeproof.errors import SlurmError
from slurm_hooks import command


def test_stdout_is_returned() -> None:
    assert command.run(["/bin/echo", "hi"], timeout=5) == b"hi\n"


def test_nonzero_exit_reports_last_stderr_line() -> None:
    with pytest.raises(SlurmError, match="boom"):
        command.run(["/bin/sh", "-c", "echo x >&2; echo boom >&2; exit 2"], timeout=5)


def test_no_slurm_conf_says_what_to_set() -> None:
    # the line Slurm's clients print when they find no slurm.conf
    fatal = "sacct: fatal: Could not establish a configuration source"
    with pytest.raises(SlurmError, match=r"configuration source \(set SLURM_CONF to "):
        command.run(["/bin/sh", "-c", f"echo '{fatal}' >&2; exit 1"], timeout=5)


def test_timeout_kills_the_whole_session() -> None:
    start = time.monotonic()
    with pytest.raises(SlurmError, match="timed out"):
        command.run(["/bin/sh", "-c", "sleep 30 & sleep 30"], timeout=0.3)
    assert time.monotonic() - start < 5


def test_missing_program() -> None:
    with pytest.raises(SlurmError, match="cannot run"):
        command.run(["/nonexistent/scontrol"], timeout=1)


def test_environment_is_minimal(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("SLURM_CONF", "/x/slurm.conf")
    monkeypatch.setenv("SECRET", "no")
    out = command.run(["/usr/bin/env"], timeout=5).decode()
    assert "SLURM_CONF=/x/slurm.conf" in out
    assert "SECRET" not in out
