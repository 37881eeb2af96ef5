"""`computeproof dashboard`: serves the configured ledger and prints a sign-in link that
works; bad input is one line and exit code 2."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import time
from pathlib import Path

import httpx
from demo import ORIGIN, build_demo

REPO = Path(__file__).resolve().parents[5]


def _config(tmp_path: Path, directory: Path) -> Path:
    cfg = tmp_path / "config.toml"
    cfg.write_text(
        f'db = "{directory}/ledger.db"\nledger_key = "{directory}/ledger.key"\n'
        f'ledger_origin = "{ORIGIN}"\ncluster = "c1"\n'
    )
    return cfg


def _run(*args: str) -> subprocess.Popen[str]:
    return subprocess.Popen(
        [sys.executable, "-m", "computeproof.cli", *args],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env={**os.environ, "PYTHONPATH": str(REPO)},
    )


def test_dashboard_serves_and_prints_a_working_sign_in_link(tmp_path: Path) -> None:
    d = tmp_path / "ledger"
    d.mkdir()
    build_demo(str(d), fillers=5)
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    proc = _run("--config", str(_config(tmp_path, d)), "dashboard", "--listen", f"127.0.0.1:{port}")
    try:
        assert proc.stdout is not None
        first = proc.stdout.readline()
        link = proc.stdout.readline().strip()
        assert f"http://127.0.0.1:{port}/ over {d}/ledger.db" in first
        assert link.startswith(f"sign in as admin: http://127.0.0.1:{port}/login?token=")
        url = link.split(": ", 1)[1]
        for _ in range(100):  # bounded: 10 s for uvicorn to listen
            try:
                with httpx.Client(follow_redirects=True) as client:
                    page = client.get(url)
                    jobs = client.get(f"http://127.0.0.1:{port}/ui/jobs").json()
                break
            except httpx.ConnectError:
                time.sleep(0.1)
        else:
            raise AssertionError("the dashboard did not listen")
        assert page.status_code == 200 and "Jobs" in page.text
        assert jobs["total"] == 11
        with httpx.Client() as anonymous:
            assert anonymous.get(f"http://127.0.0.1:{port}/ui/jobs").status_code == 401
    finally:
        proc.terminate()
        proc.wait(15)


def test_dashboard_refuses_bad_input_in_one_line(tmp_path: Path) -> None:
    missing = _config(tmp_path, tmp_path / "nowhere")
    proc = _run("--config", str(missing), "dashboard", "--listen", "127.0.0.1:1")
    _, err = proc.communicate(timeout=60)
    assert proc.returncode == 2 and err.count("\n") == 1 and "no ledger at" in err
    proc = _run("dashboard", "--listen", "nonsense")
    _, err = proc.communicate(timeout=60)
    assert proc.returncode == 2 and "is not HOST:PORT" in err and "Traceback" not in err
