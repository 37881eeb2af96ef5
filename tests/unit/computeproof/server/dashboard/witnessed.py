"""Receipts that carry everything a trust root is checked on, made by real components, for
the browser verifier's tests: a ledger (the demo's jobs, its own key and origin) whose
checkpoints three `computeproof witness serve` processes cosign over loopback HTTP, and
whose checkpoints are anchored on the dev chain (py-evm through eth-tester, JSON-RPC on
loopback, our ERC-7053 registry) and through the local Capture API stand-in of the
anchoring tests (tests/unit/computeproof/anchors/capture_server.py), whose commits land on
that dev chain as Numbers' land on its chain.

Receipts made (:class:`Witnessed`):

- ``full``: job 105 (private field disclosed) at a checkpoint all three witnesses
  cosigned, with both anchors of a later checkpoint attached (consistency proofs);
- ``two`` / ``one``: jobs at checkpoints only two witnesses, then one, cosigned (the
  others were stopped);
- ``same``: job 100 at the log's latest checkpoint, cosigned by all three and anchored
  itself (empty consistency proofs): what the dashboard serves.
"""

from __future__ import annotations

import base64
import copy
import os
import sys
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from demo import CTL, DEMO_JOBS, NODES, append_jobs, filler_jobs

from computeproof.checkpoint import verifier_key
from computeproof.keys import Signer, write_key
from computeproof.ledger import Ledger
from computeproof.store.sqlite import SQLiteStore
from tests.witnessharness import WitnessProcess

ORIGIN = "computeproof.dashboard-trust.ledger"
LEDGER = Signer.from_seed(bytes([31]) * 32)
LOG_KEY = verifier_key(ORIGIN, LEDGER.public_raw)  # what the witnesses are told to witness
FORGER = Signer.from_seed(bytes([32]) * 32)
REPO = Path(__file__).resolve().parents[5]
ANCHOR_TESTS = REPO / "tests" / "unit" / "computeproof" / "anchors"
CAPTURE_TOKEN = "t0ken-of-the-dashboard-site"


@dataclass
class Witnessed:
    """The receipts, and the keys a verifier of them would trust."""

    directory: str
    witness_keys: list[str]  # the three witnesses' verifier keys, as `witness serve` prints
    ledger_key: bytes
    full: Any
    same: Any
    two: Any
    one: Any


def open_witnessed_ledger(directory: str, witnesses: list[WitnessProcess] | None = None) -> Ledger:
    """The witnessed ledger in ``directory``; submitting checkpoints to ``witnesses``."""
    from computeproof.witness.client import parse_witness_entry

    endpoints = [parse_witness_entry(f"{w.url} {w.vkey}") for w in witnesses or []]
    return Ledger(SQLiteStore(os.path.join(directory, "ledger.db")), ORIGIN,
                  os.path.join(directory, "ledger.key"), workers=1,
                  witnesses=endpoints)  # fmt: skip


@contextmanager
def anchor_registries(directory: Path) -> Iterator[tuple[Any, Any]]:
    """(an EVM anchorer on a fresh dev chain, a Numbers anchorer on the local Capture API
    whose commits land on that chain), both stopped on exit."""
    from computeproof.anchors import keep_recursion_limit
    from computeproof.anchors.devchain import DevChain

    sys.path.insert(0, str(ANCHOR_TESTS))
    try:
        from capture_server import CaptureServer, CaptureState
    finally:
        sys.path.remove(str(ANCHOR_TESTS))
    chain = DevChain(str(directory / "chain.key"))
    info = chain.start()
    try:
        with keep_recursion_limit():
            from computeproof.anchors.evm import (
                ERC7053_ABI,
                EvmAnchorer,
                connect,
                load_account,
            )
            from computeproof.anchors.numbers import CaptureClient, NumbersAnchorer
        w3 = connect(info.rpc_url)
        account = load_account(info.key_file)
        registry = w3.eth.contract(address=info.contract, abi=ERC7053_ABI)

        def commit(nid: str, data: str) -> str:  # Numbers' committer, on the dev chain
            tx = registry.functions.commit(nid, data).build_transaction(
                {"from": account.address,
                 "nonce": w3.eth.get_transaction_count(account.address, "pending")}
            )  # fmt: skip
            tx_hash = w3.eth.send_raw_transaction(account.sign_transaction(tx).raw_transaction)
            w3.eth.wait_for_transaction_receipt(tx_hash)
            return str(tx_hash.to_0x_hex())

        with CaptureServer(CaptureState({CAPTURE_TOKEN: 10.0}, commit)) as capture:
            client = CaptureClient(CAPTURE_TOKEN, capture.api_url, capture.history_url,
                                   timeout=10)  # fmt: skip
            yield (
                EvmAnchorer(w3, info.contract, account),
                NumbersAnchorer(client, chain_id=info.chain_id),
            )
    finally:
        chain.stop()


def build_witnessed(directory: Path, witnesses: list[WitnessProcess]) -> Witnessed:
    """Make the ledger and its receipts (see the module docstring); every witness is
    running on entry and on return. The log's latest checkpoint is cosigned by all three
    and anchored in both registries, so the receipts the dashboard serves carry both."""
    from computeproof.anchors import anchor_latest
    from computeproof.anchors.receipts import attach_anchors
    from computeproof.bundle import export_bundle

    d = str(directory)
    write_key(os.path.join(d, "ledger.key"), LEDGER)
    _, w2, w3 = witnesses
    with (
        open_witnessed_ledger(d, witnesses) as led,
        anchor_registries(directory) as (evm, numbers),
    ):
        led.enroll(CTL.public_raw, ["ctl"])
        for host, signer in NODES.items():
            led.enroll(signer.public_raw, [host])
        append_jobs(led, DEMO_JOBS)
        full: Any = export_bundle(led, "c1/105#0", disclose=True)
        append_jobs(led, filler_jobs(3, first=2000), offset=10)
        anchor_latest(led, evm)
        anchor_latest(led, numbers)
        assert attach_anchors(led, full) == 2
        w3.stop()
        try:
            append_jobs(led, filler_jobs(1, first=2100), offset=20)
            two = export_bundle(led, "c1/2100#0")
            w2.stop()
            try:
                append_jobs(led, filler_jobs(1, first=2200), offset=30)
                one = export_bundle(led, "c1/2200#0")
            finally:
                w2.start()
        finally:
            w3.start()
        append_jobs(led, filler_jobs(1, first=2300), offset=40)
        cp = led.latest_checkpoint()
        anchor_latest(led, evm)
        anchor_latest(led, numbers)
        same: Any = export_bundle(led, "c1/100#0")
        assert len(led.store.cosignatures(cp.size)) == 3
    for bundle, n in ((full, 3), (two, 2), (one, 1), (same, 3)):
        assert len(bundle["log"]["witness_statements"]) == n
    for bundle in (full, same):
        assert [a["record"]["kind"] for a in bundle["anchors"]] == ["evm", "numbers"]
    assert full["anchors"][0]["consistency_proof"] and not same["anchors"][0]["consistency_proof"]
    return Witnessed(d, [w.vkey for w in witnesses], LEDGER.public_raw, full, same, two, one)


def resign(bundle: dict[str, Any], signer: Signer, drop: int) -> dict[str, Any]:
    """``bundle`` forged: re-signed by ``signer`` as its ledger, without entry ``drop``
    (and without its anchors, whose checkpoints name the real key). The checkpoint keeps
    the witnesses' cosignature lines, which cover its body only."""
    from computeproof.bundle import receipt_index, sign_index
    from computeproof.checkpoint import Checkpoint, add_signature_lines, sign_checkpoint
    from computeproof.envelope import open_envelope

    b = copy.deepcopy(bundle)
    del b["entries"][drop]
    b.pop("disclosures", None)
    b["anchors"] = []
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


def witnessed_opener(directory: str) -> Callable[[], Any]:
    """``open_ledger`` of the dashboard over the witnessed ledger (no witnesses: the
    dashboard never grows the log, so it never signs a checkpoint they should see)."""

    @contextmanager
    def opened() -> Iterator[Ledger]:
        with open_witnessed_ledger(directory) as ledger:
            yield ledger

    return opened
