"""Anchoring through the Capture API, against a local server that enforces the documented
contract (capture_server.py), whose commits land on the dev chain as Numbers' land on Jade."""

from __future__ import annotations

import base64
import copy
import json
from collections.abc import Callable, Iterator
from typing import Any

import httpx
import pytest
from anchorjobs import add_job
from capture_server import CaptureServer, CaptureState

from computeproof.anchors import anchor_latest, anchors_of
from computeproof.anchors.devchain import DevChainInfo
from computeproof.anchors.evm import ERC7053_ABI, load_account
from computeproof.anchors.numbers import (
    CaptureClient,
    NumbersAnchorer,
    anchor_job_events,
    refresh_commits,
)
from computeproof.anchors.verify import check_anchors_on_chain
from computeproof.bundle import export_bundle, verify_bundle
from computeproof.errors import AnchorError, BundleError
from computeproof.keys import Signer
from computeproof.ledger import Ledger

TOKEN = "t0ken-of-the-site"


@pytest.fixture
def committer(devchain: DevChainInfo, w3: Any) -> Callable[[str, str], str]:
    """Numbers' committer, played on the dev chain: an ERC-7053 Commit under the NID."""
    account = load_account(devchain.key_file)
    registry = w3.eth.contract(address=devchain.contract, abi=ERC7053_ABI)

    def commit(nid: str, data: str) -> str:
        tx = registry.functions.commit(nid, data).build_transaction(
            {"from": account.address,
             "nonce": w3.eth.get_transaction_count(account.address, "pending")}
        )  # fmt: skip
        tx_hash = w3.eth.send_raw_transaction(account.sign_transaction(tx).raw_transaction)
        w3.eth.wait_for_transaction_receipt(tx_hash)
        return str(tx_hash.to_0x_hex())

    return commit


@pytest.fixture
def capture(committer: Callable[[str, str], str]) -> Iterator[CaptureServer]:
    """The local Capture API, with 10 NUM on the site's token."""
    with CaptureServer(CaptureState({TOKEN: 10.0, "someone-else": 10.0}, committer)) as server:
        yield server


def _client(server: CaptureServer, token: str = TOKEN) -> CaptureClient:
    return CaptureClient(token, server.api_url, server.history_url, timeout=10)


def _anchorer(server: CaptureServer, devchain: DevChainInfo, **kw: Any) -> NumbersAnchorer:
    import web3

    chain_id = web3.Web3(web3.HTTPProvider(devchain.rpc_url)).eth.chain_id
    return NumbersAnchorer(_client(server), chain_id=chain_id, **kw)


def test_register_then_update_per_checkpoint(
    filled: Ledger,
    capture: CaptureServer,
    devchain: DevChainInfo,
    host_signer: Signer,
    make_lifecycle: Callable[..., list[dict[str, Any]]],
) -> None:
    anchorer = _anchorer(capture, devchain)
    first = anchor_latest(filled, anchorer)
    reg = first.registry
    (asset,) = capture.state.assets.values()
    assert reg["nid"] == asset.nid and reg["action"] == "register"
    assert reg["commit_tx"] == asset.commits[0]["txHash"]
    assert reg["asset_tree_cid"] == asset.commits[0]["assetTreeCid"]
    assert first.size == filled.size()
    # the NID is the CID of the file registered: its SHA-256 is the one the record keeps
    digest = base64.b32decode(asset.nid[1:].upper() + "=" * (-len(asset.nid[1:]) % 8))[-32:]
    assert digest.hex() == reg["asset_sha256"]
    add_job(filled, host_signer, make_lifecycle, "102")
    second = anchor_latest(filled, anchorer)
    assert second.registry["nid"] == asset.nid and second.registry["action"] == "update"
    assert second.registry["commits_before"] == 1
    assert second.registry["commit_tx"] == asset.commits[1]["txHash"] != reg["commit_tx"]
    assert [(m, s) for m, _, s in capture.state.calls] == [
        ("POST", 201), ("GET", 200), ("GET", 200), ("PATCH", 200), ("GET", 200)
    ]  # fmt: skip
    assert capture.state.balance[TOKEN] == pytest.approx(10.0 - 2 * 0.1)
    # nothing new: no call, no fee
    assert anchor_latest(filled, anchorer) == second
    assert len(capture.state.calls) == 5


def test_receipt_with_a_numbers_anchor_verifies_on_chain(
    filled: Ledger, capture: CaptureServer, devchain: DevChainInfo, w3: Any
) -> None:
    anchor_latest(filled, _anchorer(capture, devchain))
    bundle = export_bundle(filled, "100")
    report = verify_bundle(json.dumps(bundle))
    assert [a["kind"] for a in report.anchors] == ["numbers"]
    (check,) = check_anchors_on_chain(bundle, w3)
    assert check.checked and "NID" in check.detail
    for field, value in (("nid", "bafkreiaaaa"), ("asset_tree_cid", "bafkreibbbb"),
                         ("commit_tx", "0x" + "ef" * 32)):  # fmt: skip
        tampered = copy.deepcopy(bundle)
        tampered["anchors"][0]["record"]["registry"][field] = value
        with pytest.raises(BundleError):
            check_anchors_on_chain(tampered, w3)


def test_a_commit_not_yet_on_chain_is_recorded_without_a_transaction(
    filled: Ledger, devchain: DevChainInfo, committer: Callable[[str, str], str], w3: Any
) -> None:
    with CaptureServer(CaptureState({TOKEN: 10.0})) as server:  # commits stay pending
        record = anchor_latest(filled, _anchorer(server, devchain))
        assert "commit_tx" not in record.registry and record.registry["commits_before"] == 0
        bundle = export_bundle(filled, "100")
        with pytest.raises(BundleError, match="no anchor that chain"):
            check_anchors_on_chain(bundle, w3)  # not checkable, so not taken as checked
        assert refresh_commits(filled, _client(server)) == []  # still pending
        server.state.committer = committer  # Numbers sends the pending commit
        (asset,) = server.state.assets.values()
        asset.commits[0]["txHash"] = committer(asset.nid, json.dumps(asset.commits[0]))
        (updated,) = refresh_commits(filled, _client(server))
        assert updated.registry["commit_tx"] == asset.commits[0]["txHash"]
        assert anchors_of(filled)[0].registry["commit_tx"] == asset.commits[0]["txHash"]


def test_bad_token_stores_nothing(
    filled: Ledger, capture: CaptureServer, devchain: DevChainInfo
) -> None:
    anchorer = NumbersAnchorer(_client(capture, "wrong"))
    with pytest.raises(AnchorError, match=r"401: Invalid token.*Capture token"):
        anchor_latest(filled, anchorer)
    assert filled.store.anchors() == [] and capture.state.assets == {}


def test_insufficient_funds_stores_nothing(filled: Ledger, devchain: DevChainInfo) -> None:
    with CaptureServer(CaptureState({TOKEN: 0.05})) as server:
        with pytest.raises(AnchorError, match=r"400: Insufficient"):
            anchor_latest(filled, _anchorer(server, devchain))
        assert filled.store.anchors() == []


def test_an_unreachable_api_stores_nothing(filled: Ledger) -> None:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    client = CaptureClient(TOKEN, f"http://127.0.0.1:{port}/api/v3", f"http://127.0.0.1:{port}/h")
    with pytest.raises(AnchorError, match="cannot reach the Capture API"):
        anchor_latest(filled, NumbersAnchorer(client))
    assert filled.store.anchors() == []


def test_another_accounts_asset_is_refused(
    filled: Ledger, capture: CaptureServer, devchain: DevChainInfo,
    host_signer: Signer, make_lifecycle: Callable[..., list[dict[str, Any]]],
) -> None:  # fmt: skip
    record = anchor_latest(filled, _anchorer(capture, devchain))
    with pytest.raises(AnchorError, match=r"403.*does not own"):
        _client(capture, "someone-else").update(str(record.registry["nid"]), "x", {"a": 1})
    with pytest.raises(AnchorError, match=r"404"):
        _client(capture).update("bafkreinosuchasset", "x", {"a": 1})


def test_the_limits_are_kept_by_the_client_and_enforced_by_the_server(
    capture: CaptureServer,
) -> None:
    client = _client(capture)
    with pytest.raises(AnchorError, match="over 25"):
        client.register("f.json", b"{}", "application/json", "c", "x" * 26, {})
    with pytest.raises(AnchorError, match="10 KB"):
        client.register("f.json", b"{}", "application/json", "c", "h", {"x": "y" * 10240})
    assert capture.state.calls == []  # refused before sending
    # the server refuses them too, with the API's per-field errors
    auth = {"Authorization": f"token {TOKEN}"}
    url = f"{capture.api_url}/assets/"
    r = httpx.post(url, headers=auth, data={"headline": "x" * 26},
                   files={"asset_file": ("f", b"1")})  # fmt: skip
    assert r.status_code == 400 and "headline" in r.json()
    r = httpx.post(url, headers=auth, data={"nit_commit_custom": json.dumps({"x": "y" * 10240})},
                   files={"asset_file": ("f", b"2")})  # fmt: skip
    assert r.status_code == 400 and "nit_commit_custom" in r.json()
    r = httpx.post(url, headers=auth, data={"caption": "no file"}, files={"other": ("f", b"3")})
    assert r.status_code == 400 and "asset_file" in r.json()
    assert httpx.post(url, files={"asset_file": ("f", b"4")}).status_code == 401
    assert httpx.post(url, headers=auth, json={"asset_file": "x"}).status_code == 415
    assert capture.state.assets == {}


def test_per_job_mode_commits_every_event_once(
    filled: Ledger, capture: CaptureServer, devchain: DevChainInfo, w3: Any
) -> None:
    events = filled.store.job_leaves(filled.resolve_job("100").job_key)
    records = anchor_job_events(filled, _client(capture), "100")
    assert [r.registry["event_id"] for r in records] == [leaf.event_id for leaf in events]
    assert [r.registry["action"] for r in records] == ["register"] + ["update"] * (len(events) - 1)
    assert len({r.registry["nid"] for r in records}) == 1
    assert all(str(r.registry["commit_tx"]).startswith("0x") for r in records)
    assert capture.state.balance[TOKEN] == pytest.approx(10.0 - 0.1 * len(events))
    assert anchor_job_events(filled, _client(capture), "100") == []  # nothing twice
    assert capture.state.balance[TOKEN] == pytest.approx(10.0 - 0.1 * len(events))
    # per-event commits are not checkpoint anchors: receipts do not carry them
    assert export_bundle(filled, "100")["anchors"] == []
