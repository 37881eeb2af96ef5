"""The agent's metrics as a real Prometheus server scrapes them (issue 20).

A real Prometheus (Debian's package) started here on a loopback port scrapes a running
agent over the fake NVML every second. Shown: PromQL over what it scraped gives each job's
GPU utilization, busy time, energy and peak memory exactly as the agent's own summary and
the node_done event of the job's verified receipt (real Epilog, forwarder, ledger,
receipt export and verification); `promtool check metrics` finds no naming problem; and
in jobstats mode the queries Princeton's jobstats issues (jobstats.py, get_job_stats)
answer per node and GPU minor number as jobstats reads them.
"""

from __future__ import annotations

import dataclasses
import json
import os
import signal
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from conftest import REPO, Clock, Script, bind
from fakenvml.build import gpu_line
from promserver import Prometheus, by_label, free_port, promtool

from computeproof.bundle import export_bundle, verify_bundle
from computeproof.config import Config
from computeproof.forward import forward_configured
from computeproof.keys import Signer, write_key
from computeproof.ledger import open_ledger
from slurm_hooks.agent.daemon import Agent
from slurm_hooks.agent.metrics import Exporter
from slurm_hooks.agent.sampler import Sampler
from slurm_hooks.agent.server import AgentServer

EPILOG = REPO / "epilog.d" / "computeproof-epilog"
CLI = [sys.executable, "-c", "from slurm_hooks.cli import main; main()"]
GIB = 2**30


@pytest.fixture
def site(config: Config, tmp_path: Path) -> Config:
    """The agent tests' config plus a ledger that trusts this host's key; user labels
    private, account labels public."""
    cfg = dataclasses.replace(
        config,
        db=str(tmp_path / "ledger.db"),
        host_key=str(tmp_path / "host.key"),
        ledger_key=str(tmp_path / "ledger.key"),
        private_fields=("user",),
    )
    signer = Signer.generate()
    write_key(cfg.host_key, signer)
    with open_ledger(cfg, create=True) as ledger:
        ledger.enroll(signer.public_raw, ["*"])
    return cfg


@pytest.fixture
def running(site: Config, script: Script, clock: Clock) -> Iterator[tuple[Agent, Exporter]]:
    """An agent (injected clock, passes driven by the test) answering on its socket and
    serving native metrics on a free loopback port."""
    agent = Agent(site, "c1", sampler=Sampler(clock=clock), clock=clock)
    server = AgentServer(site.agent_socket_path("c1"), agent)
    server.start()
    exporter = Exporter(agent, 0, "127.0.0.1", "native", site.private_fields)
    yield agent, exporter
    exporter.close()
    server.stop()
    agent.sampler.close()


def scrape(port: int) -> str:
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=10) as r:
        return str(r.read().decode())


def readings(t: int) -> str:
    """GPU 0 (job 101), GPUs 1-2 (job 102), GPU 3 idle; changing load at each step."""
    lines = []
    for minor in range(4):
        util = 0 if minor == 3 else (13 * (t // 5000) + 29 * minor) % 101
        lines.append(
            gpu_line(
                minor, minor, util=util, mem_used=(1 + (t // 5000 + minor) % 5) * GIB,
                power=100_000 + 1000 * util, temp=40 + minor, energy=1_000_000 * (minor + 1)
                + (t // 1000) * (100_000 + 1000 * util),
            )
        )  # fmt: skip
    return "".join(lines)


def run_epilog(site_config: str, job_id: int, uid: int) -> None:
    env = {
        "SLURMD_NODENAME": "c1", "SLURM_JOB_ID": str(job_id), "SLURM_JOB_UID": str(uid),
        "SLURM_JOB_USER": "alice", "COMPUTEPROOF_CONFIG": site_config,
    }  # fmt: skip
    done = subprocess.run([str(EPILOG)], env=env, capture_output=True, text=True, timeout=60)
    assert done.returncode == 0 and not done.stderr, done.stderr


def write_site(cfg: Config, path: Path, extra: str = "") -> str:
    path.write_text(
        f'cluster = "{cfg.cluster}"\nrun_dir = "{cfg.run_dir}"\nspool_dir = "{cfg.spool_dir}"\n'
        f'db = "{cfg.db}"\nhost_key = "{cfg.host_key}"\nledger_key = "{cfg.ledger_key}"\n' + extra
    )
    return str(path)


def receipt_node_done(cfg: Config, job: str) -> dict[str, Any]:
    """The node_done payload of ``job``'s receipt, exported and verified offline."""
    with open_ledger(cfg) as ledger:
        bundle = export_bundle(ledger, job)
        key = ledger.ledger_public_key()
    report = verify_bundle(json.dumps(bundle), key)
    (node_done,) = [e for e in report.events if e["type"] == "node_done"]
    payload = node_done["payload"]
    assert isinstance(payload, dict)
    return payload


def test_promql_over_scraped_series_matches_summary_and_receipt(
    site: Config,
    script: Script,
    clock: Clock,
    running: tuple[Agent, Exporter],
    tmp_path: Path,
) -> None:
    agent, exporter = running
    bind(site, "c1", 101, [0], user="alice", account="physics")
    bind(site, "c1", 102, [1, 2], job="102", user="bob", account="chemistry")
    prom = Prometheus(tmp_path / "prom", {f"127.0.0.1:{exporter.port}": {}})
    try:
        for step, t in enumerate(range(0, 25_000, 5_000)):
            script.write(readings(t))
            clock.at(t)
            agent.pass_once()
            # every pass is scraped at least once before the next
            prom.wait_for(
                'computeproof_job_gpu_samples_total{jobid="102"}',
                lambda r, n=step + 1: len(r) == 2 and all(float(x["value"][1]) == n for x in r),
            )
        # the jobs end: the real Epilog asks the agent (a fresh energy reading) and spools
        # node_done; the series stay until the next pass
        script.write(readings(27_000))
        clock.at(27_000)
        site_config = write_site(site, tmp_path / "site.toml")
        for job_id in (101, 102):
            run_epilog(site_config, job_id, os.getuid())
        after = time.time()
        prom.wait_for(f"timestamp(computeproof_agent_jobs) > {after:.3f}", bool)
        forward_configured(site, wait=True)
        q = {
            "busy": "sum by (jobid) (computeproof_job_gpu_busy_seconds_total)",
            "weighted": "sum by (jobid) (computeproof_job_gpu_utilization_seconds_total)",
            "measured": "sum by (jobid) (computeproof_job_gpu_measured_seconds_total)",
            "energy": "sum by (jobid) (computeproof_job_gpu_energy_joules_total)",
            "peak": "max by (jobid) (computeproof_job_gpu_memory_max_bytes)",
            "peak_live": "max by (jobid) (max_over_time("
            'computeproof_gpu_memory_used_bytes{jobid!=""}[10m]))',
            "util": "sum by (jobid) (computeproof_job_gpu_utilization_seconds_total)"
            " / sum by (jobid) (computeproof_job_gpu_measured_seconds_total)",
        }  # fmt: skip
        got = {name: by_label(prom.query(promql), "jobid") for name, promql in q.items()}
        idle = by_label(prom.query('computeproof_gpu_job_id{minor="3"}'), "jobid")
        panels = {expr: prom.query(expr) for expr in dashboard_queries(jobid="101")}
        labels = prom.query('computeproof_gpu_utilization_ratio{minor="0"}')[0]["metric"]
        text = scrape(exporter.port)
    finally:
        prom.stop()
    for job in ("101", "102"):
        summary = agent.summary(int(job))
        node_done = receipt_node_done(site, job)
        assert node_done["gpu_summary"] == summary  # the receipt holds the agent's summary
        totals = summary["totals"]
        assert isinstance(totals, dict)
        assert round(got["busy"][job] * 1000) == totals["busy_ms"] > 0
        assert round(got["weighted"][job] * 1000) == totals["util_weighted_ms"] > 0
        assert (
            round(got["measured"][job] * 1000)
            == totals["measured_ms"]
            == (
                20_000 * len(summary["gpus"])  # type: ignore[arg-type]
            )
        )
        assert round(got["energy"][job] * 1000) == totals["energy_mj"] > 0
        assert got["peak"][job] == got["peak_live"][job] == totals["max_memory_bytes"]
        assert got["util"][job] == pytest.approx(totals["util_weighted_ms"] / totals["measured_ms"])
    assert idle == {"": 0.0}  # the idle GPU is there, held by no job
    # labels: cluster node minor uuid model jobid slurm_job account; user is private here
    assert {k: labels[k] for k in ("cluster", "node", "minor", "uuid", "model", "jobid")} == {
        "cluster": "test", "node": "c1", "minor": "0", "uuid": "GPU-fake-0000",
        "model": "Fake-H100", "jobid": "101",
    }  # fmt: skip
    assert labels["account"] == "physics" and "user" not in labels
    # every query of the Grafana dashboard runs, and each about the job finds it
    for expr, result in panels.items():
        if 'jobid="101"' in expr and "increase(" not in expr:
            assert result, f"dashboard query found nothing: {expr}"
    lint = subprocess.run(
        [promtool(), "check", "metrics"], input=text, capture_output=True, text=True, timeout=60
    )
    assert lint.returncode == 0 and not lint.stdout.strip() and not lint.stderr.strip(), (
        lint.stdout + lint.stderr
    )


def dashboard_queries(jobid: str) -> list[str]:
    """The PromQL of every panel of conf/grafana-computeproof.json, its variables set."""
    dashboard = json.loads((REPO / "conf" / "grafana-computeproof.json").read_text())
    exprs = [t["expr"] for p in dashboard["panels"] for t in p.get("targets", [])]
    assert len(exprs) >= 15
    return [
        e.replace("$cluster", ".*").replace("$node", ".*").replace("$jobid", jobid) for e in exprs
    ]


def test_alert_rules_and_scrape_config_are_valid(tmp_path: Path) -> None:
    """conf/prometheus.yml and conf/prometheus-rules.yml as promtool reads them."""
    for name in ("prometheus.yml", "prometheus-rules.yml"):
        (tmp_path / name).write_text((REPO / "conf" / name).read_text())
    (tmp_path / "computeproof-agents.json").write_text('[{"labels": {}, "targets": ["n1:9446"]}]')
    for args in (["check", "rules", "prometheus-rules.yml"], ["check", "config", "prometheus.yml"]):
        done = subprocess.run(
            [promtool(), *args], cwd=tmp_path, capture_output=True, text=True, timeout=60
        )
        assert done.returncode == 0, done.stdout + done.stderr
        assert "SUCCESS" in done.stdout


def jobstats_get_data_out(result: list[dict[str, Any]]) -> dict[str, dict[str, float]]:
    """What jobstats.py's get_data_out keeps of a GPU query: node (the instance's host)
    -> minor_number -> value."""
    out: dict[str, dict[str, float]] = {}
    for r in result:
        node = r["metric"]["instance"].split(":")[0]
        out.setdefault(node, {})[r["metric"]["minor_number"]] = float(r["value"][1])
    return out


def test_jobstats_queries_answer_from_the_agent(
    config: Config, script: Script, tmp_path: Path, subprocess_env: dict[str, str]
) -> None:
    """The three GPU queries of jobstats' get_job_stats, with its cluster label set by the
    scrape configuration as its docs do, answer for a job on two of three GPUs."""
    script.write(
        gpu_line(0, 0, util=73, mem_used=3 * GIB, power=250_000, temp=51)
        + gpu_line(1, 1, util=41, mem_used=5 * GIB, power=150_000, temp=47)
        + gpu_line(2, 2, util=0, mem_used=0, power=60_000, temp=30)
    )
    bind(config, "c1", 201, [1, 0])
    port = free_port()
    cfg_path = tmp_path / "config.toml"
    cfg_path.write_text(
        f'cluster = "{config.cluster}"\nrun_dir = "{config.run_dir}"\n'
        f'spool_dir = "{config.spool_dir}"\nsample_interval = 1\norphan_check_interval = 0\n'
        f'prometheus_port = {port}\nprometheus_format = "jobstats"\n'
    )
    env = dict(subprocess_env, COMPUTEPROOF_CONFIG=str(cfg_path), FAKE_NVML_SCRIPT=script.path)
    agent = subprocess.Popen([*CLI, "agent", "run", "--node", "c1"], env=env, cwd=REPO,
                             stderr=subprocess.PIPE, text=True)  # fmt: skip
    prom = None
    try:
        prom = Prometheus(tmp_path / "prom", {f"127.0.0.1:{port}": {"cluster": "della"}})
        prom.wait_for(
            'count_over_time(nvidia_gpu_duty_cycle{minor_number="0"}[1m])',
            lambda r: bool(r) and float(r[0]["value"][1]) >= 6,
            timeout=60,
        )
        end, diff = time.time(), 5
        # jobstats.py: query % (self.cluster, self.jobidraw, self.diff), evaluated at end
        queries = {
            "gpu_total_memory": "max_over_time((nvidia_gpu_memory_total_bytes{cluster='%s'} "
            "and nvidia_gpu_jobId == %s)[%ds:])",
            "gpu_used_memory": "max_over_time((nvidia_gpu_memory_used_bytes{cluster='%s'} "
            "and nvidia_gpu_jobId == %s)[%ds:])",
            "gpu_utilization": "avg_over_time((nvidia_gpu_duty_cycle{cluster='%s'} "
            "and nvidia_gpu_jobId == %s)[%ds:])",
        }
        got = {
            name: jobstats_get_data_out(prom.query(q % ("della", "201", diff), at=end))
            for name, q in queries.items()
        }
        devices = prom.query("nvidia_gpu_num_devices")
        uid = by_label(prom.query("nvidia_gpu_jobUid"), "minor_number")
        idle = prom.query('nvidia_gpu_jobId{minor_number="2"}')
        text = scrape(port)
    finally:
        if prom is not None:
            prom.stop()
        agent.send_signal(signal.SIGTERM)
        _, err = agent.communicate(timeout=30)
    assert agent.returncode == 0, err
    assert got == {
        "gpu_total_memory": {"127.0.0.1": {"0": 85899345920.0, "1": 85899345920.0}},
        "gpu_used_memory": {"127.0.0.1": {"0": 3.0 * GIB, "1": 5.0 * GIB}},
        "gpu_utilization": {"127.0.0.1": {"0": 73.0, "1": 41.0}},
    }
    assert [float(d["value"][1]) for d in devices] == [3.0]
    assert uid == {"0": float(os.getuid()), "1": float(os.getuid())}
    assert idle == []  # as jobstats' exporter: no job series for an idle GPU
    lint = subprocess.run(
        [promtool(), "check", "metrics"], input=text, capture_output=True, text=True, timeout=60
    )
    # the two names jobstats fixed are camelCase; promtool says so, and nothing else
    problems = sorted(line for line in (lint.stdout + lint.stderr).splitlines() if line.strip())
    assert problems == [
        "nvidia_gpu_jobId metric names should be written in 'snake_case' not 'camelCase'",
        "nvidia_gpu_jobUid metric names should be written in 'snake_case' not 'camelCase'",
    ]
