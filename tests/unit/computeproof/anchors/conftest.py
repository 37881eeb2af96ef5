"""Fixtures of the anchoring tests: a real EVM (py-evm through eth-tester) served over
JSON-RPC on loopback with our ERC-7053 registry deployed, and a ledger with jobs in it."""

from __future__ import annotations

import os
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from computeproof.anchors import keep_recursion_limit

with keep_recursion_limit():  # py_ecc/py-evm would raise it for every test in the session
    pytest.importorskip("eth_tester", reason="the anchoring tests need the dev extra (eth-tester)")
    pytest.importorskip("web3", reason="the anchoring tests need the anchor extra (web3)")
    import eth_account  # noqa: F401

from anchorjobs import ORIGIN

from computeproof.anchors.devchain import DevChain, DevChainInfo
from computeproof.envelope import sign_event
from computeproof.keys import Signer
from computeproof.ledger import Ledger
from computeproof.store.sqlite import SQLiteStore


@pytest.fixture(scope="session")
def devchain(tmp_path_factory: pytest.TempPathFactory) -> Iterator[DevChainInfo]:
    """One dev chain for the session (each test's anchors are new transactions on it)."""
    chain = DevChain(str(tmp_path_factory.mktemp("devchain") / "chain.key"))
    try:
        yield chain.start()
    finally:
        chain.stop()


@pytest.fixture
def w3(devchain: DevChainInfo) -> Any:
    """A web3 client of the dev chain, over HTTP."""
    from computeproof.anchors.evm import connect

    return connect(devchain.rpc_url)


@pytest.fixture
def evm_anchorer(devchain: DevChainInfo, w3: Any) -> Any:
    """An anchorer on the dev chain's registry, signing with its funded key."""
    from computeproof.anchors.evm import EvmAnchorer, load_account

    return EvmAnchorer(w3, devchain.contract, load_account(devchain.key_file))


@pytest.fixture
def filled(
    tmp_path: Path, host_signer: Signer, make_lifecycle: Callable[..., list[dict[str, Any]]]
) -> Iterator[Ledger]:
    """A ledger holding jobs 100 and 101."""
    led = Ledger(
        SQLiteStore(os.path.join(tmp_path, "ledger.db")),
        ORIGIN,
        os.path.join(tmp_path, "ledger.key"),
        workers=1,
    )
    led.enroll(host_signer.public_raw, ("ctl", "node1", "node2"))
    for job in ("100", "101"):
        envs = [sign_event(e, host_signer) for e in make_lifecycle(job)]
        assert len(led.append(envs).accepted) == len(envs)
    yield led
    led.close()
