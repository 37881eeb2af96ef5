"""The seed's REST API on the collector (computeproof/server/seed.py): a producer enrolled
like a host posts the seed's JSON; each request becomes a signed event naming the
producer; answers carry the job key and receipt URL, never an NID or transaction hash."""

from __future__ import annotations

import sys
import time
from collections.abc import Iterator
from pathlib import Path
from urllib.parse import urlsplit

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parent))
from collector_helpers import Client, prepare_ledger, running, serve_config

from computeproof.bundle import verify_bundle
from computeproof.config import Config
from computeproof.keys import Signer, write_key
from computeproof.server.seed import canonical_value, numeric_job_id

PRODUCER = Signer.from_seed(b"\x21" * 32)
COLLECTOR = Signer.from_seed(b"\x22" * 32)
SUBMIT = {
    "jobId": "gpu-job-2025-1001",
    "jobType": "training",
    "submittedBy": "0x742d35Cc",
    "gpuRequirement": {"type": "NVIDIA-A100", "count": 4, "memory": "40GB"},
    "estimatedDuration": 3600,
    "dockerImage": "pytorch/pytorch:2.0-cuda11.7",
    "priority": "high",
}


@pytest.fixture
def config(tmp_path: Path) -> Config:
    cfg = serve_config(str(tmp_path / "ledger.db"), tmp_path, serve_open_reads=True)
    write_key(cfg.host_key, COLLECTOR)
    prepare_ledger(cfg, (PRODUCER, ("k8s-prod",)), (COLLECTOR, ("k8s-prod",)))
    return cfg


@pytest.fixture
def client(config: Config) -> Iterator[Client]:
    with running(config, PRODUCER) as c:
        yield c


def test_a_job_lifecycle_through_the_seed_api(client: Client) -> None:
    r = client.post("/api/jobs/submit", SUBMIT)
    assert r.status_code == 200, r.text
    doc = r.json()
    assert doc["success"] is True and doc["status"] == "accepted"
    assert doc["jobKey"] == f"k8s-prod/{numeric_job_id(SUBMIT['jobId'])}#0"
    assert "jobNid" not in doc and "txHash" not in doc and "explorerUrl" not in doc
    receipt_path = urlsplit(doc["receiptUrl"]).path
    job = SUBMIT["jobId"]
    steps = [
        ("scheduled", {"scheduledNode": "gpu-node-01", "queuePosition": 1}),
        ("started", {"executorNode": "gpu-node-01", "containerId": "docker://abc"}),
        ("progress", {"progress": 50, "currentEpoch": 15, "totalEpochs": 30,
                      "avgGpuUtilization": 92.5, "memoryUsage": "32GB/40GB"}),
        ("progress", {"progress": 80, "currentEpoch": 24, "totalEpochs": 30}),
        ("completed", {"completionStatus": "success", "totalDuration": 3810,
                       "gpuHoursUsed": 4.23, "exitCode": 0,
                       "finalMetrics": {"accuracy": 0.945, "loss": 0.032}}),
    ]  # fmt: skip
    leaves = [doc["leafIndex"]]
    for kind, body in steps:
        r = client.post(f"/api/jobs/{job}/{kind}", body)
        assert r.status_code == 200, r.text
        leaves.append(r.json()["leafIndex"])
    assert leaves == list(range(6))
    # the same request again is the same event
    again = client.post(f"/api/jobs/{job}/progress", steps[2][1]).json()
    assert again["status"] == "duplicate" and again["leafIndex"] == 3
    # a run ends once: failing after completing is a conflict
    r = client.post(f"/api/jobs/{job}/failed", {"errorCode": "OOM"})
    assert r.status_code == 409 and "already has a JobCompleted event" in r.json()["detail"]

    history = client.get(f"/api/jobs/{job}/history").json()
    assert history["status"] == "completed" and history["jobType"] == "training"
    assert history["gpuRequirement"] == SUBMIT["gpuRequirement"]
    assert [e["eventType"] for e in history["events"]] == [
        "JobSubmitted", "JobScheduled", "JobStarted", "JobProgressUpdate",
        "JobProgressUpdate", "JobCompleted",
    ]  # fmt: skip
    progress = history["events"][3]["details"]
    assert progress["avgGpuUtilization"] == "92.5" and progress["progress"] == 50
    jobs = client.get("/api/jobs").json()
    assert jobs["count"] == 1 and jobs["jobs"][0]["jobId"] == job
    assert jobs["jobs"][0]["gpuCount"] == 4 and jobs["jobs"][0]["submittedBy"] == "0x742d35Cc"

    # the job index, the lifecycle view and the receipt all see it
    for _ in range(100):
        r = client.get(receipt_path)
        if r.status_code == 200 and len(r.json()["entries"]) == 6:
            break
        time.sleep(0.05)
    report = verify_bundle(r.content)
    assert report.job == job and len(report.events) == 6
    for event in report.events:  # signed by the collector, naming the producer
        payload = event["payload"]
        assert isinstance(payload, dict)
        assert payload["producer"] == {"key_id": PRODUCER.key_id, "host": "k8s-prod"}
        assert event["host"] == "k8s-prod" and event["cluster"] == "k8s-prod"
    keys = {k["key_id"] for k in r.json()["keys"]}
    assert keys == {COLLECTOR.key_id}
    summary = client.get(f"/v1/jobs/{doc['jobKey'].replace('/', '%2F').replace('#', '%23')}")
    assert summary.json()["summary"]["state"] == "COMPLETED"
    assert summary.json()["summary"]["elapsed_s"] == 3810


def test_a_failed_job(client: Client) -> None:
    client.post("/api/jobs/submit", {**SUBMIT, "jobId": "7"})
    client.post("/api/jobs/7/started", {})
    r = client.post("/api/jobs/7/failed", {"errorCode": "CUDA_OOM", "errorMessage": "out of memory",
                                           "retryAttempt": 1})  # fmt: skip
    assert r.status_code == 200 and r.json()["jobKey"] == "k8s-prod/7#0"
    history = client.get("/api/jobs/7/history").json()
    assert history["status"] == "failed" and history["events"][-1]["eventType"] == "JobFailed"


def test_only_an_enrolled_producer_may_post(client: Client, config: Config) -> None:
    r = client.http.post("/api/jobs/submit", json=SUBMIT)
    assert r.status_code == 401
    stranger = Signer.from_seed(b"\x23" * 32)
    assert client.post("/api/jobs/submit", SUBMIT, signer=stranger).status_code == 401
    wide = Signer.from_seed(b"\x24" * 32)
    prepare_ledger(config, (wide, ("a", "b")))
    time.sleep(2.1)  # the enrolled-key cache
    r = client.post("/api/jobs/submit", SUBMIT, signer=wide)
    assert r.status_code == 403 and "exactly one host name" in r.json()["detail"]


def test_the_collector_key_must_be_enrolled_for_the_producer(tmp_path: Path) -> None:
    cfg = serve_config(str(tmp_path / "l.db"), tmp_path, serve_open_reads=True)
    write_key(cfg.host_key, COLLECTOR)
    prepare_ledger(cfg, (PRODUCER, ("k8s-prod",)))
    with running(cfg, PRODUCER) as client:
        r = client.post("/api/jobs/submit", SUBMIT)
        assert r.status_code == 403
        assert "enroll the collector's host key for producer k8s-prod" in r.json()["detail"]


def test_a_job_key_of_another_producer_is_refused(client: Client) -> None:
    r = client.post("/api/jobs/other%2F5%230/started", {})
    assert r.status_code == 400 and "is not one of producer k8s-prod's jobs" in r.json()["detail"]


def test_health_and_unknown_history(client: Client) -> None:
    health = client.http.get("/health").json()
    assert health["status"] == "ok" and health["service"] == "ComputeProof API"
    assert client.get("/api/jobs/nope/history").status_code == 404


def test_values_become_canonical() -> None:
    assert canonical_value({"a": 92.5, "b": 3.0, "c": [0.1, 2**60, True, None]}) == {
        "a": "92.5",
        "b": 3,
        "c": ["0.1", str(2**60), True, None],
    }
    assert numeric_job_id("123") == 123 and numeric_job_id("x") < 2**53
    assert numeric_job_id("9" * 20) < 2**53 and numeric_job_id("x") == numeric_job_id("x")
