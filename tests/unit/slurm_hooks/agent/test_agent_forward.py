"""The agent's own forwarder (forward_interval): spool -> signed -> ledger, in a thread.

Real spool, real SQLite ledger, real host key; only NVML is the fake library.
"""

from __future__ import annotations

import dataclasses
import logging
from pathlib import Path

import pytest
from click.testing import CliRunner
from conftest import Clock, Script

from computeproof.config import Config
from computeproof.event import new_event
from computeproof.forward import forward_lock
from computeproof.keys import Signer, write_key
from computeproof.ledger import open_ledger
from computeproof.spool import Spool
from slurm_hooks.agent.daemon import Agent
from slurm_hooks.agent.sampler import Sampler
from slurm_hooks.cli import main


@pytest.fixture
def site(config: Config, tmp_path: Path) -> Config:
    """The agent tests' config plus a ledger that trusts this host's key."""
    cfg = dataclasses.replace(
        config,
        db=str(tmp_path / "ledger.db"),
        host_key=str(tmp_path / "host.key"),
        ledger_key=str(tmp_path / "ledger.key"),
        forward_interval=1,
    )
    signer = Signer.generate()
    write_key(cfg.host_key, signer)
    with open_ledger(cfg, create=True) as ledger:
        ledger.enroll(signer.public_raw, ["*"])
    return cfg


def spool_events(cfg: Config, job_id: int, n: int = 3) -> list[str]:
    spool = Spool(cfg.spool_dir)
    spool.ensure()
    events = [
        new_event("progress", cfg.cluster, str(job_id), job_id, "c1", {"percent": i}, seq=i)
        for i in range(n)
    ]
    for e in events:
        spool.write(e)
    return [str(e["id"]) for e in events]


def ledger_ids(cfg: Config) -> list[str]:
    with open_ledger(cfg) as ledger:
        return [leaf.event_id for leaf in ledger.store.leaves()]


def make_agent(cfg: Config, clock: Clock) -> Agent:
    return Agent(cfg, "c1", sampler=Sampler(timeout_s=2.0, clock=clock), clock=clock)


def test_sampling_passes_forward_the_spool(site: Config, script: Script, clock: Clock) -> None:
    ids = spool_events(site, 7)
    agent = make_agent(site, clock)
    agent.pass_once()
    agent.join_forward(timeout=30)
    assert sorted(ledger_ids(site)) == sorted(ids)
    assert Spool(site.spool_dir).count_pending() == 0
    # the next pass within forward_interval does not forward; one after it does
    more = spool_events(site, 8)
    clock.at(500)
    agent.pass_once()
    agent.join_forward(timeout=30)
    assert Spool(site.spool_dir).count_pending() == len(more)
    clock.at(1000)
    agent.pass_once()
    agent.join_forward(timeout=30)
    assert sorted(ledger_ids(site)) == sorted(ids + more)


def test_no_forwarding_when_interval_is_zero(site: Config, script: Script, clock: Clock) -> None:
    spool_events(site, 7)
    agent = make_agent(dataclasses.replace(site, forward_interval=0), clock)
    agent.pass_once()
    agent.join_forward(timeout=30)
    assert ledger_ids(site) == [] and Spool(site.spool_dir).count_pending() == 3


def test_a_failure_is_logged_once_and_the_events_wait(
    site: Config, script: Script, clock: Clock, caplog: pytest.LogCaptureFixture
) -> None:
    ids = spool_events(site, 7)
    key = Path(site.host_key)
    saved = key.read_bytes()
    key.unlink()
    agent = make_agent(site, clock)
    with caplog.at_level(logging.INFO, logger="computeproof.agent"):
        assert agent.forward_once() is None
        assert agent.forward_once() is None
        failures = [r for r in caplog.records if "forwarding failed" in r.getMessage()]
        assert len(failures) == 1 and site.host_key in failures[0].getMessage()
        assert Spool(site.spool_dir).count_pending() == 3 and ledger_ids(site) == []
        key.write_bytes(saved)
        result = agent.forward_once()
    assert result is not None and result.forwarded == 3
    assert any("forwarding works again" in r.getMessage() for r in caplog.records)
    assert sorted(ledger_ids(site)) == sorted(ids)


def test_another_forwarder_holding_the_spool_is_not_waited_for(
    site: Config, script: Script, clock: Clock
) -> None:
    ids = spool_events(site, 7)
    agent = make_agent(site, clock)
    with forward_lock(Spool(site.spool_dir)) as held:
        assert held
        assert agent.forward_once() is None  # returns at once, forwards nothing
        assert Spool(site.spool_dir).count_pending() == 3
    result = agent.forward_once()
    assert result is not None and result.forwarded == 3
    assert sorted(ledger_ids(site)) == sorted(ids)


def test_forward_loop_outlives_a_failing_pass(
    site: Config, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """`computeproof forward --loop`: an error is one line and the loop goes on."""
    ids = spool_events(site, 7)
    key = Path(site.host_key)
    saved = key.read_bytes()
    key.unlink()
    sleeps: list[float] = []

    def sleep(seconds: float) -> None:
        sleeps.append(seconds)
        if len(sleeps) == 1:
            key.write_bytes(saved)  # the problem is fixed while the loop waits
        else:
            raise SystemExit(0)

    monkeypatch.setattr("time.sleep", sleep)
    config = tmp_path / "config.toml"
    config.write_text(
        f'cluster = "{site.cluster}"\ndb = "{site.db}"\nspool_dir = "{site.spool_dir}"\n'
        f'host_key = "{site.host_key}"\nledger_key = "{site.ledger_key}"\n'
    )
    r = CliRunner().invoke(main, ["--config", str(config), "forward", "--loop", "0.5"])
    assert r.exit_code == 0, r.output
    assert "does not exist" in r.stderr and "retrying in 0.5 s" in r.stderr
    assert "forwarded 3, duplicates 0, rejected 0, waiting 0" in r.stdout
    assert sleeps == [0.5, 0.5]
    assert sorted(ledger_ids(site)) == sorted(ids)
