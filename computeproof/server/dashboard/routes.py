"""The dashboard's routes: server-rendered pages, the JSON and event stream they use, and
the receipt and report downloads. See computeproof/server/dashboard/__init__.py."""

from __future__ import annotations

import asyncio
import functools
import itertools
import json
import threading
import time
from collections import OrderedDict
from collections.abc import AsyncIterator, Callable, Hashable
from contextlib import AbstractContextManager
from pathlib import Path
from typing import Any, TypeVar
from urllib.parse import quote

import anyio
import jinja2
from fastapi import APIRouter, Request
from fastapi.responses import HTMLResponse, JSONResponse, RedirectResponse, Response
from starlette.responses import StreamingResponse

from computeproof.errors import ComputeProofError, ReceiptError, ReportError
from computeproof.ledger import Ledger
from computeproof.privacy import check_opening, is_commitment
from computeproof.server.dashboard import analytics, view
from computeproof.server.dashboard.access import (
    SESSION_COOKIE,
    Viewer,
    resolve_viewer,
    session_value,
    token_matches,
)
from computeproof.server.dashboard.charts import step_chart
from computeproof.server.dashboard.queries import (
    FILTERS,
    JobQuery,
    QueryError,
    decode_cursor,
    encode_cursor,
)
from computeproof.server.dashboard.settings import DashboardSettings
from computeproof.store.interface import JobCursor, JobFacets, JobFilter, JobRow

OpenLedger = Callable[[], AbstractContextManager[Ledger]]
T = TypeVar("T")

HERE = Path(__file__).resolve().parent
STATIC_TYPES = {
    ".js": "text/javascript; charset=utf-8",
    ".css": "text/css; charset=utf-8",
    ".svg": "image/svg+xml",
    ".txt": "text/plain; charset=utf-8",
}
# no inline script or style anywhere: scripts and styles come from /static only
SECURITY_HEADERS = {
    "Content-Security-Policy": (
        "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' data:; "
        "connect-src 'self'; form-action 'self'; base-uri 'none'; frame-ancestors 'none'"
    ),
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "no-referrer",
    "X-Frame-Options": "DENY",
}
FACETS_TTL_S = 60
NOT_VISIBLE = "no job {job} that you may see in this ledger"


class NotFound(ComputeProofError):
    """A job that does not exist, or that the viewer may not see (the same answer)."""


class _Cache:
    """A small LRU of values that depend on the log's size (facets, counts, reports)."""

    def __init__(self, size: int = 128) -> None:
        self._items: OrderedDict[Hashable, object] = OrderedDict()
        self._size = size
        self._lock = threading.Lock()

    def get(self, key: Hashable, make: Callable[[], T]) -> T:
        with self._lock:
            if key in self._items:
                self._items.move_to_end(key)
                return self._items[key]  # type: ignore[return-value]
        value = make()
        with self._lock:
            self._items[key] = value
            while len(self._items) > self._size:
                self._items.popitem(last=False)
        return value


def _templates() -> jinja2.Environment:
    env = jinja2.Environment(
        loader=jinja2.FileSystemLoader(str(HERE / "templates")),
        autoescape=True,
        undefined=jinja2.StrictUndefined,
        trim_blocks=True,
        lstrip_blocks=True,
    )
    env.filters["text"] = view.display_text
    env.filters["q"] = lambda s: quote(str(s), safe="")
    env.filters["num"] = lambda v, places=2: "" if v is None else f"{v:,.{places}f}"
    env.filters["pct"] = lambda v: "" if v is None else f"{float(v) * 100:.1f}%"
    return env


def _static_files() -> dict[str, tuple[bytes, str, str]]:
    """Every file under static/, read once: name -> (bytes, content type, ETag)."""
    import hashlib

    out = {}
    for path in sorted((HERE / "static").rglob("*")):
        if path.is_file() and path.suffix in STATIC_TYPES:
            data = path.read_bytes()
            etag = '"' + hashlib.sha256(data).hexdigest()[:32] + '"'
            out[path.relative_to(HERE / "static").as_posix()] = (
                data,
                STATIC_TYPES[path.suffix],
                etag,
            )
    return out


def build_router(settings: DashboardSettings, open_ledger: OpenLedger) -> APIRouter:
    """The dashboard as a router to include in an ASGI app: pages at ``/``, ``/jobs/JOB``
    and ``/analytics``, files at ``/static/...``, JSON, stream and downloads at ``/ui/...``
    (all under ``settings.mount_path``). ``open_ledger()`` gives a ledger to read, per
    request; the dashboard never appends to it (receipts and reports sign a checkpoint
    when the log grew, as their commands do)."""
    router = APIRouter(prefix=settings.mount_path)
    env = _templates()
    static = _static_files()
    base = settings.mount_path
    cache = _Cache()
    watcher = _LogWatcher(open_ledger, settings.stream_poll_ms / 1000)

    def viewer_of(request: Request) -> Viewer | None:
        return resolve_viewer(
            settings,
            {k.lower(): v for k, v in request.headers.items()},
            dict(request.cookies),
            request.client.host if request.client else None,
        )

    def page(name: str, status: int = 200, **context: Any) -> HTMLResponse:
        html = env.get_template(name).render(base=base, site=settings.site_name, **context)
        return HTMLResponse(html, status, headers={**SECURITY_HEADERS, "Cache-Control": "no-store"})

    def error_page(request: Request, status: int, message: str) -> Response:
        if request.url.path.startswith(base + "/ui/"):
            return JSONResponse({"error": message}, status, headers=SECURITY_HEADERS)
        return page(
            "error.html",
            status,
            viewer=viewer_of(request),
            message=message,
            title=f"Error {status}",
        )

    def answer(request: Request, work: Callable[[Viewer], Response]) -> Response:
        """Run ``work`` for the request's viewer; the project's errors become one line."""
        viewer = viewer_of(request)
        if viewer is None:
            if request.url.path.startswith(base + "/ui/"):
                return JSONResponse(
                    {"error": "sign in first: the admin token, or through the site's proxy"},
                    401,
                    headers=SECURITY_HEADERS,
                )
            target = request.url.path + (f"?{request.url.query}" if request.url.query else "")
            return RedirectResponse(f"{base}/login?next={quote(target, safe='')}", 303)
        try:
            return work(viewer)
        except NotFound as e:
            return error_page(request, 404, str(e))
        except QueryError as e:
            return error_page(request, 400, str(e))
        except ReportError as e:
            return error_page(request, 422, str(e))
        except ComputeProofError as e:
            return error_page(request, 500, str(e))

    def log_key(ledger: Ledger) -> str:
        key = settings.published_ledger_key
        if key:
            return key
        from computeproof.keys import format_public_key

        public = ledger.ledger_public_key()
        return format_public_key(public) if public is not None else ""

    # -- the jobs page ---------------------------------------------------------------

    def jobs_data(ledger: Ledger, viewer: Viewer, query: JobQuery) -> dict[str, Any]:
        selection = viewer.restrict(query.selection())
        size = ledger.size()
        limit = query.size
        if query.before:
            rows = ledger.store.jobs_page(
                selection, decode_cursor(query.before), limit + 1, newest_first=False
            )
            has_prev, has_next = len(rows) > limit, True
            rows = list(reversed(rows[:limit]))
        else:
            after = decode_cursor(query.after) if query.after else None
            rows = ledger.store.jobs_page(selection, after, limit + 1)
            has_prev, has_next = after is not None, len(rows) > limit
            rows = rows[:limit]
        total = cache.get(
            ("count", selection, size),
            lambda: ledger.store.count_jobs(selection, settings.count_cap),
        )
        return {
            "jobs": [view.job_summary(r) for r in rows],
            "next": encode_cursor(JobCursor.of(rows[-1])) if rows and has_next else None,
            "prev": encode_cursor(JobCursor.of(rows[0])) if rows and has_prev else None,
            "total": total,
            "total_capped": total >= settings.count_cap,
            "log_size": size,
            "first_page": query.first_page,
        }

    def facets(ledger: Ledger, viewer: Viewer) -> JobFacets:
        selection = viewer.restrict(JobFilter())
        # menus may lag a minute: on a busy ledger the size changes every second, and
        # the distinct values of 100,000 rows take a full scan (about 0.1 s)
        bucket = int(time.monotonic() // FACETS_TTL_S)
        return cache.get(("facets", selection, bucket), lambda: ledger.store.job_facets(selection))

    def parse_jobs_query(request: Request) -> JobQuery:
        return JobQuery.parse(
            request.query_params.getlist, settings.page_size, settings.max_page_size
        )

    @router.get("/", response_class=HTMLResponse, name="dashboard_jobs")
    def jobs_page(request: Request) -> Response:
        def work(viewer: Viewer) -> Response:
            query = parse_jobs_query(request)
            with open_ledger() as ledger:
                data = jobs_data(ledger, viewer, query)
                menus = facets(ledger, viewer)
            return page(
                "jobs.html",
                viewer=viewer,
                query=query,
                data=data,
                facets=menus,
                filters=FILTERS,
                states=view.STATES,
                title="Jobs",
                refresh_s=settings.refresh_s,
            )

        return answer(request, work)

    @router.get("/ui/jobs", name="dashboard_jobs_json")
    def jobs_json(request: Request) -> Response:
        def work(viewer: Viewer) -> Response:
            query = parse_jobs_query(request)
            with open_ledger() as ledger:
                data = jobs_data(ledger, viewer, query)
            return JSONResponse(data, headers={**SECURITY_HEADERS, "Cache-Control": "no-store"})

        return answer(request, work)

    @router.get("/ui/stream", name="dashboard_stream")
    async def stream(request: Request) -> Response:
        if viewer_of(request) is None:
            return JSONResponse({"error": "sign in first"}, 401, headers=SECURITY_HEADERS)
        return StreamingResponse(
            watcher.events(request, settings.stream_max_s),
            media_type="text/event-stream",
            headers={**SECURITY_HEADERS, "Cache-Control": "no-store", "X-Accel-Buffering": "no"},
        )

    # -- one job ---------------------------------------------------------------------

    def visible_job(ledger: Ledger, viewer: Viewer, job: str) -> JobRow:
        try:
            row = ledger.resolve_job(job)
        except ReceiptError as e:
            raise NotFound(NOT_VISIBLE.format(job=view.display_text(job, 80))) from e
        if not viewer.may_see(row):
            raise NotFound(NOT_VISIBLE.format(job=view.display_text(job, 80)))
        return row

    def checked_openings(
        ledger: Ledger, events: list[tuple[int, dict[str, Any]]]
    ) -> dict[str, dict[str, object]]:
        """Disclosed private values, each checked against its signed commitment."""
        out: dict[str, dict[str, object]] = {}
        for _, ev in events:
            payload = ev["payload"]
            if not any(is_commitment(v) for v in payload.values()):
                continue
            for name, (salt, value) in ledger.store.openings(str(ev["id"])).items():
                try:
                    shown = check_opening(
                        payload.get(name), {"salt": salt, "value": json.loads(value)}
                    )
                except (ReceiptError, ValueError):
                    shown = "[opening does not match the signed commitment]"
                out.setdefault(str(ev["id"]), {})[name] = shown
        return out

    @router.get("/jobs/{job:path}", response_class=HTMLResponse, name="dashboard_job")
    def job_page(request: Request, job: str) -> Response:
        def work(viewer: Viewer) -> Response:
            with open_ledger() as ledger:
                row = visible_job(ledger, viewer, job)
                pairs = [(leaf.index, ev) for leaf, ev in ledger.job_events(row)]
                private = viewer.may_see_private(row, settings)
                openings = checked_openings(ledger, pairs) if private else {}
                key = log_key(ledger)
                origin = ledger.origin
            series = view.gpu_series(pairs)
            charts = (
                [
                    step_chart(
                        "GPU utilization (interval mean)",
                        [
                            (s.label, [(a, b, u) for a, b, u, _ in s.intervals if u is not None])
                            for s in series
                        ],
                        "%",
                        fixed_max=100.0,
                    ),
                    step_chart(
                        "GPU power (interval mean)",
                        [
                            (s.label, [(a, b, p) for a, b, _, p in s.intervals if p is not None])
                            for s in series
                        ],
                        "W",
                    ),
                    step_chart(
                        "GPU memory (peak so far)",
                        [(s.label, _memory_steps(s)) for s in series],
                        "GiB",
                    ),
                ]
                if series
                else []
            )
            return page(
                "job.html",
                viewer=viewer,
                title=f"Job {view.display_text(row.job)}",
                job=view.job_summary(row),
                facts=view.job_facts(pairs),
                log=view.lifecycle(pairs, openings),
                gpus=series,
                energy=view.energy_totals(series),
                charts=charts,
                artifacts=view.artifacts(pairs),
                private=private,
                ledger_key=key,
                origin=origin,
                published=bool(settings.published_ledger_key),
            )

        return answer(request, work)

    @router.get("/ui/receipt", name="dashboard_receipt")
    def receipt(request: Request) -> Response:
        """The job's receipt bundle, byte for byte what `computeproof receipt export` writes."""

        def work(viewer: Viewer) -> Response:
            from computeproof.bundle import export_bundle

            job = request.query_params.get("job") or ""
            disclose = request.query_params.get("disclose") == "1"
            with open_ledger() as ledger:
                row = visible_job(ledger, viewer, job)
                if disclose and not viewer.may_see_private(row, settings):
                    raise NotFound("you may not see this job's private fields")
                bundle = export_bundle(ledger, row.job_key, disclose=disclose)
            text = json.dumps(bundle, indent=1, sort_keys=True) + "\n"
            name = f"receipt-{row.cluster}-{row.job_id}-{row.run}.json"
            safe = "".join(c if c.isascii() and (c.isalnum() or c in "-_.") else "_" for c in name)
            return Response(
                text.encode(),
                media_type="application/json",
                headers={
                    **SECURITY_HEADERS,
                    "Cache-Control": "no-store",
                    "Content-Disposition": f'attachment; filename="{safe}"',
                },
            )

        return answer(request, work)

    @router.get("/ui/ledger-key", name="dashboard_ledger_key")
    def ledger_key(request: Request) -> Response:
        def work(viewer: Viewer) -> Response:
            with open_ledger() as ledger:
                body = {
                    "ledger_key": log_key(ledger),
                    "origin": ledger.origin,
                    "published": bool(settings.published_ledger_key),
                }
            return JSONResponse(body, headers=SECURITY_HEADERS)

        return answer(request, work)

    # -- analytics -------------------------------------------------------------------

    def report_doc(
        ledger: Ledger, viewer: Viewer, query: analytics.AnalyticsQuery, full: bool
    ) -> dict[str, Any]:
        users = () if viewer.admin else (viewer.name or "",)
        key = ("report", query, users, full, ledger.size())
        return cache.get(key, lambda: analytics.build(ledger, query, settings, users, full))

    @router.get("/analytics", response_class=HTMLResponse, name="dashboard_analytics")
    def analytics_page(request: Request) -> Response:
        def work(viewer: Viewer) -> Response:
            query = analytics.AnalyticsQuery.parse(request.query_params.get)
            with open_ledger() as ledger:
                doc = report_doc(ledger, viewer, query, full=False)
            from computeproof.reports.render import FIGURES

            return page(
                "analytics.html",
                viewer=viewer,
                title="Analytics",
                query=query,
                doc=doc,
                figures=FIGURES,
                groups=analytics.GROUPS,
                charts=analytics.charts(doc, query.group_by),
                formats=tuple(analytics.FORMATS),
            )

        return answer(request, work)

    @router.get("/ui/report.{fmt}", name="dashboard_report")
    def report_download(request: Request, fmt: str) -> Response:
        def work(viewer: Viewer) -> Response:
            if fmt not in analytics.FORMATS:
                raise QueryError(f"report format {fmt[:20]!r}: choose csv, json, html or pdf")
            query = analytics.AnalyticsQuery.parse(request.query_params.get)
            with open_ledger() as ledger:
                doc = report_doc(ledger, viewer, query, full=True)
            name = f"usage-{query.date_from}-{query.date_to}-{query.group_by}.{fmt}"
            safe = "".join(c if c.isascii() and (c.isalnum() or c in "-_.") else "_" for c in name)
            data = analytics.render(doc, fmt, safe)
            return Response(
                data,
                media_type=analytics.FORMATS[fmt],
                headers={
                    **SECURITY_HEADERS,
                    "Cache-Control": "no-store",
                    "Content-Disposition": f'attachment; filename="{safe}"',
                },
            )

        return answer(request, work)

    # -- sign-in and files -----------------------------------------------------------

    def login_page(request: Request, status: int = 200, failed: bool = False) -> Response:
        return page(
            "login.html",
            status,
            viewer=viewer_of(request),
            title="Sign in",
            next=_local_path(request.query_params.get("next"), base),
            failed=failed,
            token_enabled=bool(settings.admin_token),
            header=settings.identity_header,
        )

    def signed_in(target: str) -> Response:
        assert settings.admin_token is not None
        response = RedirectResponse(target, 303)
        response.set_cookie(
            SESSION_COOKIE,
            session_value(settings.admin_token),
            httponly=True,
            samesite="strict",
            secure=settings.cookie_secure,
            path=base or "/",
        )
        return response

    @router.get("/login", response_class=HTMLResponse, name="dashboard_login")
    def login_form(request: Request) -> Response:
        token = request.query_params.get("token")
        if token is not None:  # the link `computeproof dashboard` prints
            if token_matches(settings, token):
                return signed_in(_local_path(request.query_params.get("next"), base))
            return login_page(request, 401, failed=True)
        return login_page(request)

    @router.post("/login", name="dashboard_login_post")
    async def login_post(request: Request) -> Response:
        form = _form(await request.body())
        if token_matches(settings, form.get("token", "")):
            return signed_in(_local_path(form.get("next"), base))
        return login_page(request, 401, failed=True)

    @router.post("/logout", name="dashboard_logout")
    def logout() -> Response:
        response = RedirectResponse(f"{base}/login", 303)
        response.delete_cookie(SESSION_COOKIE, path=base or "/")
        return response

    @router.get("/static/{name:path}", name="dashboard_static")
    def static_file(request: Request, name: str) -> Response:
        item = static.get(name)
        if item is None:
            return Response(b"not found", 404, media_type="text/plain")
        data, kind, etag = item
        headers = {**SECURITY_HEADERS, "ETag": etag, "Cache-Control": "no-cache"}
        if request.headers.get("if-none-match") == etag:
            return Response(status_code=304, headers=headers)
        return Response(data, media_type=kind, headers=headers)

    return router


def _memory_steps(series: view.GpuSeries) -> list[tuple[int, int, float]]:
    """Peak memory so far as steps between consecutive readings, GiB."""
    out = []
    points = series.memory
    for (t0, _), (t1, m1) in itertools.pairwise(points):
        out.append((t0, t1, round(m1 / 2**30, 3)))
    if len(points) == 1 and series.intervals:
        a, b, _, _ = series.intervals[0]
        out.append((a, b, round(points[0][1] / 2**30, 3)))
    return out


def _local_path(target: str | None, base: str) -> str:
    """A redirect target that stays on this site (an open redirect is refused)."""
    if not target or not target.startswith("/") or target.startswith("//") or "\\" in target:
        return base + "/"
    return target


def _form(body: bytes) -> dict[str, str]:
    from urllib.parse import parse_qsl

    try:
        return dict(parse_qsl(body.decode("utf-8"), max_num_fields=10))
    except (UnicodeDecodeError, ValueError):
        return {}


class _LogWatcher:
    """The log's size, read at most once per poll interval whoever asks: every open
    live stream shares one reader."""

    def __init__(self, open_ledger: OpenLedger, poll_s: float) -> None:
        self._open = open_ledger
        self._poll = poll_s
        self._lock = asyncio.Lock()
        self._size = -1
        self._read_at = 0.0

    def _read(self) -> int:
        with self._open() as ledger:
            return ledger.size()

    async def size(self) -> int:
        """The log's size, at most one poll interval old."""
        async with self._lock:
            if time.monotonic() - self._read_at >= self._poll:
                self._size = await anyio.to_thread.run_sync(self._read)
                self._read_at = time.monotonic()
            return self._size

    async def events(self, request: Request, max_s: int) -> AsyncIterator[str]:
        """Server-sent events: ``log`` with the size whenever it changes, a comment every
        15 s; the stream ends after ``max_s`` (the browser reconnects)."""
        yield "retry: 3000\n\n"
        last, quiet = -1, 0.0
        deadline = time.monotonic() + max_s
        while time.monotonic() < deadline:
            if await request.is_disconnected():
                return
            try:
                size = await self.size()
            except ComputeProofError as e:
                yield f"event: problem\ndata: {json.dumps({'error': str(e)})}\n\n"
                return
            if size != last:
                yield f"event: log\ndata: {json.dumps({'size': size})}\n\n"
                last, quiet = size, 0.0
            elif quiet >= 15:
                yield ": still here\n\n"
                quiet = 0.0
            await asyncio.sleep(self._poll)
            quiet += self._poll


@functools.cache
def static_names() -> tuple[str, ...]:
    """The files the dashboard serves under /static (for tests and docs)."""
    return tuple(_static_files())
