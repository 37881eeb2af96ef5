"""Exact accumulated figures from scripted NVML readings, driven by an injected clock."""

from __future__ import annotations

import time
from pathlib import Path

from conftest import Clock, Script, bind
from fakenvml.build import gpu_line

from computeproof.config import Config
from slurm_hooks.agent.daemon import Agent
from slurm_hooks.agent.procs import ProcessTable
from slurm_hooks.agent.sampler import Sampler
from slurm_hooks.agent.state import read_summary, summary_path


def make_agent(config: Config, clock: Clock, timeout_s: float = 2.0) -> Agent:
    return Agent(config, "c1", sampler=Sampler(timeout_s=timeout_s, clock=clock), clock=clock)


def gpu(summary: dict[str, object], minor: int) -> dict[str, object]:
    return next(g for g in summary["gpus"] if g["minor"] == minor)  # type: ignore[attr-defined,index]


def test_counter_and_power_integral_exact(config: Config, script: Script, clock: Clock) -> None:
    # NVML order differs from minor order: index 0 is minor 5, index 1 is minor 4.
    bind(config, "c1", 101, [4])
    bind(config, "c1", 102, [5])
    agent = make_agent(config, clock)
    steps = [  # (t, minor 4 util/energy/mem, minor 5 util/power/mem)
        (0, 50, 1000, 100, 10, 200000, 7),
        (5000, 100, 4000, 300, 30, 200000, 9),
        (10000, 0, 4500, 200, 0, 100000, 8),
    ]
    for t, u4, e4, m4, u5, p5, m5 in steps:
        script.write(
            gpu_line(0, 5, util=u5, power=p5, mem_used=m5)
            + gpu_line(1, 4, util=u4, energy=e4, mem_used=m4, power=1)
            + "fail 0 nvmlDeviceGetTotalEnergyConsumption 3\n"
        )
        clock.at(t)
        sample = agent.pass_once()
        assert sample.error is None
    a = gpu(agent.summary(101), 4)
    assert (a["samples"], a["measured_ms"], a["unmeasured_ms"]) == (3, 10000, 0)
    assert (a["busy_ms"], a["util_percent_ms"], a["util_weighted_ms"]) == (5000, 500000, 5000)
    assert (a["energy_mj"], a["energy_method"], a["energy_measured_ms"]) == (3500, "counter", 10000)
    assert a["max_memory_bytes"] == 300
    assert (a["uuid"], a["slurm_index"]) == ("GPU-fake-0004", 0)
    b = gpu(agent.summary(102), 5)
    assert (b["busy_ms"], b["util_percent_ms"], b["util_weighted_ms"]) == (5000, 150000, 1500)
    # power x interval: 200 W x 5 s + 100 W x 5 s = 1500 J
    assert (b["energy_mj"], b["energy_method"]) == (1_500_000, "power_integral")
    assert b["energy_power_uj"] == 1_500_000_000
    assert b["max_memory_bytes"] == 9
    totals = agent.summary(101)["totals"]
    assert totals["energy_mj"] == 3500  # type: ignore[index]


def test_failed_call_is_unmeasured_not_zero(config: Config, script: Script, clock: Clock) -> None:
    bind(config, "c1", 7, [0])
    agent = make_agent(config, clock)
    script.write(gpu_line(0, 0, util=80, energy=100))
    clock.at(0)
    agent.pass_once()
    script.write(gpu_line(0, 0, util=80, energy=600) + "fail 0 nvmlDeviceGetUtilizationRates 999\n")
    clock.at(5000)
    agent.pass_once()
    script.write(gpu_line(0, 0, util=20, energy=900))
    clock.at(10000)
    agent.pass_once()
    g = gpu(agent.summary(7), 0)
    assert (g["samples"], g["measured_ms"], g["unmeasured_ms"]) == (2, 5000, 5000)
    assert (g["busy_ms"], g["util_weighted_ms"]) == (5000, 1000)
    assert g["read_errors"] == 1
    # the counter is cumulative: energy over the failed interval is still measured
    assert (g["energy_mj"], g["energy_measured_ms"]) == (800, 10000)


def test_hung_call_never_blocks_and_is_a_gap(config: Config, script: Script, clock: Clock) -> None:
    bind(config, "c1", 7, [0])
    agent = make_agent(config, clock, timeout_s=0.2)
    script.write(gpu_line(0, 0, util=40, energy=1000))
    clock.at(0)
    agent.pass_once()
    script.write(
        gpu_line(0, 0, util=40, energy=2000) + "hang 0 nvmlDeviceGetUtilizationRates 700\n"
    )
    clock.at(5000)
    started = time.monotonic()
    assert "did not return" in (agent.pass_once().error or "")
    clock.at(10000)
    assert "still hung" in (agent.pass_once().error or "")  # no second call queued
    assert time.monotonic() - started < 0.6
    script.write(gpu_line(0, 0, util=40, energy=3000))
    time.sleep(0.8)  # let the hung call come back
    clock.at(15000)
    assert agent.pass_once().error is None
    g = gpu(agent.summary(7), 0)
    assert (g["samples"], g["measured_ms"], g["unmeasured_ms"]) == (2, 5000, 10000)
    assert (g["energy_mj"], g["energy_measured_ms"]) == (2000, 15000)
    assert agent.gaps == 2


def test_long_interval_counts_at_most_two_intervals(
    config: Config, script: Script, clock: Clock
) -> None:
    bind(config, "c1", 7, [0])
    agent = make_agent(config, clock)
    script.write(gpu_line(0, 0, util=100, energy=0))
    clock.at(0)
    agent.pass_once()
    clock.at(25000)
    agent.pass_once()
    g = gpu(agent.summary(7), 0)
    assert (g["measured_ms"], g["unmeasured_ms"], g["busy_ms"]) == (10000, 15000, 10000)


def test_foreign_and_shared(config: Config, script: Script, clock: Clock) -> None:
    import os
    import subprocess

    # a process of job 555 (under a root-owned "slurmstepd: [555.0]"), this test (no job),
    # and a pid that does not exist, all on job 101's GPU; GPU 1 is bound to two jobs.
    stepd = subprocess.Popen(
        ["bash", "-c", 'exec -a "slurmstepd: [555.0]" bash -c "sleep 30 & wait"']
    )
    try:
        deadline = time.monotonic() + 5
        child = None
        while child is None and time.monotonic() < deadline:
            out = subprocess.run(["pgrep", "-P", str(stepd.pid)], capture_output=True, text=True)
            child = int(out.stdout.split()[0]) if out.stdout.split() else None
            time.sleep(0.02)
        assert child is not None
        bind(config, "c1", 101, [0])
        bind(config, "c1", 102, [1])
        bind(config, "c1", 103, [1])
        agent = Agent(
            config,
            "c1",
            sampler=Sampler(clock=clock),
            clock=clock,
            processes=ProcessTable(trusted_uids=frozenset({0, os.getuid()})),
        )
        procs = f"{child}:1024,{os.getpid()}:2048,3999999:1"
        script.write(gpu_line(0, 0, util=1, procs=procs) + gpu_line(1, 1, util=1))
        for t in (0, 5000):
            clock.at(t)
            agent.pass_once()
        g = gpu(agent.summary(101), 0)
        assert g["foreign_samples"] == 2
        assert g["foreign_processes"] == [
            {"pid": child, "job_id": 555, "visible": True},
            {"pid": os.getpid(), "job_id": None, "visible": True},
            {"pid": 3999999, "job_id": None, "visible": False},
        ]
        assert gpu(agent.summary(102), 1)["shared_with"] == [103]
        assert gpu(agent.summary(103), 1)["shared_with"] == [102]
    finally:
        stepd.kill()
        stepd.wait()


def test_restart_resumes_without_double_counting(
    config: Config, script: Script, clock: Clock
) -> None:
    bind(config, "c1", 7, [0])
    first = make_agent(config, clock)
    for t, e in ((0, 1000), (5000, 2000)):
        script.write(gpu_line(0, 0, util=50, energy=e))
        clock.at(t)
        first.pass_once()
    first.sampler.close()
    persisted = read_summary(summary_path(config, "c1", 7))
    assert persisted is not None and persisted["last_sample_ms"] == clock.start + 5000
    second = make_agent(config, clock)  # a new process: state comes from the summary file
    script.write(gpu_line(0, 0, util=50, energy=9000))
    clock.at(20000)
    second.pass_once()
    g = gpu(second.summary(7), 0)
    assert (g["samples"], g["measured_ms"], g["unmeasured_ms"]) == (3, 15000, 5000)
    assert (g["energy_mj"], g["energy_measured_ms"]) == (8000, 20000)


def test_progress_events_every_interval(config: Config, script: Script, clock: Clock) -> None:
    import json
    import os

    bind(config, "c1", 7, [0], job="100_4")
    agent = make_agent(config, clock)
    for t, e in ((0, 0), (5000, 50), (10000, 100), (15000, 150), (20000, 200)):
        script.write(gpu_line(0, 0, util=10, energy=e))
        clock.at(t)
        agent.pass_once()
    new = os.path.join(config.spool_dir, "new")
    events = [json.loads(Path(new, n).read_text()) for n in sorted(os.listdir(new))]
    events.sort(key=lambda ev: ev["seq"])
    assert [(ev["type"], ev["seq"], ev["job"], ev["host"]) for ev in events] == [
        ("progress", 0, "100_4", "c1"),
        ("progress", 1, "100_4", "c1"),
    ]
    assert [ev["payload"]["totals"]["energy_mj"] for ev in events] == [100, 200]
    assert [ev["payload"]["time_ms"] - clock.start for ev in events] == [10000, 20000]
    assert agent.summary(7)["progress_seq"] == 2
