"""Schemathesis against the collector's published OpenAPI document: generated requests to
every operation (positive and negative data) get no 5xx, and every response matches the
document (status code, content type, headers, body schema).

Requests reach the app through a test harness that signs each one with an enrolled key
(RFC 9421), as a forwarder or producer would, so the generated data gets past the
signature check into ingest, the seed API and the queries.
"""

from __future__ import annotations

import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import schemathesis
from hypothesis import HealthCheck, settings
from schemathesis.checks import (
    content_type_conformance,
    not_a_server_error,
    response_headers_conformance,
    response_schema_conformance,
    status_code_conformance,
)
from starlette.types import ASGIApp, Message, Receive, Scope, Send

sys.path.insert(0, str(Path(__file__).resolve().parent))
from collector_helpers import prepare_ledger, serve_config

from computeproof.envelope import sign_event
from computeproof.httpsig import sign_request
from computeproof.keys import Signer, write_key
from computeproof.server.app import create_app
from computeproof.server.collector import Collector

HOST = Signer.from_seed(b"\x31" * 32)
COLLECTOR = Signer.from_seed(b"\x32" * 32)
CHECKS = [
    not_a_server_error,
    status_code_conformance,
    content_type_conformance,
    response_headers_conformance,
    response_schema_conformance,
]


class SigningClient:
    """ASGI middleware standing in for a forwarder: signs every request it passes on."""

    def __init__(self, app: ASGIApp, signer: Signer) -> None:
        self.app = app
        self.signer = signer

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        body = b""
        more = True
        while more:
            message = await receive()
            body += message.get("body", b"")
            more = message.get("more_body", False)
        path = (scope.get("raw_path") or scope["path"].encode()).decode("latin-1")
        query = scope.get("query_string", b"").decode("latin-1")
        headers = sign_request(self.signer, scope["method"], path, query,
                               body if body or scope["method"] == "POST" else None)  # fmt: skip
        scope = dict(scope)
        ours = (b"signature", b"signature-input", b"content-digest")
        scope["headers"] = [
            *[(k, v) for k, v in scope["headers"] if k.lower() not in ours],
            *[(k.lower().encode(), v.encode()) for k, v in headers.items()],
        ]
        sent = False

        async def replay() -> Message:
            nonlocal sent
            if not sent:
                sent = True
                return {"type": "http.request", "body": body, "more_body": False}
            return await receive()

        await self.app(scope, replay, send)


@pytest.fixture(scope="module")
def served(tmp_path_factory: pytest.TempPathFactory, make_lifecycle: Any) -> Iterator[Any]:
    tmp = tmp_path_factory.mktemp("openapi")
    config = serve_config(str(tmp / "ledger.db"), tmp, serve_rate_limit=0)
    write_key(config.host_key, COLLECTOR)
    prepare_ledger(config, (HOST, ("fuzz",)), (COLLECTOR, ("fuzz", "ctl", "node1")))
    collector = Collector(config, workers=1)
    # a log with a job and a checkpoint, so that queries and receipts find something
    from computeproof.httpsig import SignedBy
    from computeproof.server.collector import Caller

    enrolled = collector.enrolled()
    caller = Caller(enrolled[COLLECTOR.key_id], SignedBy(COLLECTOR.key_id, 0, "setup"))
    collector.ingest(caller, [sign_event(e, COLLECTOR) for e in make_lifecycle("100")])
    collector._writer.checkpoint()  # type: ignore[union-attr]
    app = create_app(config, collector)
    collector.start()
    yield SigningClient(app, HOST)
    collector.close()


@pytest.fixture(scope="module")
def served_collector(served: Any) -> Collector:
    return served.app.state.collector  # type: ignore[no-any-return]


schema = schemathesis.pytest.from_fixture("api_schema")


@pytest.fixture(scope="module")
def api_schema(served: Any) -> Any:
    return schemathesis.openapi.from_asgi("/openapi.json", served)


@schema.parametrize()
@settings(
    max_examples=60,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.filter_too_much],
)
def test_no_server_errors_and_no_schema_violations(case: Any) -> None:
    case.call_and_validate(checks=CHECKS)


def test_the_generated_requests_got_past_the_signature_check(served_collector: Collector) -> None:
    """(Runs after the fuzzing above.) Signed by the harness, generated batches reached
    ingest (and were refused there, envelope by envelope), and generated seed requests
    were recorded as events."""
    from prometheus_client import generate_latest
    from prometheus_client.parser import text_string_to_metric_families

    text = generate_latest(served_collector.metrics.registry).decode()
    values = {(s.name, tuple(s.labels.items())): s.value
              for f in text_string_to_metric_families(text) for s in f.samples}  # fmt: skip
    assert values[("computeproof_collector_events_total", (("result", "rejected"),))] > 0
    assert values[("computeproof_log_leaves", ())] > 5  # seed events after the setup job
