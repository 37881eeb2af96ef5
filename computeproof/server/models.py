"""The collector API's request and response bodies (pydantic v2): what the OpenAPI
document publishes and what every response is checked against."""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, JsonValue

MAX_BATCH = 10_000  # envelopes one request may carry (the byte limit usually comes first)


class Error(BaseModel):
    """Why a request was refused: one line that says what is wrong and what to do."""

    detail: str


class Opening(BaseModel):
    """The salt and value that open one private field's commitment."""

    model_config = ConfigDict(extra="forbid")
    salt: str = Field(max_length=128)
    value: JsonValue


class EventBatch(BaseModel):
    """Signed events for the ledger: canonical DSSE envelopes (their exact bytes as text)
    and, position by position, the openings of their private fields."""

    model_config = ConfigDict(extra="forbid")
    envelopes: list[str] = Field(max_length=MAX_BATCH)
    openings: list[dict[str, Opening] | None] | None = Field(default=None, max_length=MAX_BATCH)


class EnvelopeOutcome(BaseModel):
    """What became of one envelope: accepted (appended at ``leaf_index``), duplicate (in
    the log already, at ``leaf_index``), rejected (never acceptable: ``reason``) or
    untrusted (its key is not enrolled for its host: retry once the site enrolls it)."""

    index: int
    status: Literal["accepted", "duplicate", "rejected", "untrusted"]
    event_id: str | None = None
    leaf_index: int | None = None
    reason: str | None = None


class IngestResponse(BaseModel):
    """Per-envelope outcomes, in request order, and their counts."""

    results: list[EnvelopeOutcome]
    accepted: int
    duplicates: int
    rejected: int
    untrusted: int


class JobSummary(BaseModel):
    """One job run from the job index (`computeproof jobs list --json`)."""

    job_id: str
    slurm_job_id: int
    run: int
    cluster: str
    user: str | None
    account: str | None
    partition: str | None
    state: str | None
    gpus: int | None
    gpu_model: str | None
    nodes: list[str]
    submit: str | None
    start: str | None
    end: str | None
    elapsed_s: int | None
    exit_code: str | None
    events: int
    synthetic: bool
    busy_gpu_hours: float | None
    energy_kwh: float | None


class JobsPage(BaseModel):
    """A page of jobs; ``next`` (as ``after``) fetches the next page (null: the last)."""

    jobs: list[JobSummary]
    limit: int
    next: str | None


class JobEvent(BaseModel):
    """One signed lifecycle event (private fields as their commitments)."""

    type: str
    time: str
    host: str
    leaf_index: int
    seq: int
    payload: dict[str, JsonValue]


class Verdict(BaseModel):
    """Whether the job's receipt verified (under the key this ledger signs with), if not
    why, the checkpoint it was verified at, the trust decision, and where the job index
    differs from what the receipt says."""

    ok: bool
    reason: str | None
    checkpoint_size: int = 0
    trust: JsonValue = None
    index_differences: list[str] = Field(default_factory=list)
    notes: list[str] = Field(default_factory=list)


class JobDetail(BaseModel):
    """One job run's lifecycle (`computeproof jobs show --json`)."""

    job_id: str
    cluster: str
    run: int
    summary: JobSummary
    gpus: list[dict[str, JsonValue]]
    events: list[JobEvent]
    verification: Verdict


class ReceiptLog(BaseModel):
    """The signed checkpoint a receipt's proofs lead to."""

    model_config = ConfigDict(extra="allow")
    origin: str
    size: int
    root: str
    ledger_key: str
    checkpoint: str


class Receipt(BaseModel):
    """A job's receipt bundle (`computeproof receipt export`): verify it offline with
    `computeproof receipt verify`. Never carries the openings of private fields."""

    model_config = ConfigDict(extra="allow")
    format: str
    job: dict[str, JsonValue]
    log: ReceiptLog
    keys: list[dict[str, JsonValue]]
    entries: list[dict[str, JsonValue]]
    anchors: list[JsonValue]
    index: dict[str, JsonValue]


class InclusionProof(BaseModel):
    """RFC 9162 inclusion proof of leaf ``leaf_index`` in the tree of ``tree_size``."""

    leaf_index: int
    tree_size: int
    proof: list[str] = Field(description="base64 SHA-256 hashes, leaf to root")


class ConsistencyProof(BaseModel):
    """RFC 9162 consistency proof that the tree of ``new_size`` extends ``old_size``."""

    old_size: int
    new_size: int
    proof: list[str] = Field(description="base64 SHA-256 hashes")


class Health(BaseModel):
    """The collector is up and reaches its ledger."""

    status: Literal["ok"]
    log_size: int
    checkpoint_size: int | None
    checkpoint_age_s: float | None


Json = dict[str, Any]
