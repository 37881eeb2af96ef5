"""Derived data (issue 13.8): the job index is checked against the receipts by `ledger
verify` and rebuilt from them by `ledger reindex`; `jobs show` prints only figures it
verified (computeproof/verifiedjob.py)."""

from __future__ import annotations

import json
import sqlite3
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner, Result

from computeproof.keys import Signer, write_key
from computeproof.ledger import Ledger
from computeproof.store.sqlite import SQLiteStore
from slurm_hooks.cli import main

ORIGIN = "computeproof.test.ledger"


@pytest.fixture
def site(
    tmp_path: Path, host_signer: Signer, make_lifecycle: Callable[..., list[dict[str, Any]]],
    sign_all: Callable[..., list[bytes]],
) -> Path:  # fmt: skip
    """A configured ledger with jobs 100 (alice, 2 GPUs) and 101 (bob); returns the config."""
    db, key = tmp_path / "ledger.db", tmp_path / "ledger.key"
    with Ledger(SQLiteStore(str(db)), ORIGIN, str(key), workers=1) as led:
        led.enroll(host_signer.public_raw, ["ctl", "node1", "node2"])
        led.append(sign_all(make_lifecycle("100")))
        led.append(sign_all(make_lifecycle("101", user="bob", nodes=("node1", "node2"))))
    write_key(str(tmp_path / "host.key"), host_signer)
    config = tmp_path / "config.toml"
    config.write_text(
        f'cluster = "c1"\ndb = "{db}"\nledger_key = "{key}"\nledger_origin = "{ORIGIN}"\n'
        f'host_key = "{tmp_path / "host.key"}"\nspool_dir = "{tmp_path / "spool"}"\n'
    )
    return config


def _sql(config: Path, statement: str, *args: object) -> None:
    con = sqlite3.connect(config.parent / "ledger.db")
    with con:
        con.execute(statement, args)
    con.close()


def _ledger(config: Path) -> Ledger:
    d = config.parent
    return Ledger(SQLiteStore(str(d / "ledger.db")), ORIGIN, str(d / "ledger.key"), workers=1)


def _cli(config: Path, *args: str) -> Result:
    return CliRunner().invoke(main, list(args), env={"COMPUTEPROOF_CONFIG": str(config)})


FORGE = "UPDATE jobs SET gpus = 8, user = 'mallory' WHERE job_id = 100"


def test_ledger_verify_checks_the_job_index(site: Path) -> None:
    """Regression (13.8): editing the jobs table (gpus, user) passed `ledger verify`."""
    with _ledger(site) as led:
        assert led.verify().ok
    _sql(site, FORGE)
    with _ledger(site) as led:
        report = led.verify()
    assert not report.ok and report.first_bad_index is None  # the log itself is sound
    (problem,) = report.problems
    assert problem.startswith("job index row c1/100#0:")
    assert "gpus is 8 in the index, the receipts give 2" in problem
    assert "user is 'mallory' in the index, the receipts give 'alice'" in problem
    assert "computeproof ledger reindex" in problem
    r = _cli(site, "ledger", "verify")
    assert r.exit_code == 1 and "job index row c1/100#0" in r.stdout


@pytest.mark.parametrize(
    ("statement", "needle"),
    [
        ("DELETE FROM jobs WHERE job_id = 101", "job c1/101#0 has receipts but no job index row"),
        (
            "INSERT INTO jobs (job_key, cluster, job, job_id, run, events) "
            "VALUES ('c1/999#0', 'c1', '999', 999, 0, 5)",
            "job index row c1/999#0 has no receipts in the log",
        ),
        ("UPDATE jobs SET fields = '{}' WHERE job_id = 100", "fields is {} in the index"),
        ("UPDATE jobs SET state = 'FAILED' WHERE job_id = 101", "state is 'FAILED'"),
    ],
)
def test_every_index_edit_is_named(site: Path, statement: str, needle: str) -> None:
    _sql(site, statement)
    with _ledger(site) as led:
        report = led.verify()
    assert not report.ok and any(needle in p for p in report.problems), report.problems


def test_reindex_rebuilds_the_index_from_the_receipts(site: Path) -> None:
    with _ledger(site) as led:
        before = {r.job_key: r for r in led.jobs()}
    _sql(site, FORGE)
    _sql(site, "DELETE FROM jobs WHERE job_id = 101")
    r = _cli(site, "ledger", "reindex")
    assert r.exit_code == 0 and "job index rebuilt" in r.stdout, r.output
    with _ledger(site) as led:
        assert {r.job_key: r for r in led.jobs()} == before
        assert led.verify().ok
    r = _cli(site, "ledger", "reindex", "--json")
    assert json.loads(r.stdout)["rebuilt"] is False


def test_reindex_refuses_a_damaged_log(site: Path) -> None:
    _sql(site, FORGE)
    _sql(site, "UPDATE leaves SET host = 'node2' WHERE idx = 1")
    r = _cli(site, "ledger", "reindex")
    assert r.exit_code == 1 and "left as it is" in r.stdout
    with _ledger(site) as led:
        assert led.store.get_jobs(["c1/100#0"])["c1/100#0"].gpus == 8  # untouched


def test_jobs_show_prints_only_verified_figures(site: Path) -> None:
    """Regression (13.8): `jobs show` printed the forged user and GPUs from the index with
    "receipt verified: ... OK" beneath. Now the figures come from the verified events and
    the difference is a warning (exit 1)."""
    _sql(site, FORGE)
    r = _cli(site, "jobs", "show", "100")
    assert r.exit_code == 1, r.output
    first = r.stdout.splitlines()[0]
    assert "user alice" in first and "2 GPUs" in first and "mallory" not in first
    assert "8 GPUs" not in r.stdout
    assert "receipt verified:" in r.stdout and "every figure above is from the verified" in r.stdout
    assert "WARNING: the job index differs from the receipts (" in r.stdout
    assert "gpus is 8 in the index, the receipts give 2" in r.stdout
    out = json.loads(_cli(site, "jobs", "show", "100", "--json").stdout)
    assert out["summary"]["gpus"] == 2 and out["summary"]["user"] == "alice"
    assert out["verification"]["ok"] is True and out["verification"]["index_differences"]


def test_jobs_show_of_a_sound_ledger(site: Path) -> None:
    r = _cli(site, "jobs", "show", "101", "--json")
    assert r.exit_code == 0, r.output
    out = json.loads(r.stdout)
    assert out["summary"]["user"] == "bob" and out["verification"]["index_differences"] == []
    assert out["verification"]["trust"]["trusted"] is True
    assert out["events"][0]["type"] == "scheduled"


def test_jobs_show_of_a_receipt_that_fails_labels_the_index(site: Path) -> None:
    with _ledger(site) as led:
        led.checkpoint()
    con = sqlite3.connect(site.parent / "ledger.db")
    env = bytes(con.execute("SELECT envelope FROM leaves WHERE idx = 2").fetchone()[0])
    pos = len(env) - 8  # inside the signature's base64
    forged = env[:pos] + (b"A" if env[pos : pos + 1] != b"A" else b"B") + env[pos + 1 :]
    with con:
        con.execute("UPDATE leaves SET envelope = ? WHERE idx = 2", (forged,))
    con.close()
    _sql(site, FORGE)
    r = _cli(site, "jobs", "show", "100")
    assert r.exit_code == 1, r.output
    assert "(from the job index: NOT verified)" in r.stdout.splitlines()[0]
    assert "receipt FAILED verification" in r.stdout and "receipt verified" not in r.stdout
