"""Witnesses as real processes (`computeproof witness serve`) over loopback HTTP: the
ledger submits each new checkpoint and keeps the cosignatures; a receipt verifies with a
quorum of 2 of 3 witnesses and fails with 1; a rolled-back or forked log is refused by
every witness, and the ledger alarms (log line, counter, `ledger verify`)."""

from __future__ import annotations

import json
import logging
import os
import shutil
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner, Result

from computeproof import merkle
from computeproof.bundle import export_bundle
from computeproof.checkpoint import verifier_key
from computeproof.keys import Signer, write_key
from computeproof.ledger import Ledger
from computeproof.store.sqlite import SQLiteStore
from computeproof.witness import client
from computeproof.witness.client import WitnessEndpoint, add_checkpoint, parse_witness_entry
from slurm_hooks.cli import main
from tests.witnessharness import WitnessProcess

REPO = Path(__file__).resolve().parents[4]
LOGS = {  # one log (origin, ledger key) a test, all known to the witnesses
    "quorum": ("test.quorum/log", Signer.from_seed(bytes([21]) * 32)),
    "rollback": ("test.rollback/log", Signer.from_seed(bytes([22]) * 32)),
    "fork": ("test.fork/log", Signer.from_seed(bytes([23]) * 32)),
    "protocol": ("test.protocol/log", Signer.from_seed(bytes([24]) * 32)),
    "forged": ("test.forged/log", Signer.from_seed(bytes([25]) * 32)),
    "report": ("test.report/log", Signer.from_seed(bytes([26]) * 32)),
}
HOSTS = ("ctl", "node1", "node2")
LOG_KEYS = [verifier_key(origin, signer.public_raw) for origin, signer in LOGS.values()]


@pytest.fixture(scope="module")
def witnesses(tmp_path_factory: pytest.TempPathFactory) -> Iterator[list[WitnessProcess]]:
    """Three witnesses, running for the module (each test has its own log)."""
    procs = []
    try:
        for i in (1, 2, 3):
            d = tmp_path_factory.mktemp(f"w{i}")
            w = WitnessProcess(d, f"witness{i}.test/w", LOG_KEYS)
            w.start()
            procs.append(w)
        yield procs
    finally:
        for w in procs:
            w.stop()


def _ledger(d: Path, log: str, ws: list[WitnessProcess], db: str = "ledger.db") -> Ledger:
    origin, signer = LOGS[log]
    key = d / "ledger.key"
    if not key.exists():
        write_key(str(key), signer)
    endpoints = [parse_witness_entry(w.entry) for w in ws]
    return Ledger(SQLiteStore(str(d / db)), origin, str(key), workers=1, witnesses=endpoints)


def _verify(receipt: Path, *args: str) -> Result:
    empty = receipt.parent / "empty.toml"
    empty.write_text("")
    return CliRunner().invoke(main, ["receipt", "verify", str(receipt), *args],
                              env={"COMPUTEPROOF_CONFIG": str(empty)})  # fmt: skip


def test_protocol_over_http(witnesses: list[WitnessProcess], tmp_path: Path) -> None:
    """add-checkpoint over real HTTP: cosign, then refuse a rollback (409 + size), a fork
    (409) and a bad proof (422); unknown paths 404."""
    origin, signer = LOGS["protocol"]
    w = witnesses[0]
    endpoint = parse_witness_entry(w.entry)
    tree = merkle.MemoryNodes()
    tree.append([merkle.leaf_hash(b"%d" % i) for i in range(10)])
    from computeproof.checkpoint import Checkpoint, sign_checkpoint

    def note(size: int, t: merkle.MemoryNodes = tree) -> str:
        return sign_checkpoint(Checkpoint(origin, size, t.root(size)), origin, signer.private_key)

    assert add_checkpoint(endpoint, 0, [], note(6))
    assert add_checkpoint(endpoint, 6, merkle.consistency_proof(6, 10, tree.read), note(10))
    with pytest.raises(client.Conflict) as c:
        add_checkpoint(endpoint, 0, [], note(6))  # a rollback
    assert c.value.size == 10
    fork = merkle.MemoryNodes()
    fork.append([merkle.leaf_hash(b"x%d" % i) for i in range(12)])
    with pytest.raises(client.Conflict):
        add_checkpoint(endpoint, 10, [], note(10, fork))  # same size, other tree
    with pytest.raises(client.Refused) as r:
        add_checkpoint(endpoint, 10, merkle.consistency_proof(10, 12, fork.read), note(12, fork))
    assert r.value.status == 422
    bad = merkle.consistency_proof(10, 10, tree.read) or [b"\x00" * 32]
    with pytest.raises(client.Refused) as r:
        add_checkpoint(endpoint, 10, bad, note(10))
    assert r.value.status == 422
    other = WitnessEndpoint(w.url + "/nope", endpoint.cosigner)
    with pytest.raises(client.Refused) as r:
        add_checkpoint(other, 0, [], note(10))
    assert r.value.status == 404


def test_a_receipt_verifies_with_2_of_3_witnesses_and_fails_with_1(
    witnesses: list[WitnessProcess],
    tmp_path: Path,
    host_signer: Signer,
    make_lifecycle: Callable[..., list[dict[str, Any]]],
    sign_all: Callable[..., list[bytes]],
) -> None:
    w1, w2, w3 = witnesses
    flags = [a for w in witnesses for a in ("--witness", w.vkey)]
    with _ledger(tmp_path, "quorum", witnesses) as led:
        led.enroll(host_signer.public_raw, HOSTS)
        led.append(sign_all(make_lifecycle("100")))
        cp = led.checkpoint()
        assert sorted(led.store.cosignatures(cp.size)) == sorted(w.name for w in witnesses)
        w3.stop()  # one witness down: the next checkpoint gets two cosignatures
        try:
            led.append(sign_all(make_lifecycle("101")))
            two = tmp_path / "two.json"
            two.write_text(json.dumps(export_bundle(led, "101")))
            cp2 = led.store.checkpoints()[-1]
            assert sorted(led.store.cosignatures(cp2.size)) == [w1.name, w2.name]
            w2.stop()  # two down: the next one gets one
            try:
                led.append(sign_all(make_lifecycle("102")))
                one = tmp_path / "one.json"
                one.write_text(json.dumps(export_bundle(led, "102")))
            finally:
                w2.start()
        finally:
            w3.start()
    # the witnesses alone are the trust root: cosignatures + their statement of the key
    bundle = json.loads(two.read_text())
    assert len(bundle["log"]["witness_statements"]) == 2
    r = _verify(two, *flags, "--quorum", "2")
    assert r.exit_code == 0, r.output
    assert f"witnesses {w1.name}, {w2.name} cosigned the checkpoint and vouch for the key" in (
        r.stdout
    )
    assert "(quorum 2 of 3)" in r.stdout
    r = _verify(two, *flags)  # default quorum: all three
    assert r.exit_code == 1 and "2 of the trusted witnesses vouch" in r.stdout
    r = _verify(one, *flags, "--quorum", "2")
    assert r.exit_code == 1 and "1 of the trusted witnesses vouch" in r.stdout
    r = _verify(one, *flags, "--quorum", "2", "--json")
    assert json.loads(r.stdout)["verdict"] == "INVALID"
    r = _verify(one, *flags, "--quorum", "1")
    assert r.exit_code == 0, r.output
    # a pinned key with witnesses: both must hold
    key = bundle["log"]["ledger_key"]
    assert _verify(two, "--ledger-key", key, *flags, "--quorum", "2").exit_code == 0
    assert _verify(one, "--ledger-key", key, *flags, "--quorum", "2").exit_code == 1


def test_witness_quorum_refuses_a_bundle_resigned_by_another_key(
    witnesses: list[WitnessProcess],
    tmp_path: Path,
    host_signer: Signer,
    make_lifecycle: Callable[..., list[dict[str, Any]]],
    sign_all: Callable[..., list[bytes]],
) -> None:
    """The cosignatures are over the checkpoint body only: a forger who re-signs a real,
    cosigned checkpoint (and an index without an event) with a fresh key keeps them. The
    witnesses' statements name the real ledger key, so the quorum does not hold."""
    with _ledger(tmp_path, "forged", witnesses) as led:
        led.enroll(host_signer.public_raw, HOSTS)
        led.append(sign_all(make_lifecycle("110")))
        bundle = export_bundle(led, "110")
    flags = [a for w in witnesses for a in ("--witness", w.vkey)]
    genuine = tmp_path / "genuine.json"
    genuine.write_text(json.dumps(bundle))
    assert _verify(genuine, *flags).exit_code == 0  # all three cosigned and vouch
    forged = _resign(bundle, Signer.from_seed(bytes([99]) * 32), drop=1)
    path = tmp_path / "forged.json"
    path.write_text(json.dumps(forged))
    r = _verify(path, *flags, "--quorum", "2")
    assert r.exit_code == 1 and "0 of the trusted witnesses vouch" in r.stdout, r.output
    assert "3 cosigned it; 0 signed a statement naming this ledger key" in r.stdout


def test_report_verify_with_witnesses(
    witnesses: list[WitnessProcess],
    tmp_path: Path,
    host_signer: Signer,
    make_lifecycle: Callable[..., list[dict[str, Any]]],
    sign_all: Callable[..., list[bytes]],
) -> None:
    """Reports carry the cosigned checkpoint too: `report verify --witness` trusts it."""
    with _ledger(tmp_path, "report", witnesses) as led:
        led.enroll(host_signer.public_raw, HOSTS)
        led.append(sign_all(make_lifecycle("120")))
    cfg = _config(tmp_path, "report", witnesses)
    env = {"COMPUTEPROOF_CONFIG": str(cfg)}
    out = tmp_path / "report.json"
    r = CliRunner().invoke(main, ["report", "--from", "2026-01", "--to", "2026-12", "-o",
                                  str(out)], env=env)  # fmt: skip
    assert r.exit_code == 0, r.output
    doc = json.loads(out.read_text())
    assert len(doc["checkpoint"]["witness_statements"]) == 3
    flags = [a for w in witnesses for a in ("--witness", w.vkey)]
    r = CliRunner().invoke(main, ["report", "verify", str(out), *flags, "--quorum", "2"], env=env)
    assert r.exit_code == 0 and "VERIFIED" in r.stdout, r.output
    assert "cosigned the checkpoint and vouch for the key (quorum 2 of 3)" in r.stdout
    r = CliRunner().invoke(main, ["report", "verify", str(out)], env=env)
    assert r.exit_code == 3 and "UNTRUSTED" in r.stdout


def _resign(bundle: dict[str, Any], signer: Signer, drop: int) -> dict[str, Any]:
    """The bundle re-signed by ``signer`` as its ledger, without entry ``drop``; its
    cosigned checkpoint keeps the witnesses' lines (they cover the body only)."""
    import base64
    import copy

    from computeproof.bundle import receipt_index, sign_index
    from computeproof.checkpoint import Checkpoint, add_signature_lines, sign_checkpoint
    from computeproof.envelope import open_envelope

    b = copy.deepcopy(bundle)
    del b["entries"][drop]
    log = b["log"]
    cosignatures = [line + "\n" for line in log["checkpoint"].split("\n")[5:] if line]
    cp = Checkpoint(log["origin"], log["size"], base64.b64decode(log["root"]))
    log["checkpoint"] = add_signature_lines(
        sign_checkpoint(cp, log["origin"], signer.private_key), cosignatures
    )
    log["ledger_key"] = "ed25519:" + base64.b64encode(signer.public_raw).decode()
    events = [open_envelope(e["envelope"].encode()).event for e in b["entries"]]
    b["index"] = sign_index(
        signer,
        receipt_index(b, [e["leaf_index"] for e in b["entries"]], [ev["id"] for ev in events]),
    )
    return b


def test_a_rolled_back_ledger_is_refused_and_alarms(
    witnesses: list[WitnessProcess],
    tmp_path: Path,
    host_signer: Signer,
    make_lifecycle: Callable[..., list[dict[str, Any]]],
    sign_all: Callable[..., list[bytes]],
    caplog: pytest.LogCaptureFixture,
) -> None:
    """The whole host restored from a backup: the ledger file AND its last-signed
    checkpoint file (which alone would have refused). Every witness refuses: it has
    cosigned more of this log than the restored ledger has."""
    from computeproof.lastsigned import state_path

    with _ledger(tmp_path, "rollback", witnesses) as led:
        led.enroll(host_signer.public_raw, HOSTS)
        led.append(sign_all(make_lifecycle("100")))
        led.checkpoint()
        assert isinstance(led.store, SQLiteStore)
        led.store.backup(str(tmp_path / "backup.db"))
        head = Path(state_path(str(tmp_path / "ledger.key"))).read_text()
        led.append(sign_all(make_lifecycle("101") + make_lifecycle("103")))
        big = led.checkpoint()
        assert len(led.store.cosignatures(big.size)) == 3
    for suffix in ("", "-wal", "-shm"):
        if os.path.exists(f"{tmp_path / 'ledger.db'}{suffix}"):
            os.unlink(f"{tmp_path / 'ledger.db'}{suffix}")
    shutil.copy(tmp_path / "backup.db", tmp_path / "ledger.db")
    Path(state_path(str(tmp_path / "ledger.key"))).write_text(head)  # restored with it
    before = dict(client.witness_metrics())
    with (
        caplog.at_level(logging.ERROR, logger="computeproof.witness"),
        _ledger(tmp_path, "rollback", witnesses) as led,
    ):
        led.append(sign_all(make_lifecycle("102")))  # new events: a different, smaller log
        cp = led.checkpoint()
        assert cp.size < big.size and led.store.cosignatures(cp.size) == {}
        report = led.verify()
    assert not report.ok
    for w in witnesses:
        assert any(f"witness {w.name} refused" in p and "rolled back" in p
                   for p in report.problems), report.problems  # fmt: skip
        assert client.witness_metrics()[(w.name, "rollback")] == before.get(
            (w.name, "rollback"), 0) + 1  # fmt: skip
    assert sum("rolled back" in r.getMessage() for r in caplog.records) == 3


def test_a_forked_ledger_is_refused_and_alarms(
    witnesses: list[WitnessProcess],
    tmp_path: Path,
    host_signer: Signer,
    make_lifecycle: Callable[..., list[dict[str, Any]]],
    sign_all: Callable[..., list[bytes]],
) -> None:
    """A second ledger with the same key and origin but other events (a split view)."""
    (tmp_path / "a").mkdir()
    (tmp_path / "b").mkdir()
    with _ledger(tmp_path / "a", "fork", witnesses) as led:
        led.enroll(host_signer.public_raw, HOSTS)
        led.append(sign_all(make_lifecycle("100")))
        first = led.checkpoint()
        assert len(led.store.cosignatures(first.size)) == 3
    with _ledger(tmp_path / "b", "fork", witnesses) as other:
        other.enroll(host_signer.public_raw, HOSTS)
        other.append(sign_all(make_lifecycle("200") + make_lifecycle("201")))
        cp = other.checkpoint()
        assert other.store.cosignatures(cp.size) == {}
        report = other.verify()
    assert not report.ok
    for w in witnesses:
        assert any(f"witness {w.name} refused" in p and "forked" in p
                   for p in report.problems), report.problems  # fmt: skip
    r = CliRunner().invoke(main, ["ledger", "verify"], env={"COMPUTEPROOF_CONFIG": str(
        _config(tmp_path / "b", "fork", witnesses))})  # fmt: skip
    assert r.exit_code == 1 and "forked" in r.stdout


def _config(d: Path, log: str, ws: list[WitnessProcess]) -> Path:
    origin, _ = LOGS[log]
    cfg = d / "config.toml"
    entries = ", ".join(json.dumps(w.entry) for w in ws)
    cfg.write_text(
        f'cluster = "c1"\ndb = "{d / "ledger.db"}"\nledger_key = "{d / "ledger.key"}"\n'
        f'ledger_origin = "{origin}"\nwitnesses = [{entries}]\n'
    )
    return cfg


def test_cli_witness_keys(witnesses: list[WitnessProcess], tmp_path: Path) -> None:
    w = witnesses[0]
    r = CliRunner().invoke(main, ["witness", "key", "--key", str(w.directory / "witness.key"),
                                  "--name", w.name])  # fmt: skip
    assert r.exit_code == 0 and r.stdout.strip() == w.vkey
    d = tmp_path / "l"
    d.mkdir()
    with _ledger(d, "fork", []) as led:
        led.store.set_meta("x", "y")
    r = CliRunner().invoke(main, ["witness", "log-key"],
                           env={"COMPUTEPROOF_CONFIG": str(_config(d, "fork", []))})  # fmt: skip
    origin, signer = LOGS["fork"]
    assert r.exit_code == 0 and r.stdout.strip() == verifier_key(origin, signer.public_raw)
