"""Receipt and report trust roots (issue 13.7, computeproof/trust.py): a receipt valid only
under the ledger key it carries is UNTRUSTED (exit 3), never VALID; --ledger-key and the
config's trusted_ledger_keys are roots; the output names the root used."""

from __future__ import annotations

import base64
import copy
import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner, Result

from computeproof.bundle import export_bundle, receipt_index, sign_index, verify_bundle
from computeproof.checkpoint import Checkpoint, sign_checkpoint
from computeproof.errors import BundleError, ConfigError
from computeproof.keys import Signer, format_public_key, write_key
from computeproof.ledger import Ledger
from computeproof.store.sqlite import SQLiteStore
from computeproof.trust import roots_from_options
from slurm_hooks.cli import main

ORIGIN = "computeproof.test.ledger"
FRESH = Signer.from_seed(bytes([9]) * 32)  # the forger's key


def _resign(bundle: dict[str, Any], signer: Signer, drop: int | None = None) -> dict[str, Any]:
    """The bundle re-signed by ``signer`` as its "ledger": checkpoint note, ledger key and
    receipt index, optionally without entry ``drop`` (a forged, incomplete receipt)."""
    b = copy.deepcopy(bundle)
    if drop is not None:
        del b["entries"][drop]
    log = b["log"]
    cp = Checkpoint(log["origin"], log["size"], base64.b64decode(log["root"]))
    log["checkpoint"] = sign_checkpoint(cp, log["origin"], signer.private_key)
    log["ledger_key"] = format_public_key(signer.public_raw)
    log["witness_statements"] = []
    from computeproof.envelope import open_envelope

    events = [open_envelope(e["envelope"].encode()).event for e in b["entries"]]
    b["index"] = sign_index(
        signer,
        receipt_index(b, [e["leaf_index"] for e in b["entries"]], [ev["id"] for ev in events]),
    )
    return b


@pytest.fixture
def site(
    tmp_path: Path, host_signer: Signer, make_lifecycle: Callable[..., list[dict[str, Any]]],
    sign_all: Callable[..., list[bytes]],
) -> dict[str, Any]:  # fmt: skip
    """A configured ledger holding job 100, its exported receipt and the ledger key."""
    db, key = tmp_path / "ledger.db", tmp_path / "ledger.key"
    with Ledger(SQLiteStore(str(db)), ORIGIN, str(key), workers=1) as led:
        led.enroll(host_signer.public_raw, ["ctl", "node1", "node2"])
        led.append(sign_all(make_lifecycle("100")))
        bundle = export_bundle(led, "100")
        public = format_public_key(led.signer().public_raw)
    config = tmp_path / "config.toml"
    config.write_text(
        f'cluster = "c1"\ndb = "{db}"\nledger_key = "{key}"\nledger_origin = "{ORIGIN}"\n'
        f'host_key = "{tmp_path / "host.key"}"\nspool_dir = "{tmp_path / "spool"}"\n'
    )
    write_key(str(tmp_path / "host.key"), host_signer)
    receipt = tmp_path / "r100.json"
    receipt.write_text(json.dumps(bundle))
    return {"dir": tmp_path, "bundle": bundle, "key": public, "config": config,
            "receipt": receipt}  # fmt: skip


def _cli(*args: str, config: Path | None = None) -> Result:
    """Run the CLI with ``config``, else an empty one (a verifier with no ledger and no
    trusted keys; never this host's /etc/computeproof/config.toml)."""
    if config is None:
        config = Path(args[2]).parent / "empty.toml"
        config.write_text("")
    return CliRunner().invoke(main, list(args), env={"COMPUTEPROOF_CONFIG": str(config)})


def test_a_bundle_resigned_with_a_fresh_key_is_untrusted(site: dict[str, Any]) -> None:
    """Regression (13.7): a bundle re-signed with a fresh key, one event dropped, printed
    VALID. It is valid under its own key only: UNTRUSTED, exit 3, naming the key."""
    forged = site["dir"] / "forged.json"
    forged.write_text(json.dumps(_resign(site["bundle"], FRESH, drop=1)))
    r = _cli("receipt", "verify", str(forged))
    assert r.exit_code == 3, r.output
    assert r.stdout.startswith(
        f"UNTRUSTED: valid under the bundle's own ledger key {format_public_key(FRESH.public_raw)}"
    )
    assert "pin it with --ledger-key" in r.stdout and "VALID receipt" not in r.stdout
    r = _cli("receipt", "verify", str(forged), "--ledger-key", site["key"])
    assert r.exit_code == 1 and r.stdout.startswith("INVALID") and "not the trusted" in r.stdout


def test_the_genuine_receipt_needs_a_root_too(site: dict[str, Any]) -> None:
    r = _cli("receipt", "verify", str(site["receipt"]))
    assert r.exit_code == 3 and r.stdout.startswith("UNTRUSTED")
    r = _cli("receipt", "verify", str(site["receipt"]), "--ledger-key", site["key"])
    assert r.exit_code == 0 and r.stdout.startswith("VALID receipt")
    assert f"ledger key {site['key']} trusted: pinned with --ledger-key" in r.stdout


def test_trusted_ledger_keys_in_the_config_are_a_root(site: dict[str, Any]) -> None:
    cfg = site["config"]
    cfg.write_text(cfg.read_text() + f'trusted_ledger_keys = ["{site["key"]}"]\n')
    r = _cli("receipt", "verify", str(site["receipt"]), config=cfg)
    assert r.exit_code == 0, r.output
    assert f"listed in trusted_ledger_keys ({cfg})" in r.stdout
    forged = site["dir"] / "forged.json"
    forged.write_text(json.dumps(_resign(site["bundle"], FRESH)))
    r = _cli("receipt", "verify", str(forged), "--json", config=cfg)
    out = json.loads(r.stdout)
    assert r.exit_code == 1 and out["verdict"] == "INVALID" and "not the trusted" in out["reason"]


def test_json_names_the_verdict_and_the_root(site: dict[str, Any]) -> None:
    r = _cli("receipt", "verify", str(site["receipt"]), "--json")
    out = json.loads(r.stdout)
    assert (r.exit_code, out["verdict"], out["valid"]) == (3, "UNTRUSTED", False)
    assert out["trust"]["trusted"] is False and out["trust"]["ledger_key"] == site["key"]
    r = _cli("receipt", "verify", str(site["receipt"]), "--json", "--ledger-key", site["key"])
    out = json.loads(r.stdout)
    assert out["verdict"] == "VALID" and out["trust"]["roots"] == ["pinned with --ledger-key"]


def test_verify_bundle_reports_trust(site: dict[str, Any]) -> None:
    report = verify_bundle(json.dumps(site["bundle"]))
    assert report.trust is not None and not report.trust.trusted
    pinned = verify_bundle(json.dumps(site["bundle"]), base64.b64decode(site["key"][8:]))
    assert pinned.trust is not None and pinned.trust.trusted
    with pytest.raises(BundleError, match="not the trusted ledger key"):
        verify_bundle(json.dumps(site["bundle"]), FRESH.public_raw)


def test_bad_roots_are_one_line_errors() -> None:
    with pytest.raises(ConfigError, match="--ledger-key"):
        roots_from_options("garbage!", (), None)
    with pytest.raises(ConfigError, match="--witness"):
        roots_from_options(None, ("not-a-key",), None)
    with pytest.raises(ConfigError, match="--quorum"):
        roots_from_options(None, (), 2)


def test_report_verify_needs_a_root(site: dict[str, Any], tmp_path: Path) -> None:
    """Same for `report verify` (computeproof/reports/verify.py)."""
    out = tmp_path / "report.json"
    r = _cli("report", "--from", "2026-01", "--to", "2026-12", "-o", str(out),
             config=site["config"])  # fmt: skip
    assert r.exit_code == 0, r.output
    r = _cli("report", "verify", str(out), config=site["config"])
    assert r.exit_code == 3, r.output
    assert "UNTRUSTED: every figure matches its receipts" in r.stdout
    assert "pin it with --ledger-key" in r.stdout
    r = _cli("report", "verify", str(out), "--ledger-key", site["key"], config=site["config"])
    assert r.exit_code == 0 and "VERIFIED" in r.stdout and "pinned with --ledger-key" in r.stdout
    other = format_public_key(FRESH.public_raw)
    r = _cli("report", "verify", str(out), "--ledger-key", other, "--json", config=site["config"])
    doc = json.loads(r.stdout)
    assert r.exit_code == 1 and doc["verdict"] == "MISMATCH"
    assert any("not a trusted ledger key" in p for p in doc["problems"])
