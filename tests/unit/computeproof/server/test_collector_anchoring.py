"""The collector's periodic anchoring (anchor_target in the config) on a real EVM: py-evm
through eth-tester, served over JSON-RPC on loopback with our ERC-7053 registry deployed.
Each anchor is read back from the chain; processes sharing a ledger pay once an interval."""

from __future__ import annotations

import dataclasses
import json
import socket
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from computeproof.anchors import keep_recursion_limit

with keep_recursion_limit():
    pytest.importorskip("eth_tester", reason="the anchoring tests need the dev extra (eth-tester)")
    pytest.importorskip("web3", reason="the anchoring tests need the anchor extra (web3)")

sys.path.insert(0, str(Path(__file__).resolve().parent))
from collector_helpers import HOSTS, prepare_ledger, running, serve_config

from computeproof.anchors import COMMIT_FORMAT, anchors_of, parse_commit_text
from computeproof.anchors.devchain import DevChain, DevChainInfo
from computeproof.anchors.evm import connect, find_commit
from computeproof.anchors.verify import verify_with_anchors
from computeproof.config import Config
from computeproof.errors import ConfigError
from computeproof.event import utc_epoch
from computeproof.keys import Signer
from computeproof.ledger import Ledger
from computeproof.server.collector import Collector
from computeproof.store import open_store

Sign = Callable[..., list[bytes]]
INTERVAL = 2


@pytest.fixture(scope="module")
def devchain(tmp_path_factory: pytest.TempPathFactory) -> Iterator[DevChainInfo]:
    chain = DevChain(str(tmp_path_factory.mktemp("devchain") / "chain.key"))
    try:
        yield chain.start()
    finally:
        chain.stop()


def anchoring_config(tmp_path: Path, chain: DevChainInfo, **more: Any) -> Config:
    cfg = serve_config(
        str(tmp_path / "ledger.db"),
        tmp_path,
        anchor_target="evm",
        anchor_interval=INTERVAL,
        anchor_rpc_url=chain.rpc_url,
        anchor_contract=chain.contract,
        anchor_key=chain.key_file,
        anchor_chain_id=chain.chain_id,
    )
    return dataclasses.replace(cfg, **more)


def ledger(config: Config) -> Ledger:
    """The collector's ledger, opened as another process would."""
    return Ledger(open_store(config.db, create=False), config.ledger_origin,
                  config.ledger_key, workers=1)  # fmt: skip


def anchored(config: Config) -> list[Any]:
    with ledger(config) as led:
        return anchors_of(led)


def wait_for(what: str, check: Callable[[], Any], timeout: float = 60.0) -> Any:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        got = check()
        if got:
            return got
        time.sleep(0.1)
    raise AssertionError(f"no {what} within {timeout:g} s")


def test_the_collector_anchors_each_interval_the_log_grew(
    tmp_path: Path,
    devchain: DevChainInfo,
    host_signer: Signer,
    make_lifecycle: Callable[..., Any],
    sign_all: Sign,
) -> None:
    config = anchoring_config(tmp_path, devchain)
    prepare_ledger(config, (host_signer, HOSTS))
    w3 = connect(devchain.rpc_url)
    with running(config, host_signer) as client:
        assert client.events(sign_all(make_lifecycle("100"))).status_code == 200
        first = wait_for("anchor", lambda: anchored(config))[0]
        # the chain, read independently, holds this checkpoint of this log
        (commit,) = find_commit(w3, str(first.registry["tx_hash"]), devchain.contract)
        assert parse_commit_text(commit.commit_data) == {
            "format": COMMIT_FORMAT,
            "origin": config.ledger_origin,
            "size": first.size,
            "root": first.root,
            "checkpoint_sha256": first.checkpoint_sha256,
        }
        block = w3.eth.block_number
        time.sleep(INTERVAL + 1.5)  # an interval without growth: nothing paid for
        assert len(anchored(config)) == 1 and w3.eth.block_number == block
        assert client.events(sign_all(make_lifecycle("101"))).status_code == 200
        records = wait_for("second anchor", lambda: (a := anchored(config))[1:] and a)
        second = records[1]
        assert second.size > first.size
        gap = (utc_epoch(second.anchored_at) or 0) - (utc_epoch(first.anchored_at) or 0)
        assert gap >= INTERVAL - 0.01
        # a receipt from the collector carries the anchor and checks on chain
        receipt = wait_for(
            "receipt with the anchor",
            lambda: (
                (r := client.get("/v1/jobs/101/receipt")).status_code == 200
                and r.json().get("anchors")
                and r.json()
            ),
        )
        ok, out = verify_with_anchors(json.dumps(receipt), None, devchain.rpc_url)
        assert ok, out
        assert [c["checked"] for c in out["anchors_on_chain"]] == [True]
        metrics = client.get("/metrics").text
        assert "computeproof_anchors_total 2.0" in metrics


def test_collectors_sharing_a_ledger_anchor_once_an_interval(
    tmp_path: Path,
    devchain: DevChainInfo,
    host_signer: Signer,
    make_lifecycle: Callable[..., Any],
    sign_all: Sign,
) -> None:
    """Four collector processes' anchoring loops (one lock file each, as processes have)
    start together on a log with a new checkpoint: one pays for it."""
    config = anchoring_config(tmp_path, devchain)
    prepare_ledger(config, (host_signer, HOSTS))

    def grow(job: str) -> int:
        with ledger(config) as led:
            led.append(sign_all(make_lifecycle(job)))
            return led.checkpoint().size

    size = grow("200")
    collectors = [Collector(config, workers=1) for _ in range(4)]
    try:
        for c in collectors:
            c.start()
        wait_for("anchor", lambda: anchored(config))
        time.sleep(1)  # the others decide meanwhile
        assert [r.size for r in anchored(config)] == [size]
        size = grow("201")
        wait_for("second anchor", lambda: len(anchored(config)) == 2, timeout=INTERVAL + 60)
        time.sleep(1)
    finally:
        for c in collectors:
            c.close()
    records = anchored(config)
    assert [r.size for r in records][-1] == size and len(records) == 2, records
    assert sum(len(c.anchors_made) for c in collectors) == 2
    times = [utc_epoch(r.anchored_at) or 0 for r in records]
    assert times[1] - times[0] >= INTERVAL - 0.01, times


def test_an_unreachable_registry_is_counted_and_ingest_goes_on(
    tmp_path: Path, host_signer: Signer, make_lifecycle: Callable[..., Any], sign_all: Sign
) -> None:
    with socket.socket() as s:  # a port nothing listens on
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    key = tmp_path / "payer.key"
    key.write_text("0x" + "11" * 32 + "\n")
    key.chmod(0o600)
    config = serve_config(
        str(tmp_path / "ledger.db"),
        tmp_path,
        anchor_target="evm",
        anchor_interval=1,
        anchor_rpc_url=f"http://127.0.0.1:{port}",
        anchor_contract="0x" + "22" * 20,
        anchor_key=str(key),
    )
    prepare_ledger(config, (host_signer, HOSTS))
    with running(config, host_signer) as client:
        envs = sign_all(make_lifecycle("300"))
        assert client.events(envs).json()["accepted"] == len(envs)
        wait_for(
            "an anchoring failure in the metrics",
            lambda: "computeproof_anchor_failures_total 0.0" not in client.get("/metrics").text,
        )
        wait_for("checkpoint", lambda: client.get("/v1/checkpoint").status_code == 200)
    assert anchored(config) == []


@pytest.mark.parametrize(
    ("more", "words"),
    [
        ({"anchor_target": "ipfs"}, "not one of evm, numbers"),
        ({"anchor_target": "evm"}, "needs anchor_rpc_url, anchor_contract, anchor_key"),
        ({"anchor_target": "numbers"}, "needs anchor_capture_token_file"),
    ],
)
def test_incomplete_anchoring_config_is_one_line_at_start(
    tmp_path: Path, host_signer: Signer, more: dict[str, Any], words: str
) -> None:
    config = dataclasses.replace(serve_config(str(tmp_path / "ledger.db"), tmp_path), **more)
    prepare_ledger(config, (host_signer, HOSTS))
    with pytest.raises(ConfigError, match=words) as caught:
        Collector(config, workers=1)
    assert "\n" not in str(caught.value)
