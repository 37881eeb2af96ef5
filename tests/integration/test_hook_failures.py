"""What a failing hook does to jobs and nodes, as conf/INSTALL.md promises.

- Non-strict (the default): a hook that fails logs one line, adds one to the spool's
  ``hook-failures`` counter and exits 0: the job runs and completes, no node drains. A config
  file that does not parse is non-strict unless it still has a ``strict = true`` line.
- ``strict = true``: a failing hook exits 1. A failing PrologSlurmctld (where the optional
  controller hooks are configured, CP_CTLD_HOOKS=1) gets the (batch) job requeued; a failing
  node Prolog drains the node and requeues the job held.

The hooks read /etc/computeproof/config.toml, a symlink the cluster made to its config; each
test points it elsewhere and the fixture puts it back, resumes drained nodes and cancels the
test's jobs.
"""

from __future__ import annotations

import json
import os
import shutil
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

SlurmCluster = Any  # tests/integration/conftest.py: the session's cluster handle

pytestmark = pytest.mark.slurm

ETC_CONFIG = Path("/etc/computeproof/config.toml")
DEFAULT_SPOOL = Path("/var/spool/computeproof")  # where hooks count failures without a config
DEFAULT_RUN = Path("/run/computeproof")  # ... and the run dir's counter, likewise
COUNTER = "hook-failures"
DRAINED = {"drain", "drng", "drained", "down", "fail", "failg"}


@dataclass
class HookSetup:
    """Point the hooks at other configs; remember what to undo."""

    cluster: SlurmCluster
    dir: Path
    jobs: list[int] = field(default_factory=list)
    nodes: set[str] = field(default_factory=set)

    def use_config(self, text: str) -> Path:
        """Write ``text`` as a config and make /etc/computeproof/config.toml point at it."""
        path = self.dir / f"config-{len(list(self.dir.glob('config-*')))}.toml"
        path.write_text(text)
        repoint(path)
        return path

    def restore(self) -> None:
        """Point the hooks back at the cluster's own config."""
        repoint(self.cluster.computeproof_config)

    def submit(self, *args: str) -> int:
        job = self.cluster.sbatch("-D", str(self.dir), "-o", f"{self.dir}/slurm-%j.out", *args)
        self.jobs.append(job)
        return job


def repoint(target: Path) -> None:
    """Replace the /etc symlink atomically (the hooks must never see it missing)."""
    tmp = ETC_CONFIG.with_name(f".config.toml.{os.getpid()}")
    tmp.unlink(missing_ok=True)
    tmp.symlink_to(target)
    os.replace(tmp, ETC_CONFIG)


def node_states(cluster: SlurmCluster) -> dict[str, str]:
    out = cluster.run("sinfo", "-h", "-N", "-o", "%N %t").stdout
    return {n: s.rstrip("*~#!%$@^-") for n, s in (line.split() for line in out.splitlines())}


def job_fields(cluster: SlurmCluster, job: int) -> dict[str, str]:
    """`scontrol show job -o` as a dict (values without spaces only; enough here)."""
    out = cluster.run("scontrol", "show", "job", "-o", str(job)).stdout
    return dict(tok.split("=", 1) for tok in out.split() if "=" in tok)


def poll(what: str, check: Any, timeout: float = 60, show: Any = None) -> Any:
    """Call ``check`` until it returns something truthy; fail after ``timeout`` s, saying
    what ``show()`` returns then (the state the wait ended in)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = check()
        if value:
            return value
        time.sleep(0.5)
    seen = f"; last seen: {show()}" if show is not None else ""
    raise AssertionError(f"timed out after {timeout}s waiting for {what}{seen}")


def requeued(fields: dict[str, str]) -> dict[str, str] | None:
    """The job's fields once Slurm has requeued it and it waits again."""
    again = int(fields.get("Restarts", "0")) >= 1 and fields.get("JobState") == "PENDING"
    return fields if again else None


def held(fields: dict[str, str]) -> dict[str, str] | None:
    """The job's fields once it waits requeued and held: held while still COMPLETING
    (Slurm 24.11 shows that for a while), then PENDING."""
    waiting = "held" in fields.get("Reason", "") and fields.get("JobState") == "PENDING"
    return fields if waiting else None


def read_counter(spool: Path) -> int:
    try:
        raw = (spool / COUNTER).read_text().strip()
    except FileNotFoundError:
        return 0
    return int(raw) if raw.isdigit() else 0


@pytest.fixture
def hooks(slurm_cluster: SlurmCluster) -> Iterator[HookSetup]:
    c = slurm_cluster
    assert ETC_CONFIG.is_symlink(), f"{ETC_CONFIG} is not the cluster's symlink"
    original = Path(os.readlink(ETC_CONFIG))
    work = Path(tempfile.mkdtemp(prefix="cp-hookfail-", dir="/tmp"))
    work.chmod(0o777)
    setup = HookSetup(c, work)
    try:
        yield setup
    finally:
        repoint(original)
        if setup.jobs:
            c.run("scancel", *map(str, setup.jobs), check=False)
        for node in sorted(setup.nodes):
            c.run("scontrol", "update", f"nodename={node}", "state=resume", check=False)
        try:
            poll(
                "nodes back in service",
                lambda: not DRAINED & set(node_states(c).values()),
                timeout=60,
            )
        finally:
            shutil.rmtree(work, ignore_errors=True)


def cluster_config(cluster: SlurmCluster) -> str:
    return cluster.computeproof_config.read_text()


def with_keys(text: str, **values: str) -> str:
    """The cluster's config with some keys replaced or added (values are TOML literals)."""
    lines = [ln for ln in text.splitlines() if ln.split("=")[0].strip() not in values]
    return "\n".join([*lines, *(f"{k} = {v}" for k, v in values.items())]) + "\n"


def controller_hooks(cluster: SlurmCluster) -> bool:
    """Whether slurm.conf has the optional controller hooks (CP_CTLD_HOOKS=1)."""
    return "\nPrologSlurmctld=" in cluster.slurm_conf.read_text()


def test_broken_config_fails_no_job(slurm_cluster: SlurmCluster, hooks: HookSetup) -> None:
    """A config that does not parse: the GPU job completes, no node drains, failures counted."""
    c = slurm_cluster
    spool = c.dir / "computeproof" / "spool"
    # Without a config the hooks cannot know the cluster's spool_dir: they count failures
    # in the default spool, which must exist for that (and in the default run dir).
    made_default = not DEFAULT_SPOOL.exists()
    made_run = not DEFAULT_RUN.exists()
    if made_default:
        DEFAULT_SPOOL.mkdir(mode=0o700, parents=True)
    try:
        before = read_counter(spool) + read_counter(DEFAULT_SPOOL)
        hooks.use_config('cluster = "cptest"\nspool_dir = [unterminated\n')
        job = hooks.submit("--gres=gpu:1", "--wrap", "sleep 1")
        record = c.wait_job(job, timeout=90)
        assert record["state"]["current"] == "COMPLETED", record["state"]
        grown = read_counter(spool) + read_counter(DEFAULT_SPOOL) - before
        last = "\n".join(
            (d / f"{COUNTER}.last").read_text()
            for d in (spool, DEFAULT_SPOOL)
            if (d / f"{COUNTER}.last").exists()
        )
        run_counted = read_counter(DEFAULT_RUN)
    finally:
        if made_default:
            shutil.rmtree(DEFAULT_SPOOL, ignore_errors=True)
        if made_run:
            shutil.rmtree(DEFAULT_RUN, ignore_errors=True)
    # the hooks that ran for the job all failed: Prolog and Epilog, and PrologSlurmctld where
    # configured (EpilogSlurmctld records nothing, so reads no config)
    ran = 3 if controller_hooks(c) else 2
    assert grown >= ran, f"hook-failures grew by {grown}"
    assert run_counted >= ran, f"the run dir's hook-failures counted {run_counted}"
    assert "invalid TOML" in last, last
    states = node_states(c)
    assert not DRAINED & set(states.values()), states
    # no hook wrote an event without a configuration (the collector, which loaded its own
    # when it started, still records the job: scheduled, completed, final_state)
    written = [json.loads(p.read_bytes()) for p in (spool / "new").glob("*.json")]
    mine = {e["type"] for e in written if e["job_id"] == job and e["host"] in c.nodes}
    assert not mine, f"a hook wrote {mine} without a configuration"


def _strict_node_prolog_failed(c: SlurmCluster, hooks: HookSetup, job: int) -> None:
    """Without controller hooks the strict failure is the node Prolog's: the node drains
    and the job waits requeued and held."""
    hooks.nodes.add("c1")
    poll("c1 drained", lambda: node_states(c).get("c1") in DRAINED)

    fields = poll(
        "the job requeued held",
        lambda: held(job_fields(c, job)),
        show=lambda: job_fields(c, job),
    )
    assert fields["JobState"] == "PENDING", fields
    hooks.restore()
    c.run("scancel", str(job))


def test_broken_config_with_strict_line_is_strict(
    slurm_cluster: SlurmCluster, hooks: HookSetup
) -> None:
    """An unparsable config that still says `strict = true`: the first hook fails the job."""
    c = slurm_cluster
    hooks.use_config("strict = true\nspool_dir = [unterminated\n")
    job = hooks.submit("-w", "c1", "--gres=gpu:1", "--wrap", "sleep 1")
    if not controller_hooks(c):
        _strict_node_prolog_failed(c, hooks, job)
        return
    fields = poll(
        "the job requeued by the failing PrologSlurmctld",
        lambda: requeued(job_fields(c, job)),
    )
    assert fields["JobState"] == "PENDING", fields
    assert fields["RunTime"] == "00:00:00", fields  # never started
    hooks.restore()
    states = node_states(c)
    assert not DRAINED & set(states.values()), states


def test_strict_unwritable_spool_requeues_job(
    slurm_cluster: SlurmCluster, hooks: HookSetup
) -> None:
    """strict + a spool_dir that is a file: PrologSlurmctld exits 1, Slurm requeues the job
    (the node Prolog drains the node where no controller hook is configured)."""
    c = slurm_cluster
    blocker = hooks.dir / "spool-is-a-file"
    blocker.write_text("")
    hooks.use_config(with_keys(cluster_config(c), strict="true", spool_dir=f'"{blocker}"'))
    job = hooks.submit("-w", "c1", "--gres=gpu:1", "--wrap", "sleep 1")
    if not controller_hooks(c):
        _strict_node_prolog_failed(c, hooks, job)
        return
    fields = poll(
        "the job requeued by the failing PrologSlurmctld",
        lambda: requeued(job_fields(c, job)),
    )
    assert fields["JobState"] == "PENDING", fields
    assert fields["RunTime"] == "00:00:00", fields
    log = (c.dir / "log" / "slurmctld.log").read_text(errors="replace")
    assert f"JobId={job} PrologSlurmctld exit status 1" in log
    hooks.restore()
    states = node_states(c)
    assert not DRAINED & set(states.values()), states


def test_strict_failing_prolog_drains_node(slurm_cluster: SlurmCluster, hooks: HookSetup) -> None:
    """strict + a node Prolog that cannot write: the node drains, the job is requeued held."""
    c = slurm_cluster
    run_dir = hooks.dir / "run"
    run_dir.mkdir()
    (run_dir / "c1").write_text("")  # the Prolog's run/c1/runs/JOB cannot be created
    hooks.use_config(with_keys(cluster_config(c), strict="true", run_dir=f'"{run_dir}"'))
    hooks.nodes.add("c1")
    job = hooks.submit("-w", "c1", "--gres=gpu:1", "--wrap", "sleep 1")
    poll("c1 drained", lambda: node_states(c).get("c1") in DRAINED)
    fields = poll(
        "the job requeued held",
        lambda: held(job_fields(c, job)),
        show=lambda: job_fields(c, job),
    )
    assert fields["JobState"] == "PENDING", fields
    assert int(fields["Restarts"]) >= 1, fields
    reason = c.run("sinfo", "-h", "-n", "c1", "-o", "%E").stdout
    assert "Prolog" in reason, reason
    assert node_states(c).get("c2") not in DRAINED
    # back to normal: the right config, c1 resumed, the held job cancelled
    hooks.restore()
    c.run("scancel", str(job))
    c.run("scontrol", "update", "nodename=c1", "state=resume")
    poll("c1 back in service", lambda: node_states(c).get("c1") not in DRAINED)
    again = hooks.submit("-w", "c1", "--gres=gpu:1", "--wrap", "true")
    assert c.wait_job(again, timeout=60)["state"]["current"] == "COMPLETED"
