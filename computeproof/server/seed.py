"""The seed's REST API, served by the collector for producers that are not Slurm (a
Kubernetes controller, a script) and for the seed's clients.

The seed (ComputeProof's hackathon prototype, an Express server) took plain JSON at
``POST /api/jobs/submit`` and ``/api/jobs/{nid}/scheduled|started|progress|completed|failed``
and committed each as an ERC-7053 commit on Numbers Mainnet, answering with the asset's
NID and a transaction hash. Here the same requests, with the seed's field names, become
signed events in the ledger:

- the request must be signed (RFC 9421) by a producer key enrolled like a host's, for
  exactly one host name: the producer's name, which is also the events' host and cluster
  (so producers' job ids never collide with each other's or with Slurm's);
- the collector signs the event with its own host key, which the site enrolls for the
  producers' names, and records the producer's key id in the event; a producer that
  signs its own events posts envelopes to ``POST /v1/events`` instead, like a host;
- the answer names the job key, the event id and leaf index, and the receipt URL; never an
  NID or a transaction hash (anchoring checkpoints is a separate, real step);
- canonical events carry integers only: a number with a fraction (``avgGpuUtilization:
  92.5``) is recorded as its decimal text (``"92.5"``).

A job's id in the path is the seed's ``jobId`` (or a job key ``producer/123#0``); a
``jobId`` that is not a number is mapped to a 53-bit number by SHA-256, the job key's
numeric part. Retrying a request returns the event already recorded (duplicate).
"""

# no `from __future__ import annotations`: FastAPI reads the routes' annotations

import datetime as dt
import hashlib
from typing import Annotated, Any, Literal
from urllib.parse import quote

from fastapi import APIRouter, Depends, HTTPException, Path, Query, Request
from pydantic import BaseModel, ConfigDict, Field, JsonValue

from computeproof.canonical import MAX_SAFE_INTEGER
from computeproof.envelope import open_envelope, sign_event
from computeproof.errors import ComputeProofError, ReceiptError
from computeproof.event import job_key as make_job_key
from computeproof.event import new_event, utc_now
from computeproof.keys import Signer, load_signer
from computeproof.server.collector import Caller, Collector
from computeproof.server.models import Error
from computeproof.store.interface import JobFilter, JobRow

SERVICE = "ComputeProof API"
_ERROR = {"model": Error}
_Text = Field(default=None, max_length=4096)


class SeedBody(BaseModel):
    """Fields the seed accepted; others are ignored, as the seed ignored them."""

    model_config = ConfigDict(extra="ignore")


class SubmitBody(SeedBody):
    """POST /api/jobs/submit (the seed's JobSubmitted)."""

    jobId: str = Field(min_length=1, max_length=256)
    jobType: str | None = _Text
    submittedBy: str | None = _Text
    gpuRequirement: dict[str, JsonValue] | None = None
    estimatedDuration: int | float | None = None
    dockerImage: str | None = _Text
    inputDataHash: str | None = _Text
    priority: str | None = _Text


class ScheduledBody(SeedBody):
    """POST /api/jobs/{id}/scheduled (JobScheduled)."""

    scheduledNode: str | None = _Text
    nodeSpecs: dict[str, JsonValue] | None = None
    scheduledTime: str | None = _Text
    queuePosition: int | None = None


class StartedBody(SeedBody):
    """POST /api/jobs/{id}/started (JobStarted)."""

    executorNode: str | None = _Text
    containerId: str | None = _Text
    gpuUtilization: dict[str, JsonValue] | None = None
    processId: int | None = None


class ProgressBody(SeedBody):
    """POST /api/jobs/{id}/progress (JobProgressUpdate)."""

    progress: int | float | None = None
    currentEpoch: int | None = None
    totalEpochs: int | None = None
    avgGpuUtilization: int | float | None = None
    memoryUsage: str | None = _Text


class CompletedBody(SeedBody):
    """POST /api/jobs/{id}/completed (JobCompleted)."""

    completionStatus: str | None = _Text
    totalDuration: int | float | None = None
    gpuHoursUsed: int | float | None = None
    exitCode: int | None = None
    outputArtifacts: list[JsonValue] | None = Field(default=None, max_length=10_000)
    finalMetrics: dict[str, JsonValue] | None = None


class FailedBody(SeedBody):
    """POST /api/jobs/{id}/failed (JobFailed)."""

    errorCode: str | int | None = None
    errorMessage: str | None = _Text
    stackTrace: str | None = Field(default=None, max_length=65536)
    partialOutputNid: str | None = _Text
    retryAttempt: int | None = None


class Recorded(BaseModel):
    """The seed answered with an NID and a transaction hash; the ledger answers with where
    the signed event is and where the job's receipt will be (once the next checkpoint is
    signed, within the collector's checkpoint interval)."""

    success: Literal[True]
    jobId: str
    jobKey: str
    eventType: str
    eventId: str
    leafIndex: int
    status: Literal["accepted", "duplicate"]
    receiptUrl: str
    message: str


class SeedEvent(BaseModel):
    """One event of a job's history."""

    eventType: str
    timestamp: int | None = Field(description="Unix time (s) the event was recorded")
    time: str
    eventId: str
    leafIndex: int
    host: str
    details: dict[str, JsonValue]


class SeedJob(BaseModel):
    """A job as the seed's list showed it, with the job key in place of the NID."""

    jobId: str
    jobKey: str
    jobType: str | None
    status: str
    submittedBy: str | None
    gpuCount: int | None
    gpuModel: str | None
    totalEvents: int
    createdAt: str | None
    receiptUrl: str


class SeedJobs(BaseModel):
    """GET /api/jobs."""

    success: Literal[True]
    jobs: list[SeedJob]
    count: int
    nextOffset: int | None


class SeedHistory(SeedJob):
    """GET /api/jobs/{id}/history."""

    success: Literal[True]
    gpuRequirement: dict[str, JsonValue] | None
    events: list[SeedEvent]


class SeedHealth(BaseModel):
    """GET /health."""

    status: Literal["ok"]
    service: str
    version: str


_SEED_TYPES = {
    "submit": ("JobSubmitted", "scheduled", 0),
    "scheduled": ("JobScheduled", "scheduled", 1),
    "started": ("JobStarted", "started", 0),
    "progress": ("JobProgressUpdate", "progress", None),
    "completed": ("JobCompleted", "completed", 0),
    "failed": ("JobFailed", "completed", 0),  # one end a run: completed or failed
}
_TYPE_NAMES = {
    "scheduled": "JobScheduled",
    "started": "JobStarted",
    "progress": "JobProgressUpdate",
    "artifact": "ArtifactRecorded",
    "node_done": "NodeDone",
    "completed": "JobCompleted",
    "final_state": "JobFinalState",
}


def canonical_value(value: Any) -> Any:
    """A seed value as canonical JSON carries it: integers stay, a number with a fraction
    becomes its shortest decimal text, and containers are converted throughout."""
    if isinstance(value, bool) or value is None or isinstance(value, str):
        return value
    if isinstance(value, int):
        return value if abs(value) <= MAX_SAFE_INTEGER else str(value)
    if isinstance(value, float):
        if value.is_integer() and abs(value) <= MAX_SAFE_INTEGER:
            return int(value)
        return repr(value)
    if isinstance(value, dict):
        return {str(k): canonical_value(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [canonical_value(v) for v in value]
    return str(value)


def numeric_job_id(job_id: str) -> int:
    """The job key's number for a seed ``jobId``: itself when it is a (53-bit) number,
    else the first 53 bits of its SHA-256."""
    if job_id.isascii() and job_id.isdigit() and int(job_id) <= MAX_SAFE_INTEGER:
        return int(job_id)
    return (
        int.from_bytes(hashlib.sha256(job_id.encode("utf-8", "surrogatepass")).digest()[:8]) >> 11
    )


def producer_host(caller: Caller) -> str:
    """The one host name a producer key is enrolled for: its events' host and cluster."""
    hosts = [h for h in caller.key.hosts if h and h != "*"]
    if len(hosts) != 1 or len(caller.key.hosts) != 1:
        raise HTTPException(
            403,
            f"a producer key must be enrolled for exactly one host name, its own (this one "
            f"is enrolled for {','.join(caller.key.hosts)}): `computeproof keys enroll KEY "
            "--host NAME --replace`",
        )
    return hosts[0]


def receipt_url(request: Request, job_key: str) -> str:
    """Where the job's receipt is served."""
    return str(request.base_url).rstrip("/") + f"/v1/jobs/{quote(job_key, safe='')}/receipt"


def _seed_status(row: JobRow) -> str:
    state = (row.state or "").upper()
    if state in ("", "PENDING"):
        return "submitted"
    if state == "RUNNING":
        return "running"
    return state.lower()


def _unix(text: str) -> int | None:
    try:
        return int(dt.datetime.fromisoformat(text.replace("Z", "+00:00")).timestamp())
    except ValueError:
        return None


def seed_router(service: Collector, signed: Any, reader: Any) -> APIRouter:
    """The seed's routes over ``service``."""
    router = APIRouter(tags=["seed API"])
    signer_cache: list[Signer] = []

    def collector_signer() -> Signer:
        if not signer_cache:
            try:
                signer_cache.append(load_signer(service.config.host_key))
            except ComputeProofError as e:
                raise HTTPException(503, f"the collector cannot sign producer events: {e}") from e
        return signer_cache[0]

    write_errors: dict[int | str, dict[str, Any]] = {
        400: {**_ERROR, "description": "The event is not acceptable"},
        401: {**_ERROR, "description": "Unsigned, replayed or wrongly signed request"},
        403: {**_ERROR, "description": "This producer (or the collector) is not enrolled"},
        409: {**_ERROR, "description": "The job already has another event of this kind"},
        413: {**_ERROR, "description": "Request body too large"},
        429: {**_ERROR, "description": "Too many requests from this key"},
        503: {**_ERROR, "description": "The ledger's database is unavailable; retry"},
    }

    def record(request: Request, caller: Caller, kind: str, job: str, body: SeedBody) -> Recorded:
        seed_name, event_type, seq = _SEED_TYPES[kind]
        host = producer_host(caller)
        job_id_text = job
        if "/" in job and "#" in job:  # a job key: it must be this producer's
            cluster_part, _, rest = job.partition("/")
            number, _, run_text = rest.partition("#")
            if cluster_part != host or not number.isdigit() or run_text != "0":
                raise HTTPException(400, f"job key {job} is not one of producer {host}'s jobs")
            job_id = int(number)
            with service.reader() as ledger:
                rows = ledger.store.get_jobs([job])
            job_id_text = rows[job].job if job in rows else number
        else:
            job_id = numeric_job_id(job)
        if job_id > MAX_SAFE_INTEGER:
            raise HTTPException(400, "job number too large")
        fields = canonical_value(body.model_dump(exclude_none=True))
        payload: dict[str, object] = {
            "seed_event": seed_name,
            "seed": fields,
            "producer": {"key_id": caller.key.key_id, "host": host},
            **_index_fields(kind, body),
        }
        if seq is None:  # progress: one event a distinct report, the same again a retry
            seq = numeric_job_id("progress " + repr(sorted(fields.items())))
        event = new_event(event_type, host, job_id_text, job_id, host, payload, seq=seq)
        key = make_job_key(host, job_id, 0)
        with service.reader() as ledger:
            found = ledger.store.find_events([(key, str(event["id"]))])
        url = receipt_url(request, key)
        if found:
            eid = str(event["id"])
            leaf, stored = found[eid]
            before = open_envelope(stored).event["payload"]
            if (before.get("seed_event"), before.get("seed")) != (seed_name, fields):
                raise HTTPException(
                    409,
                    f"job {job_id_text} already has a {before.get('seed_event') or event_type} "
                    f"event at leaf {leaf}; a run records it once",
                )
            return _recorded(job_id_text, key, seed_name, eid, leaf, "duplicate", url)
        try:
            envelope = sign_event(event, collector_signer())
        except ReceiptError as e:
            raise HTTPException(400, f"cannot record this event: {e}") from e
        outcome = service.append_as_collector([envelope])
        for _, eid, leaf in outcome.accepted:
            return _recorded(job_id_text, key, seed_name, eid, leaf, "accepted", url)
        for _, eid, leaf in outcome.duplicates:
            return _recorded(job_id_text, key, seed_name, eid, leaf, "duplicate", url)
        for _, reason in outcome.untrusted:
            raise HTTPException(
                403,
                f"{reason}: enroll the collector's host key for producer {host} "
                f"(`computeproof keys enroll COLLECTOR_KEY --host {host}`)",
            )
        for _, reason in outcome.rejected:
            status = 409 if "already in the ledger" in reason else 400
            raise HTTPException(status, reason)
        raise HTTPException(400, "the event was not recorded")

    job_path = Path(description="The seed's jobId, or a job key (producer/123#0)",
                    min_length=1, max_length=300)  # fmt: skip

    @router.post("/api/jobs/submit", response_model=Recorded, responses=write_errors)
    def submit(
        request: Request, body: SubmitBody, caller: Annotated[Caller, Depends(signed)]
    ) -> Recorded:
        """Record a submitted job (the seed's JobSubmitted)."""
        return record(request, caller, "submit", body.jobId, body)

    def add(kind: str, model: type[SeedBody]) -> None:
        def endpoint(
            request: Request,
            body: SeedBody,  # this route's own model: set below
            job: Annotated[str, job_path],
            caller: Annotated[Caller, Depends(signed)],
        ) -> Recorded:
            return record(request, caller, kind, job, body)

        endpoint.__doc__ = f"Record the seed's {_SEED_TYPES[kind][0]} for a job."
        # the body's model is this route's own: FastAPI reads it from the annotations
        endpoint.__annotations__["body"] = model
        router.add_api_route(
            f"/api/jobs/{{job:job}}/{kind}",
            endpoint,
            methods=["POST"],
            response_model=Recorded,
            responses=write_errors,
            name=f"seed_{kind}",
        )

    for kind, model in (
        ("scheduled", ScheduledBody),
        ("started", StartedBody),
        ("progress", ProgressBody),
        ("completed", CompletedBody),
        ("failed", FailedBody),
    ):
        add(kind, model)

    read_errors: dict[int | str, dict[str, Any]] = {
        401: write_errors[401],
        429: write_errors[429],
        503: write_errors[503],
    }

    @router.get("/api/jobs", response_model=SeedJobs, responses=read_errors)
    def list_jobs(
        request: Request,
        limit: Annotated[int, Query(ge=1, le=1000)] = 100,
        offset: Annotated[int, Query(ge=0, le=1_000_000)] = 0,
        caller: Annotated[Caller | None, Depends(reader)] = None,
    ) -> SeedJobs:
        """Jobs in the ledger (every producer's and Slurm's), in start order, paged."""
        with service.reader() as ledger:
            rows = ledger.jobs(JobFilter(limit=offset + limit + 1))
        page = rows[offset : offset + limit]
        jobs = [_seed_job(request, r, None) for r in page]
        return SeedJobs(
            success=True,
            jobs=jobs,
            count=len(jobs),
            nextOffset=offset + limit if len(rows) > offset + limit else None,
        )

    @router.get(
        "/api/jobs/{job:job}/history",
        response_model=SeedHistory,
        responses={**read_errors, 404: {**_ERROR, "description": "No such job"}},
    )
    def history(
        request: Request,
        job: Annotated[str, job_path],
        caller: Annotated[Caller | None, Depends(reader)] = None,
    ) -> SeedHistory:
        """A job's events in log order (the seed's history, with leaf indices and event
        ids in place of transaction hashes)."""
        with service.reader() as ledger:
            try:
                row = ledger.resolve_job(job)
            except ReceiptError as e:
                raise HTTPException(404, str(e)) from e
            events: list[tuple[Any, dict[str, Any]]] = ledger.job_events(row)
        seed_fields: object = None
        for _, ev in events:
            if ev["payload"].get("seed_event") == "JobSubmitted":
                seed_fields = ev["payload"].get("seed")
                break
        base = _seed_job(request, row, seed_fields if isinstance(seed_fields, dict) else None)
        out = []
        for leaf, ev in events:
            payload = ev["payload"]
            name = payload.get("seed_event")
            if not isinstance(name, str):
                name = _TYPE_NAMES.get(ev["type"], ev["type"])
                if ev["type"] == "completed" and payload.get("state") not in (None, "COMPLETED"):
                    name = "JobFailed"
            details = payload.get("seed") if isinstance(payload.get("seed"), dict) else payload
            out.append(
                SeedEvent(
                    eventType=name,
                    timestamp=_unix(ev["time"]),
                    time=ev["time"],
                    eventId=ev["id"],
                    leafIndex=leaf.index,
                    host=ev["host"],
                    details=details,
                )
            )
        gpu = seed_fields.get("gpuRequirement") if isinstance(seed_fields, dict) else None
        return SeedHistory(
            **base.model_dump(),
            success=True,
            gpuRequirement=gpu if isinstance(gpu, dict) else None,
            events=out,
        )

    @router.get("/health", response_model=SeedHealth)
    def health() -> SeedHealth:
        """The seed's health check (the collector's own is /healthz)."""
        from importlib.metadata import PackageNotFoundError, version

        try:
            v = version("computeproof")
        except PackageNotFoundError:
            v = "unknown"
        return SeedHealth(status="ok", service=SERVICE, version=v)

    return router


def _index_fields(kind: str, body: SeedBody) -> dict[str, object]:
    """The payload keys the job index reads (computeproof.jobindex), from seed fields."""
    now = utc_now()
    out: dict[str, object] = {}
    if isinstance(body, SubmitBody):
        out["state"] = "PENDING"
        out["submit_time"] = now
        if body.submittedBy:
            out["user"] = body.submittedBy
        req = body.gpuRequirement or {}
        if isinstance(req.get("count"), int) and not isinstance(req.get("count"), bool):
            out["gpus"] = req["count"]
        if isinstance(req.get("type"), str) and req["type"]:
            out["gpu_model"] = req["type"]
    elif isinstance(body, ScheduledBody):
        if body.scheduledNode:
            out["nodes"] = [body.scheduledNode]
    elif isinstance(body, StartedBody):
        out["state"] = "RUNNING"
        out["start_time"] = now
        if body.executorNode:
            out["nodes"] = [body.executorNode]
    elif isinstance(body, ProgressBody):
        if isinstance(body.progress, int | float) and 0 <= body.progress <= 100:
            out["percent"] = int(body.progress)
        if body.currentEpoch is not None and body.totalEpochs is not None:
            out["epoch"] = f"{body.currentEpoch}/{body.totalEpochs}"
    elif isinstance(body, CompletedBody):
        ok = (body.completionStatus or "success").lower() in ("success", "completed", "ok")
        out["state"] = "COMPLETED" if ok else "FAILED"
        out["end_time"] = now
        if body.totalDuration is not None and body.totalDuration >= 0:
            out["elapsed_s"] = int(body.totalDuration)
        if body.exitCode is not None:
            out["exit_code"] = str(body.exitCode)
    elif isinstance(body, FailedBody):
        out["state"] = "FAILED"
        out["end_time"] = now
        if body.errorCode is not None:
            out["reason"] = str(body.errorCode)
    return {k: canonical_value(v) for k, v in out.items()}


def _recorded(
    job: str, key: str, seed_name: str, eid: str, leaf: int, status: str, url: str
) -> Recorded:
    return Recorded(
        success=True,
        jobId=job,
        jobKey=key,
        eventType=seed_name,
        eventId=eid,
        leafIndex=leaf,
        status=status,  # type: ignore[arg-type]
        receiptUrl=url,
        message=f"{seed_name} recorded as a signed event at leaf {leaf}"
        if status == "accepted"
        else f"{seed_name} was recorded before, at leaf {leaf}",
    )


def _seed_job(request: Request, row: JobRow, seed: dict[str, Any] | None) -> SeedJob:
    job_type = seed.get("jobType") if seed else None
    return SeedJob(
        jobId=row.job,
        jobKey=row.job_key,
        jobType=job_type if isinstance(job_type, str) else None,
        status=_seed_status(row),
        submittedBy=row.user,
        gpuCount=row.gpus,
        gpuModel=row.gpu_model,
        totalEvents=row.events,
        createdAt=row.submit or row.start,
        receiptUrl=receipt_url(request, row.job_key),
    )
