"""The agent socket: summary for the Epilog, progress and artifacts from inside a job."""

from __future__ import annotations

import hashlib
import os
import subprocess
import sys
from pathlib import Path

import pytest
from conftest import REPO, cli_in_job, spooled, write_config

from computeproof.config import Config
from computeproof.errors import AgentError
from slurm_hooks.agent.client import node_summary, request
from slurm_hooks.agent.daemon import Agent


def test_summary_over_socket_and_fallback(served: Agent, config: Config) -> None:
    socket_path = config.agent_socket_path("c1")
    assert os.stat(socket_path).st_mode & 0o777 == 0o666
    reply = request(socket_path, {"op": "summary", "job_id": 101}, timeout=1.0)
    summary = reply["summary"]
    assert summary["job_id"] == 101 and summary["gpus"][0]["samples"] == 1  # type: ignore[index]
    with pytest.raises(AgentError, match="no summary for job 999"):
        request(socket_path, {"op": "summary", "job_id": 999})
    with pytest.raises(AgentError, match="unknown op"):
        request(socket_path, {"op": "nope"})
    # no agent: the Epilog falls back to the persisted summary
    other = Config(
        cluster=config.cluster,
        run_dir=config.run_dir,
        spool_dir=config.spool_dir,
        agent_socket="/nonexistent/agent.sock",
    )
    fallback = node_summary(other, "c1", 101)
    assert fallback is not None and fallback["job_id"] == 101


def test_progress_and_artifact_from_inside_the_job(
    served: Agent, config: Config, tmp_path: Path
) -> None:
    config_path = write_config(config, tmp_path)
    out = tmp_path / "model.bin"
    out.write_bytes(b"weights" * 1000)
    done = cli_in_job(
        config_path, 101, "progress", "--percent", "50", "--epoch", "15/30", "--message", "half way"
    )
    assert done.returncode == 0, done.stderr
    done = cli_in_job(config_path, 101, "artifact", str(out))
    assert done.returncode == 0, done.stderr
    digest = hashlib.sha256(out.read_bytes()).hexdigest()
    assert done.stdout.split() == [digest, "7000", str(out)]
    events = {ev["type"]: ev for ev in spooled(config)}
    progress = events["progress"]["payload"]
    assert {
        k: progress[k]
        for k in (
            "source",
            "percent",
            "epoch",
            "epochs",
            "message",  # type: ignore[index]
            "uid",
        )
    } == {
        "source": "job",
        "percent": 50,
        "epoch": 15,
        "epochs": 30,
        "message": "half way",
        "uid": os.getuid(),
    }
    assert events["artifact"]["payload"]["artifacts"] == [  # type: ignore[index]
        {"path": str(out), "sha256": digest, "size": 7000, "path_verified": True}
    ]
    assert events["artifact"]["job_id"] == 101 and events["artifact"]["host"] == "c1"


def test_callers_outside_a_job_are_refused(served: Agent, config: Config, tmp_path: Path) -> None:
    config_path = write_config(config, tmp_path)
    env = dict(os.environ, COMPUTEPROOF_CONFIG=config_path, PYTHONPATH=str(REPO))
    done = subprocess.run(
        [
            sys.executable,
            "-c",
            "from slurm_hooks.cli import main; main()",
            "progress",
            "--percent",
            "5",
            "--node",
            "c1",
        ],
        env=env,
        capture_output=True,
        text=True,
        timeout=30,
    )
    assert done.returncode == 2
    assert "belongs to no Slurm job on node c1" in done.stderr
    # a job with no binding on this node is refused too
    done = cli_in_job(config_path, 4242, "progress", "--percent", "5")
    assert done.returncode == 2 and "job 4242 has no GPU binding" in done.stderr
    assert not os.path.exists(os.path.join(config.spool_dir, "new")) or not spooled(config)
