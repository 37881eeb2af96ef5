"""Tests of the dashboard's routes over the demo ledger (FastAPI's test client): access,
escaping, paging and filters, receipts, analytics and downloads, sign-in."""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import Any
from urllib.parse import quote

import pytest
from dashapp import ADMIN_TOKEN, opener, settings
from demo import DEMO_JOBS, HOSTILE_NAME, open_demo_ledger
from fastapi.testclient import TestClient

from computeproof.bundle import export_bundle, verify_bundle
from computeproof.server.dashboard.app import create_app

Client = Callable[..., TestClient]
ALL = 126  # 120 fillers and the 6 demo jobs


def _key(job_id: int) -> str:
    return quote(f"c1/{job_id}#0", safe="")


def _all_jobs(client: TestClient, query: str = "") -> list[dict[str, Any]]:
    """Every job the /ui/jobs pages list, following the next cursors."""
    out: list[dict[str, Any]] = []
    url = f"/ui/jobs?{query}"
    for _ in range(100):
        r = client.get(url)
        assert r.status_code == 200, r.text
        data = r.json()
        out.extend(data["jobs"])
        if not data["next"]:
            return out
        url = f"/ui/jobs?{query}&after={data['next']}"
    raise AssertionError("paging did not end")


# -- access ------------------------------------------------------------------------------


def test_anonymous_requests_are_sent_to_sign_in(make_client: Client) -> None:
    c = make_client()
    r = c.get("/?state=FAILED")
    assert r.status_code == 303 and r.headers["location"] == "/login?next=%2F%3Fstate%3DFAILED"
    for url in ("/ui/jobs", f"/ui/receipt?job={_key(100)}", "/ui/stream", "/ui/report.csv"):
        r = c.get(url)
        assert r.status_code == 401 and "sign in" in r.json()["error"], url
    assert c.get(f"/jobs/{_key(100)}").status_code == 303
    assert c.get("/login").status_code == 200
    assert c.get("/static/verify.js").status_code == 200  # code, not data


def test_identity_header_only_from_a_trusted_proxy(make_client: Client) -> None:
    assert make_client(user="alice").get("/ui/jobs").status_code == 200
    untrusted = make_client(user="alice", trusted_proxies=("10.1.2.3",))
    assert untrusted.get("/ui/jobs").status_code == 401
    no_header = make_client(user="alice", identity_header=None)
    assert no_header.get("/ui/jobs").status_code == 401
    wrong_token = make_client()
    wrong_token.headers["Authorization"] = "Bearer not-the-token-at-all"
    assert wrong_token.get("/ui/jobs").status_code == 401


def test_a_user_sees_only_their_own_jobs(make_client: Client) -> None:
    alice = make_client(user="alice")
    jobs = _all_jobs(alice, "user=bob")  # asking for bob's jobs still gives alice's only
    assert jobs and {j["user"] for j in jobs} == {"alice"}
    mine = [j for j in _all_jobs(make_client(admin=True)) if j["user"] == "alice"]
    assert sorted(j["job_key"] for j in jobs) == sorted(j["job_key"] for j in mine)
    page = alice.get("/")
    assert page.status_code == 200 and "(your jobs only)" in page.text
    assert ">bob<" not in page.text and ">carol<" not in page.text
    # another user's job: the same answer as a job that does not exist
    for url in (f"/jobs/{_key(101)}", f"/jobs/{_key(99999)}"):
        r = alice.get(url)
        assert r.status_code == 404 and "that you may see" in r.text
    r = alice.get(f"/ui/receipt?job={_key(101)}")
    assert r.status_code == 404 and "that you may see" in r.json()["error"]
    assert alice.get(f"/jobs/{_key(100)}").status_code == 200
    assert alice.get(f"/ui/receipt?job={_key(100)}").status_code == 200
    root = make_client(user="root")  # an admin user by name
    assert root.get(f"/jobs/{_key(101)}").status_code == 200


def test_private_fields(make_client: Client) -> None:
    owner = make_client(user="dave")
    page = owner.get(f"/jobs/{_key(105)}").text
    assert "secret-project" in page and "disclosed value (opening checked)" in page
    r = owner.get(f"/ui/receipt?job={_key(105)}&disclose=1")
    assert r.status_code == 200 and "secret-project" in r.text
    assert verify_bundle(r.content).disclosed  # the openings check out offline
    assert "secret-project" not in owner.get(f"/ui/receipt?job={_key(105)}").text
    admin = make_client(admin=True)
    assert "secret-project" in admin.get(f"/jobs/{_key(105)}").text
    sealed = make_client(admin=True, private_to_admins=False)
    page = sealed.get(f"/jobs/{_key(105)}").text
    assert "secret-project" not in page and "[private]" in page
    assert sealed.get(f"/ui/receipt?job={_key(105)}&disclose=1").status_code == 404
    not_owner = make_client(user="dave", private_to_owner=False)
    assert "secret-project" not in not_owner.get(f"/jobs/{_key(105)}").text


# -- what pages show -------------------------------------------------------------------


def test_hostile_strings_are_escaped(make_client: Client) -> None:
    page = make_client(admin=True).get(f"/jobs/{_key(100)}").text
    assert "<script>alert" not in page and "<img src=x" not in page and "<b>bold" not in page
    assert "&lt;script&gt;alert(&#34;x&#34;)&lt;/script&gt;\\n\\u202eevil" in page
    assert "\u202e" not in page  # the override itself never reaches the page
    other = make_client(admin=True).get(f"/jobs/{_key(101)}").text
    assert "bad\\xffname\\x1b[31m [not UTF-8]" in other
    assert HOSTILE_NAME not in page
    r = make_client(admin=True).get("/ui/jobs")
    assert "<script>" not in r.text


def test_security_headers(make_client: Client) -> None:
    r = make_client(admin=True).get("/")
    csp = r.headers["content-security-policy"]
    assert "script-src 'self'" in csp and "default-src 'none'" in csp
    assert "unsafe-inline" not in csp
    assert r.headers["x-content-type-options"] == "nosniff"
    assert "<script>" not in r.text.replace('<script type="module"', "")  # no inline script


def test_job_page_lifecycle_gpus_artifacts(make_client: Client, demo_dir: str) -> None:
    page = make_client(admin=True).get(f"/jobs/{_key(100)}").text
    with open_demo_ledger(demo_dir) as led:
        row = led.resolve_job("c1/100#0")
        leaves = [leaf.index for leaf, _ in led.job_events(row)]
    for leaf in leaves:
        assert f"leaf {leaf}</span>" in page
    assert page.count('<li class="ev ') == len(leaves)
    assert (
        "GPU utilization (interval mean)" in page and "node1 GPU 1 (NVIDIA A100-SXM4-80GB)" in page
    )
    assert "GPU-node1-0-0000" in page and "whole run (node_done)" in page
    assert "ab" * 32 in page and "cd" * 32 in page  # artifact hashes
    running = make_client(admin=True).get(f"/jobs/{_key(104)}").text
    assert "No GPU figures" in running and "running" in running


def test_receipt_download_is_the_exported_bundle(make_client: Client, demo_dir: str) -> None:
    r = make_client(admin=True).get(f"/ui/receipt?job={_key(100)}")
    assert r.status_code == 200
    assert r.headers["content-disposition"] == 'attachment; filename="receipt-c1-100-0.json"'
    with open_demo_ledger(demo_dir) as led:
        text = json.dumps(export_bundle(led, "c1/100#0"), indent=1, sort_keys=True) + "\n"
        key = led.ledger_public_key()
    assert r.text == text
    assert verify_bundle(r.content, key).job_key == "c1/100#0"
    published = make_client(admin=True, published_ledger_key="ed25519:" + "A" * 43 + "=")
    assert published.get("/ui/ledger-key").json()["published"] is True


# -- paging, filters, search -----------------------------------------------------------


def test_paging_lists_every_job_once_newest_first(make_client: Client) -> None:
    c = make_client(admin=True)
    jobs = _all_jobs(c)
    assert len(jobs) == ALL == len({j["job_key"] for j in jobs})
    starts = [j["start"] for j in jobs]
    assert starts == sorted(starts, reverse=True)
    first = c.get("/ui/jobs").json()
    assert first["total"] == ALL and first["prev"] is None and len(first["jobs"]) == 20
    second = c.get(f"/ui/jobs?after={first['next']}").json()
    back = c.get(f"/ui/jobs?before={second['prev']}").json()
    assert [j["job_key"] for j in back["jobs"]] == [j["job_key"] for j in first["jobs"]]
    page2 = c.get(f"/?after={first['next']}").text
    assert 'id="page-prev"' in page2 and 'id="page-newest"' in page2


@pytest.mark.parametrize(
    ("query", "check"),
    [
        ("state=FAILED", lambda j: j["state"] == "FAILED"),
        ("state=failed&user=bob", lambda j: j["state"] == "FAILED" and j["user"] == "bob"),
        (
            "account=biology&partition=debug",
            lambda j: (j["account"], j["partition"]) == ("biology", "debug"),
        ),
        ("node=node2", lambda j: j["nodes"] == "node2"),
        ("gpu_model=a100", lambda j: j["gpu_model"] == "a100"),
        ("from=2026-01-06&to=2026-01-06", lambda j: j["start"].startswith("2026-01-06")),
        ("state=COMPLETED&state=TIMEOUT", lambda j: j["state"] in ("COMPLETED", "TIMEOUT")),
    ],
)
def test_filters(make_client: Client, query: str, check: Callable[[dict[str, Any]], bool]) -> None:
    c = make_client(admin=True)
    jobs = _all_jobs(c, query)
    everything = _all_jobs(c)
    assert jobs and all(check(j) for j in jobs)
    assert (
        len(jobs)
        == sum(1 for j in everything if check(j))
        == c.get(f"/ui/jobs?{query}").json()["total"]
    )
    page = c.get(f"/?{query}").text  # the form shows the filter in force, and links keep it
    if "state=FAILED" in query:
        assert '<option value="FAILED" selected>' in page


def test_search_by_job_id(make_client: Client) -> None:
    c = make_client(admin=True)
    for q in ("101", "c1/101#0"):
        (job,) = c.get(f"/ui/jobs?q={quote(q)}").json()["jobs"]
        assert job["job_key"] == "c1/101#0"
    assert c.get("/ui/jobs?q=424242").json()["jobs"] == []


@pytest.mark.parametrize(
    "query", ["after=notacursor", "before=%22x", "from=yesterday", "size=abc", "user=" + "x" * 300]
)
def test_bad_parameters_are_one_line_400s(make_client: Client, query: str) -> None:
    r = make_client(admin=True).get(f"/ui/jobs?{query}")
    assert r.status_code == 400 and "\n" not in r.json()["error"]
    page = make_client(admin=True).get(f"/?{query}")
    assert page.status_code == 400 and "Traceback" not in page.text


def test_page_size_is_bounded(make_client: Client) -> None:
    c = make_client(admin=True, max_page_size=30)
    assert len(c.get("/ui/jobs?size=100000").json()["jobs"]) == 30
    assert len(c.get("/ui/jobs?size=-5").json()["jobs"]) == 1


# -- analytics -------------------------------------------------------------------------


def test_analytics_figures_are_the_reports(make_client: Client, demo_dir: str) -> None:
    from computeproof.reports.build import build_report
    from computeproof.reports.dates import parse_period
    from computeproof.reports.grants import to_ms
    from computeproof.reports.usage import ReportParams

    c = make_client(admin=True)
    page = c.get("/analytics?from=2026-01&to=2026-01&group_by=user")
    assert page.status_code == 200
    doc = c.get("/ui/report.json?from=2026-01&to=2026-01&group_by=user").json()
    lo, hi = parse_period("2026-01", "2026-01")
    with open_demo_ledger(demo_dir) as led:
        want = build_report(led, ReportParams(to_ms(lo), to_ms(hi), group_by=("user",)))
    assert doc["totals"] == want["totals"] and doc["groups"] == want["groups"]
    assert doc["ledger_check"]["mode"] == "receipts" and doc["ledger_check"]["ok"]
    assert doc["totals"]["jobs"] == ALL - 1  # the running job is not counted
    assert f'id="fig-jobs">{ALL - 1:,}<' in page.text
    for g in want["groups"]:
        assert f'<td class="k">{g["key"]["user"]}</td>' in page.text
    alice = make_client(user="alice").get("/ui/report.json?from=2026-01&to=2026-01").json()
    assert alice["parameters"]["users"] == ["alice"]
    assert {g["key"]["account"] for g in alice["groups"]} == {"physics"}


def test_report_downloads(make_client: Client) -> None:
    c = make_client(admin=True)
    q = "from=2026-01&to=2026-01&group_by=account"
    csv = c.get(f"/ui/report.csv?{q}")
    assert csv.headers["content-type"].startswith("text/csv")
    assert csv.text.splitlines()[0].startswith("account,jobs,allocated_gpu_hours")
    assert csv.text.splitlines()[-1].startswith("TOTAL,")
    html = c.get(f"/ui/report.html?{q}").text
    assert 'id="computeproof-report"' in html
    assert c.get(f"/ui/report.xml?{q}").status_code == 400
    assert c.get("/ui/report.csv?from=2026-02&to=2026-01").status_code == 400


def test_report_pdf(make_client: Client) -> None:
    import shutil

    if not shutil.which("chromium"):
        pytest.skip("PDF reports need Debian's chromium")
    r = make_client(admin=True).get("/ui/report.pdf?from=2026-01&to=2026-01")
    assert r.status_code == 200 and r.content.startswith(b"%PDF")


# -- sign-in, files, mount path, stream ---------------------------------------------------


def test_sign_in_with_the_token(make_client: Client) -> None:
    c = make_client()
    bad = c.post(
        "/login",
        content=b"token=nope&next=/",
        headers={"content-type": "application/x-www-form-urlencoded"},
    )
    assert bad.status_code == 401 and "not the admin token" in bad.text
    ok = c.post(
        "/login",
        content=f"token={ADMIN_TOKEN}&next=/analytics".encode(),
        headers={"content-type": "application/x-www-form-urlencoded"},
    )
    assert ok.status_code == 303 and ok.headers["location"] == "/analytics"
    cookie = ok.headers["set-cookie"]
    assert "HttpOnly" in cookie and "SameSite=strict" in cookie and ADMIN_TOKEN not in cookie
    assert c.get("/ui/jobs").status_code == 200  # the cookie signs in
    out = c.post("/logout")
    assert out.status_code == 303
    assert c.get("/ui/jobs").status_code == 401
    link = c.get(f"/login?token={ADMIN_TOKEN}&next=//evil.example/")
    assert link.status_code == 303 and link.headers["location"] == "/"  # no open redirect
    assert c.get("/login?token=wrong").status_code == 401


def test_static_files_and_etags(make_client: Client) -> None:
    c = make_client()
    r = c.get("/static/verify.js")
    assert r.headers["content-type"].startswith("text/javascript")
    assert (
        c.get("/static/verify.js", headers={"If-None-Match": r.headers["etag"]}).status_code == 304
    )
    assert c.get("/static/../routes.py").status_code == 404
    assert c.get("/static/nothing.js").status_code == 404


def test_mount_path(demo_dir: str) -> None:
    app = create_app(settings(mount_path="/dash"), opener(demo_dir))
    c = TestClient(app, headers={"Authorization": f"Bearer {ADMIN_TOKEN}"}, follow_redirects=False)
    page = c.get("/dash/").text
    assert 'href="/dash/static/dashboard.css"' in page and f'href="/dash/jobs/{_key(105)}"' in page
    assert c.get("/").status_code == 404
    anon = TestClient(app, follow_redirects=False)
    assert anon.get("/dash/analytics").headers["location"].startswith("/dash/login?next=")


def test_stream_says_the_log_size(make_client: Client, demo_dir: str) -> None:
    c = make_client(admin=True, stream_max_s=1, stream_poll_ms=100)
    with c.stream("GET", "/ui/stream") as r:
        assert r.headers["content-type"].startswith("text/event-stream")
        text = "".join(r.iter_text())
    with open_demo_ledger(demo_dir) as led:
        size = led.size()
    assert text.startswith("retry: 3000\n\n") and f'event: log\ndata: {{"size": {size}}}' in text


def test_demo_jobs_all_open(make_client: Client) -> None:
    c = make_client(admin=True)
    for job in DEMO_JOBS:
        assert c.get(f"/jobs/{_key(job.job_id)}").status_code == 200
