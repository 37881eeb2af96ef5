"""Helpers for the collector's tests: a ledger ready to serve, and requests signed with a
host key (RFC 9421) through Starlette's TestClient."""

from __future__ import annotations

import dataclasses
import json
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from fastapi.testclient import TestClient

from computeproof.config import Config
from computeproof.httpsig import sign_request
from computeproof.keys import Signer
from computeproof.ledger import Ledger
from computeproof.store import open_store

ORIGIN = "computeproof.test.ledger"
HOSTS = ("ctl", "node1", "node2")


def serve_config(db: str, tmp_path: Path, **overrides: Any) -> Config:
    """A collector configuration over ``db`` (a file or a PostgreSQL URL)."""
    base = Config(
        db=db,
        ledger_key=str(tmp_path / "ledger.key"),
        ledger_origin=ORIGIN,
        host_key=str(tmp_path / "collector.key"),
        serve_checkpoint_ms=100,
        serve_rate_limit=1000,
    )
    return dataclasses.replace(base, **overrides)


def prepare_ledger(config: Config, *enroll: tuple[Signer, tuple[str, ...]]) -> None:
    """Create the ledger and enroll host keys, as `computeproof keys enroll` does."""
    with Ledger(open_store(config.db), config.ledger_origin, config.ledger_key, workers=1) as led:
        for signer, hosts in enroll:
            led.enroll(signer.public_raw, hosts)


def signed(signer: Signer, method: str, url: str, body: bytes | None = None) -> dict[str, str]:
    """Headers that sign a request to ``url`` (path and query) with ``signer``."""
    parts = urlsplit(url)
    headers = sign_request(signer, method, parts.path, parts.query, body)
    if body is not None:
        headers["Content-Type"] = "application/json"
    return headers


class Client:
    """A TestClient whose requests are signed by one host key."""

    def __init__(self, client: TestClient, signer: Signer | None) -> None:
        self.http = client
        self.signer = signer

    def post(self, url: str, doc: object, signer: Signer | None = None) -> Any:
        """POST ``doc`` as JSON, signed (by ``signer`` or this client's key)."""
        body = json.dumps(doc).encode()
        key = signer or self.signer
        headers = signed(key, "POST", url, body) if key else {"Content-Type": "application/json"}
        return self.http.post(url, content=body, headers=headers)

    def get(self, url: str, signer: Signer | None = None) -> Any:
        """GET ``url``, signed."""
        key = signer or self.signer
        return self.http.get(url, headers=signed(key, "GET", url) if key else {})

    def events(self, envelopes: list[bytes], **extra: object) -> Any:
        """POST /v1/events."""
        return self.post("/v1/events", {"envelopes": [e.decode() for e in envelopes], **extra})


@contextmanager
def running(config: Config, signer: Signer | None) -> Iterator[Client]:
    """The collector app over ``config``, started (checkpoint loop running)."""
    from computeproof.server.app import create_app

    with TestClient(create_app(config)) as http:
        yield Client(http, signer)
