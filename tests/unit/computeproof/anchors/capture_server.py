"""A local stand-in for the Numbers Capture API, started on 127.0.0.1 by the tests (the
real service cannot be reached from here). It enforces the contract Numbers documents,
so a client that breaks it fails here:

- ``Authorization: token <token>`` on every call: 401 {"detail": ...} when missing or
  unknown; 403 when the token's account does not own the asset;
- POST /api/v3/assets/ as multipart/form-data (415 otherwise) with ``asset_file``
  (400 {"asset_file": [...]} when absent or empty), ``headline`` <= 25 characters and
  ``nit_commit_custom`` a JSON object of at most 10 KB (400 {field: [...]}); 201 with
  the asset: id (the NID: here the file's CIDv1, raw codec, as IPFS names a small file),
  asset_file_name, asset_file_mime_type, caption, headline;
- PATCH /api/v3/assets/{nid}/ multipart with the same limits (404 for an unknown NID);
- GET /history?nid=NID, the commit history: {"nid", "commits": [{assetTreeCid, txHash,
  author, committer, timestampCreated, action}]};
- 0.1 NUM a POST or PATCH from the account's balance: 400 {"detail": "Insufficient ..."}
  when it runs out, as the docs say a 400 may mean.

Each accepted POST or PATCH is a commit. With ``committer`` set, the commit is made for
real: an ERC-7053 Commit on the tests' dev chain (assetCid: the NID, commitData: the
commit's JSON, as Numbers' committer wallet does on Jade), and its transaction hash is the
one the history reports. Without it the history lists no transaction (commits pending).
"""

from __future__ import annotations

import base64
import email.parser
import email.policy
import hashlib
import json
import re
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

FEE = 0.1
HEADLINE_MAX = 25
CUSTOM_MAX = 10 * 1024
_ASSET_PATH = re.compile(r"^/api/v3/assets/([a-z2-7]{8,100})/$")


def cid_v1_raw(data: bytes) -> str:
    """The CIDv1 (raw codec, SHA-256, base32) IPFS gives a file of one block."""
    raw = bytes([0x01, 0x55, 0x12, 0x20]) + hashlib.sha256(data).digest()
    return "b" + base64.b32encode(raw).decode().lower().rstrip("=")


@dataclass
class Asset:
    """An asset the server holds."""

    nid: str
    owner: str
    file_name: str
    mime_type: str
    caption: str
    headline: str
    commits: list[dict[str, Any]] = field(default_factory=list)


class CaptureState:
    """Accounts (token -> balance in NUM), assets and the calls made, for assertions."""

    def __init__(
        self, tokens: dict[str, float], committer: Callable[[str, str], str] | None = None
    ) -> None:
        self.balance = dict(tokens)
        self.assets: dict[str, Asset] = {}
        self.calls: list[tuple[str, str, int]] = []  # (method, path, status)
        self.committer = committer
        self.lock = threading.Lock()

    def commit(self, asset: Asset, token: str, action: str, custom: dict[str, Any]) -> None:
        """Record a commit (on chain when a committer is set)."""
        tree = {"assetCid": asset.nid, "action": action, "custom": custom,
                "timestampCreated": int(time.time())}  # fmt: skip
        tree_bytes = json.dumps(tree, sort_keys=True).encode()
        commit: dict[str, Any] = {
            "assetTreeCid": cid_v1_raw(tree_bytes),
            "author": token[:8],
            "committer": "capture-api",
            "timestampCreated": len(asset.commits) + 1,  # strictly increasing
            "action": action,
        }
        if self.committer is not None:
            commit["txHash"] = self.committer(asset.nid, json.dumps(commit, sort_keys=True))
        asset.commits.append(commit)


def _form(
    handler: BaseHTTPRequestHandler, body: bytes
) -> dict[str, tuple[str | None, bytes]] | None:
    """The multipart/form-data fields: name -> (file name, bytes); None if not multipart."""
    ctype = handler.headers.get("Content-Type", "")
    if not ctype.startswith("multipart/form-data"):
        return None
    message = email.parser.BytesParser(policy=email.policy.HTTP).parsebytes(
        b"Content-Type: " + ctype.encode() + b"\r\n\r\n" + body
    )
    out: dict[str, tuple[str | None, bytes]] = {}
    for part in message.iter_parts():
        name = part.get_param("name", header="content-disposition")
        if isinstance(name, str):
            out[name] = (part.get_filename(), part.get_payload(decode=True) or b"")
    return out


def _check_fields(form: dict[str, tuple[str | None, bytes]]) -> dict[str, list[str]]:
    errors: dict[str, list[str]] = {}
    headline = form.get("headline", (None, b""))[1].decode("utf-8", "replace")
    if len(headline) > HEADLINE_MAX:
        errors["headline"] = [f"Ensure this field has no more than {HEADLINE_MAX} characters."]
    if "nit_commit_custom" in form:
        raw = form["nit_commit_custom"][1]
        try:
            value = json.loads(raw)
        except ValueError:
            value = None
        if not isinstance(value, dict):
            errors["nit_commit_custom"] = ["Value must be valid JSON object."]
        elif len(raw) > CUSTOM_MAX:
            errors["nit_commit_custom"] = ["Ensure this field is no larger than 10 KB."]
    return errors


def _handler(state: CaptureState) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        def log_message(self, format: str, *args: Any) -> None:
            pass

        def _reply(self, status: int, body: object) -> None:
            data = json.dumps(body).encode()
            self.send_response(status)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)
            state.calls.append((self.command, self.path, status))

        def _token(self) -> str | None:
            auth = self.headers.get("Authorization", "")
            if not auth:
                self._reply(401, {"detail": "Authentication credentials were not provided."})
                return None
            scheme, _, token = auth.partition(" ")
            if scheme != "token" or token not in state.balance:
                self._reply(401, {"detail": "Invalid token."})
                return None
            return token

        def _body(self) -> bytes:
            return self.rfile.read(int(self.headers.get("Content-Length") or 0))

        def _charge(self, token: str) -> bool:
            if state.balance[token] < FEE - 1e-9:
                self._reply(400, {"detail": "Insufficient NUM balance to pay for this action."})
                return False
            state.balance[token] -= FEE
            return True

        def do_POST(self) -> None:
            body = self._body()
            with state.lock:
                token = self._token()
                if token is None:
                    return
                if self.path != "/api/v3/assets/":
                    self._reply(404, {"detail": "Not found."})
                    return
                form = _form(self, body)
                if form is None:
                    self._reply(415, {"detail": "Unsupported media type in request."})
                    return
                errors = _check_fields(form)
                file_name, data = form.get("asset_file", (None, b""))
                if not file_name or not data:
                    errors["asset_file"] = ["No file was submitted."]
                if errors:
                    self._reply(400, errors)
                    return
                if not self._charge(token):
                    return
                nid = cid_v1_raw(data)
                if nid in state.assets:
                    self._reply(400, {"detail": "Asset with this file already exists."})
                    return
                text = {k: v.decode() for k, (f, v) in form.items() if f is None}
                asset = Asset(nid, token, file_name, "application/json", text.get("caption", ""),
                              text.get("headline", ""))  # fmt: skip
                state.assets[nid] = asset
                state.commit(asset, token, "initial-registration",
                             json.loads(text.get("nit_commit_custom", "{}")))  # fmt: skip
                self._reply(201, self._asset(asset))

        def do_PATCH(self) -> None:
            body = self._body()
            with state.lock:
                token = self._token()
                if token is None:
                    return
                m = _ASSET_PATH.match(self.path)
                asset = state.assets.get(m.group(1)) if m else None
                if asset is None:
                    self._reply(404, {"detail": "Not found."})
                    return
                if asset.owner != token:
                    self._reply(
                        403, {"detail": "You do not have permission to perform this action."}
                    )
                    return
                form = _form(self, body)
                if form is None:
                    self._reply(415, {"detail": "Unsupported media type in request."})
                    return
                errors = _check_fields(form)
                if errors:
                    self._reply(400, errors)
                    return
                if not self._charge(token):
                    return
                text = {k: v.decode() for k, (f, v) in form.items()}
                state.commit(asset, token, "update",
                             json.loads(text.get("nit_commit_custom", "{}")))  # fmt: skip
                self._reply(200, self._asset(asset))

        def do_GET(self) -> None:
            self._body()
            with state.lock:
                if self._token() is None:
                    return
                path, _, query = self.path.partition("?")
                nid = dict(p.partition("=")[::2] for p in query.split("&")).get("nid")
                asset = state.assets.get(nid or "")
                if path != "/history" or asset is None:
                    self._reply(404, {"detail": "Not found."})
                    return
                self._reply(200, {"nid": asset.nid, "commits": [
                    {**c, "txHash": c.get("txHash")} for c in asset.commits if "txHash" in c
                ]})  # fmt: skip

        @staticmethod
        def _asset(asset: Asset) -> dict[str, Any]:
            return {"id": asset.nid, "asset_file_name": asset.file_name,
                    "asset_file_mime_type": asset.mime_type, "caption": asset.caption,
                    "headline": asset.headline}  # fmt: skip

    return Handler


class CaptureServer:
    """The server on 127.0.0.1 (an ephemeral port), in a thread, for a ``with`` block."""

    def __init__(self, state: CaptureState) -> None:
        self.state = state
        self._server = ThreadingHTTPServer(("127.0.0.1", 0), _handler(state))
        self._server.daemon_threads = True
        self._thread = threading.Thread(target=self._server.serve_forever, daemon=True)
        port = self._server.server_address[1]
        self.api_url = f"http://127.0.0.1:{port}/api/v3"
        self.history_url = f"http://127.0.0.1:{port}/history"

    def __enter__(self) -> CaptureServer:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._server.shutdown()
        self._server.server_close()
        self._thread.join(timeout=10)
