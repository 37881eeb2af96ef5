"""The node agents on the real cluster: GPU figures and in-job events land in receipts.

c1's agent reads the fake NVML library (tests/fakenvml); the test scripts a different load on
each of c1's GPUs, runs a two-GPU job on c1 that also reports progress and an artifact through
`bin/computeproof-job`, and checks the job's receipt against the script: GPUs bound by minor
number (NVML lists them in reverse), utilization-weighted time, memory and energy exactly as
the agent's summary defines them (slurm_hooks/agent/state.py). The script is restored after.
"""

from __future__ import annotations

import hashlib
import json
import re
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.fakenvml.build import write_script

SlurmCluster = Any  # tests/integration/conftest.py: the session's cluster handle

pytestmark = pytest.mark.slurm

CLI = [sys.executable, "-m", "slurm_hooks"]
REPO = Path(__file__).resolve().parents[2]


def job_tool(cluster: SlurmCluster) -> Path:
    """bin/computeproof-job as the cluster installed it for job users (world-readable)."""
    return cluster.dir / "bin" / "computeproof-job"


GIB = 2**30


def load_of(minor: int) -> dict[str, int]:
    """A distinct scripted load per GPU, so that a GPU bound to the wrong minor shows."""
    return {
        "util": 40 + 10 * minor,
        "mem_util": 20 + minor,
        "mem_used": (3 + minor) * GIB,
        "power": 150_000 + 10_000 * minor,
        "energy_rate": 200_000 + 25_000 * minor,
    }


def cli(cluster: SlurmCluster, *args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
    """Run `computeproof ARGS` against the cluster's config and ledger."""
    proc = subprocess.run(
        [*CLI, *args], capture_output=True, text=True, env=cluster.env, cwd=REPO, timeout=300
    )
    if check and proc.returncode != 0:
        raise AssertionError(
            f"computeproof {' '.join(args)} exited {proc.returncode}: {proc.stdout}{proc.stderr}"
        )
    return proc


def loaded_script(original: str) -> str:
    """The node's script with each GPU's dynamic readings replaced, static facts kept."""
    out = []
    for line in original.splitlines():
        if line.startswith("gpu "):
            minor = int(re.search(r"\bminor=(\d+)", line).group(1))  # type: ignore[union-attr]
            for key, value in load_of(minor).items():
                line, n = re.subn(rf"\b{key}=\d+", f"{key}={value}", line)
                if n == 0:
                    line += f" {key}={value}"
        out.append(line)
    return "\n".join(out) + "\n"


@pytest.fixture(scope="module")
def loaded_job(slurm_cluster: SlurmCluster) -> Iterator[dict[str, Any]]:
    """Run the two-GPU job on c1 under scripted load; yield its receipt and artifact file."""
    c = slurm_cluster
    script = c.dir / "fakenvml" / "c1.nvml"
    original = script.read_text()
    job_dir = Path(tempfile.mkdtemp(prefix="cp-agent-", dir="/tmp"))
    job_dir.chmod(0o777)
    artifact = job_dir / "model.ckpt"
    tool = job_tool(c)
    body = (
        f"sleep 5\n"
        f"{tool} progress --percent 50 --epoch 1/2 --message hi || exit 10\n"
        f"head -c 100000 /dev/urandom > {artifact}\n"
        f"{tool} artifact {artifact} || exit 11\n"
        f"sleep 7\n"
    )
    try:
        write_script(str(script), loaded_script(original))
        job = c.sbatch(
            "-D", str(job_dir), "-o", f"{job_dir}/slurm-%j.out", "-w", "c1",
            "--gres=gpu:a100:2", "--uid=cpalice", "-A", "physics", "--wrap", body,
        )  # fmt: skip
        record = c.wait_job(job, timeout=120)
        deadline = time.monotonic() + 90
        show: dict[str, Any] = {}
        while time.monotonic() < deadline:
            cli(c, "forward")
            proc = cli(c, "jobs", "show", str(job), "--json", check=False)
            show = json.loads(proc.stdout) if proc.returncode == 0 else {}
            if any(e["type"] == "final_state" for e in show.get("events", ())):
                break
            time.sleep(1)
        else:
            raise AssertionError(f"job {job}: no final_state in the ledger; {show}")
        output = (job_dir / f"slurm-{job}.out").read_text()
        yield {
            "job": job,
            "sacct": record,
            "show": show,
            "artifact": artifact.read_bytes(),
            "path": str(artifact),
            "output": output,
        }
    finally:
        write_script(str(script), original)
        subprocess.run(["rm", "-rf", str(job_dir)], check=False)


def events_of(show: dict[str, Any], kind: str) -> list[dict[str, Any]]:
    return [e for e in show["events"] if e["type"] == kind]


def test_job_completed(loaded_job: dict[str, Any]) -> None:
    assert loaded_job["sacct"]["state"]["current"] == "COMPLETED", loaded_job["output"]
    assert loaded_job["show"]["verification"]["ok"], loaded_job["show"]["verification"]


def test_node_done_figures_match_the_script(loaded_job: dict[str, Any]) -> None:
    """Per-GPU figures: bound by minor, exact integer rules, energy from counter deltas."""
    show = loaded_job["show"]
    (started,) = events_of(show, "started")
    minors = sorted(g["minor"] for g in started["payload"]["gpus"])
    assert len(minors) == 2 and all(0 <= m < 4 for m in minors), started["payload"]
    (done,) = events_of(show, "node_done")
    assert done["host"] == "c1"
    assert done["payload"]["gpu_summary_source"] == "agent", done["payload"]
    summary = done["payload"]["gpu_summary"]
    interval = summary["sample_interval_ms"]
    assert interval == 1000
    gpus = {g["minor"]: g for g in summary["gpus"]}
    assert sorted(gpus) == minors
    for minor, g in gpus.items():
        load = load_of(minor)
        assert g["uuid"] == f"GPU-fake-{minor:04d}", g
        assert g["name"] == "Fake-A100"
        assert g["samples"] > 5, g  # a 12 s job sampled every second
        assert g["unmeasured_ms"] == 0, g
        assert g["measured_ms"] > 0
        assert g["busy_ms"] == g["measured_ms"], g
        assert g["util_percent_ms"] == load["util"] * g["measured_ms"], g
        assert g["util_weighted_ms"] == load["util"] * g["measured_ms"] // 100, g
        assert g["max_memory_bytes"] == load["mem_used"], g
        assert g["energy_method"] == "counter", g
        assert g["energy_measured_ms"] > 0
        # the fake's counter grows by energy_rate x its own clock; the agent times each
        # reading itself: they agree to well within one sample's energy
        expected = load["energy_rate"] * g["energy_measured_ms"] / 1000
        assert abs(g["energy_mj"] - expected) <= load["energy_rate"] * interval / 1000 / 4, g
    totals = summary["totals"]
    assert totals["util_weighted_ms"] == sum(g["util_weighted_ms"] for g in gpus.values())
    assert totals["energy_mj"] == sum(g["energy_mj"] for g in gpus.values())
    assert totals["max_memory_bytes"] == max(load_of(m)["mem_used"] for m in minors)
    # `jobs show` derives its table from the same summary
    table = {g["minor"]: g for g in show["gpus"]}
    for minor in minors:
        assert table[minor]["mean_utilization_percent"] == load_of(minor)["util"]
        assert table[minor]["max_memory_bytes"] == load_of(minor)["mem_used"]


def test_agent_progress_events(loaded_job: dict[str, Any]) -> None:
    """The agent's periodic progress events carry the same per-GPU rules, growing."""
    progress = events_of(loaded_job["show"], "progress")
    agent = [e for e in progress if e["payload"]["source"] == "agent"]
    assert agent, "no agent progress event in a 12 s job with progress_interval 5"
    for e in agent:
        assert e["host"] == "c1"
        for g in e["payload"]["gpus"]:
            assert g["util_percent_ms"] == load_of(g["minor"])["util"] * g["measured_ms"], g
            assert g["max_memory_bytes"] == load_of(g["minor"])["mem_used"], g
    (done,) = events_of(loaded_job["show"], "node_done")
    final = {g["minor"]: g["measured_ms"] for g in done["payload"]["gpu_summary"]["gpus"]}
    last = {g["minor"]: g["measured_ms"] for g in agent[-1]["payload"]["gpus"]}
    assert all(0 < last[m] <= final[m] for m in final), (last, final)


def test_in_job_progress_and_artifact(loaded_job: dict[str, Any]) -> None:
    """`computeproof-job progress/artifact` inside the job land in its receipt."""
    show = loaded_job["show"]
    job_reports = [e for e in events_of(show, "progress") if e["payload"]["source"] == "job"]
    assert len(job_reports) == 1, show["events"]
    p = job_reports[0]["payload"]
    assert (p["percent"], p["epoch"], p["epochs"], p["message"]) == (50, 1, 2, "hi"), p
    (art,) = events_of(show, "artifact")
    (entry,) = art["payload"]["artifacts"]
    data = loaded_job["artifact"]
    assert entry["path"] == loaded_job["path"]
    assert entry["sha256"] == hashlib.sha256(data).hexdigest()
    assert entry["size"] == len(data) == 100000
    assert art["host"] == "c1"


def test_job_tool_outside_a_job_is_refused(slurm_cluster: SlurmCluster) -> None:
    """A user's process that belongs to no job cannot report progress for one."""
    proc = subprocess.run(
        ["su", "cpalice", "-s", "/bin/sh", "-c",
         f"SLURMD_NODENAME=c1 {job_tool(slurm_cluster)} progress --percent 1"],
        capture_output=True, text=True, timeout=60,
    )  # fmt: skip
    assert proc.returncode == 2, proc.stdout + proc.stderr
    assert "belongs to no Slurm job" in proc.stderr, proc.stderr
    assert proc.stderr.startswith("computeproof-job: error: ")


def test_orphaned_bindings_are_let_go(slurm_cluster: SlurmCluster, job_dir: Path) -> None:
    """A binding the Epilog never removed: the agent asks Slurm (squeue) and lets it go."""
    from computeproof.config import load_config

    c = slurm_cluster
    config = load_config(str(c.computeproof_config))
    ended = c.sbatch("-D", str(job_dir), "-o", "/dev/null", "-w", "c1", "--gres=gpu:1",
                     "--wrap", "true")  # fmt: skip
    # ended, and still held by slurmctld (MinJobAge=30): not sacct's settled record, which
    # may come later than that under load
    deadline = time.monotonic() + 90
    while c.run("squeue", "-h", "-t", "all", "-j", str(ended), "-o", "%T",
                check=False).stdout.strip() != "COMPLETED":  # fmt: skip
        assert time.monotonic() < deadline, f"job {ended} did not complete"
        time.sleep(0.3)
    never = 3_999_999  # a job id Slurm never had
    paths = {}
    for job_id in (ended, never):
        path = Path(config.binding_path("c1", job_id))
        binding = {
            "cluster": config.cluster, "job": str(job_id), "job_id": job_id, "run": 0,
            "uid": 0, "user": "root", "node": "c1", "time": "2026-11-25T00:00:00Z",
            "gpus": [{"slurm_index": 3, "minor": 3, "device": str(c.dir / "dev" / "nvidia3")}],
        }  # fmt: skip
        path.write_text(json.dumps(binding))  # as the Prolog writes it
        paths[job_id] = path
    log = c.dir / "log" / "agent-c1.log"
    deadline = time.monotonic() + 60
    while any(p.exists() for p in paths.values()) and time.monotonic() < deadline:
        time.sleep(0.5)
    assert not any(p.exists() for p in paths.values()), log.read_text()[-2000:]
    text = log.read_text()
    if not re.search(rf"job {ended} run 0: Slurm shows it COMPLETED, but its Epilog", text):
        # the agent asked after slurmctld purged the job (a slow machine): then, and only
        # then, it says so
        assert not c.run("squeue", "-h", "-t", "all", "-j", str(ended), check=False).stdout
        assert f"job {ended} run 0: Slurm no longer knows the job" in text, text[-2000:]
    assert f"job {never} run 0: Slurm no longer knows the job" in text
    # the figures it gathered meanwhile stay for a late Epilog
    summary = Path(config.run_dir) / "c1" / "agent" / f"{never}.json"
    assert json.loads(summary.read_text())["job_id"] == never


def test_an_agent_with_forward_interval_forwards_the_jobs_events(
    slurm_cluster: SlurmCluster, tmp_path: Path
) -> None:
    """No `computeproof forward`: an agent with forward_interval = 1 drains the cluster's
    spool into its ledger while a job runs and ends (conf/INSTALL.md, section 5).

    The cluster's own agents keep forward_interval = 0 (the other tests forward by hand);
    this one runs for a node of its own ("fwd") on the same spool and ledger."""
    c = slurm_cluster
    config = tmp_path / "config.toml"
    config.write_text(c.computeproof_config.read_text() + "forward_interval = 1\n")
    env = {
        **c.env,
        "COMPUTEPROOF_CONFIG": str(config),
        "LD_LIBRARY_PATH": str(c.dir / "fakenvml"),
        "FAKE_NVML_SCRIPT": str(c.dir / "fakenvml" / "c2.nvml"),  # read only
    }
    log = tmp_path / "agent.log"
    with log.open("w") as out:
        agent = subprocess.Popen(
            [*CLI, "agent", "run", "--node", "fwd"], env=env, cwd=REPO, stdout=out,
            stderr=subprocess.STDOUT,
        )  # fmt: skip
    try:
        job = c.sbatch("-w", "c2", "--gres=gpu:a100:1", "-o", "/dev/null", "--wrap", "sleep 1")
        c.wait_job(job, timeout=120)
        deadline = time.monotonic() + 90
        types: set[str] = set()
        while time.monotonic() < deadline:
            proc = cli(c, "jobs", "show", str(job), "--json", check=False)
            if proc.returncode == 0:
                types = {e["type"] for e in json.loads(proc.stdout)["events"]}
                if {"scheduled", "started", "node_done", "completed", "final_state"} <= types:
                    break
            time.sleep(1)
        else:
            raise AssertionError(f"job {job}: events in the ledger {types}; {log.read_text()}")
        assert agent.poll() is None, log.read_text()
        assert "forwarded" in log.read_text()
    finally:
        agent.terminate()
        agent.wait(timeout=60)
    assert agent.returncode == 0, log.read_text()
