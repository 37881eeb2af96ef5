"""Inline SVG charts drawn by hand: no scripts, no fonts or files fetched from anywhere."""

from __future__ import annotations

from collections.abc import Sequence
from html import escape

PALETTE = ("#2f6db5", "#e08a2c", "#3c9a5f", "#b8434b", "#7b5ea7")


def _fmt(value: float) -> str:
    if value >= 100:
        return f"{value:,.0f}"
    if value >= 1:
        return f"{value:,.1f}"
    return f"{value:.2f}"


def _nice_max(value: float) -> float:
    if value <= 0:
        return 1.0
    step = 10 ** (len(str(int(value))) - 1)
    for m in (1, 2, 2.5, 5, 10):
        if value <= m * step:
            return float(m * step)
    return float(10 * step)


def column_chart(
    title: str,
    categories: Sequence[str],
    series: Sequence[tuple[str, Sequence[float]]],
    unit: str,
    width: int = 900,
    height: int = 300,
) -> str:
    """Grouped vertical bars: one group per category, one bar per series."""
    left, right, top, bottom = 70, 20, 40, 50
    plot_w, plot_h = width - left - right, height - top - bottom
    peak = _nice_max(max((v for _, vals in series for v in vals), default=0.0))
    parts = [
        f'<svg class="chart" viewBox="0 0 {width} '
        f'{height}" width="{width}" height="{height}" role="img" '
        f'aria-label="{escape(title)}">',
        f'<text x="{left}" y="22" class="ct">{escape(title)}</text>',
    ]
    for i in range(5):
        v = peak * i / 4
        y = top + plot_h - plot_h * i / 4
        parts.append(
            f'<line x1="{left}" x2="{width - right}" y1="{y:.1f}" y2="{y:.1f}" '
            f'class="grid"/><text x="{left - 6}" y="{y + 4:.1f}" class="ax" '
            f'text-anchor="end">{_fmt(v)}</text>'
        )
    parts.append(
        f'<text x="14" y="{top + plot_h / 2:.0f}" class="ax" transform="rotate(-90 14 '
        f'{top + plot_h / 2:.0f})" text-anchor="middle">{escape(unit)}</text>'
    )
    n = max(1, len(categories))
    slot = plot_w / n
    bar = max(2.0, slot * 0.8 / max(1, len(series)))
    for ci, cat in enumerate(categories):
        x0 = left + ci * slot + slot * 0.1
        for si, (name, vals) in enumerate(series):
            v = vals[ci] if ci < len(vals) else 0.0
            h = plot_h * v / peak
            parts.append(
                f'<rect x="{x0 + si * bar:.1f}" y="{top + plot_h - h:.1f}" '
                f'width="{bar - 1:.1f}" height="{h:.1f}" '
                f'fill="{PALETTE[si % len(PALETTE)]}"><title>{escape(cat)} '
                f"{escape(name)}: {_fmt(v)} {escape(unit)}</title></rect>"
            )
        if n <= 24 or ci % max(1, n // 12) == 0:
            parts.append(
                f'<text x="{left + ci * slot + slot / 2:.1f}" y="{height - bottom + 16}" '
                f'class="ax" text-anchor="middle">{escape(cat)}</text>'
            )
    lx = width - right - 170 * len(series)
    for si, (name, _) in enumerate(series):
        x = lx + si * 170
        parts.append(
            f'<rect x="{x}" y="12" width="12" height="12" '
            f'fill="{PALETTE[si % len(PALETTE)]}"/><text x="{x + 16}" y="22" '
            f'class="ax">{escape(name)}</text>'
        )
    if not categories:
        parts.append(
            f'<text x="{left + plot_w / 2}" y="{top + plot_h / 2}" class="ax" '
            'text-anchor="middle">no data</text>'
        )
    parts.append("</svg>")
    return "".join(parts)


def bar_chart(
    title: str,
    labels: Sequence[str],
    values: Sequence[float],
    unit: str,
    percent: bool = False,
    width: int = 900,
) -> str:
    """Horizontal bars, one per label (``percent``: values are 0..1 shown as %)."""
    row, left, top = 22, 200, 36
    height = top + row * max(1, len(labels)) + 16
    plot_w = width - left - 90
    peak = 1.0 if percent else _nice_max(max(values, default=0.0))
    parts = [
        f'<svg class="chart" viewBox="0 0 {width} '
        f'{height}" width="{width}" height="{height}" role="img" '
        f'aria-label="{escape(title)}">',
        f'<text x="10" y="22" class="ct">{escape(title)}</text>',
    ]
    for i, (label, v) in enumerate(zip(labels, values, strict=True)):
        y = top + i * row
        w = plot_w * min(v, peak) / peak if peak else 0
        shown = f"{v * 100:.1f}%" if percent else f"{_fmt(v)} {unit}"
        short = label if len(label) <= 28 else label[:27] + "\u2026"
        parts.append(
            f'<text x="{left - 8}" y="{y + 14}" class="ax" text-anchor="end">'
            f'{escape(short)}</text><rect x="{left}" y="{y + 3}" width="{w:.1f}" '
            f'height="{row - 6}" fill="{PALETTE[0]}"><title>{escape(label)}: '
            f'{escape(shown)}</title></rect><text x="{left + w + 6:.1f}" y="{y + 14}" '
            f'class="ax">{escape(shown)}</text>'
        )
    if not labels:
        parts.append(f'<text x="{left}" y="{top + 14}" class="ax">no data</text>')
    parts.append("</svg>")
    return "".join(parts)
