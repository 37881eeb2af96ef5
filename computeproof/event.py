"""Lifecycle events: deterministic ids and canonical bytes. Standard library only.

An event is a plain dict (the hook path cannot afford dataclasses or pydantic)::

    {"schema": "computeproof.event/v1", "id": <hex>, "type": "started",
     "cluster": "c1", "job": "100_4", "job_id": 101, "run": 0,
     "host": "node1", "seq": 0, "time": "2026-11-25T16:46:21.123456Z",
     "payload": {...}}

``job`` is Slurm's display id ("123", "100_4" for an array task, "200+1" for a
heterogeneous component) as far as the hook can tell (node hooks see no array ids);
``job_id`` the numeric SLURM_JOB_ID, which identifies the job (see :func:`job_key`);
``run`` the restart count, so a requeued job's events never collide with the first run's.
"""

import time as _time

try:  # the C modules: hashlib costs the hook 2 ms more
    from _sha2 import sha256  # type: ignore[import-not-found,unused-ignore]  # 3.12+
except ImportError:
    try:
        from _sha256 import sha256  # type: ignore[import-not-found,no-redef,unused-ignore]
    except ImportError:  # an interpreter built without them
        from hashlib import sha256  # type: ignore[assignment,unused-ignore]

from computeproof.canonical import _ESCAPES
from computeproof.errors import CanonicalError

TYPE_CHECKING = False
if TYPE_CHECKING:
    from typing import Any

SCHEMA = "computeproof.event/v1"
EVENT_TYPES = (
    "scheduled",
    "started",
    "progress",
    "artifact",
    "node_done",
    "completed",
    "final_state",
)
_TYPES = frozenset(EVENT_TYPES)
IDENTITY_FIELDS = ("schema", "cluster", "job", "job_id", "run", "type", "host", "seq")
FIELDS = ("schema", "id", "type", "cluster", "job", "job_id", "run", "host", "seq", "time")
_REQUIRED = frozenset((*FIELDS, "payload"))


def event_id(cluster: str, job: str, job_id: int, run: int, type: str, host: str, seq: int) -> str:
    """Deterministic event id: SHA-256 of the canonical identity tuple, hex.

    The tuple is [SCHEMA, cluster, job, job_id, run, type, host, seq] in RFC 8785 form,
    written out directly because this runs for every event on the hook and ingest paths.
    """
    plain = cluster + job + type + host
    # escape only when needed (isprintable is False for every control character)
    if not plain.isprintable() or '"' in plain or "\\" in plain:
        cluster, job, type, host = (s.translate(_ESCAPES) for s in (cluster, job, type, host))
    identity = '["%s","%s","%s",%d,%d,"%s","%s",%d]' % (  # noqa: UP031 - fastest form
        SCHEMA, cluster, job, job_id, run, type, host, seq)  # fmt: skip
    digest: str = sha256(identity.encode("utf-8", "surrogatepass")).hexdigest()
    return digest


def utc_now() -> str:
    """The current UTC time as RFC 3339 with microseconds and a Z suffix."""
    ns = _time.time_ns()
    secs, micros = divmod(ns // 1000, 1_000_000)
    return _time.strftime("%Y-%m-%dT%H:%M:%S", _time.gmtime(secs)) + f".{micros:06d}Z"


def utc_epoch(text: str) -> float | None:
    """Seconds since the epoch of an RFC 3339 time such as :func:`utc_now` writes (None:
    not one)."""
    import datetime as dt

    try:
        return dt.datetime.fromisoformat(text.replace("Z", "+00:00")).timestamp()
    except ValueError:
        return None


NON_UTF8 = "non_utf8"


def text_value(value: str) -> "str | dict[str, str]":
    """``value`` as an event field: itself when it is valid Unicode text, else
    ``{"non_utf8": <base64 of its bytes>}``.

    Values Slurm hands over as bytes (environment, job names, paths) are decoded with
    surrogateescape, so a byte that is not UTF-8 becomes a lone surrogate that canonical
    JSON cannot carry. The object form keeps the exact bytes (lone surrogates from other
    sources are kept as their UTF-8 encoding, WTF-8) and cannot be mistaken for a string.
    """
    if value.isascii():
        return value
    try:
        value.encode("utf-8")
        return value
    except UnicodeEncodeError:
        pass
    import binascii  # a builtin C module: nothing to load on the hook path

    try:
        raw = value.encode("utf-8", "surrogateescape")
    except UnicodeEncodeError:
        raw = value.encode("utf-8", "surrogatepass")
    return {NON_UTF8: binascii.b2a_base64(raw, newline=False).decode("ascii")}


def text_values(value: object) -> object:
    """``value`` with every string in it (dict values and list items, recursively) passed
    through :func:`text_value`; keys are the project's own and stay as they are."""
    if isinstance(value, str):
        return text_value(value)
    # ints, None and ASCII strings (nearly every value) are taken as they are, not recursed
    if isinstance(value, dict):
        return {
            k: v if type(v) in _AS_IS or (type(v) is str and v.isascii()) else text_values(v)
            for k, v in value.items()
        }
    if isinstance(value, list | tuple):
        return [
            v if type(v) in _AS_IS or (type(v) is str and v.isascii()) else text_values(v)
            for v in value
        ]
    return value


_AS_IS = frozenset((int, bool, type(None)))


def new_event(
    type: str,
    cluster: str,
    job: str,
    job_id: int,
    host: str,
    payload: dict[str, object],
    seq: int = 0,
    run: int = 0,
    time: str | None = None,
) -> dict[str, object]:
    """Build an event dict with its deterministic id; ``time`` defaults to now. Strings
    in ``payload`` that are not valid Unicode are recorded as :func:`text_value` says."""
    if type not in EVENT_TYPES:
        raise CanonicalError(f"unknown event type {type!r}; expected one of {EVENT_TYPES}")
    clean = text_values(payload)
    assert isinstance(clean, dict)
    return {
        "schema": SCHEMA,
        "id": event_id(cluster, job, job_id, run, type, host, seq),
        "type": type,
        "cluster": cluster,
        "job": job,
        "job_id": job_id,
        "run": run,
        "host": host,
        "seq": seq,
        "time": time if time is not None else utc_now(),
        "payload": clean,
    }


def check_event(event: object) -> "dict[str, Any]":
    """Validate an event's shape and recompute its id; return it or raise CanonicalError."""
    if not isinstance(event, dict):
        raise CanonicalError("event is not a JSON object")
    if not _REQUIRED.issubset(event):
        for name in (*FIELDS, "payload"):
            if name not in event:
                raise CanonicalError(f"event lacks field {name!r}")
    if event["schema"] != SCHEMA:
        raise CanonicalError(f"event schema {event['schema']!r} is not {SCHEMA!r}")
    if not isinstance(event["type"], str) or event["type"] not in _TYPES:
        raise CanonicalError(f"unknown event type {event['type']!r}")
    for name in ("cluster", "job", "host", "time"):
        value = event[name]
        if not (value and isinstance(value, str)):
            raise CanonicalError(f"event field {name!r} must be a non-empty string")
    for name in ("job_id", "run", "seq"):
        value = event[name]
        if not (type(value) is int and value >= 0):  # bool is not a count
            raise CanonicalError(f"event field {name!r} must be a non-negative integer")
    if not isinstance(event["payload"], dict):
        raise CanonicalError("event payload must be a JSON object")
    want = event_id(
        event["cluster"],
        event["job"],
        event["job_id"],
        event["run"],
        event["type"],
        event["host"],
        event["seq"],
    )
    if event["id"] != want:
        raise CanonicalError(f"event id {event['id']!r} does not match its fields ({want})")
    return event


def job_key(cluster: str, job_id: int, run: int = 0) -> str:
    """The string that names one run of one job: ``cluster/job_id#run``.

    Keyed by the numeric SLURM_JOB_ID because it is the one id every hook sees: the node
    Prolog and Epilog get no SLURM_ARRAY_* variables, while array tasks and heterogeneous
    components each have their own job id. The display id ("100_4") is a label."""
    return f"{cluster}/{job_id}#{run}"
