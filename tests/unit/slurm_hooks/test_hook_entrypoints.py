"""The four hook executables, run as Slurm runs them: env -i, no PATH, absolute paths.

Covers the never-harm contract (broken config, unwritable spool, hung scontrol -> exit 0
and one logged line; strict -> exit 1) and what each event records.
"""

from __future__ import annotations

import calendar
import json
import os
import socket
import subprocess
import threading
import time
from pathlib import Path

import pytest
from squeue_text import squeue_line

from computeproof.event import check_event

REPO = Path(__file__).resolve().parents[3]
FIXTURES = Path(__file__).parent / "fixtures"
PROLOG = REPO / "prolog.d" / "computeproof-prolog"
EPILOG = REPO / "epilog.d" / "computeproof-epilog"
PROLOG_CTLD = REPO / "prolog.d" / "computeproof-prolog-slurmctld"
EPILOG_CTLD = REPO / "epilog.d" / "computeproof-epilog-slurmctld"


class Site:
    """A temporary site: config, spool, run dir, slurm.conf + gres.conf, fake devices."""

    def __init__(self, root: Path, extra: str = "") -> None:
        self.root = root
        self.spool = root / "spool"
        self.run = root / "run"
        self.bin = root / "bin"
        self.bin.mkdir()
        self.etc = root / "etc"
        self.etc.mkdir()
        self.dev = root / "dev"
        self.dev.mkdir()
        self.config = root / "config.toml"
        self.config.write_text(
            f'cluster = "cptest"\nspool_dir = "{self.spool}"\nrun_dir = "{self.run}"\n'
            f'slurm_bin = "{self.bin}"\nhost = "ctl"\n{extra}'
        )
        (self.etc / "slurm.conf").write_text("ClusterName=cptest\n")
        (self.etc / "gres.conf").write_text(
            f"NodeName=c1 Name=gpu Type=a100 File={self.dev}/nvidia[0-3]\n"
            f"NodeName=c2 Name=gpu Type=a100 File={self.dev}/nvidia[4-7]\n"
        )
        if os.geteuid() == 0:
            for minor in range(8):
                os.mknod(self.dev / f"nvidia{minor}", 0o600 | 0o020000, os.makedev(195, minor))

    def env(self, name: str, **more: str) -> dict[str, str]:
        text = (FIXTURES / "envdump" / f"{name}.env").read_text()
        env = dict(line.split("=", 1) for line in text.splitlines() if "=" in line)
        if "SLURM_CONF" in env:
            env["SLURM_CONF"] = str(self.etc / "slurm.conf")
        env["COMPUTEPROOF_CONFIG"] = str(self.config)
        env.update(more)
        return env

    def fake(self, name: str, script: str) -> None:
        path = self.bin / name
        path.write_text("#!/bin/sh\n" + script)
        path.chmod(0o755)

    def events(self, type: str | None = None) -> list[dict[str, object]]:
        out = []
        for path in sorted((self.spool / "new").glob("*.json")):
            event = check_event(json.loads(path.read_bytes()))
            if type is None or event["type"] == type:
                out.append(event)
        return out

    def failures(self) -> int:
        try:
            return int((self.spool / "hook-failures").read_text())
        except FileNotFoundError:
            return 0


def run(exe: Path, env: dict[str, str], timeout: float = 10) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [str(exe)], env=env, capture_output=True, text=True, timeout=timeout, check=False
    )


@pytest.fixture
def site(tmp_path: Path) -> Site:
    return Site(tmp_path)


def payload(event: dict[str, object]) -> dict[str, object]:
    p = event["payload"]
    assert isinstance(p, dict)
    return p


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
    site.fake("scontrol", "exit 1\n")
    env = site.env("prolog_slurmctld.23")
    run(PROLOG_CTLD, env)
    run(
        EPILOG_CTLD,
        site.env(
            "epilog_slurmctld.18", SLURM_JOB_ID="23", SLURM_JOBID="23", SLURM_JOB_RESTART_COUNT="1"
        ),
    )
    # the collector writes completed from Slurm's record (none here): the run is the marker's
    marker = json.loads((site.spool / "final-pending" / "23.0.json").read_text())
    assert (marker["run"], marker["completed"]["run_source"]) == (0, "prolog")


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
    "json", "re", "enum", "subprocess", "typing", "hashlib", "socket", "os", "__future__"
}  # fmt: skip


@pytest.mark.parametrize(
    ("kind", "dump"),
    [("prolog", "prolog.9"), ("epilog", "epilog.9"), ("epilog_slurmctld", "epilog_slurmctld.18")],
)
def test_hooks_do_not_import_costly_modules(site: Site, kind: str, dump: str) -> None:
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


def test_prolog_slurmctld_records_scheduled(site: Site, monkeypatch: pytest.MonkeyPatch) -> None:
    # scontrol runs with TZ=UTC (the fixture is its UTC output), whatever slurmctld's zone
    site.fake("scontrol", f'echo "$TZ" > {site.root}/tz\ncat {FIXTURES / "scontrol_array.txt"}\n')
    env = site.env("prolog_slurmctld.23", TZ="America/New_York")
    # The fixture holds task 19_2 (job 19); run the hook as that job.
    env.update(
        SLURM_JOB_ID="19", SLURM_JOBID="19", SLURM_ARRAY_TASK_ID="2", SLURM_JOB_NODELIST="c1"
    )
    result = run(PROLOG_CTLD, env)
    assert result.returncode == 0, result.stderr
    (event,) = site.events("scheduled")
    assert (event["job"], event["job_id"], event["host"]) == ("19_2", 19, "ctl")
    p = payload(event)
    assert p["slurm_record"] == "scontrol"
    assert p["submit_time"] == "2026-11-25T16:58:38Z"
    assert (site.root / "tz").read_text().strip() == "UTC"
    assert (p["array_job_id"], p["array_task_id"]) == (19, 2)
    assert p["gpus"] == 1 and p["nodes"] == ["c1"]
    assert (p["user"], p["account"], p["partition"], p["qos"]) == ("root", "root", "gpu", "normal")


def test_prolog_slurmctld_hung_scontrol_is_bounded(site: Site) -> None:
    site.fake("scontrol", "exec sleep 30\n")
    start = time.monotonic()
    result = run(PROLOG_CTLD, site.env("prolog_slurmctld.23"))
    assert time.monotonic() - start < 1.5
    assert result.returncode == 0
    p = payload(site.events("scheduled")[0])
    assert str(p["slurm_record"]).startswith("unavailable: scontrol timed out")
    assert p["job_name"] == "arr" and p["nodes"] == ["c2"]


# squeue's view of job 9 just after it ended (Slurm 22.05), in UTC as the collector asks
SQUEUE_JOB_9 = squeue_line(
    JobID=9, State="COMPLETING", Reason="NonZeroExitCode", exit_code=768,
    SubmitTime="2026-11-25T16:57:54", StartTime="2026-11-25T16:57:56",
    EndTime="2026-11-25T16:57:58", NodeList="c[1-2]", NumNodes=2, restartcnt=0, BatchFlag=1,
    UserName="root", Account="root", Partition="gpu", QOS="normal", ArrayJobID=9,
    tres_alloc="cpu=2,mem=1000M,node=2,billing=2,gres/gpu=4,gres/gpu:a100=4", Name="wrap",
)  # fmt: skip


def test_epilog_slurmctld_completed_and_final_state(site: Site) -> None:
    """EpilogSlurmctld makes no RPC; the collector writes completed (with the epilog's time)
    from one squeue call, then final_state from sacct."""
    site.fake("scontrol", "echo scontrol must not be called >&2; exit 1\n")
    (site.root / "squeue.txt").write_text(SQUEUE_JOB_9 + "\n")
    site.fake(
        "squeue", f'echo "$*" >> {site.root / "squeue.log"}; cat {site.root / "squeue.txt"}\n'
    )
    sacct_json = FIXTURES / "sacct_18_19_22.json"
    # The sacct fixture is for job 18; serve it for job 9 with its id rewritten.
    text = sacct_json.read_text().replace('"job_id": 18,', '"job_id": 9,')
    # ...and with the start time scontrol reported for job 9 (the run to watch).
    text = text.replace('"start": 1795625919', '"start": 1795625876')
    (site.root / "sacct.json").write_text(text)
    site.fake(
        "sacct",
        f'case "$*" in *--json*) cat {site.root / "sacct.json"};; '
        '*) echo "9|2026-11-25T16:57:56|3:0";; esac\n',
    )
    env = site.env("epilog_slurmctld.18", TZ="UTC")
    env.update(SLURM_JOB_ID="9", SLURM_JOBID="9")
    before = time.time()
    result = run(EPILOG_CTLD, env)
    assert result.returncode == 0, result.stderr
    assert site.failures() == 0
    # The detached collector writes completed, then final_state once sacct has it.
    deadline = time.monotonic() + 10
    while not site.events("final_state") and time.monotonic() < deadline:
        time.sleep(0.05)
    (event,) = site.events("completed")
    p = payload(event)
    assert (p["exit_code"], p["signal"]) == (3, 0)
    assert p["exit_code_env"] == "3:0" and p["exit_code_slurm"] == "3:0"
    assert p["gpus"] == 4 and p["nodes"] == ["c1", "c2"] and p["slurm_record"] == "squeue"
    assert p["start_time"] == "2026-11-25T16:57:56Z" and p["elapsed_s"] == 2
    assert p["gpu_seconds"] == 8 and p["reason"] == "NonZeroExitCode"
    # stamped with the epilog's time, not the collector's
    stamp = calendar.timegm(time.strptime(str(event["time"])[:19], "%Y-%m-%dT%H:%M:%S"))
    assert abs(stamp - before) < 5
    assert (site.root / "squeue.log").read_text().split("\n")[0].endswith(" -j 9")
    (final,) = site.events("final_state")
    fp = payload(final)
    assert (fp["state"], fp["exit_code"], fp["source"]) == ("FAILED", 3, "sacct")
    assert fp["gpu_seconds"] == 4 * 2
    assert final["run"] == event["run"] and final["job"] == "9"
