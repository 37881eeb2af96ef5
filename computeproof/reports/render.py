"""Report renderers: JSON (the verifiable document), CSV (one row per group and a total row),
and HTML (one self-contained file: inline CSS, inline SVG charts, the JSON embedded for
`computeproof report verify`). PDF is the HTML printed by headless Chromium (pdf.py).
"""

from __future__ import annotations

import csv
import io
import json
from collections.abc import Sequence
from html import escape
from typing import Any

from computeproof.reports.charts import bar_chart, column_chart

FIGURES = (
    ("jobs", "Jobs", ""),
    ("allocated_gpu_hours", "Allocated GPU-hours", "GPUs x elapsed time, prorated to the period"),
    ("busy_gpu_hours", "Busy GPU-hours", "NVML-measured busy time of measured jobs"),
    ("measured_share", "Measured share", "share of allocated GPU-hours with a measurement"),
    ("efficiency", "Efficiency", "busy / allocated, over measured jobs only"),
    ("energy_kwh", "Energy (kWh)", "NVML energy counters"),
    ("co2e_kg", "CO2e (kg)", "energy x grid intensity"),
    ("cost", "Cost", "allocated GPU-hours x rate card price"),
    ("failed_share", "Failed share", "FAILED, TIMEOUT, NODE_FAIL, OUT_OF_MEMORY..."),
    ("cancelled_share", "Cancelled share", "CANCELLED"),
)
_PERCENT = {"measured_share", "efficiency", "failed_share", "cancelled_share"}


def render_json(doc: dict[str, Any]) -> str:
    """The report as JSON."""
    # compact: json's C encoder is used only without indent (10x faster on 1M jobs' indices)
    return json.dumps(doc, sort_keys=True, separators=(",", ":")) + "\n"


def render_csv(doc: dict[str, Any]) -> str:
    """One row per group, then a TOTAL row; the columns say their units."""
    dims = list(doc["parameters"]["group_by"])
    names = [f for f, _, _ in FIGURES] + [
        "failed_jobs",
        "cancelled_jobs",
        "measured_gpu_hours",
        "unpriced_gpu_hours",
        "currency",
    ]
    buf = io.StringIO()
    w = csv.writer(buf, lineterminator="\n")
    w.writerow([*dims, *names])
    for g in doc["groups"]:
        w.writerow([*(g["key"][d] for d in dims), *(_cell(g.get(n)) for n in names)])
    t = doc["totals"]
    w.writerow(["TOTAL", *([""] * (len(dims) - 1)), *(_cell(t.get(n)) for n in names)])
    return buf.getvalue()


def _cell(value: object) -> str:
    return "" if value is None else str(value)


def _show(name: str, value: object, currency: str | None = None) -> str:
    if value is None:
        return "n/a"
    if name in _PERCENT:
        return f"{float(value) * 100:.1f}%"  # type: ignore[arg-type]
    if name == "cost":
        return f"{float(value):,.2f} {currency or ''}".strip()  # type: ignore[arg-type]
    if isinstance(value, float):
        return f"{value:,.2f}" if abs(value) >= 0.01 or value == 0 else f"{value:.6f}"
    return escape(str(value))


_CSS = """
body{font:14px/1.45 -apple-system,"Segoe UI",Roboto,"DejaVu Sans",sans-serif;color:#1d232b;
margin:24px auto;max-width:960px;padding:0 16px}
h1{font-size:24px;margin:0 0 4px}h2{font-size:18px;margin:28px 0 8px;border-bottom:1px solid
#d5dae0;padding-bottom:4px}.meta{color:#56606b}.banner{padding:10px 14px;border-radius:6px;
margin:14px 0}.ok{background:#e5f4ea;border:1px solid #8cc9a0}.bad{background:#fbe6e7;
border:1px solid #e0959a;font-weight:600}.cards{display:grid;grid-template-columns:
repeat(4,1fr);gap:10px}.card{border:1px solid #d5dae0;border-radius:6px;padding:8px 10px}
.card .v{font-size:20px;font-weight:600}.card .l{color:#56606b;font-size:12px}
table{border-collapse:collapse;width:100%;font-size:12.5px;margin:6px 0}th,td{border-bottom:
1px solid #e3e7ec;padding:4px 6px;text-align:right}th{background:#f3f5f8}td.k,th.k{text-align:
left}tr.total td{font-weight:700;border-top:2px solid #9aa4ae}code{font:12px "DejaVu Sans Mono",
monospace;background:#f3f5f8;padding:1px 4px;border-radius:3px;word-break:break-all}
.chart{max-width:100%;height:auto;display:block;margin:8px 0}.chart .ct{font-size:14px;
font-weight:600;fill:#1d232b}.chart .ax{font-size:11px;fill:#56606b}.chart .grid{stroke:
#e3e7ec}ul.notes li{margin:2px 0}@page{size:A4;margin:14mm}
@media print{body{margin:0;max-width:none}h2{break-after:avoid}.chart,.card{break-inside:avoid}}
"""


def _table(
    rows: Sequence[tuple[str, dict[str, Any]]],
    head: str,
    currency: str | None,
    total: dict[str, Any] | None = None,
) -> str:
    out = [f'<table><thead><tr><th class="k">{escape(head)}</th>']
    out += [f"<th>{escape(label)}</th>" for _, label, _ in FIGURES]
    out.append("</tr></thead><tbody>")
    for label, f in rows:
        out.append(f'<tr><td class="k">{escape(label)}</td>')
        out += [f"<td>{_show(n, f.get(n), currency)}</td>" for n, _, _ in FIGURES]
        out.append("</tr>")
    if total is not None:
        out.append('<tr class="total"><td class="k">Total</td>')
        out += [f"<td>{_show(n, total.get(n), currency)}</td>" for n, _, _ in FIGURES]
        out.append("</tr>")
    out.append("</tbody></table>")
    return "".join(out)


def _how_to_check(doc: dict[str, Any], name: str) -> str:
    p = doc["parameters"]
    period = f"--since {p['from'][:19]} --until {p['to'][:19]}"
    rows = [
        (
            "Every figure on every page",
            "recomputed from the listed receipts, with signature, "
            "inclusion proof and checkpoint checks",
            f"computeproof report verify {name}",
        ),
        (
            "The checkpoint",
            "signed by the ledger key; the current log must extend it",
            "save the note below to cp.txt; computeproof ledger consistency cp.txt",
        ),
        (
            "Jobs of a group",
            "the job index rows counted (filter by the group's values)",
            f"computeproof jobs list --account ACCOUNT {period} --json",
        ),
        (
            "One job's figures",
            "its signed events, inclusion proofs and checkpoint, offline",
            "computeproof receipt export JOB -o job.json && computeproof receipt verify job.json",
        ),
        (
            "Allocated GPU-hours",
            "sum of GPUs x elapsed, prorated by time to the period",
            f"computeproof jobs list {period} --csv (columns gpus, elapsed_s)",
        ),
        (
            "Busy GPU-hours, energy",
            "sum of node_done GPU summaries (busy_gpu_ms, energy_mj)",
            "computeproof jobs show JOB --json (node_done payloads)",
        ),
        (
            "Cost, CO2e",
            "rate card and grid intensity embedded in this report's data block",
            "see rate_card and parameters in the embedded JSON",
        ),
    ]
    out = [
        '<table><thead><tr><th class="k">Figure</th><th class="k">How it is computed</th>'
        '<th class="k">Command</th></tr></thead><tbody>'
    ]
    for fig, how, cmd in rows:
        out.append(
            f'<tr><td class="k">{escape(fig)}</td><td class="k">{escape(how)}</td>'
            f'<td class="k"><code>{escape(cmd)}</code></td></tr>'
        )
    out.append("</tbody></table>")
    return "".join(out)


def render_html(doc: dict[str, Any], name: str = "REPORT.html") -> str:
    """The report as one self-contained HTML page (nothing is fetched when it is opened)."""
    p, t, cp, chk = doc["parameters"], doc["totals"], doc["checkpoint"], doc["ledger_check"]
    currency = t.get("currency")
    dims = list(p["group_by"])
    title = f"GPU usage report {p['from'][:10]} to {p['to'][:10]}"
    filters = (
        ", ".join(f"{k}: {', '.join(p[k])}" for k in ("accounts", "users", "grants") if p[k])
        or "all accounts and users"
    )
    if chk["ok"]:
        banner = (
            f'<div class="banner ok">Verified at checkpoint {cp["size"]} of '
            f"<code>{escape(cp['origin'])}</code>: checkpoint signature and tree; "
            + (
                "every counted receipt"
                if chk["mode"] == "receipts"
                else f"a random sample of {chk['jobs_checked']} counted jobs' receipts"
            )
            + f" ({chk['envelopes_checked']} signed events) checked against the job "
            "index.</div>"
        )
    else:
        probs = "".join(f"<li>{escape(x)}</li>" for x in chk["problems"][:10])
        banner = (
            '<div class="banner bad">UNVERIFIED: the ledger failed the report\'s checks; '
            f"this report was produced with --allow-unverified.<ul>{probs}</ul></div>"
        )
    cards = "".join(
        f'<div class="card"><div class="v">{_show(n, t.get(n), currency)}</div>'
        f'<div class="l">{escape(label)}</div></div>'
        for n, label, _ in FIGURES
    )
    notes = "".join(f"<li>{escape(n)}</li>" for n in doc["notes"])
    months = doc["series"]["month"]
    month_chart = column_chart(
        "GPU-hours per month",
        [m["month"] for m in months],
        [
            ("allocated", [float(m["allocated_gpu_hours"]) for m in months]),
            ("busy (measured)", [float(m["busy_gpu_hours"]) for m in months]),
        ],
        "GPU-hours",
    )
    users = sorted(doc["series"]["user"], key=lambda u: -float(u["allocated_gpu_hours"]))[:25]
    user_chart = bar_chart(
        "Allocated GPU-hours per user (top 25)",
        [u["user"] for u in users],
        [float(u["allocated_gpu_hours"]) for u in users],
        "GPU-h",
    )
    eff = [g for g in doc["groups"] if g.get("efficiency") is not None][:30]
    eff_chart = bar_chart(
        f"Efficiency per {' / '.join(dims)} (busy / allocated, measured jobs)",
        [" / ".join(str(g["key"][d]) for d in dims) for g in eff],
        [float(g["efficiency"]) for g in eff],
        "",
        percent=True,
    )
    group_rows = [(" / ".join(str(g["key"][d]) for d in dims), g) for g in doc["groups"]]
    month_rows = [(m["month"], m) for m in months]
    data = json.dumps(doc, sort_keys=True, separators=(",", ":"))
    data = data.replace("</", "<\\/").replace("<!--", "<\\!--")
    jobs = len(doc["receipts"]["jobs"])
    return "".join(
        [
            '<!DOCTYPE html><html lang="en"><head><meta charset="utf-8">',
            f"<title>{escape(title)}</title><style>{_CSS}</style></head><body>",
            f"<h1>{escape(title)}</h1>",
            f'<div class="meta">Period [{escape(p["from"])}, {escape(p["to"])}) UTC &middot; '
            f"{escape(filters)} &middot; grouped by {escape(', '.join(dims))} &middot; generated "
            f"{escape(doc['generated'])}</div>",
            banner,
            "<h2>Summary</h2>",
            f'<div class="cards">{cards}</div>',
            f'<ul class="notes">{notes}</ul>' if notes else "",
            "<h2>Charts</h2>",
            month_chart,
            user_chart,
            eff_chart,
            f"<h2>By {escape(' / '.join(dims))}</h2>",
            _table(group_rows, " / ".join(dims), currency, t),
            "<h2>By month</h2>",
            _table(month_rows, "month", currency),
            "<h2>How to check each figure</h2>",
            _how_to_check(doc, name),
            f"<p>This report counts {jobs} jobs; the leaf indices of every receipt counted, the "
            "rate card, the grant map and all parameters are embedded in this file as JSON.</p>",
            f"<p>Checkpoint (C2SP signed note):</p><pre><code>{escape(cp['note'])}</code></pre>",
            f'<script type="application/json" id="computeproof-report">{data}</script>',
            "</body></html>\n",
        ]
    )
