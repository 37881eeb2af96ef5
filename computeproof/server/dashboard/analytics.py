"""The analytics page's figures: the usage report (computeproof.reports), same code, same
numbers, for the period and grouping the page shows; and its downloads."""

from __future__ import annotations

import datetime as dt
import os
import tempfile
from collections.abc import Callable
from dataclasses import dataclass
from decimal import Decimal, InvalidOperation
from typing import Any

from computeproof.errors import ReportError
from computeproof.ledger import Ledger
from computeproof.server.dashboard.queries import QueryError
from computeproof.server.dashboard.settings import DashboardSettings

GROUPS = ("account", "user", "partition", "gpu_model", "month")
FORMATS = {
    "csv": "text/csv; charset=utf-8",
    "json": "application/json",
    "html": "text/html; charset=utf-8",
    "pdf": "application/pdf",
}


@dataclass(frozen=True)
class AnalyticsQuery:
    """Period [date_from, date_to] (dates or months, UTC), grouping and synthetic jobs."""

    date_from: str
    date_to: str
    group_by: str = "account"
    include_synthetic: bool = False

    @classmethod
    def parse(
        cls, get: Callable[[str], str | None], today: dt.date | None = None
    ) -> AnalyticsQuery:
        """Read from URL parameters; the default period is the last 12 months."""
        day = today or dt.datetime.now(dt.UTC).date()
        year, month = (
            (day.year, day.month - 11) if day.month == 12 else (day.year - 1, day.month + 1)
        )
        start = dt.date(year, month, 1)
        group = (get("group_by") or "account").strip()
        if group not in GROUPS:
            raise QueryError(f"group by {group[:40]!r}: choose one of {', '.join(GROUPS)}")
        return cls(
            date_from=(get("from") or start.strftime("%Y-%m")).strip()[:40],
            date_to=(get("to") or day.strftime("%Y-%m")).strip()[:40],
            group_by=group,
            include_synthetic=(get("synthetic") or "") in ("1", "on", "true"),
        )

    def params(self) -> str:
        """URL parameters of this query."""
        from urllib.parse import urlencode

        items = [("from", self.date_from), ("to", self.date_to), ("group_by", self.group_by)]
        if self.include_synthetic:
            items.append(("synthetic", "1"))
        return urlencode(items)


def report_params(
    query: AnalyticsQuery, settings: DashboardSettings, users: tuple[str, ...]
) -> Any:
    """The report's parameters (ReportParams) for this page and viewer."""
    from computeproof.reports.dates import parse_period
    from computeproof.reports.grants import load_grants, to_ms
    from computeproof.reports.ratecard import decimal_value, load_ratecard
    from computeproof.reports.usage import ReportParams

    try:
        lo, hi = parse_period(query.date_from, query.date_to)
    except ReportError as e:
        raise QueryError(str(e).replace("--from", "from").replace("--to", "to")) from e
    card = load_ratecard(settings.ratecard) if settings.ratecard else None
    gmap = load_grants(settings.grants) if settings.grants else None
    grid: Decimal | None = card.grid_intensity_g_per_kwh if card is not None else None
    if settings.grid_intensity_g_per_kwh is not None:
        try:
            grid = decimal_value(Decimal(settings.grid_intensity_g_per_kwh), "grid intensity")
        except InvalidOperation as e:
            raise ReportError(
                f"grid intensity {settings.grid_intensity_g_per_kwh!r} is not a number"
            ) from e
    return ReportParams(
        from_ms=to_ms(lo),
        to_ms=to_ms(hi),
        users=users,
        group_by=(query.group_by,),
        include_synthetic=query.include_synthetic,
        grid_intensity_g_per_kwh=grid,
        ratecard=card,
        grant_map=gmap,
    )


def build(
    ledger: Ledger,
    query: AnalyticsQuery,
    settings: DashboardSettings,
    users: tuple[str, ...],
    full_check: bool,
) -> dict[str, object]:
    """The report document: every counted receipt checked (downloads, as `computeproof
    report` does), or a reproducible sample of them (the page, which must answer fast)."""
    from computeproof.reports.build import build_report

    params = report_params(query, settings, users)
    doc = build_report(
        ledger,
        params,
        check="receipts" if full_check else "sample",
        sample_size=settings.analytics_check_sample,
        workers=1,  # a server thread does not fork worker processes
    )
    notes = doc["notes"]
    assert isinstance(notes, list)
    if params.ratecard is None:
        notes.append("no rate card: cost not computed (the dashboard's ratecard setting)")
    if users:
        notes.append(f"only the jobs of user {users[0]!r}")
    return doc


def render(doc: dict[str, Any], fmt: str, name: str) -> bytes:
    """The report file in ``fmt`` (csv, json, html or pdf), as `computeproof report` writes."""
    from computeproof.reports.render import render_csv, render_html, render_json

    if fmt == "csv":
        return render_csv(doc).encode()
    if fmt == "json":
        return render_json(doc).encode()
    html = render_html(doc, name)
    if fmt == "html":
        return html.encode()
    if fmt != "pdf":
        raise QueryError(f"report format {fmt[:20]!r}: choose csv, json, html or pdf")
    from computeproof.reports.pdf import find_chromium, html_to_pdf

    find_chromium()
    with tempfile.TemporaryDirectory(prefix="computeproof-report-") as d:
        out = os.path.join(d, name)
        try:
            html_to_pdf(html, out)
            with open(out, "rb") as f:
                return f.read()
        except OSError as e:
            raise ReportError(f"cannot write the PDF report: {e.strerror}") from e


def charts(doc: dict[str, Any], group_by: str) -> list[str]:
    """The page's SVG charts, drawn by the report's own chart code."""
    from computeproof.reports.charts import bar_chart, column_chart

    months = doc["series"]["month"]
    out = [
        column_chart(
            "GPU-hours per month: allocated and busy (measured)",
            [m["month"] for m in months],
            [
                ("allocated", [float(m["allocated_gpu_hours"]) for m in months]),
                ("busy (measured)", [float(m["busy_gpu_hours"]) for m in months]),
            ],
            "GPU-hours",
        ),
        column_chart(
            "Energy per month",
            [m["month"] for m in months],
            [("energy", [float(m["energy_kwh"]) for m in months])],
            "kWh",
        ),
    ]
    if group_by != "month":
        groups = sorted(doc["groups"], key=lambda g: -float(g["allocated_gpu_hours"]))[:25]
        labels = [str(g["key"][group_by]) for g in groups]
        out.append(
            bar_chart(
                f"Allocated GPU-hours per {group_by} (top 25)",
                labels,
                [float(g["allocated_gpu_hours"]) for g in groups],
                "GPU-h",
            )
        )
        eff = [g for g in groups if g.get("efficiency") is not None]
        out.append(
            bar_chart(
                f"Efficiency per {group_by} (busy / allocated, measured jobs)",
                [str(g["key"][group_by]) for g in eff],
                [float(g["efficiency"]) for g in eff],
                "",
                percent=True,
            )
        )
        if any(g.get("cost") is not None for g in groups):
            out.append(
                bar_chart(
                    f"Cost per {group_by}",
                    labels,
                    [float(g.get("cost") or 0) for g in groups],
                    str(doc["totals"].get("currency") or ""),
                )
            )
    return out
