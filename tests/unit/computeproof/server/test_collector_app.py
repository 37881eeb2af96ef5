"""The collector's HTTP API in-process (FastAPI's TestClient) over a real SQLite ledger:
ingest and its per-envelope outcomes, request signatures, limits, checkpoints, proofs,
job queries, receipts, metrics."""

from __future__ import annotations

import json
import sqlite3
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parent))
from collector_helpers import HOSTS, Client, prepare_ledger, running, serve_config, signed

from computeproof import merkle
from computeproof.bundle import verify_bundle
from computeproof.checkpoint import open_checkpoint
from computeproof.config import Config
from computeproof.envelope import sign_event
from computeproof.httpsig import sign_request
from computeproof.keys import Signer, format_public_key
from computeproof.privacy import commit_fields
from computeproof.server import collector as collector_module

Sign = Callable[..., list[bytes]]


@pytest.fixture
def config(tmp_path: Path, host_signer: Signer) -> Config:
    cfg = serve_config(str(tmp_path / "ledger.db"), tmp_path)
    prepare_ledger(cfg, (host_signer, HOSTS))
    return cfg


@pytest.fixture
def client(config: Config, host_signer: Signer) -> Iterator[Client]:
    with running(config, host_signer) as c:
        yield c


def _wait_checkpoint(client: Client, size: int) -> str:
    for _ in range(200):
        r = client.get("/v1/checkpoint")
        if r.status_code == 200 and r.text.splitlines()[1] == str(size):
            return str(r.text)
        time.sleep(0.05)
    raise AssertionError(f"no checkpoint of size {size}")


def test_ingest_outcomes_per_envelope(
    client: Client, make_lifecycle: Callable, sign_all: Sign, other_signer: Signer
) -> None:
    envs = sign_all(make_lifecycle("100"))
    r = client.events(envs)
    assert r.status_code == 200
    doc = r.json()
    assert doc["accepted"] == len(envs) and doc["duplicates"] == doc["rejected"] == 0
    assert [x["leaf_index"] for x in doc["results"]] == list(range(len(envs)))
    assert all(x["status"] == "accepted" and len(x["event_id"]) == 64 for x in doc["results"])
    # again, with a broken one and one from a host the key is not enrolled for
    stranger = sign_all(make_lifecycle("101", nodes=("node9",)))[1]  # started on node9
    broken = envs[0][:-3] + b"}}}"
    r = client.events([envs[2], broken, stranger, envs[2]]).json()
    assert [x["status"] for x in r["results"]] == [
        "duplicate",
        "rejected",
        "untrusted",
        "duplicate",
    ]
    assert r["results"][0]["leaf_index"] == 2 == r["results"][3]["leaf_index"]
    assert "node9" in r["results"][2]["reason"]
    assert r["results"][1]["reason"]


def test_each_envelope_must_be_signed_by_the_sending_host(
    client: Client, config: Config, make_lifecycle: Callable, sign_all: Sign, other_signer: Signer
) -> None:
    prepare_ledger(config, (other_signer, HOSTS))
    time.sleep(collector_module.KEY_CACHE_S + 0.1)
    mine, theirs = (
        sign_all(make_lifecycle("100"))[:2],
        sign_all(make_lifecycle("101"), other_signer),
    )
    r = client.events([mine[0], theirs[0], mine[1]]).json()
    assert [x["status"] for x in r["results"]] == ["accepted", "rejected", "accepted"]
    assert "not signed by the sending host's key" in r["results"][1]["reason"]
    # the other host sends its own: accepted
    assert client.post("/v1/events", {"envelopes": [theirs[0].decode()]},
                       signer=other_signer).json()["accepted"] == 1  # fmt: skip


def test_openings_are_checked_stored_and_never_served(
    client: Client, config: Config, host_signer: Signer, make_lifecycle: Callable
) -> None:
    events = make_lifecycle("100")
    envs, openings = [], []
    for ev in events:
        payload, opened = commit_fields(ev["payload"], ("user",), ev["id"], host_signer.salt_secret)
        envs.append(sign_event({**ev, "payload": payload}, host_signer))
        openings.append(opened or None)
    assert openings[0] is not None  # scheduled carries the user
    bad = dict(openings[0])
    bad["user"] = {"salt": bad["user"]["salt"], "value": "mallory"}  # type: ignore[index]
    r = client.events(envs[:1], openings=[bad]).json()
    assert r["results"][0]["status"] == "rejected"
    assert "does not open its commitment" in r["results"][0]["reason"]
    r = client.events(envs, openings=openings).json()
    assert r["accepted"] == len(envs)
    from computeproof.store import open_store

    store = open_store(config.db)
    assert store.openings(str(events[0]["id"]))["user"][1] == '"alice"'
    store.close()
    _wait_checkpoint(client, len(envs))
    receipt = client.get("/v1/jobs/100/receipt")
    assert receipt.status_code == 200 and "disclosures" not in receipt.json()
    assert "alice" not in receipt.text and "alice" not in client.get("/v1/jobs/100").text
    r = client.post("/v1/events", {"envelopes": ["x"], "openings": []})
    assert r.status_code == 400 and "one entry an envelope" in r.json()["detail"]


def test_requests_must_be_signed_fresh_and_once(
    client: Client, host_signer: Signer, other_signer: Signer, make_lifecycle: Callable,
    sign_all: Sign,
) -> None:  # fmt: skip
    body = json.dumps({"envelopes": [e.decode() for e in sign_all(make_lifecycle())]}).encode()
    plain = {"Content-Type": "application/json"}
    r = client.http.post("/v1/events", content=body, headers=plain)
    assert r.status_code == 401 and "not signed" in r.json()["detail"]
    assert r.headers["WWW-Authenticate"] == "Signature"
    headers = signed(host_signer, "POST", "/v1/events", body)
    assert client.http.post("/v1/events", content=body, headers=headers).status_code == 200
    r = client.http.post("/v1/events", content=body, headers=headers)
    assert r.status_code == 401 and "replay" in r.json()["detail"]
    stale = sign_request(
        host_signer, "POST", "/v1/events", "", body, created=int(time.time()) - 3600
    )
    r = client.http.post("/v1/events", content=body, headers={**stale, **plain})
    assert r.status_code == 401 and "check the host's clock" in r.json()["detail"]
    r = client.post("/v1/events", {"envelopes": []}, signer=other_signer)
    assert r.status_code == 401 and "not enrolled" in r.json()["detail"]
    tampered = signed(host_signer, "POST", "/v1/events", body)
    r = client.http.post("/v1/events", content=body.replace(b"[", b"[ "), headers=tampered)
    assert r.status_code == 401 and "Content-Digest" in r.json()["detail"]
    # reads of jobs need a signature too; the log's checkpoint and proofs do not
    assert client.http.get("/v1/jobs").status_code == 401
    assert client.get("/v1/jobs").status_code == 200
    assert client.http.get("/healthz").status_code == 200


def test_a_revoked_key_is_refused(
    config: Config, host_signer: Signer, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(collector_module, "KEY_CACHE_S", 0.0)
    with running(config, host_signer) as client:
        assert client.events([]).status_code == 200
        from computeproof.store import open_store

        store = open_store(config.db)
        store.revoke(host_signer.key_id, "2026-01-01T00:00:00Z")
        store.close()
        r = client.events([])
        assert r.status_code == 401 and "revoked" in r.json()["detail"]


def test_rate_limit_per_host_key(tmp_path: Path, host_signer: Signer) -> None:
    config = serve_config(str(tmp_path / "l.db"), tmp_path, serve_rate_limit=2)
    prepare_ledger(config, (host_signer, HOSTS))
    with running(config, host_signer) as client:
        codes = [client.events([]).status_code for _ in range(8)]
        assert codes[:4] == [200] * 4 and 429 in codes  # a burst of twice the rate
        r = client.events([])
        assert r.status_code == 429 and int(r.headers["Retry-After"]) >= 1
        text = client.http.get("/metrics").text
        assert 'computeproof_collector_requests_refused_total{reason="rate_limited"}' in text


def test_request_size_limit(tmp_path: Path, host_signer: Signer) -> None:
    config = serve_config(str(tmp_path / "l.db"), tmp_path, serve_max_request_bytes=1000)
    prepare_ledger(config, (host_signer, HOSTS))
    with running(config, host_signer) as client:
        r = client.post("/v1/events", {"envelopes": ["x" * 2000]})
        assert r.status_code == 413 and "larger than 1000 bytes" in r.json()["detail"]

        def chunks() -> Iterator[bytes]:  # no Content-Length: counted as it streams
            yield b'{"envelopes": ["'
            for _ in range(40):
                yield b"x" * 100
            yield b'"]}'

        r = client.http.post(
            "/v1/events", content=chunks(), headers={"Content-Type": "application/json"}
        )
        assert r.status_code == 413


def test_checkpoints_follow_the_log_at_most_every_interval(
    tmp_path: Path, host_signer: Signer, make_lifecycle: Callable, sign_all: Sign
) -> None:
    config = serve_config(str(tmp_path / "l.db"), tmp_path, serve_checkpoint_ms=400)
    prepare_ledger(config, (host_signer, HOSTS))
    with running(config, host_signer) as client:
        assert client.http.get("/v1/checkpoint").status_code == 404
        started = time.monotonic()
        total = 0
        for job in range(100, 130):  # 30 batches over about 1.5 s
            total += client.events(sign_all(make_lifecycle(str(job)))).json()["accepted"]
            time.sleep(0.05)
        elapsed = time.monotonic() - started
        note = _wait_checkpoint(client, total)
        from computeproof.store import open_store

        store = open_store(config.db)
        signed_rows = store.checkpoints()
        store.close()
        # each signed only after the interval since the one before
        assert len(signed_rows) <= (time.monotonic() - started) / 0.4 + 2
        assert len(signed_rows) >= 2 and elapsed > 0.4
        public = client.http.app.state.collector._writer.ledger_public_key()  # type: ignore[attr-defined]
        cp = open_checkpoint(note, config.ledger_origin, public, origin=config.ledger_origin)
        assert cp.size == total
        # consistent with every earlier one, by the collector's own proofs
        for row in signed_rows[:-1]:
            proof = client.http.get(
                f"/v1/proofs/consistency?old_size={row.size}&new_size={total}"
            ).json()["proof"]
            import base64

            merkle.verify_consistency(row.size, total, [base64.b64decode(p) for p in proof],
                                      row.root, cp.root)  # fmt: skip


def test_a_log_that_no_longer_matches_is_never_checkpointed(
    tmp_path: Path, host_signer: Signer, make_lifecycle: Callable, sign_all: Sign
) -> None:
    """The anti-rollback rule through the collector: after the stored log is rewritten
    under a signed checkpoint, the checkpoint loop refuses to sign and counts it."""
    config = serve_config(str(tmp_path / "l.db"), tmp_path)
    prepare_ledger(config, (host_signer, HOSTS))
    with running(config, host_signer) as client:
        client.events(sign_all(make_lifecycle("100")))
        first = _wait_checkpoint(client, 5)
        db = sqlite3.connect(tmp_path / "l.db")
        db.execute("UPDATE nodes SET hash = zeroblob(32) WHERE level = 2 AND idx = 0")
        db.commit()
        db.close()
        client.events(sign_all(make_lifecycle("101")))
        time.sleep(1.0)
        assert client.http.get("/v1/checkpoint").text == first
        metrics = client.http.get("/metrics").text
        failures = [line for line in metrics.splitlines()
                    if line.startswith("computeproof_checkpoint_failures_total ")]  # fmt: skip
        assert failures and float(failures[0].split()[1]) >= 1


def test_proofs(client: Client, make_lifecycle: Callable, sign_all: Sign) -> None:
    import base64

    envs = sign_all(make_lifecycle("100", progress=3))
    client.events(envs)
    note = _wait_checkpoint(client, len(envs))
    root = base64.b64decode(note.splitlines()[2])
    for index, env in enumerate(envs):
        doc = client.http.get(f"/v1/proofs/inclusion?leaf_index={index}").json()
        assert doc["tree_size"] == len(envs)
        proof = [base64.b64decode(h) for h in doc["proof"]]
        merkle.verify_inclusion(merkle.leaf_hash(env), index, len(envs), proof, root)
    bad = client.http.get(f"/v1/proofs/inclusion?leaf_index={len(envs)}")
    assert bad.status_code == 400 and "leaf_index < tree_size" in bad.json()["detail"]
    assert client.http.get("/v1/proofs/inclusion?leaf_index=0&tree_size=999").status_code == 400
    assert client.http.get("/v1/proofs/consistency?old_size=9&new_size=3").status_code == 400


def test_jobs_lifecycle_and_receipt(
    client: Client, make_lifecycle: Callable, sign_all: Sign
) -> None:
    for job, user in (("100", "alice"), ("101", "bob"), ("102", "alice")):
        client.events(sign_all(make_lifecycle(job, user=user)))
    page = client.get("/v1/jobs?user=alice&limit=1").json()
    assert [j["job_id"] for j in page["jobs"]] == ["100"] and page["next"]
    page = client.get(f"/v1/jobs?user=alice&limit=1&after={page['next']}").json()
    assert [j["job_id"] for j in page["jobs"]] == ["102"] and page["next"] is None
    newest = client.get("/v1/jobs?reverse=true&limit=2").json()
    assert [j["job_id"] for j in newest["jobs"]] == ["102", "101"] and newest["next"]
    rest = client.get(f"/v1/jobs?reverse=true&limit=2&after={newest['next']}").json()
    assert [j["job_id"] for j in rest["jobs"]] == ["100"]
    bad = client.get("/v1/jobs?after=bm90LWEtY3Vyc29y")
    assert bad.status_code == 400 and "page cursor" in bad.json()["detail"]
    assert (
        client.get("/v1/jobs?state=completed&node=node1").json()["jobs"][0]["state"] == "COMPLETED"
    )
    assert client.get("/v1/jobs?since=2026-01-19").json()["jobs"][0]["job_id"] == "102"
    r = client.get("/v1/jobs?since=yesterday-ish")
    assert r.status_code == 400 and r.json()["detail"]
    _wait_checkpoint(client, 15)
    detail = client.get("/v1/jobs/101").json()
    assert detail["verification"]["ok"] is True and detail["verification"]["reason"] is None
    assert detail["verification"]["checkpoint_size"] == 15
    assert detail["events"][0]["type"] == "scheduled"
    assert detail["summary"]["user"] == "bob"
    receipt = client.get("/v1/jobs/c1%2F101%230/receipt")  # by job key
    assert receipt.status_code == 200
    report = verify_bundle(receipt.content)
    assert report.job_key == "c1/101#0" and len(report.events) == 5
    missing = client.get("/v1/jobs/999")
    assert missing.status_code == 404 and "no receipts for job 999" in missing.json()["detail"]
    assert client.get("/v1/jobs/999/receipt").status_code == 404


def test_metrics_follow_prometheus_conventions(
    client: Client, make_lifecycle: Callable, sign_all: Sign
) -> None:
    from prometheus_client.parser import text_string_to_metric_families

    envs = sign_all(make_lifecycle("100"))
    client.events(envs)
    client.events([envs[0], b"nonsense"])
    _wait_checkpoint(client, 5)
    r = client.http.get("/metrics")
    assert r.status_code == 200 and r.headers["content-type"].startswith("text/plain")
    samples = {
        (s.name, tuple(sorted(s.labels.items()))): s.value
        for family in text_string_to_metric_families(r.text)
        for s in family.samples
    }
    assert samples[("computeproof_collector_events_total", (("result", "accepted"),))] == 5
    assert samples[("computeproof_collector_events_total", (("result", "duplicate"),))] == 1
    assert samples[("computeproof_collector_rejects_total", (("reason", "malformed"),))] == 1
    assert samples[("computeproof_log_leaves", ())] == 5
    assert samples[("computeproof_checkpoint_leaves", ())] == 5
    assert 0 <= samples[("computeproof_checkpoint_age_seconds", ())] < 60
    last = samples[("computeproof_host_last_event_timestamp_seconds", (("host", ",".join(HOSTS)),))]
    assert abs(last - time.time()) < 60
    assert samples[("computeproof_checkpoints_signed_total", ())] >= 1
    for name, _ in samples:  # counters end in _total, and no *_created doubles
        assert not name.endswith("_created"), name


def test_openapi_document_is_published(client: Client) -> None:
    doc = client.http.get("/openapi.json").json()
    paths = set(doc["paths"])
    want = {"/v1/events", "/v1/checkpoint", "/v1/proofs/inclusion", "/v1/proofs/consistency",
            "/v1/jobs", "/v1/jobs/{job}", "/v1/jobs/{job}/receipt", "/healthz", "/metrics",
            "/api/jobs", "/api/jobs/submit", "/api/jobs/{job}/history", "/health"}  # fmt: skip
    assert want <= paths
    assert "401" in doc["paths"]["/v1/events"]["post"]["responses"]


def test_the_ledger_key_and_hosts_are_what_the_ledger_says(
    client: Client, host_signer: Signer
) -> None:
    # the receipt's host key is the enrolled one
    assert format_public_key(host_signer.public_raw).startswith("ed25519:")


def test_a_receipt_waits_for_the_next_checkpoint(
    tmp_path: Path, host_signer: Signer, make_lifecycle: Callable, sign_all: Sign
) -> None:
    """Reads never sign: a job whose events came after the newest checkpoint has no
    receipt until the checkpoint loop signs the next one (here, a minute later)."""
    config = serve_config(str(tmp_path / "l.db"), tmp_path, serve_checkpoint_ms=60_000)
    prepare_ledger(config, (host_signer, HOSTS))
    with running(config, host_signer) as client:
        client.events(sign_all(make_lifecycle("100")))
        _wait_checkpoint(client, 5)  # the first is signed at once
        client.events(sign_all(make_lifecycle("101")))
        r = client.get("/v1/jobs/101/receipt")
        assert r.status_code == 409 and "not in a signed checkpoint yet" in r.json()["detail"]
        assert client.get("/v1/jobs/100/receipt").status_code == 200
        detail = client.get("/v1/jobs/101").json()
        assert detail["verification"]["ok"] is False and len(detail["events"]) == 5
        assert client.http.get("/v1/checkpoint").text.splitlines()[1] == "5"


def test_two_collector_processes_keep_one_interval(
    tmp_path: Path, host_signer: Signer, make_lifecycle: Callable, sign_all: Sign
) -> None:
    """Two collectors on one ledger sign at most one checkpoint an interval between them
    (before, each kept its own interval: twice as many checkpoints)."""
    config = serve_config(str(tmp_path / "l.db"), tmp_path, serve_checkpoint_ms=500)
    prepare_ledger(config, (host_signer, HOSTS))
    with running(config, host_signer) as one, running(config, host_signer) as two:
        started = time.monotonic()
        for job in range(100, 140):
            (one if job % 2 else two).events(sign_all(make_lifecycle(str(job))))
            time.sleep(0.05)
        _wait_checkpoint(one, 40 * 5)
        elapsed = time.monotonic() - started
    from computeproof.store import open_store

    store = open_store(config.db)
    rows = store.checkpoints()
    store.close()
    assert 2 <= len(rows) <= elapsed / 0.5 + 2, (len(rows), elapsed)


def test_the_dashboard_is_served_with_the_collector(
    config: Config, host_signer: Signer, make_lifecycle: Callable, sign_all: Sign
) -> None:
    """create_app(dashboard=...) includes the dashboard's router, reading through the
    collector's ledgers (which never sign: a dashboard receipt carries the loop's
    checkpoint)."""
    from fastapi.testclient import TestClient

    from computeproof.server.app import create_app
    from computeproof.server.dashboard import DashboardSettings

    token = "t" * 24
    app = create_app(config, dashboard=DashboardSettings(admin_token=token))
    with TestClient(app) as http:
        client = Client(http, host_signer)
        client.events(sign_all(make_lifecycle("100")))
        _wait_checkpoint(client, 5)
        page = http.get("/", headers={"Authorization": f"Bearer {token}"})
        assert page.status_code == 200 and "100" in page.text
        anonymous = http.get("/", follow_redirects=False)  # no token: to the sign-in page
        assert anonymous.status_code == 303 and anonymous.headers["location"].startswith("/login")
        assert "/v1/events" in http.get("/openapi.json").json()["paths"]
