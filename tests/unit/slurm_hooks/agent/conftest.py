"""Fixtures for the agent tests: the fake NVML library, its script, a node's run dir."""

from __future__ import annotations

import json
import os
import shlex
import subprocess
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[3]))

from fakenvml import build as fakenvml
from fakenvml.build import gpu_line

from computeproof.config import Config
from slurm_hooks.agent.daemon import Agent
from slurm_hooks.agent.procs import ProcessTable
from slurm_hooks.agent.ratelog import RateLimitedLog
from slurm_hooks.agent.sampler import Sampler
from slurm_hooks.agent.server import AgentServer

REPO = Path(__file__).resolve().parents[4]


@pytest.fixture(scope="session")
def fake_nvml_dir(tmp_path_factory: pytest.TempPathFactory) -> str:
    """A directory holding the freshly built fake libnvidia-ml.so.1, loaded in-process."""
    out = tmp_path_factory.mktemp("fakenvml")
    path = fakenvml.build(str(out))
    fakenvml.load_in_process(path)
    return str(out)


@dataclass
class Script:
    """The fake NVML script of one test."""

    path: str

    def write(self, text: str) -> None:
        fakenvml.write_script(self.path, "driver 550.54.15\n" + text)


@pytest.fixture
def script(fake_nvml_dir: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Script:
    """An empty script, named by FAKE_NVML_SCRIPT for the in-process fake."""
    path = str(tmp_path / "nvml.script")
    monkeypatch.setenv("FAKE_NVML_SCRIPT", path)
    s = Script(path)
    s.write("")
    return s


@pytest.fixture
def config(tmp_path: Path) -> Config:
    """A configuration whose run and spool dirs live under tmp_path."""
    return Config(
        cluster="test",
        run_dir=str(tmp_path / "run"),
        spool_dir=str(tmp_path / "spool"),
        host="c1",
        sample_interval=5,
        progress_interval=10,
        orphan_check_interval=0,  # made-up bindings: no Slurm is asked (see test_orphans.py)
    )


def bind(
    config: Config,
    node: str,
    job_id: int,
    minors: list[int],
    uid: int | None = None,
    job: str | None = None,
    run: int = 0,
    user: str = "alice",
    account: str | None = None,
) -> str:
    """Write a binding as the Prolog does; return its path."""
    path = config.binding_path(node, job_id)
    os.makedirs(os.path.dirname(path), exist_ok=True)
    doc = {
        "cluster": config.cluster,
        "job": job or str(job_id),
        "job_id": job_id,
        "run": run,
        "uid": os.getuid() if uid is None else uid,
        "user": user,
        **({"account": account} if account is not None else {}),
        "node": node,
        "time": "2026-01-01T00:00:00Z",
        "gpus": [
            {"slurm_index": i, "minor": m, "device": f"/dev/nvidia{m}"}
            for i, m in enumerate(minors)
        ],
    }
    with open(path, "w") as f:
        json.dump(doc, f)
    return path


class Clock:
    """An injected clock in epoch milliseconds."""

    def __init__(self, start: int = 1_700_000_000_000) -> None:
        self.start = start
        self.now = start

    def __call__(self) -> int:
        return self.now

    def at(self, offset_ms: int) -> None:
        self.now = self.start + offset_ms


@pytest.fixture
def clock() -> Clock:
    return Clock()


@pytest.fixture
def subprocess_env(fake_nvml_dir: str, tmp_path: Path) -> Iterator[dict[str, str]]:
    """Environment for an agent or CLI subprocess over the fake library."""
    env = dict(os.environ)
    env["LD_LIBRARY_PATH"] = fake_nvml_dir
    env["PYTHONPATH"] = str(REPO)
    yield env


@pytest.fixture(autouse=True)
def fresh_log_limits(monkeypatch: pytest.MonkeyPatch) -> None:
    """Each test starts with the agent's log rate limits unspent."""
    from slurm_hooks.agent import daemon, server

    for module in (daemon, server):
        monkeypatch.setattr(module, "limited", RateLimitedLog(module.log))


@pytest.fixture
def served(config: Config, script: Script, clock: Clock, tmp_path: Path) -> Iterator[Agent]:
    """An agent with job 101 bound to GPU 0, one pass taken, answering on its socket; the
    test's own uid counts as trusted (it plays slurmstepd in :func:`cli_in_job`)."""
    bind(config, "c1", 101, [0])
    script.write(gpu_line(0, 0, util=50, energy=100))
    agent = Agent(
        config,
        "c1",
        sampler=Sampler(clock=clock),
        clock=clock,
        processes=ProcessTable(trusted_uids=frozenset({0, os.getuid()})),
    )
    clock.at(0)
    agent.pass_once()
    server = AgentServer(config.agent_socket_path("c1"), agent)
    server.start()
    agent.test_server = server  # type: ignore[attr-defined]
    yield agent
    server.stop()
    agent.sampler.close()


def in_job_command(job_id: int, argv: list[str]) -> list[str]:
    """``argv`` run as a task of job ``job_id``: a child of a 'slurmstepd: [ID.0]' process
    (the test's uid is trusted in :func:`served`, as root is on a node)."""
    inner = shlex.join(argv) + "; exit $?"  # not the last command: bash forks, no exec
    title = shlex.quote(f"slurmstepd: [{job_id}.0]")
    return ["bash", "-c", f"exec -a {title} bash -c {shlex.quote(inner)}"]


def cli_in_job(config_path: str, job_id: int, *args: str) -> subprocess.CompletedProcess[str]:
    """Run the CLI as a task of job ``job_id``."""
    cli = [sys.executable, "-c", "from slurm_hooks.cli import main; main()", *args]
    env = dict(
        os.environ, COMPUTEPROOF_CONFIG=config_path, PYTHONPATH=str(REPO), SLURMD_NODENAME="c1"
    )
    return subprocess.run(
        in_job_command(job_id, cli), env=env, capture_output=True, text=True, cwd=REPO,
        timeout=30,
    )  # fmt: skip


def write_config(config: Config, tmp_path: Path, extra: str = "") -> str:
    """The test config as a TOML file (for subprocesses); return its path."""
    path = tmp_path / "config.toml"
    path.write_text(
        f'cluster = "{config.cluster}"\nrun_dir = "{config.run_dir}"\n'
        f'spool_dir = "{config.spool_dir}"\n' + extra
    )
    return str(path)


def spooled(config: Config) -> list[dict[str, object]]:
    """The events waiting in the spool, oldest first."""
    new = os.path.join(config.spool_dir, "new")
    return [json.loads(Path(new, n).read_text()) for n in sorted(os.listdir(new))]
