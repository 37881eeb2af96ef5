"""The four hook executables, run as Slurm runs them: env -i, no PATH, absolute paths.

Covers the never-harm contract (broken config, unwritable spool, hung squeue -> exit 0
and one logged line; strict -> exit 1) and what each event records.
"""

from __future__ import annotations

import json
import os
import socket
import subprocess
import threading
import time
from pathlib import Path

import pytest
from fakeslurm import install, roles
from hooksite import EPILOG, EPILOG_CTLD, PROLOG, PROLOG_CTLD, REPO, Site, payload, run


@pytest.fixture
def site(tmp_path: Path) -> Site:
    return Site(tmp_path)


@pytest.mark.skipif(os.geteuid() != 0, reason="mknod needs root")
def test_prolog_records_gpus_by_minor_and_writes_binding(site: Site) -> None:
    result = run(PROLOG, site.env("prolog.9"))
    assert result.returncode == 0, result.stderr
    assert result.stderr == ""
    (event,) = site.events("started")
    assert (event["job"], event["job_id"], event["run"], event["host"]) == ("9", 9, 0, "c2")
    p = payload(event)
    assert p["gpus"] == [
        {"slurm_index": 1, "minor": 5, "device": f"{site.dev}/nvidia5"},
        {"slurm_index": 2, "minor": 6, "device": f"{site.dev}/nvidia6"},
    ]
    assert p["gpu_resolution"] == "gres.conf"
    assert (p["uid"], p["user"], p["partition"]) == (0, "root", "gpu")
    binding_path = site.run / "c2" / "jobs" / "9.json"
    assert (binding_path.stat().st_mode & 0o777) == 0o600
    assert (binding_path.parent.stat().st_mode & 0o777) == 0o700
    binding = json.loads(binding_path.read_bytes())
    assert set(binding) == {
        "cluster",
        "job",
        "job_id",
        "run",
        "uid",
        "user",
        "account",
        "node",
        "gpus",
        "time",
    }
    assert [g["minor"] for g in binding["gpus"]] == [5, 6]
    assert binding["time"] == event["time"]
    # The agent's own reader accepts what the Prolog wrote.
    from slurm_hooks.agent.binding import read_binding

    assert read_binding(str(binding_path)).minors == (5, 6)


def test_prolog_without_gres_conf_records_unresolved(site: Site) -> None:
    (site.etc / "gres.conf").unlink()
    assert run(PROLOG, site.env("prolog.9")).returncode == 0
    p = payload(site.events("started")[0])
    assert str(p["gpu_resolution"]).startswith("unresolved")
    assert [g["minor"] for g in p["gpus"]] == [None, None]  # type: ignore[union-attr]


def test_requeued_job_gets_a_new_event_id(site: Site) -> None:
    run(PROLOG, site.env("prolog.21"))
    run(PROLOG, site.env("prolog.21", SLURM_JOB_RESTART_COUNT="1"))
    runs = sorted(e["run"] for e in site.events("started"))  # type: ignore[type-var]
    assert runs == [0, 1]


def test_requeued_first_run_epilogs_keep_the_prologs_run(site: Site) -> None:
    # Slurm 22.05 counts the requeue before the epilogs of the first run: they see 1.
    run(PROLOG, site.env("prolog.9"))
    run(EPILOG, site.env("epilog.9", SLURMD_NODENAME="c2", SLURM_JOB_RESTART_COUNT="1"))
    run(PROLOG, site.env("prolog.9", SLURM_JOB_RESTART_COUNT="1"))
    run(EPILOG, site.env("epilog.9", SLURMD_NODENAME="c2", SLURM_JOB_RESTART_COUNT="1"))
    done = sorted((e["run"], payload(e)["run_source"]) for e in site.events("node_done"))
    assert done == [(0, "prolog"), (1, "prolog")]
    assert sorted(e["run"] for e in site.events("started")) == [0, 1]  # type: ignore[type-var]
    # PrologSlurmctld's run is Slurm's restart count as the run starts
    site.fake("squeue", "exit 1\n")
    run(PROLOG_CTLD, site.env("prolog_slurmctld.23", SLURM_JOB_RESTART_COUNT="1"))
    (sched,) = site.events("scheduled")
    assert sched["run"] == 1
    assert str(payload(sched)["source"]).startswith("env only: squeue failed")


def test_epilog_without_agent_records_null_summary(site: Site) -> None:
    run(PROLOG, site.env("prolog.9"))
    result = run(EPILOG, site.env("epilog.9"))
    assert result.returncode == 0, result.stderr
    (event,) = site.events("node_done")
    p = payload(event)
    assert (p["gpu_summary"], p["gpu_summary_source"]) == (None, "none")
    assert (p["exit_code"], p["signal"]) == (3, 0)
    assert not (site.run / "c1" / "jobs" / "9.json").exists()


def test_epilog_with_an_unusable_run_dir_still_succeeds(site: Site) -> None:
    # run/c1 is a file: no binding can exist under it, so there is none to remove. The
    # Epilog used to fail on ENOTDIR, and in strict mode its "Epilog error" raced the
    # Prolog's own failure for the node's drain reason.
    site.run.mkdir()
    (site.run / "c1").write_text("")
    result = run(EPILOG, site.env("epilog.9"))
    assert result.returncode == 0, result.stderr
    assert site.failures() == 0, result.stderr
    (event,) = site.events("node_done")
    assert payload(event)["run_source"] == "env"


def test_epilog_uses_agent_file_when_socket_absent(site: Site) -> None:
    summary = {"schema": "computeproof.agent.summary/v1", "job_id": 9, "totals": {"samples": 3}}
    path = site.run / "c1" / "agent" / "9.json"
    path.parent.mkdir(parents=True)
    path.write_text(json.dumps(summary))
    run(EPILOG, site.env("epilog.9"))
    p = payload(site.events("node_done")[0])
    assert (p["gpu_summary"], p["gpu_summary_source"]) == (summary, "agent_file")


def test_epilog_asks_the_agent_socket(site: Site) -> None:
    sock_path = site.run / "c1" / "agent.sock"
    sock_path.parent.mkdir(parents=True)
    server = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    server.bind(str(sock_path))
    server.listen(1)
    requests: list[bytes] = []

    def serve() -> None:
        conn, _ = server.accept()
        with conn:
            requests.append(conn.recv(4096))
            conn.sendall(b'{"job_id": 9, "totals": {"energy_mj": 1200}}\n')

    thread = threading.Thread(target=serve, daemon=True)
    thread.start()
    run(EPILOG, site.env("epilog.9"))
    thread.join(5)
    server.close()
    assert json.loads(requests[0]) == {"op": "summary", "job_id": 9}
    p = payload(site.events("node_done")[0])
    assert p["gpu_summary_source"] == "agent"
    assert p["gpu_summary"] == {"job_id": 9, "totals": {"energy_mj": 1200}}


def test_agent_floats_do_not_cost_the_event(site: Site) -> None:
    path = site.run / "c1" / "agent" / "9.json"
    path.parent.mkdir(parents=True)
    path.write_text('{"util": 0.5}')
    assert run(EPILOG, site.env("epilog.9")).returncode == 0
    p = payload(site.events("node_done")[0])
    assert p["gpu_summary"] is None
    assert str(p["gpu_summary_source"]).startswith("invalid")


# json, re and enum each cost a hook milliseconds of CPU (json alone about 8 ms, more
# than the hook's own work); Slurm runs four hooks a job. subprocess pulls in all three.
# os costs 1 ms (of a 10 ms hook) and __future__ 0.1 ms: the hook path uses posix.
COSTLY_MODULES = {
    "json",
    "re",
    "enum",
    "subprocess",
    "typing",
    "hashlib",
    "socket",
    "os",
    "__future__",
}


@pytest.mark.parametrize(
    ("kind", "dump"),
    [
        ("prolog", "prolog.9"),
        ("epilog", "epilog.9"),
        ("prolog_slurmctld", "prolog_slurmctld.23"),
        ("epilog_slurmctld", "epilog_slurmctld.18"),
    ],
)
def test_hooks_do_not_import_costly_modules(site: Site, kind: str, dump: str) -> None:
    install(site.bin, "22.05", "ended", site.root / "slurm.log")  # the controller hooks' squeue
    # the Epilog parses an agent summary (here its file): that must not import json either
    path = site.run / "c1" / "agent" / "9.json"
    path.parent.mkdir(parents=True)
    path.write_text('{"job_id": 9, "totals": {"samples": 3}}')
    code = (
        f"import sys; sys.path.insert(0, {str(REPO)!r})\n"
        "from slurm_hooks.hooks import main\n"
        f"code = main({kind!r})\n"
        "print(code, ' '.join(sorted(sys.modules)))\n"
    )
    out = subprocess.run(
        ["/usr/bin/python3", "-SE", "-c", code],
        env=site.env(dump),
        capture_output=True,
        text=True,
        check=True,
    ).stdout.split()
    assert out[0] == "0"
    assert site.failures() == 0
    assert COSTLY_MODULES.isdisjoint(out[1:]), sorted(COSTLY_MODULES.intersection(out[1:]))
    if kind == "epilog":
        assert payload(site.events("node_done")[0])["gpu_summary_source"] == "agent_file"


def test_broken_config_exits_0_and_logs_one_line(site: Site) -> None:
    site.config.write_text("cluster = \n")
    env = site.env("prolog.9", COMPUTEPROOF_SPOOL=str(site.spool))
    site.spool.mkdir()
    result = run(PROLOG, env)
    assert result.returncode == 0
    assert result.stderr.count("\n") == 1
    assert "computeproof prolog: job 9:" in result.stderr
    assert site.failures() == 1


def test_strict_broken_config_exits_1(site: Site) -> None:
    site.config.write_text("strict = true\nbogus = 1\n")
    result = run(PROLOG, site.env("prolog.9"))
    assert result.returncode == 1
    assert "unknown key 'bogus'" in result.stderr


def test_unwritable_spool_exits_0(site: Site) -> None:
    blocker = site.root / "file"
    blocker.write_text("")
    result = run(PROLOG, site.env("prolog.9", COMPUTEPROOF_SPOOL=str(blocker / "spool")))
    assert result.returncode == 0
    assert "spool" in result.stderr


def test_strict_unwritable_spool_exits_1(tmp_path: Path) -> None:
    site = Site(tmp_path, extra="strict = true\n")
    blocker = site.root / "file"
    blocker.write_text("")
    result = run(PROLOG, site.env("prolog.9", COMPUTEPROOF_SPOOL=str(blocker / "spool")))
    assert result.returncode == 1


def test_not_run_by_slurm_exits_0(site: Site) -> None:
    result = run(PROLOG, {"COMPUTEPROOF_CONFIG": str(site.config)})
    assert result.returncode == 0
    assert "SLURM_JOB_ID" in result.stderr


def test_spool_status_shows_the_hook_failures_and_the_last_one(site: Site) -> None:
    from click.testing import CliRunner

    from slurm_hooks.cli import main

    site.spool.mkdir()  # the counter lives in the spool; a hook does not create it to fail
    for _ in range(2):
        assert run(PROLOG, {"COMPUTEPROOF_CONFIG": str(site.config)}).returncode == 0
    r = CliRunner().invoke(main, ["--config", str(site.config), "spool", "status", "--json"])
    assert r.exit_code == 0, r.output
    status = json.loads(r.stdout)
    assert status["hook_failures"] == 2 == site.failures()
    assert status["last_hook_failure"].startswith("computeproof prolog: job ?: SLURM_JOB_ID")
    r = CliRunner().invoke(main, ["--config", str(site.config), "spool", "status"])
    assert "last hook failure: computeproof prolog: job ?: SLURM_JOB_ID" in r.stdout


def _ctld_env(site: Site, dump: str, version: str, role: str, **more: str) -> dict[str, str]:
    ids = roles(version)
    env = site.env(dump, TZ="America/New_York")  # squeue must run in UTC whatever the zone
    job = str(ids[role])
    env.update(SLURM_JOB_ID=job, SLURM_JOBID=job, SLURM_JOB_NODELIST="c1", **more)
    for name in (
        "SLURM_ARRAY_JOB_ID",
        "SLURM_ARRAY_TASK_ID",
        "SLURM_ARRAY_TASK_COUNT",
        "SLURM_ARRAY_TASK_MAX",
        "SLURM_ARRAY_TASK_MIN",
        "SLURM_ARRAY_TASK_STEP",
    ):
        env.pop(name, None)
    return env


@pytest.mark.parametrize("version", ["22.05", "24.11"])
def test_prolog_slurmctld_records_scheduled(site: Site, version: str) -> None:
    """PrologSlurmctld: the environment plus one squeue read of the safe fields."""
    log = site.root / "slurm.log"
    install(site.bin, version, "running", log)
    env = _ctld_env(
        site,
        "prolog_slurmctld.23",
        version,
        "victim",
        SLURM_JOB_USER="cpbob",
        SLURM_JOB_ACCOUNT="biology",
        SLURM_JOB_NAME="victim",
    )
    result = run(PROLOG_CTLD, env)
    assert result.returncode == 0, result.stderr
    (event,) = site.events("scheduled")
    job = roles(version)["victim"]
    assert (event["job"], event["job_id"], event["host"], event["run"]) == (str(job), job, "ctl", 0)
    p = payload(event)
    assert (p["source"], p["recorded_by"]) == ("squeue", "PrologSlurmctld")
    assert (p["user"], p["account"], p["qos"], p["job_name"]) == (
        "cpbob",
        "biology",
        "normal",
        "victim",
    )
    assert (p["gpus"], p["nodes"], p["num_cpus"]) == (1, ["c1"], 1)
    assert p["submit_time"].endswith("Z") and p["start_epoch"] is not None  # type: ignore[union-attr]
    (call,) = [c for c in log.read_text().splitlines() if c.startswith("squeue")]
    assert f"-j {job} -O " in call and ",Name:" not in call


def test_prolog_slurmctld_hung_squeue_is_bounded(site: Site) -> None:
    site.fake("squeue", "exec sleep 30\n")
    start = time.monotonic()
    result = run(PROLOG_CTLD, site.env("prolog_slurmctld.23"))
    assert time.monotonic() - start < 1.5
    assert result.returncode == 0
    p = payload(site.events("scheduled")[0])
    assert str(p["source"]).startswith("env only: squeue timed out")
    assert p["job_name"] == "arr" and p["nodes"] == ["c2"]


def test_epilog_slurmctld_records_nothing_and_asks_nothing(site: Site) -> None:
    """The collector records completed; EpilogSlurmctld (still named by older slurm.conf
    files) exits 0 at once, broken config or not."""
    site.fake("squeue", f"echo called >> {site.root}/called\n")
    site.config.write_text("strict = true\nbogus = 1\n")
    result = run(EPILOG_CTLD, site.env("epilog_slurmctld.18"))
    assert result.returncode == 0 and result.stderr == ""
    assert site.events() == [] and site.failures() == 0
    assert not (site.root / "called").exists()


def test_controller_hooks_and_collector_share_event_ids(tmp_path: Path) -> None:
    """With PrologSlurmctld configured, the collector writes scheduled under the same id:
    the spool and the ledger hold one."""
    from computeproof.config import Config
    from slurm_hooks.controller import Collector
    from slurm_hooks.slurmcli import SlurmCli

    site = Site(tmp_path)
    version = "22.05"
    install(site.bin, version, "ended", site.root / "slurm.log")
    ids = roles(version)
    env = _ctld_env(site, "prolog_slurmctld.23", version, "attacker", SLURM_JOB_USER="cpalice")
    run(PROLOG_CTLD, env)
    hook_ids = {e["type"]: e["id"] for e in site.events()}
    assert set(hook_ids) == {"scheduled"}
    config = Config(
        cluster="cptest",
        spool_dir=str(site.spool),
        run_dir=str(site.run),
        slurm_bin=str(site.bin),
        host="ctl",
    )
    collector = Collector(config, SlurmCli(config.slurm_bin, timeout=10))
    collector.poll()
    collector.poll()  # the structured read of the runs the first poll saw allocated
    mine = [e for e in site.events() if e["job_id"] == ids["attacker"]]
    assert {e["type"]: e["id"] for e in mine if e["type"] in hook_ids} == hook_ids
    assert sorted(e["type"] for e in mine) == ["completed", "final_state", "scheduled"]
