"""Tests of the `computeproof` command line (computeproof/cli/): exit codes, one-line errors,
JSON outputs; a few through `python3 -m slurm_hooks` in a subprocess."""

from __future__ import annotations

import json
import os
import shlex
import sqlite3
import stat
import subprocess
import sys
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner, Result

from computeproof.keys import Signer, format_public_key, write_key
from computeproof.ledger import Ledger
from computeproof.spool import Spool
from computeproof.store.sqlite import SQLiteStore
from slurm_hooks.cli import main

REPO = Path(__file__).resolve().parents[3]
ORIGIN = "computeproof.test.ledger"


@dataclass
class Site:
    """A configured site in a temporary directory, with a ledger holding jobs 100 and 101."""

    dir: Path
    config: Path
    db: Path
    spool: Path
    host_key: Path
    ledger_key: Path

    @property
    def env(self) -> dict[str, str | None]:
        return {
            "COMPUTEPROOF_CONFIG": str(self.config),
            "COMPUTEPROOF_DB": None,
            "COMPUTEPROOF_SPOOL": None,
            "COMPUTEPROOF_CLUSTER": None,
        }

    def ledger(self) -> Ledger:
        return Ledger(SQLiteStore(str(self.db)), ORIGIN, str(self.ledger_key), workers=1)


@pytest.fixture
def site(tmp_path: Path, host_signer: Signer, make_lifecycle: Callable, sign_all: Callable) -> Site:
    s = Site(
        tmp_path,
        tmp_path / "config.toml",
        tmp_path / "ledger.db",
        tmp_path / "spool",
        tmp_path / "host.key",
        tmp_path / "ledger.key",
    )
    s.config.write_text(
        f'cluster = "c1"\ndb = "{s.db}"\nspool_dir = "{s.spool}"\nhost_key = "{s.host_key}"\n'
        f'ledger_key = "{s.ledger_key}"\nledger_origin = "{ORIGIN}"\n'
    )
    write_key(str(s.host_key), host_signer)
    with s.ledger() as led:
        led.enroll(host_signer.public_raw, ["ctl", "node1", "node2"])
        led.append(sign_all(make_lifecycle("100")))
        led.append(sign_all(make_lifecycle("101", user="bob", state="FAILED")))
    return s


def cli(site: Site | None, *args: str, env: dict[str, str | None] | None = None) -> Result:
    return CliRunner().invoke(main, list(args), env=env if env is not None else site.env)  # type: ignore[union-attr]


def assert_one_line_error(stderr: str, *needles: str) -> None:
    lines = stderr.strip().splitlines()
    assert len(lines) == 1, stderr
    assert lines[0].startswith("computeproof: error: "), stderr
    assert "Traceback" not in stderr
    for n in needles:
        assert n in lines[0], stderr


# -- keys --------------------------------------------------------------------------------


def test_keys_init_enroll_list_revoke(site: Site) -> None:
    out = site.dir / "new.key"
    r = cli(site, "keys", "init", "--out", str(out), "--enroll", "node7", "--json")
    assert r.exit_code == 0, r.output
    info = json.loads(r.stdout)
    assert set(info) >= {"path", "public_key", "key_id"} and info["path"] == str(out)
    assert stat.S_IMODE(out.stat().st_mode) == 0o600
    r = cli(site, "keys", "init", "--out", str(out))
    assert r.exit_code == 2
    assert_one_line_error(r.stderr, "already exists")
    assert cli(site, "keys", "init", "--out", str(out), "--force").exit_code == 0

    listed = json.loads(cli(site, "keys", "list", "--json").stdout)
    by_id = {k["key_id"]: k for k in listed}
    assert by_id[info["key_id"]]["hosts"] == ["node7"] and by_id[info["key_id"]]["revoked"] is None

    other = Signer.from_seed(bytes([9]) * 32)
    r = cli(site, "keys", "enroll", format_public_key(other.public_raw), "--host", "node8")
    assert r.exit_code == 0 and other.key_id in r.stdout
    r = cli(site, "keys", "enroll", format_public_key(other.public_raw), "--host", "node9")
    assert r.exit_code == 0 and r.stdout.strip().endswith("for node8, node9")  # added to
    r = cli(site, "keys", "revoke", other.key_id[:12])
    assert r.exit_code == 0
    r = cli(site, "keys", "enroll", format_public_key(other.public_raw), "--host", "node8")
    assert r.exit_code == 2
    assert_one_line_error(r.stderr, "was revoked at", "create a new host key")
    listed = {k["key_id"]: k for k in json.loads(cli(site, "keys", "list", "--json").stdout)}
    assert listed[other.key_id]["revoked"] is not None
    r = cli(site, "keys", "revoke", "ffffffffffff")
    assert r.exit_code == 2
    assert_one_line_error(r.stderr, "matches 0 enrolled keys")
    r = cli(site, "keys", "enroll", "ed25519:AAAA", "--host", "x")
    assert r.exit_code == 2
    assert_one_line_error(r.stderr, "3 bytes")


def test_keys_enroll_from_key_file(site: Site) -> None:
    path = site.dir / "k2.key"
    signer = Signer.from_seed(bytes([7]) * 32)
    write_key(str(path), signer)
    r = cli(site, "keys", "enroll", str(path), "--host", "*")
    assert r.exit_code == 0 and signer.key_id in r.stdout


# -- ledger ------------------------------------------------------------------------------


def test_ledger_verify_ok_and_tampered(site: Site) -> None:
    r = cli(site, "ledger", "verify")
    assert r.exit_code == 0 and "ledger OK: 10 leaves" in r.stdout
    report = json.loads(cli(site, "ledger", "verify", "--json").stdout)
    assert report["ok"] is True and report["first_bad_index"] is None and report["size"] == 10
    con = sqlite3.connect(site.db)
    with con:
        con.execute("UPDATE leaves SET host = 'node9' WHERE idx = 6")
    con.close()
    r = cli(site, "ledger", "verify", "--json")
    assert r.exit_code == 1
    report = json.loads(r.stdout)
    assert report["ok"] is False and report["first_bad_index"] == 6
    assert any("leaf 6" in p for p in report["problems"])
    r = cli(site, "ledger", "verify")
    assert r.exit_code == 1 and "first bad leaf index 6" in r.stdout


def test_checkpoint_and_consistency(site: Site, tmp_path: Path) -> None:
    r = cli(site, "ledger", "checkpoint", "--json")
    assert r.exit_code == 0
    cp = json.loads(r.stdout)
    assert cp["size"] == 10 and cp["note"].startswith(f"{ORIGIN}\n10\n")
    old = tmp_path / "old.json"
    old.write_text(r.stdout)
    note = tmp_path / "old.note"
    note.write_text(cli(site, "ledger", "checkpoint").stdout)
    for f in (old, note):
        r = cli(site, "ledger", "consistency", str(f), "--json")
        assert r.exit_code == 0, r.output
        assert json.loads(r.stdout)["consistent"] is True
    # a checkpoint of another ledger
    other = tmp_path / "other"
    other.mkdir()
    with Ledger(SQLiteStore(str(other / "l.db")), "other.log", str(other / "k"), 1) as led:
        (other / "cp").write_text(led.checkpoint().note)
    r = cli(site, "ledger", "consistency", str(other / "cp"))
    assert r.exit_code == 1 and "NOT consistent" in r.stdout
    r = cli(site, "ledger", "consistency", str(tmp_path / "missing"))
    assert r.exit_code == 2
    assert_one_line_error(r.stderr, "cannot read")


# -- jobs --------------------------------------------------------------------------------


def test_jobs_list(site: Site) -> None:
    r = cli(site, "jobs", "list", "--json")
    assert r.exit_code == 0
    rows = json.loads(r.stdout)
    assert [row["job_id"] for row in rows] == ["100", "101"]
    for row in rows:
        assert {"job_id", "cluster", "user", "account", "state", "gpus", "start", "end"} <= set(row)
    assert (rows[1]["user"], rows[1]["state"], rows[1]["gpus"]) == ("bob", "FAILED", 2)
    only = json.loads(cli(site, "jobs", "list", "--json", "--user", "bob").stdout)
    assert [row["job_id"] for row in only] == ["101"]
    only = json.loads(cli(site, "jobs", "list", "--json", "--state", "completed").stdout)
    assert [row["job_id"] for row in only] == ["100"]
    r = cli(site, "jobs", "list", "--user", "nobody")
    assert r.exit_code == 0 and "no jobs match" in r.stdout
    r = cli(site, "jobs", "list", "--csv")
    assert (
        r.stdout.splitlines()[0].startswith("job_id,cluster,user")
        and len(r.stdout.splitlines()) == 3
    )
    r = cli(site, "jobs", "list", "--since", "not-a-date")
    assert r.exit_code == 2
    assert_one_line_error(r.stderr, "--since")


def test_jobs_show(site: Site) -> None:
    r = cli(site, "jobs", "show", "100", "--json")
    assert r.exit_code == 0, r.output
    out = json.loads(r.stdout)
    assert out["job_id"] == "100"
    assert [e["type"] for e in out["events"]] == [
        "scheduled",
        "started",
        "progress",
        "node_done",
        "completed",
    ]
    for e in out["events"]:
        assert {"type", "time", "host", "leaf_index"} <= set(e)
    assert [e["leaf_index"] for e in out["events"]] == [0, 1, 2, 3, 4]
    assert out["verification"]["ok"] is True
    r = cli(site, "jobs", "show", "101")
    assert r.exit_code == 0 and "receipt verified" in r.stdout
    r = cli(site, "jobs", "show", "999")
    assert r.exit_code == 2
    assert_one_line_error(r.stderr, "no receipts for job 999")


# -- receipts ----------------------------------------------------------------------------


def test_receipt_export_and_verify(site: Site, tmp_path: Path) -> None:
    path = tmp_path / "r100.json"
    r = cli(site, "receipt", "export", "100", "-o", str(path))
    assert r.exit_code == 0 and path.exists()
    ledger_key = json.loads(path.read_text())["log"]["ledger_key"]
    empty = tmp_path / "empty.toml"  # a verifier elsewhere: no ledger, no trusted keys
    empty.write_text("")
    # no trust root: valid only under its own key (docs/trust.md)
    r = cli(None, "receipt", "verify", str(path), env={"COMPUTEPROOF_CONFIG": str(empty)})
    assert r.exit_code == 3 and r.stdout.startswith("UNTRUSTED: valid under the bundle's own")
    r = cli(None, "receipt", "verify", str(path), "--ledger-key", ledger_key,
            env={"COMPUTEPROOF_CONFIG": str(empty)})  # fmt: skip
    assert r.exit_code == 0 and r.stdout.startswith("VALID receipt") and "c1/100#0" in r.stdout
    assert "pinned with --ledger-key" in r.stdout
    r = cli(site, "receipt", "verify", str(path), "--json", "--ledger-key", ledger_key)
    out = json.loads(r.stdout)
    assert out["valid"] is True and out["events"] == 5 and out["checkpoint_size"] == 10
    stdout = cli(site, "receipt", "export", "100", "-o", "-").stdout
    assert json.loads(stdout)["job"]["job_key"] == "c1/100#0"

    other = format_public_key(Signer.from_seed(bytes([5]) * 32).public_raw)
    r = cli(site, "receipt", "verify", str(path), "--ledger-key", other, "--json")
    assert r.exit_code == 1 and json.loads(r.stdout)["valid"] is False
    r = cli(site, "receipt", "verify", str(path), "--ledger-key", "garbage!")
    assert r.exit_code == 2
    assert_one_line_error(r.stderr, "not base64")

    bundle = json.loads(path.read_text())
    bundle["entries"][1]["leaf_index"] = 3
    bad = tmp_path / "bad.json"
    bad.write_text(json.dumps(bundle))
    r = cli(site, "receipt", "verify", str(bad))
    assert r.exit_code == 1 and r.stdout.startswith("INVALID receipt")
    bad.write_text("not json")
    assert cli(site, "receipt", "verify", str(bad)).exit_code == 1
    r = cli(site, "receipt", "verify", str(tmp_path / "missing.json"))
    assert r.exit_code == 2
    assert_one_line_error(r.stderr, "cannot read")
    r = cli(site, "receipt", "export", "999", "-o", str(tmp_path / "x.json"))
    assert r.exit_code == 2
    assert_one_line_error(r.stderr, "no receipts for job 999")


# -- forward and spool -------------------------------------------------------------------


def test_forward_and_spool_status(site: Site, make_lifecycle: Callable) -> None:
    sp = Spool(str(site.spool))
    events = make_lifecycle("102")
    for ev in events:
        sp.write(ev)
    status = json.loads(cli(site, "spool", "status", "--json").stdout)
    assert status["waiting"] == len(events) and status["failed"] == 0
    r = cli(site, "forward", "--json")
    assert r.exit_code == 0, r.output
    out = json.loads(r.stdout)
    assert (out["forwarded"], out["failed"], out["remaining"]) == (len(events), 0, 0)
    for ev in events:
        sp.write(ev)
    out = json.loads(cli(site, "forward", "--json").stdout)
    assert (out["forwarded"], out["duplicates"]) == (0, len(events))
    Path(sp.new, "junk.json").write_text("{")
    r = cli(site, "forward")
    assert r.exit_code == 0 and "rejected 1" in r.stdout
    status = json.loads(cli(site, "spool", "status", "--json").stdout)
    assert status["failed"] == 1 and status["failures"][0]["file"] == "junk.json"
    r = cli(site, "spool", "status")
    assert "0 waiting" in r.stdout and "junk.json" in r.stdout


def test_forward_without_host_key(site: Site) -> None:
    site.host_key.unlink()
    r = cli(site, "forward")
    assert r.exit_code == 2
    assert_one_line_error(r.stderr, str(site.host_key), "does not exist")


# -- bench -------------------------------------------------------------------------------


def test_bench_ingest_small_run(tmp_path: Path) -> None:
    db = tmp_path / "bench.db"
    args = ["bench", "ingest", "--db", str(db), "--jobs", "3", "--hosts", "2"]
    r = cli(None, *args, "--proof-sizes", "16,64", "--json", env={})
    assert r.exit_code == 0, r.output
    out = json.loads(r.stdout)
    assert out["jobs"] == 3 and out["events"] >= 3 * 5
    assert out["events_per_s"] > 0 and out["verify_ceiling_per_s"] > 0
    assert set(out) >= {"ledger_verify_per_s", "proof_us_median_at_16", "proof_us_median_at_64"}
    assert out["proof_us_median"] == out["proof_us_median_at_64"]
    with Ledger(SQLiteStore(str(db)), None, workers=1) as ledger:
        assert ledger.size() == out["events"] and ledger.verify().ok
        assert [j.synthetic for j in ledger.jobs()] == [True] * 3


@pytest.mark.parametrize(
    ("option", "value", "needle"),
    [
        ("--jobs", "0", "'--jobs'"),
        ("--hosts", "0", "'--hosts'"),
        ("--proof-sizes", "10k", "not a comma-separated list of leaf counts"),
        ("--proof-sizes", "0", "not a comma-separated list of leaf counts"),
        ("--proof-sizes", "1,,2", "not a comma-separated list of leaf counts"),
    ],
)
def test_bench_ingest_bad_options(tmp_path: Path, option: str, value: str, needle: str) -> None:
    db = tmp_path / "bench.db"
    r = cli(None, "bench", "ingest", "--db", str(db), option, value, env={})
    assert r.exit_code == 2 and needle in r.stderr and "Traceback" not in r.output
    assert not db.exists()


# -- configuration errors ----------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "needle"),
    [
        ("cluster = ", "invalid TOML"),
        ('colour = "x"\n', "unknown key 'colour'"),
        ("strict = 3\n", "'strict' must be true or false"),
    ],
)
def test_bad_config_is_one_line(site: Site, text: str, needle: str) -> None:
    site.config.write_text(text)
    for args in (("jobs", "list"), ("ledger", "verify", "--json"), ("spool", "status")):
        r = cli(site, *args)
        assert r.exit_code == 2
        assert_one_line_error(r.stderr, str(site.config), needle)


def test_missing_config_file(site: Site) -> None:
    r = cli(site, "jobs", "list", env={**site.env, "COMPUTEPROOF_CONFIG": str(site.dir / "no")})
    assert r.exit_code == 2
    assert_one_line_error(r.stderr, "does not exist")


def test_db_flag_overrides_config(site: Site, tmp_path: Path) -> None:
    SQLiteStore(str(tmp_path / "empty.db")).close()
    r = cli(site, "--db", str(tmp_path / "empty.db"), "jobs", "list", "--json")
    assert r.exit_code == 0 and json.loads(r.stdout) == []


def test_ledger_upgrade(site: Site) -> None:
    """A schema 1 ledger (made as the first versions made it) is upgraded once; a current
    one is left alone; the ledger's jobs are all there after."""
    with sqlite3.connect(site.db) as db:  # turn the site's ledger back into schema 1
        db.executescript(
            "CREATE TABLE old AS SELECT * FROM leaves; DROP TABLE leaves;"
            "CREATE TABLE leaves (idx INTEGER PRIMARY KEY, event_id TEXT NOT NULL UNIQUE,"
            " job_key TEXT NOT NULL, type TEXT NOT NULL, host TEXT NOT NULL,"
            " time TEXT NOT NULL, envelope BLOB NOT NULL);"
            "CREATE INDEX leaves_job ON leaves (job_key);"
            "INSERT INTO leaves SELECT * FROM old; DROP TABLE old;"
            "UPDATE meta SET value = '1' WHERE key = 'schema_version';"
        )
    r = cli(site, "ledger", "upgrade")
    assert r.exit_code == 0 and "upgraded from schema 1 to 2" in r.stdout, r.output
    r = cli(site, "ledger", "upgrade", "--json")
    assert r.exit_code == 0, r.output
    assert json.loads(r.stdout) == {"db": str(site.db), "schema_before": "2", "schema": "2"}
    r = cli(site, "ledger", "verify", "--json")
    assert r.exit_code == 0 and json.loads(r.stdout)["ok"]
    assert len(json.loads(cli(site, "jobs", "list", "--json").stdout)) == 2


def test_ledger_verify_warns_of_a_ledger_others_can_read(site: Site) -> None:
    r = cli(site, "ledger", "verify", "--json")
    assert r.exit_code == 0 and json.loads(r.stdout)["warnings"] == []
    site.db.chmod(0o644)  # as versions before 2026-11-26 created it
    r = cli(site, "ledger", "verify", "--json")
    assert r.exit_code == 0, r.output
    (warning,) = json.loads(r.stdout)["warnings"]
    assert "readable by other users (mode 644)" in warning and f"chmod 600 {site.db}" in warning
    r = cli(site, "ledger", "verify")
    assert r.exit_code == 0 and r.stdout.startswith("ledger OK")
    assert r.stderr.startswith("warning: ") and "private fields" in r.stderr


def test_ledger_backup(site: Site) -> None:
    dest = site.dir / "backup.db"
    r = cli(site, "ledger", "backup", str(dest), "--json")
    assert r.exit_code == 0, r.output
    out = json.loads(r.stdout)
    assert out["backup"] == str(dest) and out["leaves"] == site.ledger().size() > 0
    r = cli(site, "ledger", "verify", "--db", str(dest), "--json")
    assert r.exit_code == 0 and json.loads(r.stdout)["size"] == out["leaves"]
    r = cli(site, "ledger", "backup", str(dest))
    assert r.exit_code == 2
    assert_one_line_error(r.stderr, f"{dest} exists")


def test_a_missing_ledger_is_refused_not_created(site: Site, tmp_path: Path) -> None:
    """A mistyped --db must not read as a new, empty ledger (`ledger verify` said OK)."""
    typo = tmp_path / "typo" / "ledgr.db"
    out = tmp_path / "out.json"
    for args in (
        ("jobs", "list"),
        ("jobs", "show", "100"),
        ("ledger", "verify"),
        ("ledger", "checkpoint"),
        ("keys", "list"),
        ("receipt", "export", "100", "-o", str(out)),
        ("report", "--from", "2026-01", "--to", "2026-12", "-o", str(out)),
        ("forward",),
    ):
        r = cli(site, *args, "--db", str(typo))
        assert r.exit_code != 0, args
        assert_one_line_error(r.stderr, f"no ledger at {typo}", "keys enroll")
        assert not typo.parent.exists() and not out.exists(), args
    r = cli(site, "keys", "enroll", str(site.host_key), "--host", "node1", "--db", str(typo))
    assert r.exit_code == 0, r.output
    r = cli(site, "ledger", "verify", "--db", str(typo), "--json")
    assert r.exit_code == 0 and json.loads(r.stdout)["size"] == 0


def test_global_flags_also_after_the_command(site: Site, tmp_path: Path) -> None:
    empty = str(tmp_path / "empty.db")
    SQLiteStore(empty).close()
    r = cli(site, "jobs", "list", "--db", empty, "--json")
    assert r.exit_code == 0 and json.loads(r.stdout) == []
    r = cli(site, "jobs", "list", "--json")
    assert r.exit_code == 0 and len(json.loads(r.stdout)) == 2  # the config's ledger
    # --config after the command, with no COMPUTEPROOF_CONFIG in the environment
    r = cli(site, "jobs", "show", "101", "--json", "--config", str(site.config),
            env={**site.env, "COMPUTEPROOF_CONFIG": None})  # fmt: skip
    assert r.exit_code == 0 and json.loads(r.stdout)["job_id"] == "101"
    # a group that is a command itself (report) takes them too; another ledger file has
    # its own ledger key (one key signing two logs is refused: lastsigned.py)
    other = tmp_path / "other.toml"
    other.write_text(site.config.read_text().replace(str(site.ledger_key), f"{empty}.key"))
    for db, jobs in ((None, 2), (empty, 0)):
        out = tmp_path / f"report-{jobs}.json"
        args = ["report", "--from", "2026-01", "--to", "2026-12", "-o", str(out)]
        r = cli(site, *args, *(("--db", db, "--config", str(other)) if db else ()))
        assert r.exit_code == 0, r.output
        assert json.loads(out.read_text())["totals"]["jobs"] == jobs
    bad = tmp_path / "bad.toml"
    bad.write_text("cluster = ")
    r = cli(site, "ledger", "verify", "--config", str(bad))
    assert r.exit_code == 2
    assert_one_line_error(r.stderr, str(bad), "invalid TOML")


def test_a_command_own_db_option_is_kept() -> None:
    bench = main.commands["bench"].commands["ingest"]  # type: ignore[attr-defined]
    dbs = [p for p in bench.params if "--db" in getattr(p, "opts", ())]
    assert len(dbs) == 1 and dbs[0].required


def test_db_directory_is_one_line(site: Site) -> None:
    for args in (("jobs", "list"), ("ledger", "verify")):
        r = cli(site, *args, "--db", str(site.dir))
        assert r.exit_code == 2
        assert_one_line_error(r.stderr, f"{site.dir} is a directory", "ledger.db")


def test_config_directory_is_one_line(site: Site) -> None:
    r = cli(site, "jobs", "list", env={**site.env, "COMPUTEPROOF_CONFIG": str(site.dir)})
    assert r.exit_code == 2
    assert_one_line_error(r.stderr)


# -- through a real process --------------------------------------------------------------


def _run(args: list[str], env: dict[str, str], cwd: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "slurm_hooks", *args],
        env=env,
        cwd=cwd,
        capture_output=True,
        text=True,
        timeout=60,
    )


def _clean_env(**extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("COMPUTEPROOF_")}
    env["PYTHONPATH"] = os.pathsep.join([str(REPO), env.get("PYTHONPATH", "")]).rstrip(os.pathsep)
    env.update(extra)
    return env


def test_subprocess_receipt_verify_needs_no_config(site: Site, tmp_path: Path) -> None:
    path = tmp_path / "r.json"
    assert cli(site, "receipt", "export", "101", "-o", str(path)).exit_code == 0
    home = tmp_path / "home"
    home.mkdir()
    empty = home / "empty.toml"  # not this host's /etc/computeproof/config.toml
    empty.write_text("")
    env = _clean_env(HOME=str(home), COMPUTEPROOF_CONFIG=str(empty))
    p = _run(["receipt", "verify", str(path), "--json"], env, home)
    assert p.returncode == 3, p.stderr  # no trust root
    out: dict[str, Any] = json.loads(p.stdout)
    assert out["verdict"] == "UNTRUSTED" and out["valid"] is False
    key = json.loads(path.read_text())["log"]["ledger_key"]
    p = _run(["receipt", "verify", str(path), "--json", "--ledger-key", key], env, home)
    assert p.returncode == 0, p.stderr
    out = json.loads(p.stdout)
    assert out["valid"] is True and out["job"] == "c1/101#0"


def test_subprocess_errors_and_exit_codes(site: Site, tmp_path: Path) -> None:
    env = _clean_env(COMPUTEPROOF_CONFIG=str(site.config))
    p = _run(["jobs", "show", "999"], env, tmp_path)
    assert p.returncode == 2
    assert_one_line_error(p.stderr, "no receipts for job 999")
    p = _run(["jobs", "show", "100", "--json"], env, tmp_path)
    assert p.returncode == 0 and json.loads(p.stdout)["events"][0]["leaf_index"] == 0
    con = sqlite3.connect(site.db)
    with con:
        con.execute("UPDATE leaves SET time = 'x' WHERE idx = 8")
    con.close()
    p = _run(["ledger", "verify", "--json"], env, tmp_path)
    assert p.returncode == 1 and json.loads(p.stdout)["first_bad_index"] == 8
    bad = tmp_path / "bad.toml"
    bad.write_text("cluster = [")
    p = _run(["jobs", "list"], _clean_env(COMPUTEPROOF_CONFIG=str(bad)), tmp_path)
    assert p.returncode == 2
    assert_one_line_error(p.stderr, str(bad), "invalid TOML")
    p = _run(["receipt", "verify", str(tmp_path / "nothing.json")], _clean_env(), tmp_path)
    assert p.returncode == 2
    assert_one_line_error(p.stderr, "cannot read")


def test_jobs_show_line_of_a_completed_event_names_the_state_slurm_showed() -> None:
    from computeproof.jobview import event_detail as _event_detail

    line = _event_detail(
        "completed",
        {"state_seen": "COMPLETING", "exit_code": 3, "reason": "NonZeroExitCode",
         "elapsed_s": 2, "gpus": 4},
    )  # fmt: skip
    assert line == "state COMPLETING (when seen) exit 3 reason NonZeroExitCode elapsed 2s GPUs 4"
    assert _event_detail("completed", {"state_at_epilog": "COMPLETING"}).startswith(
        "state COMPLETING (when seen)"
    )  # receipts written before the collector wrote completed


def parse_command_line(argv: list[str]) -> None:
    """Parse ``computeproof ARGS`` down to its leaf command without running it; raise
    click's usage error on a command or option the CLI lacks."""
    command: Any = main
    args = list(argv)
    while args and args[0] in ("--db", "--config"):  # global options before the command
        args = args[2:]
    while hasattr(command, "commands"):  # walk down the groups to the leaf command
        name, *args = args
        assert name in command.commands, f"no command {name!r} in {argv}"
        command = command.commands[name]
        if hasattr(command, "commands") and args and args[0] not in command.commands:
            break  # a group that is a command itself (report) with its own options
    command.make_context(command.name, args)


@pytest.mark.parametrize("unit", ["computeproof-agent.service", "computeproof-forward.service"])
def test_systemd_units_run_commands_the_cli_accepts(unit: str) -> None:
    exec_start = next(
        line.partition("=")[2].split()
        for line in (REPO / "conf" / unit).read_text().splitlines()
        if line.startswith("ExecStart=")
    )
    assert exec_start[0].endswith("/computeproof")
    parse_command_line(exec_start[1:])


def test_readme_examples_are_commands_the_cli_accepts() -> None:
    """Every `computeproof ...` line of the README's shell blocks parses (comments,
    redirections and [optional] brackets stripped)."""
    lines = [
        line.split("#", 1)[0].split(">", 1)[0].replace("[", "").replace("]", "")
        for line in (REPO / "README.md").read_text().splitlines()
        if line.startswith("computeproof ")
    ]
    assert len(lines) >= 15
    for line in lines:
        parse_command_line(shlex.split(line)[1:])


# -- hostile input (issue 13, item 10 and terminal output) --------------------------------


def test_hostile_arguments_get_one_line_errors(site: Site) -> None:
    binary = site.dir / "binary.bin"
    binary.write_bytes(bytes(range(256)) * 16)
    nested = site.dir / "nested.json"
    nested.write_text("[" * 100_000 + "]" * 100_000)

    r = cli(site, "jobs", "show", "99999999999999999999999")
    assert r.exit_code == 2
    assert_one_line_error(r.stderr, "no receipts for job 99999999999999999999999")

    r = cli(site, "report", "--from", "2026-01-01", "--to", "2026-02", "--grants",
            str(binary), "-o", str(site.dir / "r.json"))  # fmt: skip
    assert r.exit_code == 2
    assert_one_line_error(r.stderr, "not a TOML file")

    r = cli(site, "ledger", "consistency", str(binary))
    assert r.exit_code == 2
    assert_one_line_error(r.stderr, "not a checkpoint")

    r = cli(site, "receipt", "verify", str(nested))
    assert r.exit_code == 1 and "INVALID" in r.stdout and "nested too deeply" in r.stdout
    assert "Traceback" not in r.output

    r = cli(site, "jobs", "list", "--state", "BOGUS")
    assert r.exit_code == 2 and "BOGUS" in r.stderr and "Traceback" not in r.output

    r = cli(site, "report", "--from", "2026-01-01", "--to", "2026-02", "--sample-size", "-1",
            "-o", str(site.dir / "r.json"))  # fmt: skip
    assert r.exit_code == 2 and "--sample-size" in r.stderr

    r = cli(site, "report", "--from", "2026-01-01", "--to", "2026-02", "--grid-intensity",
            "-5", "-o", str(site.dir / "r.json"))  # fmt: skip
    assert r.exit_code == 2
    assert_one_line_error(r.stderr, "--grid-intensity must be a finite number >= 0, not -5")
    assert "Decimal(" not in r.stderr


def test_user_strings_cannot_draw_lines_on_the_terminal(
    site: Site, host_signer: Signer, sign_all: Callable
) -> None:
    from computeproof.event import new_event

    fake = "loss 0.1\n  9. 2026-01-01T00:00:00Z  completed   ctl\nreceipt verified: all OK"
    events = [
        new_event("scheduled", "c1", "300", 300, "ctl",
                  {"user": "eve\x1b[2J", "account": "[red]x[/red]", "gpus": 1},
                  time="2026-01-05T10:00:00.000001Z"),
        new_event("progress", "c1", "300", 300, "node1", {"message": fake, "percent": 5},
                  time="2026-01-05T10:10:00.000001Z"),
    ]  # fmt: skip
    with site.ledger() as led:
        led.append(sign_all(events))
    r = cli(site, "jobs", "show", "300")
    lines = r.stdout.splitlines()
    assert not any(line.startswith("receipt verified: all OK") for line in lines), r.stdout
    assert not any(line.startswith("  9.") for line in lines), r.stdout
    assert "loss 0.1\\x0a  9." in r.stdout and "eve\\x1b[2J" in r.stdout
    assert "\x1b" not in r.stdout
    r = cli(site, "jobs", "list")
    assert "\x1b" not in r.stdout and "[red]x[/red]" in r.stdout  # shown, not read as markup
