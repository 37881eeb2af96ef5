"""Fixtures for the agent tests: the fake NVML library, its script, a node's run dir."""

from __future__ import annotations

import json
import os
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[3]))

from fakenvml import build as fakenvml

from computeproof.config import Config

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
        "user": "alice",
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
