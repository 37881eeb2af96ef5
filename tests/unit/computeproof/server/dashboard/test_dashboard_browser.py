"""Browser tests: Playwright driving Debian's Chromium against a live dashboard (uvicorn on
127.0.0.1) over the demo ledger. Pages load without console errors, filters and paging
work, a new job appears live, receipts verify in the browser (and tampered ones fail,
with the Python verifier's verdict and message on every mutation), and a user cannot
open another user's job. Screenshots go to $DASHBOARD_SCREENSHOTS, else to a pytest
temporary directory (printed)."""

from __future__ import annotations

import base64
import copy
import json
import os
import random
import re
import socket
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any
from urllib.parse import quote

import pytest
from dashapp import ADMIN_TOKEN, HEADER, opener, settings
from demo import CTL, NODES, DemoJob, append_jobs, build_demo, open_demo_ledger
from witnessed import (
    FORGER,
    LOG_KEY,
    ORIGIN,
    Witnessed,
    WitnessProcess,
    build_witnessed,
    resign,
    witnessed_opener,
)

from computeproof.bundle import export_bundle, verify_bundle
from computeproof.checkpoint import cosigner_verifier_key, parse_cosigner_key
from computeproof.envelope import sign_event
from computeproof.keys import Signer
from computeproof.trust import TrustRoots

playwright = pytest.importorskip("playwright.sync_api")
CHROMIUM = "/usr/bin/chromium"
ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--no-first-run",
    "--disable-sync",
]
VECTORS = Path(__file__).resolve().parents[4] / "data"

pytestmark = pytest.mark.skipif(
    not os.path.exists(CHROMIUM), reason="needs Debian's chromium (apt-get install chromium)"
)


def _key(job_id: int) -> str:
    return quote(f"c1/{job_id}#0", safe="")


class Live:
    """A dashboard served by uvicorn in a thread, over its own demo ledger (or the ledger
    ``open_ledger`` opens)."""

    def __init__(self, directory: str, open_ledger: Callable[[], Any] | None = None) -> None:
        import uvicorn

        from computeproof.server.dashboard.app import create_app

        self.directory = directory
        app = create_app(
            settings(trusted_proxies=("127.0.0.1",), stream_poll_ms=200, refresh_s=2),
            open_ledger or opener(directory),
        )
        self.sock = socket.socket()
        self.sock.bind(("127.0.0.1", 0))
        self.url = f"http://127.0.0.1:{self.sock.getsockname()[1]}"
        config = uvicorn.Config(app, log_level="warning", timeout_graceful_shutdown=2)
        self.server = uvicorn.Server(config)
        self.thread = threading.Thread(
            target=self.server.run, kwargs={"sockets": [self.sock]}, daemon=True
        )
        self.thread.start()
        for _ in range(100):  # bounded: 10 s
            if self.server.started:
                return
            time.sleep(0.1)
        raise RuntimeError("the dashboard server did not start")

    def stop(self) -> None:
        self.server.should_exit = True
        self.thread.join(15)
        self.sock.close()


@pytest.fixture(scope="module")
def live(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Live]:
    d = tmp_path_factory.mktemp("dashboard-live")
    build_demo(str(d))
    server = Live(str(d))
    yield server
    server.stop()


@pytest.fixture(scope="module")
def shots(tmp_path_factory: pytest.TempPathFactory) -> Path:
    where = os.environ.get("DASHBOARD_SCREENSHOTS")
    d = Path(where) if where else tmp_path_factory.mktemp("dashboard-screenshots")
    d.mkdir(parents=True, exist_ok=True)
    print(f"\ndashboard screenshots: {d}")
    return d


@pytest.fixture(scope="module")
def browser() -> Iterator[Any]:
    with playwright.sync_playwright() as p:
        b = p.chromium.launch(executable_path=CHROMIUM, args=ARGS)
        yield b
        b.close()


class Page:
    """A browser page that records console errors and uncaught exceptions."""

    def __init__(self, browser: Any, base: str, headers: dict[str, str] | None = None) -> None:
        self.context = browser.new_context(
            extra_http_headers=headers or {}, viewport={"width": 1400, "height": 1000}
        )
        self.page = self.context.new_page()
        self.base = base
        self.errors: list[str] = []
        self.page.on("console", lambda m: self.errors.append(m.text) if m.type == "error" else None)
        self.page.on("pageerror", lambda e: self.errors.append(f"uncaught: {e}"))

    def go(self, path: str) -> Any:
        response = self.page.goto(self.base + path)
        self.page.wait_for_load_state("networkidle") if "/jobs/" in path or path == "/" else None
        return response

    def close(self) -> None:
        self.context.close()


@pytest.fixture
def admin(browser: Any, live: Live) -> Iterator[Page]:
    p = Page(browser, live.url)
    p.go(f"/login?token={ADMIN_TOKEN}")  # the link `computeproof dashboard` prints
    yield p
    p.close()


def test_every_page_loads_without_console_errors(admin: Page, live: Live, shots: Path) -> None:
    pages = {
        "jobs": "/",
        "job-100-hostile": f"/jobs/{_key(100)}",
        "job-101-non-utf8": f"/jobs/{_key(101)}",
        "job-104-running": f"/jobs/{_key(104)}",
        "job-105-private": f"/jobs/{_key(105)}",
        "analytics": "/analytics?from=2026-01&to=2026-01&group_by=user",
        "analytics-month": "/analytics?from=2025-12&to=2026-02&group_by=month",
    }
    for name, path in pages.items():
        r = admin.go(path)
        assert r.status == 200, path
        admin.page.screenshot(path=str(shots / f"{name}.png"), full_page=True)
    assert admin.errors == []
    # hostile text shows as text: no script ran, no element was injected
    admin.go(f"/jobs/{_key(100)}")
    assert admin.page.locator("script:not([type=module])").count() == 0
    assert admin.page.locator("main img, main b").count() == 0
    assert '<script>alert("x")</script>\\n\\u202eevil' in admin.page.inner_text("dl.facts")
    anon = Page(admin.page.context.browser, live.url)
    anon.go("/")
    assert anon.page.url.startswith(live.url + "/login")
    anon.page.screenshot(path=str(shots / "login.png"))
    assert anon.errors == []
    anon.close()


def test_filters_and_paging(admin: Page, shots: Path) -> None:
    p = admin.page
    admin.go("/")
    p.select_option("select[name=state]", "FAILED")
    p.select_option("select[name=partition]", "gpu")
    p.click("form.filters button[type=submit]")
    p.wait_for_load_state("networkidle")
    assert "state=FAILED" in p.url and "partition=gpu" in p.url
    first = p.locator("#jobs-body tr").evaluate_all("rows => rows.map(r => r.dataset.jobKey)")
    states = p.locator("#jobs-body .badge").all_inner_texts()
    assert first and set(states) == {"FAILED"}
    count = p.inner_text("#count")
    p.screenshot(path=str(shots / "jobs-filtered.png"), full_page=True)
    p.fill("input[name=q]", "")
    admin.go("/?size=20")
    p.click("#page-next")
    p.wait_for_load_state("networkidle")
    second = p.locator("#jobs-body tr").evaluate_all("rows => rows.map(r => r.dataset.jobKey)")
    assert len(second) == 20
    p.click("#page-prev")
    p.wait_for_load_state("networkidle")
    back = p.locator("#jobs-body tr").evaluate_all("rows => rows.map(r => r.dataset.jobKey)")
    assert not set(back) & set(second) and len(back) == 20
    admin.go("/?q=101")
    assert p.locator("#jobs-body tr").count() == 1
    assert p.get_attribute("#jobs-body tr", "data-job-key") == "c1/101#0"
    assert count.endswith("match") and admin.errors == []


def test_live_update_shows_a_new_job_and_keeps_the_filters(
    admin: Page, live: Live, shots: Path
) -> None:
    p = admin.page
    admin.go("/?state=COMPLETED&account=physics")
    _wait(lambda: p.inner_text("#live") == "live", 10, "the live stream")
    before = p.locator("#jobs-body tr").count()
    with open_demo_ledger(live.directory) as led:
        # a FAILED job (filtered out) and a COMPLETED physics job, both newest
        append_jobs(
            led,
            [
                DemoJob(3001, "erin", "physics", "FAILED"),
                DemoJob(3000, "erin", "physics", "COMPLETED"),
            ],
            offset=400,
        )
    p.wait_for_selector('#jobs-body tr[data-job-key="c1/3000#0"]', timeout=15_000)
    assert p.locator('#jobs-body tr[data-job-key="c1/3001#0"]').count() == 0
    assert "state=COMPLETED" in p.url and "account=physics" in p.url
    assert set(p.locator("#jobs-body .badge").all_inner_texts()) == {"COMPLETED"}
    assert p.locator("#jobs-body tr").first.get_attribute("data-job-key") == "c1/3000#0"
    assert p.locator("#jobs-body tr").count() == min(before + 1, 20)
    p.screenshot(path=str(shots / "jobs-live-update.png"), full_page=True)
    assert admin.errors == []


def _start(page: Any, action: Callable[[], None]) -> None:
    """Clear the last outcome, then start a verification."""
    page.evaluate("document.getElementById('verify').dataset.result = ''")
    action()


def _wait(check: Callable[[], bool], seconds: float, what: str) -> None:
    """Poll ``check`` from the test (the pages' CSP forbids the eval that Playwright's
    wait_for_function polls with)."""
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        if check():
            return
        time.sleep(0.1)
    raise AssertionError(f"timed out waiting for {what}")


def _verify_in_page(page: Any, what: str) -> tuple[str, str, list[tuple[str, str]]]:
    """The outcome of the verification just started (see _start)."""
    done = ("valid", "invalid", "untrusted", "error")
    _wait(lambda: page.get_attribute("#verify", "data-result") in done, 60, what)
    result = page.get_attribute("#verify", "data-result")
    steps = page.locator("#checks li").evaluate_all(
        "xs => xs.map(x => [x.dataset.step, x.className])"
    )
    return result, page.inner_text("#verdict"), [tuple(s) for s in steps]


def test_receipt_verifies_in_the_browser_and_a_tampered_one_fails(
    admin: Page, live: Live, shots: Path, tmp_path: Path
) -> None:
    p = admin.page
    admin.go(f"/jobs/{_key(100)}")
    p.evaluate("localStorage.clear()")
    admin.go(f"/jobs/{_key(100)}")
    _start(p, lambda: p.click("#verify-server"))  # no key pinned: consistent, not trusted
    result, text, steps = _verify_in_page(p, "untrusted")
    assert result == "untrusted" and text.startswith("UNTRUSTED")
    assert "verdict warn" in (p.get_attribute("#verdict", "class") or "")  # never green
    assert p.inner_text("#trust-root") == "Trust root: none given."
    assert ("pinned", "warn") in steps
    p.click("#use-site-key")
    _start(p, lambda: p.click("#verify-server"))
    result, text, steps = _verify_in_page(p, "valid")
    assert result == "valid" and text.startswith("VALID") and "9 signed events" in text
    assert "verdict good" in (p.get_attribute("#verdict", "class") or "")
    assert p.inner_text("#trust-root").endswith("trusted: the ledger key pinned in this browser.")
    assert [s for s, c in steps if c == "pass"] == [
        "format",
        "pinned",
        "checkpoint",
        "keys",
        "envelopes",
        "inclusion",
        "job",
        "index",
    ]
    p.screenshot(path=str(shots / "verify-valid.png"), full_page=True)
    # the pin survives a reload (localStorage)
    admin.go(f"/jobs/{_key(100)}")
    assert p.input_value("#pinned-key").startswith("ed25519:")

    with open_demo_ledger(live.directory) as led:
        bundle = export_bundle(led, "c1/100#0")
    tampered = copy.deepcopy(bundle)
    statement = json.loads(
        base64.b64decode(json.loads(tampered["entries"][3]["envelope"])["payload"])
    )
    statement["predicate"]["payload"]["totals"]["energy_mj"] = 1  # claim less energy
    env = json.loads(tampered["entries"][3]["envelope"])
    env["payload"] = base64.b64encode(
        json.dumps(statement, separators=(",", ":"), sort_keys=True).encode()
    ).decode()
    tampered["entries"][3]["envelope"] = json.dumps(env, separators=(",", ":"))
    path = tmp_path / "tampered.json"
    path.write_text(json.dumps(tampered))
    _start(p, lambda: p.set_input_files("#verify-file", str(path)))
    result, text, steps = _verify_in_page(p, "invalid")
    assert result == "invalid" and "INVALID" in text
    assert "entries[3] (leaf" in text and "does not verify" in text
    assert ("envelopes", "fail") in steps and ("index", "skip") in steps
    p.screenshot(path=str(shots / "verify-tampered.png"), full_page=True)

    resigned = copy.deepcopy(bundle)  # re-signed by the host's own key: the log catches it
    event = json.loads(base64.b64decode(json.loads(resigned["entries"][3]["envelope"])["payload"]))
    event = event["predicate"]
    event["payload"]["totals"]["energy_mj"] = 1
    resigned["entries"][3]["envelope"] = sign_event(event, NODES["node1"]).decode()
    path = tmp_path / "resigned.json"
    path.write_text(json.dumps(resigned))
    _start(p, lambda: p.set_input_files("#verify-file", str(path)))
    result, text, steps = _verify_in_page(p, "invalid")
    assert result == "invalid" and "inclusion proof" in text and ("inclusion", "fail") in steps

    p.fill("#pinned-key", "ed25519:" + base64.b64encode(CTL.public_raw).decode())
    _start(p, lambda: p.click("#verify-server"))  # the right receipt, the wrong pinned key
    result, text, steps = _verify_in_page(p, "invalid")
    assert "not the trusted ledger key" in text and ("pinned", "fail") in steps
    assert admin.errors == []


def test_a_user_cannot_open_another_users_job(browser: Any, live: Live, shots: Path) -> None:
    alice = Page(browser, live.url, {HEADER: "alice"})
    alice.go("/")
    users = set(alice.page.locator("#jobs-body tr td:nth-child(3)").all_inner_texts())
    assert users == {"alice"}
    assert "(your jobs only)" in alice.page.inner_text("#count")
    r = alice.go(f"/jobs/{_key(101)}")  # bob's
    assert r.status == 404 and "that you may see" in alice.page.inner_text("main")
    alice.page.screenshot(path=str(shots / "user-denied.png"))
    r = alice.page.goto(f"{live.url}/ui/receipt?job={_key(101)}")
    assert r.status == 404
    assert alice.go(f"/jobs/{_key(100)}").status == 200
    alice.page.screenshot(path=str(shots / "user-own-job.png"), full_page=True)
    # console errors here are the two 404 responses asked for above, nothing else
    assert all("404" in e for e in alice.errors), alice.errors
    alice.close()


# -- the JavaScript verifier against the Python one --------------------------------------


def _paths(node: Any, path: tuple[Any, ...] = ()) -> list[tuple[Any, ...]]:
    if isinstance(node, dict):
        return [path] + [p for k, v in node.items() for p in _paths(v, (*path, k))]
    if isinstance(node, list):
        return [path] + [p for i, v in enumerate(node) for p in _paths(v, (*path, i))]
    return [path]


def _set(bundle: Any, path: tuple[Any, ...], value: Any) -> Any:
    b = copy.deepcopy(bundle)
    if not path:
        return value
    target = b
    for p in path[:-1]:
        target = target[p]
    target[path[-1]] = value
    return b


def _delete(bundle: Any, path: tuple[Any, ...]) -> Any:
    b = copy.deepcopy(bundle)
    target = b
    for p in path[:-1]:
        target = target[p]
    del target[path[-1]]
    return b


FLOAT = "__FLOAT_MARKER__"


def mutations(bundle: dict[str, Any], seed: int) -> list[tuple[str, str]]:
    """(label, receipt text): single changes of every kind to every value of ``bundle``."""
    rng = random.Random(seed)
    out: list[tuple[str, Any]] = [("original", bundle)]
    for path in _paths(bundle):
        value = bundle
        for p in path:
            value = value[p]
        here = "/".join(map(str, path))
        if isinstance(value, str):
            spots = sorted({0, len(value) // 2, len(value) - 1}) if value else []
            for pos in spots:
                for ch in rng.sample(
                    ["A", "/", "=", "é", "\n", '"', "\\", " ", "\u2014", "+", "a"], 3
                ):
                    if ch != value[pos]:
                        out.append(
                            (
                                f"{here} char {pos}={ch!r}",
                                _set(bundle, path, value[:pos] + ch + value[pos + 1 :]),
                            )
                        )
            out.append((f"{here} +x", _set(bundle, path, value + "x")))
            out.append((f"{here} empty", _set(bundle, path, "")))
            out.append((f"{here} upper", _set(bundle, path, value.upper())))
        elif isinstance(value, bool) or value is None:
            out.append((f"{here} flip", _set(bundle, path, not value)))
        elif isinstance(value, int):
            for new in (value + 1, value - 1, -1, 2**53 + 1, True, FLOAT):
                out.append((f"{here} ={new}", _set(bundle, path, new)))
        elif isinstance(value, list) and value:
            out.append((f"{here} drop first", _set(bundle, path, value[1:])))
            out.append((f"{here} drop last", _set(bundle, path, value[:-1])))
            out.append((f"{here} twice", _set(bundle, path, value + value[:1])))
            if len(value) > 1:
                out.append((f"{here} rotate", _set(bundle, path, value[1:] + value[:1])))
        elif isinstance(value, dict) and path:
            for k in value:
                out.append((f"{here} del {k}", _delete(bundle, (*path, k))))
            out.append((f"{here} +extra", _set(bundle, (*path, "extra"), 1)))
        if path:
            for new in (None, 0, "x", [], {}):
                if type(new) is not type(value):
                    out.append((f"{here} as {new!r}", _set(bundle, path, new)))
    # every structural change; a reproducible sample of the many character and type swaps
    many = [c for c in out[1:] if " char " in c[0] or " as " in c[0]]
    few = [c for c in out[1:] if not (" char " in c[0] or " as " in c[0])]
    out = [out[0], *few, *rng.sample(many, min(len(many), 350))]
    texts = [
        (label, json.dumps(b, ensure_ascii=rng.random() < 0.5).replace(f'"{FLOAT}"', "5.0"))
        for label, b in out
    ]
    original = json.dumps(bundle)
    texts += [
        ("not json", "not json"),
        ("empty", ""),
        ("array", "[]"),
        ("NaN size", original.replace('"size": ', '"size": NaN, "x": ', 1)),
        ("trailing comma", original[:-1] + ",}"),
        ("extra data", original + "x"),
        ("duplicate key", original[:-1] + ', "format": "other"}'),
        ("nested deep", "[" * 50 + "]" * 50),
        ("lone surrogate", original.replace('"anchors": []', '"anchors": ["\\ud800"]')),
        ("bad escape", original.replace('"anchors": []', '"anchors": ["\\x"]')),
    ]
    return texts


def _plain(value: Any) -> Any:
    """A verdict's JSON as the browser hands it back (integers past 2**53 as text)."""
    if isinstance(value, dict):
        return {k: _plain(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_plain(v) for v in value]
    if isinstance(value, int) and not isinstance(value, bool) and abs(value) > 2**53 - 1:
        return str(value)
    return value


def _python_verdicts(
    cases: list[tuple[str, str]],
    key: bytes | None,
    witnesses: tuple[str, ...] = (),
    quorum: int = 0,
) -> list[list[Any]]:
    """[valid, message, trust decision, anchors] of bundle.verify_bundle for each case."""
    roots = TrustRoots((), tuple(parse_cosigner_key(w) for w in witnesses), quorum)
    out = []
    for _, text in cases:
        try:
            report = verify_bundle(text, key, roots)
            assert report.trust is not None
            out.append([True, "", _plain(report.trust.to_json()), _plain(report.anchors)])
        except Exception as e:  # the verdict and message, whatever the error
            out.append([False, str(e), None, None])
    return out


JS_VERDICTS = """async ([cases, pinned, witnesses, quorum]) => {
  const m = await import('/static/verify.js');
  const key = pinned ? m.parsePublicKey(pinned) : null;
  const cosigners = [];
  for (const w of witnesses) cosigners.push(await m.parseCosignerKey(w));
  const roots = m.trustRoots({ witnesses: cosigners, quorum });
  const out = [];
  for (const text of cases) {
    try {
      const r = await m.verifyBundle(text, key, roots);
      const t = r.trust;
      out.push([true, '', { trusted: t.trusted, ledger_key: t.ledgerKey, roots: t.roots,
        witnesses: t.witnesses, problem: t.problem }, m.toPlain(r.anchors)]);
    } catch (e) { out.push([false, e.message, null, null]); }
  }
  return out;
}"""


# The parser's own words after these (Python's json and base64 modules, or the browser's
# mimicry of them) change between Python releases: 3.13 says "Illegal trailing comma" and
# "Excess padding" where 3.11 and 3.12 say "Expecting property name" and "Discontinuous
# padding". Verdicts must agree on the reason; the parser's wording is not compared.
_PARSER_DETAIL = re.compile(r"^(.*?(?:is not JSON|is not valid base64)): .*$", re.S)


def _comparable(verdict: list[Any]) -> list[Any]:
    """``verdict`` with a parser's own wording dropped from its message."""
    if isinstance(verdict[1], str):
        return [verdict[0], _PARSER_DETAIL.sub(r"\1", verdict[1]), *verdict[2:]]
    return verdict


def _compare(
    page: Any,
    cases: list[tuple[str, str]],
    key: bytes | None,
    witnesses: tuple[str, ...] = (),
    quorum: int = 0,
) -> tuple[list[list[Any]], list[str]]:
    """Python's verdicts on ``cases`` and where the browser's differ (verdict, message,
    trust decision or anchors)."""
    want = _python_verdicts(cases, key, witnesses, quorum)
    pinned_text = "ed25519:" + base64.b64encode(key).decode() if key else None
    got = page.evaluate(JS_VERDICTS, [[t for _, t in cases], pinned_text, list(witnesses), quorum])
    roots = f"key {'pinned' if key else 'not pinned'}, {len(witnesses)} witnesses, quorum {quorum}"
    failures = [
        f"{label} ({roots}): python {str(w)[:400]} javascript {str(g)[:400]}"
        for (label, _), w, g in zip(cases, want, got, strict=True)
        if _comparable(w) != _comparable(g)
    ]
    return want, failures


@pytest.mark.parametrize("job", ["c1/105#0", "c1/101#0"])
def test_javascript_verdicts_match_python_on_every_mutation(
    admin: Page, live: Live, job: str
) -> None:
    with open_demo_ledger(live.directory) as led:
        bundle = export_bundle(led, job, disclose=True)
        key = led.ledger_public_key()
    assert key is not None
    cases = mutations(bundle, seed=len(job) + int(job[3:6]))
    admin.go("/")
    failures = []
    for pinned, some in ((key, cases), (None, cases[:150])):
        want, differ = _compare(admin.page, some, pinned)
        failures += differ
        assert want[0][:2] == [True, ""]  # the untouched receipt verifies in both
        assert want[0][2]["trusted"] is (pinned is not None)
        assert sum(1 for w in want if not w[0]) > len(some) // 2  # most mutations are caught
    print(f"\n{job}: {len(cases)} cases, {len(cases) + 150} compared")
    assert not failures, f"{len(failures)} cases differ:\n" + "\n".join(failures[:40])


def test_javascript_reads_receipt_bytes_as_python_does(admin: Page, live: Live) -> None:
    with open_demo_ledger(live.directory) as led:
        bundle = export_bundle(led, "c1/103#0")
    text = json.dumps(bundle)
    blobs = {
        "utf-8": text.encode(),
        "utf-8 bom": b"\xef\xbb\xbf" + text.encode(),
        "utf-16": text.encode("utf-16"),
        "utf-16-le": text.encode("utf-16-le"),
        "utf-32": text.encode("utf-32"),
        "latin-1 garbage": text.encode()[:-2] + b"\xff}",
        "surrogate bytes in an ignored field": text.replace('"anchors": []', '"anchors": ["X"]')
        .encode()
        .replace(b'"X"', b'"\xed\xa0\x80"'),
    }
    admin.go("/")
    got = admin.page.evaluate(
        """async (blobs) => {
      const m = await import('/static/verify.js');
      const out = {};
      for (const [name, b64] of Object.entries(blobs)) {
        const bytes = Uint8Array.from(atob(b64), c => c.charCodeAt(0));
        try { await m.verifyBundle(bytes, null); out[name] = true; }
        catch (e) { out[name] = false; }
      }
      return out;
    }""",
        {k: base64.b64encode(v).decode() for k, v in blobs.items()},
    )
    for name, data in blobs.items():
        try:
            verify_bundle(data)
            want = True
        except Exception:
            want = False
        assert got[name] == want, name


def test_javascript_merkle_and_canonical_json_known_answers(admin: Page) -> None:
    inclusion = []
    for f in sorted((VECTORS / "rfc9162" / "inclusion").rglob("*.json")):
        v = json.loads(f.read_text())
        inclusion.append(
            [
                f.name,
                v["leafIdx"],
                v["treeSize"],
                v.get("root") or "",
                v.get("leafHash") or "",
                v.get("proof") or [],
                v["wantErr"],
            ]
        )
    jcs = []
    for name in ("arrays", "french", "unicode", "weird"):
        jcs.append(
            [
                (VECTORS / "rfc8785" / "input" / f"{name}.json").read_text("utf-8"),
                base64.b64encode(
                    (VECTORS / "rfc8785" / "output" / f"{name}.json").read_bytes()
                ).decode(),
            ]
        )
    admin.go("/")
    result = admin.page.evaluate(
        """async ([inclusion, jcs]) => {
      const m = await import('/static/verify.js');
      const b = (s) => Uint8Array.from(atob(s), c => c.charCodeAt(0));
      const bad = [];
      for (const [name, idx, size, root, leaf, proof, wantErr] of inclusion) {
        let err = false;
        try { await m.verifyInclusion(b(leaf), idx, size, proof.map(b), b(root)); }
        catch (e) { err = true; }
        if (err !== wantErr) bad.push(name);
      }
      for (const [input, output] of jcs) {
        const got = m.b64encode(m.canonicalBytes(m.parseJSON(input)));
        if (got !== output) bad.push(input.slice(0, 40));
      }
      return [bad, inclusion.length];
    }""",
        [inclusion, jcs],
    )
    bad, n = result
    assert n > 90 and bad == []


def test_javascript_consistency_proofs_known_answers(admin: Page) -> None:
    """RFC 9162 consistency vectors (transparency-dev): the JavaScript and the Python
    verifier give each the expected verdict and the same message."""
    from computeproof.merkle import verify_consistency

    vectors, want = [], []
    for f in sorted((VECTORS / "rfc9162" / "consistency").rglob("*.json")):
        v = json.loads(f.read_text())
        args = [v["size1"], v["size2"], v.get("proof") or [], v.get("root1") or "",
                v.get("root2") or ""]  # fmt: skip
        vectors.append([str(f.relative_to(VECTORS)), *args])
        try:
            verify_consistency(
                args[0], args[1], [base64.b64decode(p) for p in args[2]],
                base64.b64decode(args[3]), base64.b64decode(args[4]),
            )  # fmt: skip
            want.append("")
        except Exception as e:
            want.append(str(e) or type(e).__name__)
        assert bool(want[-1]) == v["wantErr"], (f, want[-1])
    admin.go("/")
    got = admin.page.evaluate(
        """async (vectors) => {
      const m = await import('/static/verify.js');
      const b = (s) => Uint8Array.from(atob(s), c => c.charCodeAt(0));
      const out = [];
      for (const [name, size1, size2, proof, root1, root2] of vectors) {
        try {
          await m.verifyConsistency(size1, size2, proof.map(b), b(root1), b(root2));
          out.push('');
        } catch (e) { out.push(e.message); }
      }
      return out;
    }""",
        vectors,
    )
    assert len(vectors) > 30
    differ = [(v[0], w, g) for v, w, g in zip(vectors, want, got, strict=True) if w != g]
    assert differ == []


# -- receipts with witness cosignatures and anchors, and the trust roots ------------------


@pytest.fixture(scope="module")
def witnessed(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Witnessed]:
    """Receipts cosigned by three real witness processes and anchored on the dev chain and
    through the Capture API stand-in (witnessed.py); the witnesses stop once they are made."""
    from computeproof.anchors import keep_recursion_limit

    with keep_recursion_limit():
        pytest.importorskip("eth_tester", reason="anchored receipts need the dev extra")
        pytest.importorskip("web3", reason="anchored receipts need the anchor extra (web3)")
    root = tmp_path_factory.mktemp("witnessed")
    procs: list[WitnessProcess] = []
    try:
        for i in (1, 2, 3):
            d = root / f"w{i}"
            d.mkdir()
            w = WitnessProcess(d, f"witness{i}.test/w", [LOG_KEY])
            w.start()
            procs.append(w)
        (root / "ledger").mkdir()
        yield build_witnessed(root / "ledger", procs)
    finally:
        for w in procs:
            w.stop()


@pytest.fixture(scope="module")
def witnessed_live(witnessed: Witnessed) -> Iterator[Live]:
    """A dashboard over the witnessed ledger."""
    server = Live(witnessed.directory, witnessed_opener(witnessed.directory))
    yield server
    server.stop()


def _note_mutations(bundle: dict[str, Any], path: tuple[Any, ...]) -> list[tuple[str, Any]]:
    """Changes to the signature lines of the signed note at ``path``: lines dropped,
    doubled, moved, renamed, and their key ID, timestamp and signature bytes changed."""
    note = bundle
    for p in path:
        note = note[p]
    assert isinstance(note, str)
    cut = note.rfind("\n\n")
    text, lines = note[: cut + 2], note[cut + 2 : -1].split("\n")
    here = "/".join(map(str, path))
    out: list[tuple[str, Any]] = []

    def put(label: str, new_lines: list[str]) -> None:
        out.append(
            (f"{here} {label}", _set(bundle, path, text + "".join(x + "\n" for x in new_lines)))
        )

    for j, line in enumerate(lines):
        name, blob64 = line[2:].split(" ")
        blob = base64.b64decode(blob64)
        put(f"line {j} dropped", lines[:j] + lines[j + 1 :])
        put(f"line {j} twice", [*lines, line])
        put(f"line {j} first", [line, *lines[:j], *lines[j + 1 :]])
        put(f"line {j} renamed", [*lines[:j], f"\u2014 {name}x {blob64}", *lines[j + 1 :]])

        def blobbed(b: bytes, j: int = j, name: str = name) -> list[str]:
            return [*lines[:j], f"\u2014 {name} {base64.b64encode(b).decode()}", *lines[j + 1 :]]

        for at in sorted({0, 3, 4, 11, 12, len(blob) - 1}):
            flipped = bytearray(blob)
            flipped[at] ^= 1
            put(f"line {j} byte {at} flipped", blobbed(bytes(flipped)))
        put(f"line {j} a byte short", blobbed(blob[:-1]))
        put(f"line {j} a byte long", blobbed(blob + b"\x00"))
        if len(blob) == 4 + 8 + 64:  # a cosignature: its timestamp
            for t in (0, 2**63 - 1, 2**63, 2**64 - 1):
                put(f"line {j} time {t}", blobbed(blob[:4] + t.to_bytes(8, "big") + blob[12:]))
    return out


def _statement_mutations(bundle: dict[str, Any], others: list[str]) -> list[tuple[str, Any]]:
    """Changes to the witnesses' log-key statements: another key named, a key added, the
    origin or the header changed, statements swapped between witnesses, dropped, doubled."""
    statements = bundle["log"]["witness_statements"]
    out: list[tuple[str, Any]] = []
    where = ("log", "witness_statements")
    forged_key = f"{ORIGIN}+{cosigner_verifier_key(ORIGIN, FORGER.public_raw).split('+', 2)[1]}"
    for i, st in enumerate(statements):
        head, origin, *keys = st["statement"][:-1].split("\n")
        other_vkey = others[0]

        def with_text(lines: list[str], i: int = i) -> Any:
            return _set(bundle, (*where, i, "statement"), "\n".join(lines) + "\n")

        from computeproof.checkpoint import verifier_key

        forger = verifier_key(ORIGIN, FORGER.public_raw)
        out += [
            (f"statement {i} names another key", with_text([head, origin, forger])),
            (f"statement {i} adds a key", with_text([head, origin, *keys, forger])),
            (f"statement {i} of another log", with_text([head, origin + "x", *keys])),
            (f"statement {i} another header", with_text([head + "x", origin, *keys])),
            (f"statement {i} a witness key line", with_text([head, origin, other_vkey])),
            (f"statement {i} a bad key line", with_text([head, origin, forged_key + "+AA"])),
            (f"statement {i} 17 keys", with_text([head, origin, *(keys * 17)])),
            (f"statement {i} dropped", _delete(bundle, (*where, i))),
            (f"statement {i} twice", _set(bundle, where, [*statements, st])),
        ]
        nxt = statements[(i + 1) % len(statements)]
        out.append(
            (f"statement {i} claims the next witness's name",
             _set(bundle, (*where, i, "witness"), nxt["witness"]))
        )  # fmt: skip
        out.append(
            (f"statement {i} with the next one's signature",
             _set(bundle, (*where, i, "signature"), nxt["signature"]))
        )  # fmt: skip
    out.append(("no statements", _delete(bundle, where)))
    out.append(("statements as an object", _set(bundle, where, {"0": statements[0]})))
    return out


def _texts(cases: list[tuple[str, Any]]) -> list[tuple[str, str]]:
    return [(label, json.dumps(b)) for label, b in cases]


def test_javascript_verdicts_match_python_on_witnessed_anchored_receipts(
    admin: Page, witnessed: Witnessed
) -> None:
    """Mutations of a receipt that carries three witnesses' cosignatures and statements
    and two anchors (EVM, Numbers) of a later checkpoint, under five sets of trust roots:
    the pinned key; the witnesses, all needed; the witnesses, 2 of 3; both; none."""
    full = witnessed.full
    ws = tuple(witnessed.witness_keys)
    cases = mutations(full, seed=7)
    cases += _texts(_note_mutations(full, ("log", "checkpoint")))
    cases += _texts(_note_mutations(full, ("anchors", 0, "checkpoint")))
    cases += _texts(_statement_mutations(full, list(ws)))
    # cosignature lines of another checkpoint of the same log, where these belong
    two_lines = witnessed.two["log"]["checkpoint"].split("\n\n")[1].split("\n")[1:]
    ours = full["log"]["checkpoint"].split("\n\n")
    foreign = ours[0] + "\n\n" + ours[1].split("\n")[0] + "\n" + "\n".join(two_lines)
    cases.append(
        (
            "cosignatures of another checkpoint",
            json.dumps(_set(full, ("log", "checkpoint"), foreign)),
        )
    )
    swapped = copy.deepcopy(full)
    swapped["anchors"][0]["consistency_proof"] = witnessed.same["anchors"][0]["consistency_proof"]
    cases.append(("anchor with another proof", json.dumps(swapped)))
    # a receipt carrying the anchors of an older checkpoint than its own, and records that
    # name the receipt's own size or the one before
    older = _set(witnessed.same, ("anchors",), full["anchors"])
    cases.append(("anchors of an older checkpoint", json.dumps(older)))
    for k in (0, 1):
        for size in (full["log"]["size"], full["log"]["size"] - 1):
            changed = _set(full, ("anchors", k, "record", "size"), size)
            cases.append((f"anchor {k} record of size {size}", json.dumps(changed)))
    # a non-ASCII record root is "root is not base64"; registry hex of whitespace is not hex
    # (both verifiers once let them through as a ValueError and as valid)
    root = full["anchors"][0]["record"]["root"]
    cases.append(("anchor root not ASCII", json.dumps(
        _set(full, ("anchors", 0, "record", "root"), "\u00e9" + root[1:]))))  # fmt: skip
    blank = _set(full, ("anchors", 0, "record", "registry", "tx_hash"), "0x" + " " * 64)
    blank = _set(blank, ("anchors", 1, "record", "registry", "commit_tx"), "0x" + "\n" * 64)
    cases.append(("registry hex of whitespace", json.dumps(blank)))
    admin.go("/")
    failures: list[str] = []
    rng = random.Random(11)
    runs: list[tuple[bytes | None, tuple[str, ...], int, list[tuple[str, str]]]] = [
        (witnessed.ledger_key, (), 0, cases),
        (None, ws, 0, cases),  # every witness must vouch: each broken line or statement counts
        (None, ws, 2, [cases[0], *rng.sample(cases, 300)]),
        (witnessed.ledger_key, ws, 2, [cases[0], *rng.sample(cases, 300)]),
        (None, (), 0, [cases[0], *rng.sample(cases, 150)]),
    ]
    for key, witnesses, quorum, some in runs:
        want, differ = _compare(admin.page, some, key, witnesses, quorum)
        failures += differ
        assert want[0][0] is True and want[0][2]["trusted"] is bool(key or witnesses)
        assert [a["kind"] for a in want[0][3]] == ["evm", "numbers"]
        assert sum(1 for w in want if not w[0]) > len(some) // 2
    print(f"\nwitnessed receipt: {len(cases)} cases, {sum(len(r[3]) for r in runs)} compared")
    assert not failures, f"{len(failures)} cases differ:\n" + "\n".join(failures[:40])


def test_javascript_trust_verdicts_match_python(admin: Page, witnessed: Witnessed) -> None:
    """The trust roots themselves: quorum met and not met, default quorum (all), wrong
    witness keys, a pinned key with witnesses, a re-signed (forged) bundle, no statements.
    Each verdict is stated here and both verifiers must give it, word for word."""
    w = tuple(witnessed.witness_keys)
    key = witnessed.ledger_key
    stranger = cosigner_verifier_key(
        "witness4.test/w", Signer.from_seed(bytes([41]) * 32).public_raw
    )
    impostor = cosigner_verifier_key(
        "witness1.test/w", Signer.from_seed(bytes([42]) * 32).public_raw
    )
    forged = resign(witnessed.full, FORGER, drop=1)
    bare = copy.deepcopy(witnessed.full)
    del bare["log"]["witness_statements"]
    full, two, one, same = witnessed.full, witnessed.two, witnessed.one, witnessed.same
    all3 = "witnesses witness1.test/w, witness2.test/w, witness3.test/w cosigned the checkpoint"
    vouch = "trust: {} of the trusted witnesses vouch for this checkpoint, quorum {} (not: {}"
    not_key = "log: the bundle's ledger key is not the trusted ledger key"
    w23 = "witness2.test/w, witness3.test/w"
    cases: list[tuple[str, Any, bytes | None, tuple[str, ...], int, str]] = [
        # label, bundle, pinned key, witnesses, quorum, expected ("VERDICT: part of what is said")
        ("no roots", full, None, (), 0, "UNTRUSTED"),
        ("pinned", full, key, (), 0, "VALID: pinned with --ledger-key"),
        ("pinned, wrong key", full, FORGER.public_raw, (), 0, f"INVALID: {not_key}"),
        ("3 of 3", full, None, w, 0, f"VALID: {all3} and vouch for the key (quorum 3 of 3)"),
        ("3 of 3, quorum 2", full, None, w, 2, "VALID: (quorum 2 of 3)"),
        ("2 cosigned, all needed", two, None, w, 0, "INVALID: "
         + vouch.format(2, 3, "witness3.test/w; 2 cosigned it; 2 signed a statement naming")),
        ("2 cosigned, quorum 2", two, None, w, 2, "VALID: witnesses witness1.test/w, witness2"),
        ("1 cosigned, quorum 2", one, None, w, 2, "INVALID: " + vouch.format(1, 2, w23)),
        ("1 cosigned, quorum 1", one, None, w, 1, "VALID: witnesses witness1.test/w cosigned"),
        ("1 cosigned, pinned, quorum 2", one, key, w, 2,
         "INVALID: " + vouch.format(1, 2, w23 + "; 1 cosigned it)")),
        ("2 cosigned, pinned, quorum 2", two, key, w, 2,
         "VALID: witnesses witness1.test/w, witness2.test/w cosigned the checkpoint (quorum 2"),
        ("a stranger witness", full, None, (stranger,), 0,
         "INVALID: " + vouch.format(0, 1, "witness4.test/w; 0 cosigned it; 0 signed")),
        ("a stranger and a witness, quorum 1", full, None, (stranger, w[1]), 1,
         "VALID: witnesses witness2.test/w"),
        ("an impostor (known name, other key)", full, None, (impostor,), 0,
         "INVALID: " + vouch.format(0, 1, "witness1.test/w; 0 cosigned it; 0 signed")),
        ("re-signed, no roots", forged, None, (), 0, "UNTRUSTED"),
        ("re-signed, witnesses", forged, None, w, 2, "INVALID: "
         + vouch.format(0, 2, "witness1.test/w, " + w23 + "; 3 cosigned it; 0 signed a")),
        ("re-signed, the real key pinned", forged, key, w, 2, f"INVALID: {not_key}"),
        ("re-signed, its own key pinned", forged, FORGER.public_raw, w, 2, "VALID: witnesses"),
        ("no statements, witnesses", bare, None, w, 1, "INVALID: " + vouch.format(0, 1, "")),
        ("no statements, pinned and witnesses", bare, key, w, 0, f"VALID: {all3} (quorum 3"),
        ("anchored at its own checkpoint", same, None, w, 3, f"VALID: {all3} and vouch"),
    ]  # fmt: skip
    admin.go("/")
    failures = []
    for label, bundle, pinned, witnesses, quorum, expect in cases:
        one = [(label, json.dumps(bundle))]
        want, differ = _compare(admin.page, one, pinned, witnesses, quorum)
        failures += differ
        ok, message, trust, _ = want[0]
        verdict, _, part = expect.partition(": ")
        got = "INVALID" if not ok else "VALID" if trust["trusted"] else "UNTRUSTED"
        said = message if not ok else "; ".join(trust["roots"])
        assert got == verdict and part in said, (label, want[0])
    assert not failures, "\n".join(failures)


def _trust_inputs(page: Any, ledger_key: str, witnesses: list[str], quorum: str) -> None:
    page.fill("#pinned-key", ledger_key)
    page.fill("#witness-keys", "\n".join(witnesses))
    page.fill("#quorum", quorum)


def test_the_job_page_verifies_against_witnesses_and_names_the_trust_root(
    browser: Any, witnessed: Witnessed, witnessed_live: Live, shots: Path, tmp_path: Path
) -> None:
    page = Page(browser, witnessed_live.url)
    page.go(f"/login?token={ADMIN_TOKEN}")
    p = page.page
    page.go(f"/jobs/{_key(100)}")
    p.evaluate("localStorage.clear()")
    page.go(f"/jobs/{_key(100)}")
    ws = witnessed.witness_keys
    site_key = "ed25519:" + base64.b64encode(witnessed.ledger_key).decode()

    def verify(what: str, upload: Any = None) -> tuple[str, str, list[tuple[str, str]]]:
        if upload is None:
            _start(p, lambda: p.click("#verify-server"))
        else:
            path = tmp_path / f"{what}.json"
            path.write_text(json.dumps(upload))
            _start(p, lambda: p.set_input_files("#verify-file", str(path)))
        return _verify_in_page(p, what)

    def verdict_class() -> str:
        return p.get_attribute("#verdict", "class") or ""

    # no root: the server's receipt (3 cosignatures, 2 anchors) is sound, not trusted
    result, text, steps = verify("untrusted")
    assert (
        result == "untrusted" and text.startswith("UNTRUSTED") and "verdict warn" in verdict_class()
    )
    assert ("anchors", "pass") in steps and ("witnesses", "skip") in steps
    p.screenshot(path=str(shots / "verify-untrusted.png"), full_page=True)
    p.locator("#verify").screenshot(path=str(shots / "verify-untrusted-panel.png"))
    # witnesses alone, quorum 2 of 3
    _trust_inputs(p, "", ws, "2")
    result, text, steps = verify("witnesses")
    assert result == "valid" and text.startswith("VALID") and "verdict good" in verdict_class()
    assert "2 public anchors" in text
    root = p.inner_text("#trust-root")
    assert "witnesses witness1.test/w, witness2.test/w, witness3.test/w cosigned the " in root
    assert "and vouch for the key (quorum 2 of 3)" in root
    assert ("witnesses", "pass") in steps and ("anchors", "pass") in steps
    assert ("pinned", "skip") in steps
    p.screenshot(path=str(shots / "verify-witnesses.png"), full_page=True)
    p.locator("#verify").screenshot(path=str(shots / "verify-witnesses-panel.png"))
    # the roots survive a reload (localStorage)
    p.dispatch_event("#quorum", "change")
    _wait(lambda: p.evaluate("localStorage.getItem('computeproof.witness-quorum')") == "2",
          10, "the quorum kept")  # fmt: skip
    page.go(f"/jobs/{_key(100)}")
    assert p.input_value("#witness-keys").split("\n") == ws and p.input_value("#quorum") == "2"
    # a pinned key and witnesses: both roots named
    _trust_inputs(p, site_key, ws, "")
    result, text, _ = verify("both")
    assert result == "valid"
    assert p.inner_text("#trust-root") == (
        f"Trust root: ledger key {site_key} trusted: the ledger key pinned in this browser; "
        "witnesses witness1.test/w, witness2.test/w, witness3.test/w cosigned the checkpoint "
        "(quorum 3 of 3)."
    )
    # quorum not met: a receipt only one witness cosigned
    _trust_inputs(p, "", ws, "2")
    result, text, steps = verify("one", witnessed.one)
    assert result == "invalid" and "verdict bad" in verdict_class()
    assert "trust: 1 of the trusted witnesses vouch for this checkpoint, quorum 2" in text
    assert ("witnesses", "fail") in steps and ("index", "pass") in steps
    p.screenshot(path=str(shots / "verify-quorum-not-met.png"), full_page=True)
    p.locator("#verify").screenshot(path=str(shots / "verify-quorum-not-met-panel.png"))
    # a wrong witness key
    stranger = cosigner_verifier_key(
        "witness4.test/w", Signer.from_seed(bytes([41]) * 32).public_raw
    )
    _trust_inputs(p, "", [stranger], "")
    result, text, _ = verify("stranger")
    assert result == "invalid" and "0 of the trusted witnesses vouch" in text
    # a re-signed bundle: witnesses refuse it; without roots it is only UNTRUSTED, not green
    forged = resign(witnessed.full, FORGER, drop=1)
    _trust_inputs(p, "", ws, "2")
    result, text, _ = verify("forged", forged)
    assert result == "invalid" and "0 signed a statement naming this ledger key" in text
    p.screenshot(path=str(shots / "verify-resigned.png"), full_page=True)
    _trust_inputs(p, "", [], "")
    result, text, _ = verify("forged-no-roots", forged)
    assert result == "untrusted" and "verdict good" not in verdict_class()
    # malformed roots: nothing is checked, and the page says which input is wrong
    _trust_inputs(p, "", [ws[0], "witness1.test/w+00000000+AAAA"], "")
    result, text, _ = verify("bad-witness")
    assert result == "error" and text.startswith("CANNOT VERIFY")
    assert "witness key 'witness1.test/w+00000000+AAAA': " in text
    _trust_inputs(p, "", ws, "4")
    result, text, _ = verify("bad-quorum")
    assert (
        result == "error"
        and "quorum '4': give a number from 1 to the number of witness keys (3)" in text
    )
    _trust_inputs(p, "", [ws[0], ws[0]], "")
    result, text, _ = verify("twice")
    assert result == "error" and "the same witness name is given twice" in text
    assert page.errors == []
    page.close()
