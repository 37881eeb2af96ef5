"""`computeproof serve`: the collector's HTTP API (FastAPI), over :class:`Collector`.

    POST /v1/events                  signed envelopes in, per-envelope outcomes out
    GET  /v1/checkpoint              the newest signed checkpoint (C2SP signed note)
    GET  /v1/proofs/inclusion        RFC 9162 inclusion proof
    GET  /v1/proofs/consistency      RFC 9162 consistency proof
    GET  /v1/jobs                    jobs, with the filters of `jobs list`, paged
    GET  /v1/jobs/{job}              one job run's lifecycle (`jobs show --json`)
    GET  /v1/jobs/{job}/receipt      its receipt bundle (`receipt export`)
    GET  /healthz, /metrics          liveness, Prometheus
    /api/..., /health                the seed's REST API (computeproof.server.seed)

Writes, and reads of jobs and receipts unless ``serve_open_reads``, need a request
signed by an enrolled host key (RFC 9421, computeproof.httpsig); checkpoints and proofs
are public, like any transparency log's.
"""

# no `from __future__ import annotations`: FastAPI reads the routes' annotations, which
# name closures (the auth dependencies)

import base64
import binascii
import logging
import math
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from typing import Annotated, Any

import orjson
from fastapi import APIRouter, Depends, FastAPI, HTTPException, Path, Query, Request
from fastapi.responses import JSONResponse, PlainTextResponse, Response
from starlette.concurrency import run_in_threadpool
from starlette.convertors import Convertor, register_url_convertor
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from computeproof.bundle import export_bundle
from computeproof.config import Config
from computeproof.errors import (
    ProofError,
    ReceiptError,
    ReportError,
    StoreError,
)
from computeproof.httpsig import RequestAuthError
from computeproof.jobview import job_json
from computeproof.server.collector import (
    Caller,
    Collector,
    NotCheckpointed,
    RateLimited,
    b64,
)
from computeproof.server.models import (
    ConsistencyProof,
    Error,
    EventBatch,
    Health,
    InclusionProof,
    IngestResponse,
    JobDetail,
    JobsPage,
    Receipt,
)
from computeproof.store.interface import JobCursor, JobFilter

log = logging.getLogger("computeproof.serve")

API_VERSION = "1"

Responses = dict[int | str, dict[str, Any]]
_ERROR: dict[str, Any] = {"model": Error}
SIGNED: Responses = {
    401: {**_ERROR, "description": "Unsigned, replayed or wrongly signed request"},
    429: {**_ERROR, "description": "Too many requests from this host key"},
    503: {**_ERROR, "description": "The ledger's database is unavailable; retry"},
}
READ: Responses = {400: {**_ERROR, "description": "Bad parameters"}, **SIGNED}
WRITE: Responses = {
    400: {**_ERROR, "description": "Malformed request"},
    413: {**_ERROR, "description": "Request body too large"},
    **SIGNED,
}


class JobPath(Convertor[str]):
    """A job id or key in a path, "/" included (a job key is cluster/123#0, sent as
    cluster%2F123%230), and any other character too: Starlette's own path convertor
    stops at a line break, which a hostile job name may hold."""

    regex = r"[\s\S]+?"

    def convert(self, value: str) -> str:
        return value

    def to_string(self, value: str) -> str:
        return value


register_url_convertor("job", JobPath())

DEFAULT_SIZE = "Default: the newest checkpoint's size"
JOB_PATH = Path(description="Job id (123, 100_4) or job key (cluster/123#0)")


class BodyLimit:
    """Refuses a request body larger than ``limit`` bytes (413), by its Content-Length or
    as it streams in, before anything reads it whole."""

    def __init__(self, app: ASGIApp, limit: int) -> None:
        self.app = app
        self.limit = limit

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        for name, value in scope["headers"]:
            if name == b"content-length" and (not value.isdigit() or int(value) > self.limit):
                await _too_large(self.limit, scope, receive, send)
                return
        seen = 0

        async def limited() -> Message:
            nonlocal seen
            message = await receive()
            if message["type"] == "http.request":
                seen += len(message.get("body", b""))
                if seen > self.limit:
                    raise HTTPException(413, _too_large_text(self.limit))
            return message

        await self.app(scope, limited, send)


def _too_large_text(limit: int) -> str:
    return f"request body larger than {limit} bytes; send smaller batches"


async def _too_large(limit: int, scope: Scope, receive: Receive, send: Send) -> None:
    response = JSONResponse({"detail": _too_large_text(limit)}, status_code=413)
    await response(scope, receive, send)


def create_app(
    config: Config, collector: Collector | None = None, dashboard: Any | None = None
) -> FastAPI:
    """The collector's ASGI app over the configured ledger (or ``collector``, which the
    app then starts and closes with its lifespan); with ``dashboard`` (the dashboard's
    DashboardSettings) the dashboard's pages too, reading through the same ledgers."""
    service = collector if collector is not None else Collector(config)

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        service.start()
        try:
            yield
        finally:
            await run_in_threadpool(service.close)

    app = FastAPI(
        title="ComputeProof collector",
        version=API_VERSION,
        summary="Signed GPU job events in, verifiable receipts out.",
        lifespan=lifespan,
    )
    app.state.collector = service
    app.add_middleware(BodyLimit, limit=config.serve_max_request_bytes)

    @app.exception_handler(StoreError)
    async def store_unavailable(request: Request, exc: StoreError) -> JSONResponse:
        log.error("ledger database error: %s", exc)
        return JSONResponse(
            {"detail": "the ledger's database is unavailable; retry shortly"}, status_code=503
        )

    signed = _signed_dependency(service)
    reader = _reader_dependency(service, config.serve_open_reads, signed)
    app.include_router(_ingest_router(service, signed))
    app.include_router(_log_router(service))
    app.include_router(_jobs_router(service, reader))
    app.include_router(_ops_router(service))
    from computeproof.server.seed import seed_router

    app.include_router(seed_router(service, signed, reader))
    if dashboard is not None:
        from computeproof.server.dashboard import build_router

        app.include_router(build_router(dashboard, service.reader))
    return app


def _signed_dependency(service: Collector) -> Callable[[Request], Awaitable[Caller]]:
    async def signed(request: Request) -> Caller:
        body = await request.body()
        path = (request.scope.get("raw_path") or request.url.path.encode()).decode("latin-1")
        query = request.scope.get("query_string", b"").decode("latin-1")
        try:
            return await run_in_threadpool(
                service.authenticate, request.method, path, query, request.headers, body
            )
        except RequestAuthError as e:
            raise HTTPException(401, str(e), headers={"WWW-Authenticate": "Signature"}) from e
        except RateLimited as e:
            retry = str(max(1, math.ceil(e.retry_after)))
            raise HTTPException(429, str(e), headers={"Retry-After": retry}) from e

    return signed


def _reader_dependency(
    service: Collector, open_reads: bool, signed: Callable[[Request], Awaitable[Caller]]
) -> Callable[[Request], Awaitable[Caller | None]]:
    async def reader(request: Request) -> Caller | None:
        return None if open_reads else await signed(request)

    return reader


def _ingest_router(service: Collector, signed: Any) -> APIRouter:
    router = APIRouter(tags=["ingest"])

    @router.post("/v1/events", response_model=IngestResponse, responses=WRITE)
    def post_events(batch: EventBatch, caller: Annotated[Caller, Depends(signed)]) -> Response:
        """Append signed events: each envelope is checked as the ledger checks it (signed
        by the sending host's enrolled key, host allowed, canonical form, schema) and
        deduplicated by event id. Retry anything not accepted or duplicate later only
        when untrusted; rejected envelopes never become acceptable."""
        if batch.openings is not None and len(batch.openings) != len(batch.envelopes):
            raise HTTPException(400, "openings must have one entry an envelope (or null)")
        envelopes = [e.encode("utf-8", "surrogatepass") for e in batch.envelopes]
        openings = (
            [
                {k: {"salt": v.salt, "value": v.value} for k, v in o.items()} if o else None
                for o in batch.openings
            ]
            if batch.openings is not None
            else None
        )
        results = service.ingest(caller, envelopes, openings)  # type: ignore[arg-type]
        counts = {s: 0 for s in ("accepted", "duplicate", "rejected", "untrusted")}
        for r in results:
            counts[r.status] += 1
        # built as IngestResponse documents it, and written directly: validating a
        # thousand outcomes again would cost more than the rest of the response
        return Response(
            orjson.dumps(
                {
                    "results": [
                        {
                            "index": i,
                            "status": r.status,
                            "event_id": r.event_id,
                            "leaf_index": r.leaf_index,
                            "reason": r.reason,
                        }
                        for i, r in enumerate(results)
                    ],
                    "accepted": counts["accepted"],
                    "duplicates": counts["duplicate"],
                    "rejected": counts["rejected"],
                    "untrusted": counts["untrusted"],
                }
            ),
            media_type="application/json",
        )

    return router


def _log_router(service: Collector) -> APIRouter:
    router = APIRouter(tags=["log"])

    @router.get(
        "/v1/checkpoint",
        response_class=PlainTextResponse,
        responses={
            200: {
                "content": {"text/plain": {"schema": {"type": "string"}}},
                "description": "The newest checkpoint, a C2SP signed note",
            },
            404: {**_ERROR, "description": "No checkpoint signed yet"},
            503: SIGNED[503],
        },
    )
    def get_checkpoint() -> Response:
        """The newest signed checkpoint (C2SP tlog-checkpoint signed note): origin, size,
        root, and the ledger's signature."""
        with service.reader() as ledger:
            last = ledger.store.last_checkpoint()
        if last is None:
            return JSONResponse({"detail": "no checkpoint signed yet"}, status_code=404)
        return PlainTextResponse(last.note, headers={"Cache-Control": "no-cache"})

    @router.get("/v1/proofs/inclusion", response_model=InclusionProof,
                responses={400: READ[400], 503: SIGNED[503]})  # fmt: skip
    def get_inclusion(
        leaf_index: Annotated[int, Query(ge=0, le=2**53)],
        tree_size: Annotated[int | None, Query(ge=1, le=2**53, description=DEFAULT_SIZE)] = None,
    ) -> InclusionProof:
        """The audit path of one leaf to the root of a tree size (RFC 9162 2.1.3)."""
        with service.reader() as ledger:
            size = tree_size if tree_size is not None else _checkpoint_size(ledger)
            if not leaf_index < size <= ledger.size():
                raise HTTPException(
                    400, f"need leaf_index < tree_size <= {ledger.size()} (the log's size)"
                )
            proof = ledger.inclusion_proof(leaf_index, size)
        return InclusionProof(leaf_index=leaf_index, tree_size=size, proof=[b64(h) for h in proof])

    @router.get("/v1/proofs/consistency", response_model=ConsistencyProof,
                responses={400: READ[400], 503: SIGNED[503]})  # fmt: skip
    def get_consistency(
        old_size: Annotated[int, Query(ge=1, le=2**53)],
        new_size: Annotated[int | None, Query(ge=1, le=2**53, description=DEFAULT_SIZE)] = None,
    ) -> ConsistencyProof:
        """Proof that the tree of new_size extends the tree of old_size (RFC 9162 2.1.4)."""
        with service.reader() as ledger:
            size = new_size if new_size is not None else _checkpoint_size(ledger)
            if not old_size <= size <= ledger.size():
                raise HTTPException(
                    400, f"need old_size <= new_size <= {ledger.size()} (the log's size)"
                )
            try:
                proof = ledger.consistency_proof(old_size, size)
            except ProofError as e:
                raise HTTPException(400, str(e)) from e
        return ConsistencyProof(old_size=old_size, new_size=size, proof=[b64(h) for h in proof])

    return router


def _checkpoint_size(ledger: Any) -> int:
    last = ledger.store.last_checkpoint()
    if last is None:
        raise HTTPException(400, "no checkpoint signed yet: give the tree size")
    return int(last.size)


def _jobs_router(service: Collector, reader: Any) -> APIRouter:
    router = APIRouter(tags=["jobs"])

    @router.get("/v1/jobs", response_model=JobsPage, responses=READ)
    def list_jobs(
        user: Annotated[list[str] | None, Query(max_length=100)] = None,
        account: Annotated[list[str] | None, Query(max_length=100)] = None,
        partition: Annotated[list[str] | None, Query(max_length=100)] = None,
        state: Annotated[list[str] | None, Query(max_length=100)] = None,
        node: Annotated[list[str] | None, Query(max_length=100)] = None,
        gpu_model: Annotated[list[str] | None, Query(max_length=100)] = None,
        since: Annotated[str | None, Query(description="Jobs that ended at/after (or run)")] = None,
        until: Annotated[str | None, Query(description="Jobs that started before")] = None,
        reverse: Annotated[bool, Query(description="Newest first")] = False,
        limit: Annotated[int, Query(ge=1, le=1000)] = 100,
        after: Annotated[
            str | None, Query(max_length=4096, description="The previous page's next")
        ] = None,
        caller: Annotated[Caller | None, Depends(reader)] = None,
    ) -> JobsPage:
        """Jobs with receipts in start order (``reverse``: newest first), with the filters
        of `computeproof jobs list` (repeat a filter for several values), a page at a time:
        pass the answer's ``next`` as ``after`` for the next page."""
        from computeproof.reports.dates import parse_date_arg

        try:
            selection = JobFilter(
                users=tuple(user or ()),
                accounts=tuple(account or ()),
                partitions=tuple(partition or ()),
                states=tuple(s.upper() for s in state or ()),
                nodes=tuple(node or ()),
                gpu_models=tuple(gpu_model or ()),
                since=parse_date_arg(since, "since") if since else None,
                until=parse_date_arg(until, "until") if until else None,
            )
        except (ReportError, ValueError) as e:
            raise HTTPException(400, str(e)) from e
        cursor = _read_cursor(after) if after else None
        with service.reader() as ledger:
            rows = ledger.store.jobs_page(selection, cursor, limit + 1, newest_first=reverse)
        page = rows[:limit]
        more = len(rows) > limit
        return JobsPage.model_validate(
            {
                "jobs": [job_json(r) for r in page],
                "limit": limit,
                "next": _write_cursor(JobCursor.of(page[-1])) if more else None,
            }
        )

    not_found: Responses = {404: {**_ERROR, "description": "No such job in the ledger"}}

    @router.get(
        "/v1/jobs/{job:job}/receipt",
        response_model=Receipt,
        responses={
            **READ,
            **not_found,
            409: {**_ERROR, "description": "Not yet in a signed checkpoint; retry shortly"},
        },
    )
    def get_receipt(
        job: Annotated[str, JOB_PATH],
        caller: Annotated[Caller | None, Depends(reader)] = None,
    ) -> Receipt:
        """The job's receipt bundle as `computeproof receipt export` writes it (without the
        openings of private fields): verify it offline with `computeproof receipt
        verify`."""
        bundle = _bundle(service, job)
        return Receipt.model_validate(bundle)

    @router.get("/v1/jobs/{job:job}", response_model=JobDetail, responses={**READ, **not_found})
    def get_job(
        job: Annotated[str, JOB_PATH],
        caller: Annotated[Caller | None, Depends(reader)] = None,
    ) -> JobDetail:
        """The job run's lifecycle (as `computeproof jobs show --json`): its summary and
        events from its verified receipt, with their leaf indices, GPU figures, and the
        verdict (a receipt that does not verify yet is said so, with the log's events)."""
        from computeproof.verifiedjob import job_view, view_json

        with service.reader() as ledger:
            try:
                view = job_view(ledger, job)
            except NotCheckpointed:
                view = None
            except ReceiptError as e:
                if isinstance(e, StoreError):
                    raise
                raise HTTPException(404, str(e)) from e
            if view is None:  # nothing signed yet: the log's events, unverified
                from computeproof.verifiedjob import JobView

                row = ledger.resolve_job(job)
                events = [{"leaf_index": leaf.index, **ev} for leaf, ev in ledger.job_events(row)]
                view = JobView(row, events, False, "the collector has not signed a checkpoint yet")
        return JobDetail.model_validate(view_json(view))

    return router


def _write_cursor(cursor: JobCursor) -> str:
    """A page's end as opaque URL-safe text."""
    raw = orjson.dumps([cursor.sort, cursor.job_id, cursor.job_key])
    return base64.urlsafe_b64encode(raw).decode().rstrip("=")


def _read_cursor(text: str) -> JobCursor:
    try:
        sort, job_id, key = orjson.loads(base64.urlsafe_b64decode(text + "=" * (-len(text) % 4)))
        if not (isinstance(sort, str) and type(job_id) is int and isinstance(key, str)):
            raise ValueError("not a cursor")
    except (ValueError, TypeError, binascii.Error) as e:
        raise HTTPException(400, "after is not a page cursor this collector gave") from e
    return JobCursor(sort, job_id, key)


def _bundle(service: Collector, job: str) -> dict[str, object]:
    with service.reader() as ledger:
        try:
            bundle = export_bundle(ledger, job, disclose=False)
        except NotCheckpointed as e:
            raise HTTPException(409, str(e)) from e
        except ReceiptError as e:
            if isinstance(e, StoreError):
                raise
            raise HTTPException(404, str(e)) from e
    if not bundle["entries"]:
        raise HTTPException(
            409, f"job {job}'s events are not in a signed checkpoint yet; retry shortly"
        )
    return bundle


def _ops_router(service: Collector) -> APIRouter:
    router = APIRouter(tags=["operations"])

    @router.get("/healthz", response_model=Health, responses={503: SIGNED[503]})
    def healthz() -> Health:
        """Up, and the ledger's database answers."""
        size, cp_size, cp_time = service._log_state()
        import time

        return Health(
            status="ok",
            log_size=size,
            checkpoint_size=cp_size,
            checkpoint_age_s=None if cp_time is None else round(time.time() - cp_time, 3),
        )

    @router.get(
        "/metrics",
        response_class=PlainTextResponse,
        responses={
            200: {
                "content": {"text/plain": {"schema": {"type": "string"}}},
                "description": "Prometheus text exposition",
            },
            503: SIGNED[503],
        },
    )
    def metrics() -> Response:
        """Prometheus metrics: ingest counts, rejects by reason, log size, checkpoint
        age, each host's last delivery."""
        from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

        return Response(generate_latest(service.metrics.registry), media_type=CONTENT_TYPE_LATEST)

    return router
