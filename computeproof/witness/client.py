"""The ledger's side of the witness protocol: submit each new checkpoint to the configured
witnesses, keep their cosignatures, and raise the alarm when one refuses.

A witness that answers 409 with a size larger than the log's, or 409/422 for a log that
does not extend what it cosigned, saw this log roll back or fork: that is logged as an
error, counted (``witness_metrics``, for the collector's exporter), and recorded in the
ledger (meta ``witness_alarm:<name>``) so that `ledger verify` fails until that witness
cosigns again. A witness that cannot be reached is a warning: the checkpoint is simply
not cosigned by it. HTTP is the standard library's (urllib): no extra dependency on a
ledger host.
"""

from __future__ import annotations

import base64
import collections
import json
import logging
import urllib.error
import urllib.parse
import urllib.request
from dataclasses import dataclass
from typing import TYPE_CHECKING

from computeproof.checkpoint import (
    Cosigner,
    add_signature_lines,
    parse_cosigner_key,
    verifier_key,
    verify_cosignatures,
)
from computeproof.errors import CheckpointError, ConfigError, ReceiptError, WitnessError
from computeproof.event import utc_now
from computeproof.witness.logkey import statement_from_json, verified

if TYPE_CHECKING:
    from computeproof.ledger import Ledger
    from computeproof.store.interface import CheckpointRow

TIMEOUT_S = 5.0
ATTEMPTS = 3
ALARM_KEY = "witness_alarm:"
STATEMENT_KEY = "witness_statement:"
log = logging.getLogger("computeproof.witness")
_COUNTERS: collections.Counter[tuple[str, str]] = collections.Counter()


def witness_metrics() -> dict[tuple[str, str], int]:
    """Counters since this process started, by (witness, outcome): ``cosigned``,
    ``rollback``, ``fork``, ``refused``, ``unreachable`` (the collector exports them)."""
    return dict(_COUNTERS)


@dataclass(frozen=True)
class WitnessEndpoint:
    """A configured witness: its submission URL prefix and its cosigner key."""

    url: str
    cosigner: Cosigner

    @property
    def name(self) -> str:
        """The witness's name."""
        return self.cosigner.name


def parse_witness_entry(text: str) -> WitnessEndpoint:
    """A ``witnesses`` config entry: "<URL> <witness verifier key>"."""
    parts = text.split()
    if len(parts) != 2:
        raise ConfigError(f"witnesses entry {text[:80]!r} must be '<URL> <witness verifier key>'")
    url, vkey = parts
    if urllib.parse.urlsplit(url).scheme not in ("http", "https"):
        raise ConfigError(f"witnesses entry {text[:80]!r}: the URL must be http:// or https://")
    try:
        return WitnessEndpoint(url.rstrip("/"), parse_cosigner_key(vkey))
    except CheckpointError as e:
        raise ConfigError(f"witnesses entry {text[:80]!r}: {e}") from e


class Conflict(WitnessError):
    """409: the witness's latest cosigned size is ``size``."""

    def __init__(self, message: str, size: int) -> None:
        super().__init__(message)
        self.size = size


class Refused(WitnessError):
    """The witness refused the checkpoint (HTTP ``status``)."""

    def __init__(self, message: str, status: int) -> None:
        super().__init__(message)
        self.status = status


class Unreachable(WitnessError):
    """No answer from the witness."""


def _request(
    url: str, data: bytes | None = None, timeout: float = TIMEOUT_S
) -> tuple[int, str, bytes]:
    req = urllib.request.Request(url, data=data, method="POST" if data is not None else "GET")
    try:
        with urllib.request.urlopen(req, timeout=timeout) as resp:
            return resp.status, resp.headers.get("Content-Type", ""), resp.read(65536)
    except urllib.error.HTTPError as e:
        return e.code, e.headers.get("Content-Type", ""), e.read(65536)
    except (urllib.error.URLError, OSError, ValueError) as e:
        raise Unreachable(f"witness {url}: {getattr(e, 'reason', e)}") from e


def add_checkpoint(
    endpoint: WitnessEndpoint, old_size: int, proof: list[bytes], note: str
) -> list[str]:
    """POST add-checkpoint; return the witness's cosignature lines on ``note`` (checked
    against its key). Raise Conflict (409), Refused (other refusals) or Unreachable."""
    body = f"old {old_size}\n" + "".join(base64.b64encode(h).decode() + "\n" for h in proof)
    status, ctype, answer = _request(
        endpoint.url + "/add-checkpoint", (body + "\n" + note).encode()
    )
    text = answer.decode("utf-8", "replace")
    if status == 409:
        first = text.split("\n", 1)[0]
        if ctype.split(";")[0].strip() != "text/x.tlog.size" or not first.isdigit():
            raise Refused(f"witness {endpoint.name}: 409 without its size", 409)
        raise Conflict(f"witness {endpoint.name} has cosigned size {first}", int(first))
    if status != 200:
        raise Refused(f"witness {endpoint.name} answered {status}: {text.strip()[:200]}", status)
    lines = [line + "\n" for line in text.split("\n") if line]
    try:
        good = verify_cosignatures(add_signature_lines(note, lines), [endpoint.cosigner])
    except CheckpointError as e:
        raise Refused(f"witness {endpoint.name}: its cosignature does not verify: {e}", 200) from e
    if endpoint.name not in good:
        raise Refused(f"witness {endpoint.name} returned no cosignature by its key", 200)
    key_id = endpoint.cosigner.key_id
    mine = []
    for line in lines:
        name, _, blob = line[2:].strip().partition(" ")
        if name == endpoint.name and base64.b64decode(blob)[:4] == key_id:
            mine.append(line)
    return mine


def fetch_log_key_statement(endpoint: WitnessEndpoint, origin: str) -> dict[str, str] | None:
    """The witness's signed statement of this log's keys; None when it has none (a witness
    that is not ComputeProof's)."""
    query = urllib.parse.urlencode({"origin": origin})
    status, _, answer = _request(f"{endpoint.url}/computeproof/log-key?{query}")
    if status != 200:
        return None
    try:
        record = json.loads(answer)
        statement_from_json(record)
    except (ValueError, CheckpointError):
        return None
    return record if isinstance(record, dict) else None


def submit_checkpoint(ledger: Ledger, row: CheckpointRow, witnesses: list[WitnessEndpoint]) -> None:
    """Ask each witness that has not cosigned checkpoint ``row`` yet to cosign it; keep
    the cosignatures; log, count and record refusals (see the module docstring)."""
    have = ledger.store.cosignatures(row.size)
    sizes = ledger.store.cosigned_sizes()
    for w in witnesses:
        if w.name in have:
            continue
        try:
            lines = _cosign(ledger, row, w, sizes.get(w.name, 0))
        except Unreachable as e:
            _COUNTERS[(w.name, "unreachable")] += 1
            log.warning("checkpoint %d not cosigned: %s", row.size, e)
            continue
        except _Alarm as e:
            _COUNTERS[(w.name, e.kind)] += 1
            log.error("witness %s refused checkpoint %d: %s", w.name, row.size, e)
            ledger.store.set_meta(ALARM_KEY + w.name, f"{utc_now()} {e}")
            continue
        ledger.store.add_cosignatures(row.size, [(w.name, line) for line in lines[:1]])
        _COUNTERS[(w.name, "cosigned")] += 1
        if ledger.store.get_meta(ALARM_KEY + w.name):
            ledger.store.set_meta(ALARM_KEY + w.name, "")
        _keep_statement(ledger, w)


class _Alarm(WitnessError):
    def __init__(self, message: str, kind: str) -> None:
        super().__init__(message)
        self.kind = kind


def _cosign(ledger: Ledger, row: CheckpointRow, w: WitnessEndpoint, old: int) -> list[str]:
    for _ in range(ATTEMPTS):
        if old > row.size:
            raise _Alarm(
                f"it has cosigned a checkpoint of {old} leaves of this log, more than the "
                f"{row.size} signed now: the log was rolled back",
                "rollback",
            )
        try:
            proof = ledger.consistency_proof(old, row.size) if old > 0 else []
        except ReceiptError as e:
            raise _Alarm(f"no consistency proof from {old} leaves: {e}", "fork") from e
        try:
            return add_checkpoint(w, old, proof, row.note)
        except Conflict as c:
            if c.size == old:  # same size, other root: the witness saw another tree
                raise _Alarm(
                    f"it has cosigned another tree of {old} leaves: the log was forked or "
                    "rewritten",
                    "fork",
                ) from c
            old = c.size
        except Refused as r:
            if r.status == 422:
                raise _Alarm(
                    f"the log does not extend the checkpoint of {old} leaves it cosigned "
                    f"(bad consistency proof): the log was forked or rewritten",
                    "fork",
                ) from r
            raise _Alarm(str(r), "refused") from r
    raise _Alarm(f"its cosigned size kept changing ({old})", "refused")


def _keep_statement(ledger: Ledger, w: WitnessEndpoint) -> None:
    """Fetch the witness's log key statement once, if it names this ledger's key."""
    if ledger.store.get_meta(STATEMENT_KEY + w.name):
        return
    public = ledger.ledger_public_key()
    if public is None:
        return
    try:
        record = fetch_log_key_statement(w, ledger.origin)
    except Unreachable:
        return
    if record is None:
        return
    st = statement_from_json(record)
    mine = verifier_key(ledger.origin, public)
    if verified(st, w.cosigner) and st.origin == ledger.origin and mine in st.text.split("\n"):
        ledger.store.set_meta(STATEMENT_KEY + w.name, json.dumps(record, sort_keys=True))


def alarms(ledger: Ledger, witnesses: list[WitnessEndpoint]) -> list[str]:
    """The standing witness alarms of this ledger."""
    out = []
    for w in witnesses:
        text = ledger.store.get_meta(ALARM_KEY + w.name)
        if text:
            out.append(f"witness {w.name} refused the ledger's checkpoint ({text})")
    return out
