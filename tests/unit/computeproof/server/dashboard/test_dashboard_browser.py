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

from computeproof.bundle import export_bundle, verify_bundle
from computeproof.envelope import sign_event

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
    """A dashboard served by uvicorn in a thread, over its own demo ledger."""

    def __init__(self, directory: str) -> None:
        import uvicorn

        from computeproof.server.dashboard.app import create_app

        self.directory = directory
        app = create_app(
            settings(trusted_proxies=("127.0.0.1",), stream_poll_ms=200, refresh_s=2),
            opener(directory),
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
    done = ("valid", "invalid", "unpinned")
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
    result, text, steps = _verify_in_page(p, "unpinned")
    assert result == "unpinned" and "NOT PINNED" in text
    assert ("pinned", "warn") in steps
    p.click("#use-site-key")
    _start(p, lambda: p.click("#verify-server"))
    result, text, steps = _verify_in_page(p, "valid")
    assert result == "valid" and text.startswith("VALID") and "9 signed events" in text
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


def _python_verdicts(cases: list[tuple[str, str]], key: bytes | None) -> list[list[Any]]:
    out = []
    for _, text in cases:
        try:
            verify_bundle(text, key)
            out.append([True, ""])
        except Exception as e:  # the verdict and message, whatever the error
            out.append([False, str(e)])
    return out


JS_VERDICTS = """async ([cases, pinned]) => {
  const m = await import('/static/verify.js');
  const key = pinned ? m.parsePublicKey(pinned) : null;
  const out = [];
  for (const text of cases) {
    try { await m.verifyBundle(text, key); out.push([true, '']); }
    catch (e) { out.push([false, e.message]); }
  }
  return out;
}"""


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
        want = _python_verdicts(some, pinned)
        pinned_text = "ed25519:" + base64.b64encode(pinned).decode() if pinned else None
        got = admin.page.evaluate(JS_VERDICTS, [[t for _, t in some], pinned_text])
        for (label, _), w, g in zip(some, want, got, strict=True):
            if w[0] != g[0] or w[1] != g[1]:
                failures.append(f"{label}: python {w} javascript {g}")
        assert want[0] == [True, ""]  # the untouched receipt verifies in both
        assert sum(1 for w in want if not w[0]) > len(some) // 2  # most mutations are caught
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
