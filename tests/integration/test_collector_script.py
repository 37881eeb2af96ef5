"""scripts/collector, which test clusters call: up (private PostgreSQL, site CA, the
collector over TLS), enroll, env, a forwarder posting through it, status, down."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from pgharness import find_bindir
from tlsharness import REPO, cli_env, free_port

from computeproof.event import new_event
from computeproof.spool import Spool

pytestmark = pytest.mark.postgres
SCRIPT = str(REPO / "scripts" / "collector")


def _run(*args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
    proc = subprocess.run([SCRIPT, *args], env=cli_env(), capture_output=True, text=True,
                          timeout=300, check=False)  # fmt: skip
    if check:
        assert proc.returncode == 0, proc.stderr
    return proc


def test_up_enroll_forward_status_down(tmp_path: Path) -> None:
    if find_bindir() is None:
        pytest.skip("PostgreSQL is not installed (apt-get install postgresql)")
    # pytest's tmp_path is private to root; PostgreSQL runs as the postgres user
    top = Path(tempfile.mkdtemp(prefix="cp-collector-script-"))
    top.chmod(0o755)
    state = top / "collector"
    port = free_port()
    try:
        _run("up", "--dir", str(state), "--listen", f"127.0.0.1:{port}", "--cluster", "c1")
        _run("up", "--dir", str(state), "--listen", f"127.0.0.1:{port}", "--cluster", "c1")
        assert _run("status", "--dir", str(state)).stdout.count("running") == 1
        key = subprocess.run(
            [sys.executable, "-m", "computeproof.cli", "keys", "init", "--out",
             str(tmp_path / "node1.key")],
            env=cli_env(), capture_output=True, text=True, check=True,
        ).stdout.split()[0]  # fmt: skip
        _run("enroll", "--dir", str(state), key, "--host", "node1")
        node = tmp_path / "node1.toml"
        node.write_text(
            f'cluster = "c1"\nhost = "node1"\nhost_key = "{tmp_path / "node1.key"}"\n'
            f'spool_dir = "{tmp_path / "spool"}"\n' + _run("env", "--dir", str(state)).stdout
        )
        spool = Spool(str(tmp_path / "spool"))
        for i in range(20):
            spool.write(new_event("progress", "c1", "7", 7, "node1", {"percent": i}, seq=i))
        out = subprocess.run(
            [sys.executable, "-m", "computeproof.cli", "--config", str(node), "forward", "--json"],
            env=cli_env(), capture_output=True, text=True, timeout=120, check=False,
        )  # fmt: skip
        assert out.returncode == 0, out.stderr
        assert json.loads(out.stdout)["forwarded"] == 20
    finally:
        _run("down", "--dir", str(state), check=False)
    down = _run("status", "--dir", str(state), check=False)
    assert down.returncode == 1 and "stopped" in down.stdout
    shutil.rmtree(state.parent)
