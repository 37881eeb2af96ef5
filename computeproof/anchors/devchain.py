"""A local development chain: py-evm (through eth-tester) served over HTTP JSON-RPC on
loopback, with our ERC-7053 registry deployed and a funded signing key.

It is a real EVM executing real transactions; only its consensus is a single process that
mines a block per transaction, and its state lives in memory (a restart is a new chain, so
anchors made on an earlier one no longer verify). `computeproof anchor devchain` runs it
for the demo; tests run it in a thread. Never a stand-in for a public chain's anchor.

JSON-RPC: eth-tester answers in Python values (ints, snake_case keys); web3's own
eth-tester formatters turn wire requests into its calls and its results into JSON-RPC
shapes, and the last step here writes every integer as a hex quantity.
"""

from __future__ import annotations

import json
import os
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import asdict, dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

from computeproof.errors import AnchorError

MAX_REQUEST = 1 << 20  # a JSON-RPC request larger than this is refused
DEV_FUNDS_WEI = 100 * 10**18
STATE_FILE = "devchain.json"


def _camel(key: str) -> str:
    head, *rest = key.split("_")
    return head + "".join(p[:1].upper() + p[1:] for p in rest)


def _wire(value: Any) -> Any:
    """eth-tester's Python values as JSON-RPC: integers as hex quantities, bytes as hex
    data, any key still in snake_case in camelCase."""
    if isinstance(value, bool) or value is None or isinstance(value, str | float):
        return value
    if isinstance(value, int):
        return hex(value)
    if isinstance(value, bytes | bytearray):
        return "0x" + bytes(value).hex()
    if isinstance(value, dict):
        return {_camel(str(k)): _wire(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_wire(v) for v in value]
    return str(value)


def new_chain_id() -> int:
    """A chain id for a new dev chain: random in [2^40, 2^41), clear of public chains' ids.
    Each dev chain is a new chain, so anchors recorded on an earlier one (same registry
    address or not) are reported as on another chain, never as refuted by this one."""
    import secrets

    return (1 << 40) + secrets.randbits(40)


class _Chain:
    """One eth-tester chain behind a lock (eth-tester is not thread-safe)."""

    def __init__(self, chain_id: int) -> None:
        from computeproof.anchors import keep_recursion_limit

        with keep_recursion_limit():
            from eth_tester import EthereumTester, PyEVMBackend
            from web3 import EthereumTesterProvider

        backend = PyEVMBackend()
        # py-evm builds each block's VM context from the chain's chain_id attribute, so
        # setting it on the instance makes this chain sign and check with our id.
        backend.chain.chain_id = chain_id
        self.chain_id = chain_id
        self.tester = EthereumTester(backend)
        self.provider = EthereumTesterProvider(self.tester)
        self.lock = threading.Lock()

    def call(self, method: str, params: list[Any]) -> dict[str, Any]:
        from web3.providers.eth_tester import middleware as fmt
        from web3.types import RPCEndpoint

        # web3's eth-tester endpoints answer a fixed chain id: answer ours
        if method == "eth_chainId":
            return {"result": hex(self.chain_id)}
        if method == "net_version":
            return {"result": str(self.chain_id)}
        request_fmt = fmt.request_formatters.get(method)  # type: ignore[call-overload]
        result_fmt = (fmt.result_formatters or {}).get(method)  # type: ignore[call-overload]
        with self.lock:
            try:
                args = request_fmt(params) if request_fmt else params
                response = self.provider.make_request(RPCEndpoint(method), args)
            except Exception as e:
                return {"error": {"code": -32000, "message": str(e).splitlines()[0][:500]}}
        if "error" in response:
            return {"error": dict(response["error"])}
        result = response.get("result")
        if result_fmt is not None:
            result = result_fmt(result)
        return {"result": _wire(result)}


def _handler(chain: _Chain) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        def log_message(self, format: str, *args: Any) -> None:
            pass  # a request log line per JSON-RPC call is noise in the demo

        def do_POST(self) -> None:
            length = int(self.headers.get("Content-Length") or 0)
            if length <= 0 or length > MAX_REQUEST:
                self.send_error(413 if length else 411)
                return
            try:
                request = json.loads(self.rfile.read(length))
            except ValueError:
                self._reply({"jsonrpc": "2.0", "id": None,
                             "error": {"code": -32700, "message": "parse error"}})  # fmt: skip
                return
            if isinstance(request, list):
                self._reply([self._one(r) for r in request[:100]])
            else:
                self._reply(self._one(request))

        def _one(self, request: Any) -> dict[str, Any]:
            if not isinstance(request, dict) or not isinstance(request.get("method"), str):
                return {"jsonrpc": "2.0", "id": None,
                        "error": {"code": -32600, "message": "invalid request"}}  # fmt: skip
            params = request.get("params") or []
            out = chain.call(request["method"], params if isinstance(params, list) else [])
            return {"jsonrpc": "2.0", "id": request.get("id"), **out}

        def _reply(self, body: object) -> None:
            data = json.dumps(body).encode()
            self.send_response(200)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)

    return Handler


@dataclass(frozen=True)
class DevChainInfo:
    """What a client needs to anchor on the dev chain (written to devchain.json)."""

    rpc_url: str
    chain_id: int
    contract: str
    key_file: str
    recorder: str


class DevChain:
    """The dev chain server: ``start()`` serves it on 127.0.0.1 in a thread, deploys the
    registry and funds a new key written to ``key_file``; ``stop()`` ends it."""

    def __init__(self, key_file: str, port: int = 0, chain_id: int | None = None) -> None:
        """Nothing runs until ``start``; ``chain_id`` default: :func:`new_chain_id`."""
        self.key_file = key_file
        self.port = port
        self.chain_id = chain_id or new_chain_id()
        self._server: ThreadingHTTPServer | None = None
        self._thread: threading.Thread | None = None
        self.info: DevChainInfo | None = None

    def start(self) -> DevChainInfo:
        """Start serving; deploy the registry; fund the key. The info to connect."""
        from computeproof.anchors import keep_recursion_limit
        from computeproof.anchors.evm import connect, deploy_registry, write_account_key

        with keep_recursion_limit():
            from eth_account import Account

        try:
            chain = _Chain(self.chain_id)
        except ImportError as e:
            raise AnchorError(
                "the dev chain needs eth-tester and py-evm: pip install "
                "'eth-tester[py-evm]' (the project's dev extra)"
            ) from e
        try:
            self._server = ThreadingHTTPServer(("127.0.0.1", self.port), _handler(chain))
        except OSError as e:
            raise AnchorError(f"cannot listen on 127.0.0.1:{self.port}: {e.strerror}") from e
        self._server.daemon_threads = True
        self._thread = threading.Thread(
            target=self._server.serve_forever, name="devchain", daemon=True
        )
        self._thread.start()
        url = f"http://127.0.0.1:{self._server.server_address[1]}"
        account = Account.create()
        # Fund the new key from eth-tester's prefunded account, then deploy as that key:
        # every later transaction is signed locally, as on a public chain.
        funder = chain.tester.get_accounts()[0]
        with chain.lock:
            chain.tester.send_transaction(
                {"from": funder, "to": account.address, "value": DEV_FUNDS_WEI, "gas": 21000}
            )
        write_account_key(self.key_file, account.key.to_0x_hex())
        w3 = connect(url)
        contract = deploy_registry(w3, account)
        self.info = DevChainInfo(url, int(w3.eth.chain_id), contract, self.key_file,
                                 account.address)  # fmt: skip
        return self.info

    def stop(self) -> None:
        """Stop serving."""
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
            self._server = None
        if self._thread is not None:
            self._thread.join(timeout=10)
            self._thread = None


@contextmanager
def running_devchain(
    key_file: str, port: int = 0, chain_id: int | None = None
) -> Iterator[DevChainInfo]:
    """A dev chain for the life of the context."""
    chain = DevChain(key_file, port, chain_id)
    try:
        yield chain.start()
    finally:
        chain.stop()


def write_state(directory: str, info: DevChainInfo) -> str:
    """Write ``devchain.json`` in ``directory`` (what `anchor evm --dev DIR` reads)."""
    path = os.path.join(directory, STATE_FILE)
    tmp = path + ".tmp"
    with open(tmp, "w", encoding="utf-8") as f:
        json.dump(asdict(info), f, indent=1, sort_keys=True)
        f.write("\n")
    os.replace(tmp, path)
    return path


def read_state(directory: str) -> DevChainInfo:
    """The dev chain described in ``directory``/devchain.json."""
    path = os.path.join(directory, STATE_FILE)
    try:
        with open(path, encoding="utf-8") as f:
            data = json.load(f)
        return DevChainInfo(**data)
    except FileNotFoundError as e:
        raise AnchorError(
            f"no dev chain state at {path}: start one with `computeproof anchor devchain "
            f"--dir {directory}`"
        ) from e
    except (OSError, ValueError, TypeError) as e:
        raise AnchorError(f"cannot read the dev chain state {path}: {e}") from e
