"""Anchoring on any EVM chain with an ERC-7053 registry, through web3.py.

ERC-7053 (interoperable digital media indexing):

    function commit(string assetCid, string commitData) returns (uint256 blockNumber)
    event Commit(address indexed recorder, string indexed assetCid, string commitData)

Numbers Mainnet "Jade" (chain id 10507) runs such a registry; contracts/erc7053_registry.vy
is ours, deployed on the local dev chain and in tests. The anchorer signs locally with a
key file (a hex secp256k1 private key, mode 0600) and sends a raw transaction, so it works
against any JSON-RPC node, which never holds the key. The record is built from the mined
transaction's receipt and its Commit log, never from what was sent.
"""

from __future__ import annotations

import json
import os
import stat
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from functools import cache
from importlib import resources
from typing import Any, TypeVar

from computeproof.anchors import AnchoredCheckpoint, AnchorRecord, keep_recursion_limit
from computeproof.errors import AnchorError

NUMBERS_MAINNET_CHAIN_ID = 10507  # "Jade"
COMMIT_EVENT = "Commit(address,string,string)"

# The ERC-7053 interface alone: enough for any compliant registry, ours or Numbers'.
ERC7053_ABI: list[dict[str, Any]] = [
    {
        "type": "function",
        "name": "commit",
        "stateMutability": "nonpayable",
        "inputs": [
            {"name": "assetCid", "type": "string"},
            {"name": "commitData", "type": "string"},
        ],
        "outputs": [{"name": "", "type": "uint256"}],
    },
    {
        "type": "event",
        "name": "Commit",
        "anonymous": False,
        "inputs": [
            {"name": "recorder", "type": "address", "indexed": True},
            {"name": "assetCid", "type": "string", "indexed": True},
            {"name": "commitData", "type": "string", "indexed": False},
        ],
    },
]

T = TypeVar("T")


def _chain_errors() -> tuple[type[BaseException], ...]:
    """The exceptions web3 raises for a node that is down, refuses or errs."""
    with keep_recursion_limit():
        import requests
        from web3.exceptions import Web3Exception

    return (Web3Exception, requests.RequestException, OSError, ValueError, TimeoutError)


def call_chain(what: str, fn: Callable[[], T]) -> T:
    """Run one chain call; web3's and the transport's errors become one AnchorError line."""
    try:
        return fn()
    except AnchorError:
        raise
    except _chain_errors() as e:
        detail = str(e).splitlines()[0][:300] if str(e) else type(e).__name__
        raise AnchorError(f"{what}: {detail}") from e


@cache
def registry_artifact() -> dict[str, Any]:
    """The compiled contracts/erc7053_registry.vy (ABI, bytecode, compiler)."""
    text = resources.files("computeproof.anchors").joinpath("erc7053_registry.json").read_text()
    data: dict[str, Any] = json.loads(text)
    return data


def connect(rpc_url: str, timeout: float = 30.0) -> Any:
    """A Web3 on the JSON-RPC node at ``rpc_url``; AnchorError if it does not answer."""
    try:
        with keep_recursion_limit():
            from web3 import HTTPProvider, Web3
    except ImportError as e:
        raise AnchorError("EVM anchoring needs web3: pip install 'computeproof[anchor]'") from e
    if not rpc_url.startswith(("http://", "https://")):
        raise AnchorError(f"RPC URL {rpc_url[:80]!r} must start with http:// or https://")
    w3 = Web3(HTTPProvider(rpc_url, request_kwargs={"timeout": timeout}))
    call_chain(f"cannot reach the JSON-RPC node at {rpc_url}", lambda: w3.eth.chain_id)
    return w3


def load_account(path: str) -> Any:
    """The signing account in key file ``path``: one line, a hex secp256k1 private key.
    Refused when other users can read it (chmod 600)."""
    with keep_recursion_limit():
        from eth_account import Account

    try:
        st = os.stat(path)
        with open(path, encoding="ascii") as f:
            text = f.read().strip()
    except FileNotFoundError as e:
        raise AnchorError(f"chain key file {path} does not exist") from e
    except (OSError, UnicodeDecodeError) as e:
        raise AnchorError(f"cannot read chain key file {path}: {e}") from e
    if st.st_mode & (stat.S_IRWXG | stat.S_IRWXO):
        raise AnchorError(
            f"chain key file {path} is readable by other users (mode "
            f"{stat.S_IMODE(st.st_mode):04o}); chmod 600 {path}"
        )
    try:
        return Account.from_key(text)
    except (ValueError, TypeError) as e:
        raise AnchorError(f"chain key file {path} does not hold a hex private key") from e


def write_account_key(path: str, private_key_hex: str) -> None:
    """Write a private key file (0600, refusing an existing file)."""
    try:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    except FileExistsError as e:
        raise AnchorError(f"{path} exists; give a new file for the chain key") from e
    except OSError as e:
        raise AnchorError(f"cannot create chain key file {path}: {e.strerror}") from e
    with os.fdopen(fd, "w", encoding="ascii") as f:
        f.write(private_key_hex + "\n")


def _send(w3: Any, account: Any, tx: dict[str, Any], timeout: float) -> Any:
    """Sign ``tx`` locally, send it and wait for its receipt; AnchorError unless it was
    mined and succeeded."""
    tx.setdefault("from", account.address)
    tx.setdefault("nonce", w3.eth.get_transaction_count(account.address, "pending"))
    tx.setdefault("chainId", w3.eth.chain_id)
    signed = account.sign_transaction(tx)
    tx_hash = w3.eth.send_raw_transaction(signed.raw_transaction)
    receipt = w3.eth.wait_for_transaction_receipt(tx_hash, timeout=timeout)
    if receipt["status"] != 1:
        raise AnchorError(f"transaction {tx_hash.to_0x_hex()} failed on chain (status 0)")
    return receipt


def deploy_registry(w3: Any, account: Any, timeout: float = 120.0) -> str:
    """Deploy our ERC-7053 registry; its checksummed address."""
    art = registry_artifact()

    def work() -> str:
        factory = w3.eth.contract(abi=art["abi"], bytecode=art["bytecode"])
        tx = factory.constructor().build_transaction(
            {"from": account.address, "nonce": w3.eth.get_transaction_count(account.address)}
        )
        receipt = _send(w3, account, tx, timeout)
        return str(receipt["contractAddress"])

    return call_chain("cannot deploy the ERC-7053 registry", work)


@dataclass(frozen=True)
class CommitLog:
    """A Commit event as the chain holds it."""

    chain_id: int
    contract: str
    tx_hash: str
    block_number: int
    block_hash: str
    log_index: int
    recorder: str
    asset_cid_topic: str  # keccak256 of assetCid (indexed strings are hashed)
    commit_data: str


def asset_cid_topic(asset_cid: str) -> str:
    """The topic an indexed ``assetCid`` string appears as: 0x keccak256 of its UTF-8."""
    from eth_utils.crypto import keccak

    return "0x" + keccak(asset_cid.encode("utf-8")).hex()


def _commit_logs(w3: Any, receipt: Any, contract: str | None) -> list[CommitLog]:
    from eth_abi.abi import decode
    from eth_utils.address import to_checksum_address
    from eth_utils.crypto import keccak

    topic0 = keccak(text=COMMIT_EVENT)
    chain_id = int(w3.eth.chain_id)
    out = []
    for log in receipt["logs"]:
        topics = log["topics"]
        if len(topics) != 3 or topics[0] != topic0:
            continue
        if contract is not None and log["address"].lower() != contract.lower():
            continue
        (data,) = decode(["string"], bytes(log["data"]))
        out.append(
            CommitLog(
                chain_id=chain_id,
                contract=to_checksum_address(log["address"]),
                tx_hash=receipt["transactionHash"].to_0x_hex(),
                block_number=int(log["blockNumber"]),
                block_hash=log["blockHash"].to_0x_hex(),
                log_index=int(log["logIndex"]),
                recorder=to_checksum_address(bytes(topics[1])[-20:]),
                asset_cid_topic=topics[2].to_0x_hex(),
                commit_data=str(data),
            )
        )
    return out


def find_commit(w3: Any, tx_hash: str, contract: str | None) -> list[CommitLog]:
    """The Commit events ``contract`` (None: any contract) emitted in transaction
    ``tx_hash``, read from the chain (empty when the transaction is unknown or failed)."""
    with keep_recursion_limit():
        from web3.exceptions import TransactionNotFound

    def work() -> list[CommitLog]:
        try:
            receipt = w3.eth.get_transaction_receipt(tx_hash)
        except TransactionNotFound:
            return []
        if receipt is None or receipt["status"] != 1:
            return []
        return _commit_logs(w3, receipt, contract)

    return call_chain(f"cannot read transaction {tx_hash[:80]} from the chain", work)


class EvmAnchorer:
    """Commits checkpoints to an ERC-7053 registry at ``contract`` on the chain behind
    ``w3``, signed by ``account``. ``asset_cid``: the assetCid to commit under (default:
    the log's origin, so one log's checkpoints share one asset)."""

    kind = "evm"

    def __init__(
        self,
        w3: Any,
        contract: str,
        account: Any,
        asset_cid: str | None = None,
        expected_chain_id: int | None = None,
        receipt_timeout: float = 120.0,
    ) -> None:
        """Check the node's chain id (when ``expected_chain_id`` is given) and that code
        is deployed at ``contract``."""
        from eth_utils.address import is_address, to_checksum_address

        if not is_address(contract):
            raise AnchorError(f"contract {contract[:60]!r} is not an EVM address")
        self.w3 = w3
        self.contract = to_checksum_address(contract)
        self.account = account
        self.asset_cid = asset_cid
        self.receipt_timeout = receipt_timeout
        self.chain_id = int(call_chain("cannot read the chain id", lambda: w3.eth.chain_id))
        if expected_chain_id is not None and self.chain_id != expected_chain_id:
            raise AnchorError(
                f"the RPC node serves chain {self.chain_id}, not chain {expected_chain_id}"
            )
        code = call_chain("cannot read the registry's code", lambda: w3.eth.get_code(self.contract))
        if not code:
            raise AnchorError(f"no contract at {self.contract} on chain {self.chain_id}")
        self._registry = w3.eth.contract(address=self.contract, abi=ERC7053_ABI)

    @property
    def target(self) -> str:
        """``evm:<chain id>:<contract>``."""
        return f"evm:{self.chain_id}:{self.contract.lower()}"

    def anchor(self, cp: AnchoredCheckpoint, previous: Sequence[AnchorRecord]) -> AnchorRecord:
        """Send commit(assetCid, commit data); the record from the mined Commit log."""
        asset_cid = self.asset_cid or cp.origin
        text = cp.commit_text()

        def work() -> CommitLog:
            tx = self._registry.functions.commit(asset_cid, text).build_transaction(
                {
                    "from": self.account.address,
                    "nonce": self.w3.eth.get_transaction_count(self.account.address, "pending"),
                    "chainId": self.chain_id,
                }
            )
            receipt = _send(self.w3, self.account, tx, self.receipt_timeout)
            logs = [
                c
                for c in _commit_logs(self.w3, receipt, self.contract)
                if c.commit_data == text and c.asset_cid_topic == asset_cid_topic(asset_cid)
            ]
            if len(logs) != 1:
                raise AnchorError(
                    f"transaction {receipt['transactionHash'].to_0x_hex()} was mined but "
                    f"holds {len(logs)} Commit events for this checkpoint, not 1: is "
                    f"{self.contract} an ERC-7053 registry?"
                )
            return logs[0]

        log = call_chain(f"cannot anchor on chain {self.chain_id}", work)
        return AnchorRecord.for_checkpoint(
            self.kind,
            self.target,
            cp,
            {
                "chain_id": log.chain_id,
                "contract": log.contract,
                "tx_hash": log.tx_hash,
                "block_number": log.block_number,
                "block_hash": log.block_hash,
                "log_index": log.log_index,
                "recorder": log.recorder,
                "asset_cid": asset_cid,
            },
        )
