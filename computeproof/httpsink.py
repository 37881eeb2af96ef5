"""The HTTP event sink: a forwarder's batches to the collector (`computeproof serve`) over
HTTPS, with httpx.

Each request is signed with the host key (RFC 9421, computeproof.httpsig), so the
collector knows which enrolled host sends it as well as who signed each envelope. The
collector's certificate is checked against the site CA (``collector_ca``) or the
system's. A batch is split to fit the collector's limits; a request that fails for a
reason that passes (the collector restarting, a timeout, 429, 5xx) is sent again after
a growing pause, signed afresh, for up to ``retry_for`` seconds; after that, or on a
refusal that will not pass, the append raises CollectorError and the forwarder leaves the
events in the spool for its next pass. Retries are safe: the ledger deduplicates by
event id, so delivery is exactly once.
"""

from __future__ import annotations

import ipaddress
import random
import ssl
import time
from collections.abc import Callable, Sequence
from typing import Any
from urllib.parse import urlsplit

import httpx
import orjson

from computeproof.errors import CollectorError
from computeproof.httpsig import sign_request
from computeproof.keys import Signer
from computeproof.sink import AppendResult

MAX_ENVELOPES = 1000  # a request's envelopes
MAX_BYTES = 4 * 1024 * 1024  # and its body, well under the collector's default limit
_PASSING = frozenset({408, 425, 429, 500, 502, 503, 504})


def _loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def check_url(url: str) -> str:
    """The collector's base URL, checked: https://, or http:// to this host only (events
    carry the openings of private fields)."""
    parts = urlsplit(url)
    if parts.scheme not in ("https", "http") or not parts.hostname:
        raise CollectorError(f"collector URL {url!r} is not an https:// URL")
    if parts.scheme == "http" and not _loopback(parts.hostname):
        raise CollectorError(
            f"collector URL {url} is plain HTTP to another host: use https:// (events carry "
            "the openings of private fields)"
        )
    if parts.query or parts.fragment:
        raise CollectorError(f"collector URL {url} must not have a query or fragment")
    return url.rstrip("/")


class HttpSink:
    """An :class:`computeproof.sink.EventSink` that posts to the collector."""

    def __init__(
        self,
        url: str,
        signer: Signer,
        ca_file: str | None = None,
        timeout: float = 30.0,
        retry_for: float = 60.0,
        max_envelopes: int = MAX_ENVELOPES,
        max_bytes: int = MAX_BYTES,
        sleep: Callable[[float], None] = time.sleep,
    ) -> None:
        """A sink posting to the collector at ``url`` (its base, e.g. https://ctl:8443)
        as the host whose key is ``signer``."""
        self.base = check_url(url)
        self.path = urlsplit(self.base).path + "/v1/events"
        self.signer = signer
        self.retry_for = retry_for
        self.max_envelopes = max_envelopes
        self.max_bytes = max_bytes
        self._sleep = sleep
        verify: ssl.SSLContext | bool = True
        if ca_file:
            try:
                verify = ssl.create_default_context(cafile=ca_file)
            except (OSError, ssl.SSLError) as e:
                raise CollectorError(f"cannot read the collector CA file {ca_file}: {e}") from e
        self.client = httpx.Client(
            base_url=self.base,
            verify=verify,
            timeout=httpx.Timeout(timeout, connect=min(timeout, 10.0)),
            headers={"User-Agent": "computeproof-forwarder"},
        )

    def close(self) -> None:
        """Close the connection pool."""
        self.client.close()

    def __enter__(self) -> HttpSink:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def append(
        self,
        envelopes: Sequence[bytes],
        openings: Sequence[dict[str, dict[str, object]]] | None = None,
    ) -> AppendResult:
        """Post the batch (in as many requests as the limits need); positions in the
        result index ``envelopes``."""
        result = AppendResult()
        for start, stop in self._chunks(envelopes):
            self._post(envelopes, openings, start, stop, result)
        return result

    def _chunks(self, envelopes: Sequence[bytes]) -> list[tuple[int, int]]:
        out: list[tuple[int, int]] = []
        start, size = 0, 0
        for i, env in enumerate(envelopes):
            cost = len(env) + 64  # the JSON around it, and its openings (usually none)
            if i > start and (i - start >= self.max_envelopes or size + cost > self.max_bytes):
                out.append((start, i))
                start, size = i, 0
            size += cost
        if start < len(envelopes):
            out.append((start, len(envelopes)))
        return out

    def _post(
        self,
        envelopes: Sequence[bytes],
        openings: Sequence[dict[str, dict[str, object]]] | None,
        start: int,
        stop: int,
        result: AppendResult,
    ) -> None:
        doc: dict[str, Any] = {"envelopes": [e.decode("utf-8") for e in envelopes[start:stop]]}
        if openings is not None and any(openings[start:stop]):
            doc["openings"] = [o or None for o in openings[start:stop]]
        body = orjson.dumps(doc)
        deadline = time.monotonic() + self.retry_for
        pause = 0.25
        while True:
            problem, retry_after = self._attempt(body, start, result)
            if problem is None:
                return
            if retry_after is None or time.monotonic() + pause > deadline:
                raise CollectorError(problem)
            # jitter: forwarders that lost the collector together do not return together
            self._sleep(max(retry_after, pause * random.uniform(0.5, 1.0)))
            pause = min(pause * 2, 10.0)

    def _attempt(
        self, body: bytes, start: int, result: AppendResult
    ) -> tuple[str | None, float | None]:
        """One request: (None, None) when done, else (what went wrong, seconds to wait
        before retrying, or None when retrying will not help)."""
        headers = sign_request(self.signer, "POST", self.path, "", body)
        headers["Content-Type"] = "application/json"
        try:
            response = self.client.post("/v1/events", content=body, headers=headers)
        except httpx.TransportError as e:
            return f"cannot reach the collector at {self.base}: {e or type(e).__name__}", 0.0
        if response.status_code == 200:
            try:
                self._record(response.json(), start, result)
            except (ValueError, KeyError, TypeError) as e:
                return f"the collector at {self.base} answered nonsense: {e}", None
            return None, None
        detail = _detail(response)
        problem = (
            f"the collector at {self.base} refused the batch ({response.status_code}): {detail}"
        )
        if response.status_code in _PASSING:
            try:
                wait = float(response.headers.get("Retry-After", "0"))
            except ValueError:
                wait = 0.0
            return problem, min(wait, 30.0)
        return problem, None

    @staticmethod
    def _record(doc: dict[str, Any], start: int, result: AppendResult) -> None:
        for r in doc["results"]:
            pos = start + int(r["index"])
            status = r["status"]
            if status == "accepted":
                result.accepted.append((pos, str(r["event_id"]), int(r["leaf_index"])))
            elif status == "duplicate":
                result.duplicates.append((pos, str(r["event_id"]), int(r["leaf_index"])))
            elif status == "untrusted":
                result.untrusted.append((pos, str(r["reason"])))
            elif status == "rejected":
                result.rejected.append((pos, str(r["reason"])))
            else:
                raise ValueError(f"unknown status {status!r}")


def _detail(response: httpx.Response) -> str:
    try:
        detail = response.json().get("detail")
    except ValueError:
        detail = None
    text = detail if isinstance(detail, str) else response.text[:200]
    return " ".join(text.split()) or response.reason_phrase
