"""Anchoring on a real EVM: our ERC-7053 registry (Vyper) deployed on py-evm, served over
HTTP JSON-RPC on loopback; receipts carrying the anchors, checked offline and on chain."""

from __future__ import annotations

import copy
import json
from collections.abc import Callable
from typing import Any

import pytest
from anchorjobs import add_job

from computeproof.anchors import (
    AnchoredCheckpoint,
    anchor_checkpoint,
    anchor_latest,
    anchors_of,
    parse_commit_text,
)
from computeproof.anchors.devchain import DevChainInfo
from computeproof.anchors.evm import (
    EvmAnchorer,
    asset_cid_topic,
    connect,
    find_commit,
    load_account,
    write_account_key,
)
from computeproof.anchors.receipts import attach_anchors
from computeproof.anchors.verify import check_anchors_on_chain
from computeproof.bundle import export_bundle, verify_bundle
from computeproof.errors import AnchorError, BundleError
from computeproof.keys import Signer
from computeproof.ledger import Ledger


def _verify(bundle: dict[str, Any]) -> Any:
    return verify_bundle(json.dumps(bundle))


def test_anchor_latest_commits_the_checkpoint_on_chain(
    filled: Ledger, evm_anchorer: EvmAnchorer, w3: Any, devchain: DevChainInfo
) -> None:
    record = anchor_latest(filled, evm_anchorer)
    cp = filled.latest_checkpoint()
    assert record.id > 0 and record.size == cp.size == filled.size()
    reg = record.registry
    assert reg["chain_id"] == w3.eth.chain_id and reg["contract"] == devchain.contract
    assert reg["recorder"] == devchain.recorder
    # the chain, read independently, holds exactly this checkpoint under the log's origin
    (log,) = find_commit(w3, str(reg["tx_hash"]), devchain.contract)
    assert (log.block_number, log.log_index, log.block_hash) == (
        reg["block_number"], reg["log_index"], reg["block_hash"],
    )  # fmt: skip
    assert log.asset_cid_topic == asset_cid_topic(filled.origin)
    data = parse_commit_text(log.commit_data)
    ac = AnchoredCheckpoint(filled.origin, cp.size, cp.root, cp.note)
    assert data == ac.commit_data()
    assert anchors_of(filled) == [record]


def test_a_checkpoint_already_anchored_is_not_paid_for_twice(
    filled: Ledger, evm_anchorer: EvmAnchorer, w3: Any
) -> None:
    first = anchor_latest(filled, evm_anchorer)
    block = w3.eth.block_number
    again, fresh = anchor_checkpoint(filled, evm_anchorer)
    assert (again, fresh) == (first, False)
    assert w3.eth.block_number == block  # no transaction sent
    forced, fresh = anchor_checkpoint(filled, evm_anchorer, force=True)
    assert fresh and forced.registry["tx_hash"] != first.registry["tx_hash"]
    assert len(anchors_of(filled)) == 2


def test_receipt_carries_the_anchor_and_verifies_on_chain(
    filled: Ledger, evm_anchorer: EvmAnchorer, w3: Any
) -> None:
    record = anchor_latest(filled, evm_anchorer)
    bundle = export_bundle(filled, "100")
    (entry,) = bundle["anchors"]  # type: ignore[misc]
    assert entry["record"]["registry"] == dict(record.registry)
    assert entry["consistency_proof"] == []  # anchored at the receipt's own checkpoint
    report = _verify(bundle)
    assert [a["size"] for a in report.anchors] == [record.size]
    (check,) = check_anchors_on_chain(bundle, w3)
    assert check.checked and check.confirmations >= 1


def test_a_later_anchor_is_attached_with_its_consistency_proof(
    filled: Ledger,
    evm_anchorer: EvmAnchorer,
    w3: Any,
    host_signer: Signer,
    make_lifecycle: Callable[..., list[dict[str, Any]]],
) -> None:
    bundle = export_bundle(filled, "100")  # nothing anchored yet
    assert bundle["anchors"] == []
    size = bundle["log"]["size"]  # type: ignore[index]
    add_job(filled, host_signer, make_lifecycle, "102")
    record = anchor_latest(filled, evm_anchorer)
    assert record.size > size
    assert attach_anchors(filled, bundle) == 1
    (entry,) = bundle["anchors"]  # type: ignore[misc]
    assert entry["consistency_proof"]
    assert _verify(bundle).anchors[0]["size"] == record.size
    assert check_anchors_on_chain(bundle, w3)[0].checked
    # an anchor of a checkpoint before the receipt's is never attached
    add_job(filled, host_signer, make_lifecycle, "103")
    late = export_bundle(filled, "103")
    assert late["anchors"] == [] and attach_anchors(filled, late) == 0


@pytest.fixture
def anchored_receipt(
    filled: Ledger,
    evm_anchorer: EvmAnchorer,
    host_signer: Signer,
    make_lifecycle: Callable[..., list[dict[str, Any]]],
) -> dict[str, Any]:
    """A receipt of job 100 with an anchor of a later checkpoint attached, plus a second
    anchor transaction of yet another checkpoint of the same log (for swaps)."""
    bundle = export_bundle(filled, "100")
    add_job(filled, host_signer, make_lifecycle, "102")
    anchor_latest(filled, evm_anchorer)
    attach_anchors(filled, bundle)
    add_job(filled, host_signer, make_lifecycle, "103")
    other = anchor_latest(filled, evm_anchorer)
    return {"bundle": bundle, "other_tx": other.registry["tx_hash"]}


TAMPERS: dict[str, Callable[[dict[str, Any], dict[str, Any]], None]] = {
    # the record says another transaction: a real Commit, of another checkpoint
    "tx_hash_of_another_anchor": lambda r, x: r["registry"].update(tx_hash=x["other_tx"]),
    "tx_hash_unknown": lambda r, x: r["registry"].update(tx_hash="0x" + "ab" * 32),
    "log_index": lambda r, x: r["registry"].update(log_index=r["registry"]["log_index"] + 1),
    "block_number": lambda r, x: r["registry"].update(
        block_number=r["registry"]["block_number"] - 1
    ),
    "block_hash": lambda r, x: r["registry"].update(block_hash="0x" + "cd" * 32),
    "recorder": lambda r, x: r["registry"].update(recorder="0x" + "11" * 20),
    "asset_cid": lambda r, x: r["registry"].update(asset_cid="another.log"),
    "contract": lambda r, x: r["registry"].update(contract="0x" + "22" * 20),
}


@pytest.mark.parametrize("tamper", sorted(TAMPERS))
def test_a_tampered_anchor_record_fails_on_chain(
    anchored_receipt: dict[str, Any], w3: Any, tamper: str
) -> None:
    bundle = copy.deepcopy(anchored_receipt["bundle"])
    assert check_anchors_on_chain(bundle, w3)[0].checked  # the untampered receipt holds
    TAMPERS[tamper](bundle["anchors"][0]["record"], anchored_receipt)
    _verify(bundle)  # offline, a registry locator is only a claim...
    with pytest.raises(BundleError):  # ...that the chain refutes
        check_anchors_on_chain(bundle, w3)


OFFLINE_TAMPERS: dict[str, Callable[[dict[str, Any]], None]] = {
    "size": lambda a: a["record"].update(size=a["record"]["size"] + 1),
    "root": lambda a: a["record"].update(root="AAAA" + a["record"]["root"][4:]),
    "checkpoint_sha256": lambda a: a["record"].update(checkpoint_sha256="00" * 32),
    "origin": lambda a: a["record"].update(origin="another.log"),
    "proof_dropped": lambda a: a.update(consistency_proof=a["consistency_proof"][1:]),
    "proof_hash": lambda a: a["consistency_proof"].__setitem__(0, "A" * 43 + "="),
    "note": lambda a: a.update(checkpoint=a["checkpoint"].replace("\n\n", "\n1\n\n", 1)),
    "kind": lambda a: a["record"].update(kind="numbers-event"),
    "tx_hash_not_hex": lambda a: a["record"]["registry"].update(tx_hash="0xnothex"),
    # bytes.fromhex skips whitespace: 64 spaces must not pass as a transaction hash
    "tx_hash_of_whitespace": lambda a: a["record"]["registry"].update(tx_hash="0x" + " " * 64),
    # not ASCII: "root is not base64", not a ValueError let through
    "root_not_ascii": lambda a: a["record"].update(root="é" + a["record"]["root"][1:]),
}


@pytest.mark.parametrize("tamper", sorted(OFFLINE_TAMPERS))
def test_a_tampered_anchor_fails_offline(anchored_receipt: dict[str, Any], tamper: str) -> None:
    bundle = copy.deepcopy(anchored_receipt["bundle"])
    OFFLINE_TAMPERS[tamper](bundle["anchors"][0])
    with pytest.raises(BundleError, match=r"anchors\[0\]"):
        _verify(bundle)


def test_anchors_on_another_chain_are_not_taken_as_checked(
    anchored_receipt: dict[str, Any], w3: Any
) -> None:
    bundle = copy.deepcopy(anchored_receipt["bundle"])
    bundle["anchors"][0]["record"]["registry"]["chain_id"] = 1
    with pytest.raises(BundleError, match="no anchor that chain"):
        check_anchors_on_chain(bundle, w3)


def test_a_failed_transaction_stores_nothing(
    filled: Ledger, devchain: DevChainInfo, w3: Any, tmp_path: Any
) -> None:
    from eth_account import Account

    broke = Account.create()  # a key with no funds: the node refuses its transaction
    write_account_key(str(tmp_path / "broke.key"), broke.key.to_0x_hex())
    anchorer = EvmAnchorer(w3, devchain.contract, load_account(str(tmp_path / "broke.key")))
    with pytest.raises(AnchorError, match="cannot anchor"):
        anchor_latest(filled, anchorer)
    assert filled.store.anchors() == []


def test_a_node_that_is_down_stores_nothing(filled: Ledger, devchain: DevChainInfo) -> None:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]  # nothing listens there once closed
    with pytest.raises(AnchorError, match="cannot reach"):
        connect(f"http://127.0.0.1:{port}", timeout=5)
    assert filled.store.anchors() == []


def test_an_address_without_a_registry_is_refused(devchain: DevChainInfo, w3: Any) -> None:
    account = load_account(devchain.key_file)
    with pytest.raises(AnchorError, match="no contract"):
        EvmAnchorer(w3, account.address, account)
    with pytest.raises(AnchorError, match="not chain 10507"):
        EvmAnchorer(w3, devchain.contract, account, expected_chain_id=10507)


def test_a_key_file_readable_by_others_is_refused(tmp_path: Any) -> None:
    from eth_account import Account

    path = tmp_path / "k"
    write_account_key(str(path), Account.create().key.to_0x_hex())
    assert load_account(str(path))
    path.chmod(0o644)
    with pytest.raises(AnchorError, match="chmod 600"):
        load_account(str(path))


def test_the_devchain_answers_json_rpc_errors(devchain: DevChainInfo) -> None:
    import httpx

    r = httpx.post(devchain.rpc_url, json={"jsonrpc": "2.0", "id": 7, "method": "eth_nope"})
    assert r.status_code == 200 and r.json()["id"] == 7 and "error" in r.json()
    r = httpx.post(devchain.rpc_url, content=b"{not json", headers={"Content-Length": "9"})
    assert r.json()["error"]["code"] == -32700


def test_a_restarted_devchain_is_a_new_chain(
    filled: Ledger, evm_anchorer: EvmAnchorer, devchain: DevChainInfo, tmp_path: Any
) -> None:
    # the demo's case: the ledger outlives a dev chain; anchors made on the old one are on
    # another chain for the new one, not refuted by it
    from computeproof.anchors.devchain import running_devchain

    anchor_latest(filled, evm_anchorer)
    with running_devchain(str(tmp_path / "second.key")) as second:
        assert second.chain_id != devchain.chain_id
        w3b = connect(second.rpc_url)
        anchor_latest(filled, EvmAnchorer(w3b, second.contract, load_account(second.key_file)))
        bundle = export_bundle(filled, "100")
        assert len(bundle["anchors"]) == 2  # type: ignore[arg-type]
        checks = check_anchors_on_chain(bundle, w3b)
        assert sorted(c.checked for c in checks) == [False, True]
        assert "another chain" in next(c.detail for c in checks if not c.checked)


def test_web3_and_py_evm_imports_leave_the_recursion_limit() -> None:
    # py_ecc and py-evm raise it to 100,000 on import; deeply nested hostile input would
    # then crash the process (C stack overflow) instead of raising RecursionError
    import subprocess
    import sys
    from pathlib import Path

    script = (
        "import sys; before = sys.getrecursionlimit()\n"
        "from computeproof.anchors import evm, devchain\n"
        "evm._chain_errors(); devchain._Chain(5)\n"
        "from eth_account import Account\n"
        "print(before == sys.getrecursionlimit())\n"
        "import py_ecc\n"  # the control: a plain import does change it (cached: re-exec)
        "import importlib; importlib.reload(py_ecc); print(before == sys.getrecursionlimit())\n"
    )
    repo = Path(__file__).resolve().parents[4]
    out = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True,
                         cwd=repo, env={"PYTHONPATH": str(repo), "PATH": "/usr/bin:/bin"},
                         timeout=120)  # fmt: skip
    assert out.stdout.split() == ["True", "False"], out.stderr[-2000:]
