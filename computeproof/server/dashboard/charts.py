"""Inline SVG step charts of GPU figures over a job's run (no scripts, nothing fetched).

A step, not a line: each value is the mean over an interval between two agent events,
so the chart draws it flat across that interval and draws nothing where no figure was
recorded. Labels are escaped here; the markup is inserted into pages as it is.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from html import escape

from computeproof.reports.charts import PALETTE

Step = tuple[int, int, float]  # (from ms, to ms, value)


def _nice_max(value: float) -> float:
    if value <= 0:
        return 1.0
    magnitude = 10 ** (len(str(int(value))) - 1) if value >= 1 else 0.1
    for m in (1, 2, 2.5, 5, 10):
        if value <= m * magnitude:
            return float(m * magnitude)
    return float(10 * magnitude)


def _clock(ms: int, span_ms: int) -> str:
    fmt = "%H:%M" if span_ms < 2 * 86_400_000 else "%m-%d %H:%M"
    return time.strftime(fmt, time.gmtime(ms / 1000))


def _value(v: float) -> str:
    return f"{v:,.0f}" if abs(v) >= 100 else f"{v:,.1f}" if abs(v) >= 1 else f"{v:.2f}"


def step_chart(
    title: str,
    series: Sequence[tuple[str, Sequence[Step]]],
    unit: str,
    fixed_max: float | None = None,
    width: int = 900,
    height: int = 240,
) -> str:
    """One SVG chart: a step line per series over a shared time axis (UTC)."""
    # the legend sits between the title and the plot, one line a series
    left, right, top, bottom = 64, 16, 34 + 14 * len(series), 40
    height += 14 * len(series)
    plot_w, plot_h = width - left - right, height - top - bottom
    steps = [s for _, ss in series for s in ss]
    parts = [
        f'<svg class="chart" viewBox="0 0 {width} {height}" role="img" '
        f'aria-label="{escape(title)}">',
        f'<text x="{left}" y="20" class="ct">{escape(title)}</text>',
    ]
    if not steps:
        parts.append(
            f'<text x="{left}" y="{top + plot_h // 2}" class="ax">no figures recorded</text></svg>'
        )
        return "".join(parts)
    t0 = min(a for a, _, _ in steps)
    t1 = max(b for _, b, _ in steps)
    span = max(t1 - t0, 1)
    peak = fixed_max if fixed_max is not None else _nice_max(max(v for _, _, v in steps))

    def x(t: int) -> float:
        return left + plot_w * (t - t0) / span

    def y(v: float) -> float:
        return top + plot_h - plot_h * min(max(v, 0.0), peak) / peak

    for i in range(5):
        v = peak * i / 4
        yy = y(v)
        parts.append(
            f'<line x1="{left}" x2="{left + plot_w}" y1="{yy:.1f}" y2="{yy:.1f}" class="grid"/>'
            f'<text x="{left - 6}" y="{yy + 4:.1f}" text-anchor="end" class="ax">'
            f"{escape(_value(v))}</text>"
        )
    for i in range(5):
        t = t0 + span * i // 4
        parts.append(
            f'<text x="{x(t):.1f}" y="{top + plot_h + 16}" text-anchor="middle" class="ax">'
            f"{escape(_clock(t, span))}</text>"
        )
    parts.append(
        f'<text x="{left + plot_w}" y="{height - 4}" text-anchor="end" class="ax">'
        f"UTC &#183; {escape(unit)}</text>"
    )
    for n, (label, ss) in enumerate(series):
        colour = PALETTE[n % len(PALETTE)]
        path: list[str] = []
        end: int | None = None
        for a, b, v in sorted(ss):
            move = "M" if end is None or a != end else "L"
            path.append(f"{move}{x(a):.1f},{y(v):.1f}L{x(b):.1f},{y(v):.1f}")
            end = b
        parts.append(
            f'<path d="{"".join(path)}" fill="none" stroke="{colour}" stroke-width="2">'
            f"<title>{escape(label)}</title></path>"
        )
        for a, b, v in ss:  # hover targets: one per interval, with its exact figure
            parts.append(
                f'<rect x="{x(a):.1f}" y="{y(v) - 4:.1f}" width="{max(x(b) - x(a), 1):.1f}" '
                f'height="8" fill="transparent"><title>{escape(label)}: {escape(_value(v))} '
                f"{escape(unit)} from {escape(_clock(a, 0))} to {escape(_clock(b, 0))} "
                "UTC</title></rect>"
            )
        ly = 36 + 14 * n
        parts.append(
            f'<rect x="{left}" y="{ly - 9}" width="10" height="10" fill="{colour}"/>'
            f'<text x="{left + 14}" y="{ly}" class="ax">{escape(label[:80])}</text>'
        )
    parts.append("</svg>")
    return "".join(parts)
