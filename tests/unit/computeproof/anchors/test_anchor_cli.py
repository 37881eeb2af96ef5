"""`computeproof anchor` and `receipt verify --check-anchors` end to end: the dev chain runs
as its own process (`anchor devchain`), as in the demo."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from anchorjobs import ORIGIN, add_job
from capture_server import CaptureServer, CaptureState
from click.testing import CliRunner, Result

from computeproof.keys import Signer, format_public_key
from computeproof.ledger import Ledger
from computeproof.store.sqlite import SQLiteStore
from slurm_hooks.cli import main

REPO = Path(__file__).resolve().parents[4]


@pytest.fixture(scope="module")
def devchain_process(tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, Any]]:
    """`computeproof anchor devchain` in a subprocess; its devchain.json."""
    d = tmp_path_factory.mktemp("devchain-process")
    proc = subprocess.Popen(
        [sys.executable, "-m", "slurm_hooks", "anchor", "devchain", "--dir", str(d),
         "--port", "0", "--exit-after", "600"],
        cwd=REPO, env={**os.environ, "PYTHONPATH": str(REPO)},
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    )  # fmt: skip
    state = d / "devchain.json"
    deadline = time.monotonic() + 120
    while not state.exists() and proc.poll() is None and time.monotonic() < deadline:
        time.sleep(0.2)
    if not state.exists():
        proc.kill()
        pytest.fail(f"the dev chain did not start: {proc.communicate()[1][-2000:]}")
    try:
        yield {"dir": str(d), "proc": proc, **json.loads(state.read_text())}
    finally:
        if proc.poll() is None:
            proc.send_signal(signal.SIGTERM)
            proc.wait(timeout=30)


@pytest.fixture
def site(
    tmp_path: Path, host_signer: Signer, make_lifecycle: Callable[..., list[dict[str, Any]]]
) -> dict[str, Any]:
    config = tmp_path / "config.toml"
    db, key = tmp_path / "ledger.db", tmp_path / "ledger.key"
    config.write_text(
        f'cluster = "c1"\ndb = "{db}"\nledger_key = "{key}"\nledger_origin = "{ORIGIN}"\n'
    )
    with Ledger(SQLiteStore(str(db)), ORIGIN, str(key), workers=1) as led:
        led.enroll(host_signer.public_raw, ("ctl", "node1", "node2"))
        add_job(led, host_signer, make_lifecycle, "100")
        trusted = format_public_key(led.signer().public_raw)
    # the verifier trusts this ledger's key (docs/trust.md): receipts verify VALID, not UNTRUSTED
    with config.open("a") as f:
        f.write(f'trusted_ledger_keys = ["{trusted}"]\n')
    return {"dir": tmp_path, "db": db, "key": key,
            "env": {"COMPUTEPROOF_CONFIG": str(config), "COMPUTEPROOF_DB": None,
                    "CAPTURE_TOKEN": None}}  # fmt: skip


def cli(site: dict[str, Any], *args: str, env: dict[str, str | None] | None = None) -> Result:
    return CliRunner().invoke(main, list(args), env={**site["env"], **(env or {})})


def _one_line_error(r: Result, needle: str) -> None:
    lines = r.stderr.strip().splitlines()
    assert r.exit_code == 2 and len(lines) == 1, r.output
    assert lines[0].startswith("computeproof: error: ") and needle in lines[0], r.stderr


def test_anchor_export_and_verify_against_the_devchain_process(
    site: dict[str, Any], devchain_process: dict[str, Any]
) -> None:
    dev, rpc = devchain_process["dir"], devchain_process["rpc_url"]
    r = cli(site, "anchor", "evm", "--dev", dev, "--json")
    assert r.exit_code == 0, r.output
    record = json.loads(r.stdout)
    assert record["new"] and record["kind"] == "evm"
    assert record["registry"]["chain_id"] == devchain_process["chain_id"]
    again = json.loads(cli(site, "anchor", "evm", "--dev", dev, "--json").stdout)
    assert not again["new"] and again["registry"] == record["registry"]
    assert len(json.loads(cli(site, "anchor", "list", "--json").stdout)) == 1

    receipt = site["dir"] / "r.json"
    assert cli(site, "receipt", "export", "100", "-o", str(receipt)).exit_code == 0
    r = cli(site, "receipt", "verify", str(receipt), "--check-anchors", rpc)
    assert r.exit_code == 0, r.output
    assert "confirmed: evm anchor of checkpoint" in r.stdout
    r = cli(site, "receipt", "verify", str(receipt), "--check-anchors", rpc, "--json")
    out = json.loads(r.stdout)
    assert out["valid"] and out["anchors_on_chain"][0]["checked"]
    assert json.loads(cli(site, "anchor", "check", str(receipt), "--rpc", rpc, "--json").stdout)[
        "valid"
    ]

    # a tampered anchor record: still a well-formed receipt offline, refuted on chain
    bundle = json.loads(receipt.read_text())
    bundle["anchors"][0]["record"]["registry"]["tx_hash"] = "0x" + "ab" * 32
    tampered = site["dir"] / "tampered.json"
    tampered.write_text(json.dumps(bundle))
    assert cli(site, "receipt", "verify", str(tampered)).exit_code == 0
    r = cli(site, "receipt", "verify", str(tampered), "--check-anchors", rpc)
    assert r.exit_code == 1 and r.stdout.startswith("INVALID receipt") and "no Commit" in r.stdout
    r = cli(site, "receipt", "verify", str(tampered), "--check-anchors", rpc, "--json")
    assert r.exit_code == 1 and json.loads(r.stdout)["valid"] is False

    # a node that does not answer is an error (exit 2), not a verdict on the receipt
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    r = cli(site, "receipt", "verify", str(receipt), "--check-anchors", f"http://127.0.0.1:{port}")
    _one_line_error(r, "cannot reach the JSON-RPC node")


def test_attach_a_later_anchor_to_an_earlier_receipt(
    site: dict[str, Any],
    devchain_process: dict[str, Any],
    host_signer: Signer,
    make_lifecycle: Callable[..., list[dict[str, Any]]],
) -> None:
    early = site["dir"] / "early.json"
    assert cli(site, "receipt", "export", "100", "-o", str(early)).exit_code == 0
    with Ledger(SQLiteStore(str(site["db"])), ORIGIN, str(site["key"]), workers=1) as led:
        add_job(led, host_signer, make_lifecycle, "101")
    assert cli(site, "anchor", "evm", "--dev", devchain_process["dir"]).exit_code == 0
    attached = site["dir"] / "attached.json"
    r = cli(site, "anchor", "attach", str(early), "-o", str(attached))
    assert r.exit_code == 0 and "carries 1 anchors" in r.stderr
    assert json.loads(attached.read_text())["anchors"][0]["consistency_proof"]
    r = cli(
        site, "receipt", "verify", str(attached), "--check-anchors", devchain_process["rpc_url"]
    )
    assert r.exit_code == 0, r.output


def test_numbers_through_the_cli(site: dict[str, Any]) -> None:
    r = cli(site, "anchor", "numbers")
    _one_line_error(r, "no Capture token")
    with CaptureServer(CaptureState({"tok": 1.0})) as server:
        urls = ["--api-url", server.api_url, "--history-url", server.history_url]
        r = cli(site, "anchor", "numbers", *urls, "--commit-wait", "0", "--json",
                env={"CAPTURE_TOKEN": "tok"})  # fmt: skip
        assert r.exit_code == 0, r.output
        record = json.loads(r.stdout)
        assert record["kind"] == "numbers" and record["registry"]["nid"] in server.state.assets
        r = cli(site, "anchor", "numbers", *urls, "--force", env={"CAPTURE_TOKEN": "bad"})
        _one_line_error(r, "401")
        r = cli(site, "anchor", "job", "100", *urls, env={"CAPTURE_TOKEN": "tok"})
        assert r.exit_code == 0 and "committed" in r.stdout, r.output


def test_the_devchain_process_stops_on_sigterm(devchain_process: dict[str, Any]) -> None:
    # last in this module: the process's own shutdown (the fixture's finally is then a no-op)
    proc = devchain_process["proc"]
    proc.send_signal(signal.SIGTERM)
    assert proc.wait(timeout=30) == 0
    assert not (Path(devchain_process["dir"]) / "devchain.json").exists()
