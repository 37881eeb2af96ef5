"""Report figures over ledgers of real signed events: exact totals, proration, grants."""

from __future__ import annotations

import os
from decimal import Decimal
from typing import Any

import pytest

from computeproof.errors import ReportError
from computeproof.ledger import Ledger
from computeproof.reports.build import build_report
from computeproof.reports.dates import parse_period
from computeproof.reports.grants import NO_GRANT, load_grants, to_ms
from computeproof.reports.ratecard import load_ratecard
from computeproof.reports.usage import ReportParams

RATECARD = """
currency = "EUR"
default = "1.00"
grid_intensity_g_per_kwh = 400
[[rate]]
gpu_model = "a100"
price = "2.50"
[[rate]]
gpu_model = "a100"
partition = "debug"
price = "0.10"
"""

GRANTS = """
[[grant]]
id = "G-OLD"
pi = "Prof. Old"
accounts = ["physics"]
from = 2026-01-01
to = 2026-02-01

[[grant]]
id = "G-NEW"
pi = "Prof. New"
accounts = ["physics"]
from = 2026-02-01
"""


def params(start: str, end: str, **kw: object) -> ReportParams:
    lo, hi = parse_period(start, end)
    return ReportParams(from_ms=to_ms(lo), to_ms=to_ms(hi), **kw)  # type: ignore[arg-type]


def write(tmp_path: os.PathLike[str], name: str, text: str) -> str:
    path = os.path.join(tmp_path, name)
    with open(path, "w") as f:
        f.write(text)
    return path


def test_exact_totals_cost_energy_co2(ledger: Ledger, add_job, tmp_path) -> None:
    # 2 GPUs x 1 h, 4 GPUs x 30 min, 1 GPU x 2 h (debug partition, unmeasured, FAILED)
    add_job(
        1,
        "2026-01-05T10:00:00Z",
        "2026-01-05T11:00:00Z",
        gpus=2,
        busy_ms=3_600_000,
        energy_mj=1_800_000_000,
    )
    add_job(
        2,
        "2026-01-06T10:00:00Z",
        "2026-01-06T10:30:00Z",
        gpus=4,
        user="bob",
        busy_ms=3_600_000,
        energy_mj=1_800_000_000,
        state="CANCELLED by 0",
    )
    add_job(
        3, "2026-01-07T10:00:00Z", "2026-01-07T12:00:00Z", gpus=1, partition="debug", state="FAILED"
    )
    card = load_ratecard(write(tmp_path, "ratecard.toml", RATECARD))
    p = params(
        "2026-01-01",
        "2026-01-31",
        ratecard=card,
        grid_intensity_g_per_kwh=card.grid_intensity_g_per_kwh,
    )
    doc = build_report(ledger, p)
    t = doc["totals"]
    assert t["jobs"] == 3
    assert t["allocated_gpu_hours"] == 6.0  # 2 + 2 + 2
    assert t["busy_gpu_hours"] == 2.0
    assert t["measured_gpu_hours"] == 4.0
    assert t["measured_share"] == round(4 / 6, 4)
    assert t["efficiency"] == 0.5
    assert t["energy_kwh"] == 1.0  # 3.6e9 mJ
    assert t["co2e_kg"] == 0.4
    assert t["cost"] == 10.2  # 4 GPU-h x 2.50 + 2 GPU-h x 0.10
    assert t["currency"] == "EUR"
    assert t["failed_jobs"] == 1 and t["cancelled_jobs"] == 1
    assert doc["ledger_check"]["ok"] is True
    assert doc["ledger_check"]["jobs_checked"] == 3
    assert [jk for jk, _ in doc["receipts"]["jobs"]] == ["c1/1#0", "c1/2#0", "c1/3#0"]
    leaves = dict(doc["receipts"]["jobs"])
    assert leaves["c1/1#0"] == [0, 1, 2, 3, 4]


def test_proration_at_period_boundaries(ledger: Ledger, add_job) -> None:
    # 2 GPUs from Jan 31 22:00 to Feb 1 02:00: 1/2 in January, 1/2 in February
    add_job(
        10,
        "2026-01-31T22:00:00Z",
        "2026-02-01T02:00:00Z",
        gpus=2,
        busy_ms=6_000_000,
        energy_mj=3_600_000_000,
    )
    feb = build_report(ledger, params("2026-02", "2026-02"))["totals"]
    assert feb["jobs"] == 1
    assert feb["allocated_gpu_hours"] == 4.0
    assert feb["busy_gpu_hours"] == round(3_000_000 / 3_600_000, 6)
    assert feb["energy_kwh"] == 0.5
    both = build_report(ledger, params("2026-01-01", "2026-02-28", group_by=("month",)))
    assert both["totals"]["allocated_gpu_hours"] == 8.0
    assert both["totals"]["jobs"] == 1  # counted once in the total
    months = {g["key"]["month"]: g for g in both["groups"]}
    assert months["2026-01"]["allocated_gpu_hours"] == 4.0
    assert months["2026-02"]["allocated_gpu_hours"] == 4.0
    assert months["2026-01"]["jobs"] == months["2026-02"]["jobs"] == 1
    # a thirds split stays exact: 1 GPU, 3 h, period covers 1 h
    add_job(11, "2026-03-01T00:00:00Z", "2026-03-01T03:00:00Z", gpus=1, busy_ms=1_000)
    third = build_report(ledger, params("2026-03-01T01:00", "2026-03-01T02:00"))["totals"]
    assert third["allocated_gpu_hours"] == 1.0
    assert third["busy_gpu_hours"] == round(1000 / 3 / 3_600_000, 6)


def test_grant_split_on_a_date_and_no_grant_jobs(ledger: Ledger, add_job, tmp_path) -> None:
    gmap = load_grants(write(tmp_path, "grants.toml", GRANTS))
    add_job(20, "2026-01-31T20:00:00Z", "2026-02-01T04:00:00Z", gpus=1)  # 4 h old + 4 h new
    add_job(21, "2026-02-10T00:00:00Z", "2026-02-10T01:00:00Z", gpus=3, account="chemistry")
    doc = build_report(
        ledger, params("2026-01-01", "2026-03-01", grant_map=gmap, group_by=("grant", "pi"))
    )
    groups = {g["key"]["grant"]: g for g in doc["groups"]}
    assert groups["G-OLD"]["allocated_gpu_hours"] == 4.0
    assert groups["G-NEW"]["allocated_gpu_hours"] == 4.0
    assert groups["G-NEW"]["key"]["pi"] == "Prof. New"
    assert groups[NO_GRANT]["allocated_gpu_hours"] == 3.0
    assert doc["totals"]["allocated_gpu_hours"] == 11.0
    assert doc["totals"]["jobs"] == 2
    only_new = build_report(
        ledger, params("2026-01-01", "2026-03-01", grant_map=gmap, grants=("G-NEW",))
    )["totals"]
    assert only_new["allocated_gpu_hours"] == 4.0


def test_unknown_account_empty_ledger_and_inverted_dates(ledger: Ledger, add_job) -> None:
    empty = build_report(ledger, params("2026-01-01", "2026-02-01"))
    assert empty["totals"]["jobs"] == 0
    assert any("empty" in n for n in empty["notes"])
    add_job(30, "2026-01-05T10:00:00Z", "2026-01-05T11:00:00Z")
    doc = build_report(ledger, params("2026-01-01", "2026-02-01", accounts=("nosuch",)))
    assert doc["totals"]["jobs"] == 0
    assert any("nosuch" in n for n in doc["notes"])
    with pytest.raises(ReportError, match="not before"):
        parse_period("2026-02-01", "2026-01-01")


def test_ratecard_and_grant_errors_name_file_and_line(tmp_path) -> None:
    bad = write(tmp_path, "rc.toml", 'currency = "EUR"\n[[rate]]\nprice = = 2\n')
    with pytest.raises(ReportError, match=r"rc\.toml.*line 3"):
        load_ratecard(bad)
    typed = write(tmp_path, "rc2.toml", '[[rate]]\ngpu_model = "a100"\nprice = "cheap"\n')
    with pytest.raises(ReportError, match=r"rc2\.toml: rate\[0\]\.price"):
        load_ratecard(typed)
    g = write(tmp_path, "g.toml", '[[grant]]\nid = "X"\naccounts = "physics"\nfrom = 2026-01-01\n')
    with pytest.raises(ReportError, match=r"g\.toml: grant\[0\]\.accounts"):
        load_grants(g)
    overlap = write(tmp_path, "g2.toml", GRANTS.replace("from = 2026-02-01", "from = 2026-01-15"))
    with pytest.raises(ReportError, match="same time"):
        load_grants(overlap)
    card = load_ratecard(write(tmp_path, "ok.toml", RATECARD))
    assert card.price("a100", "debug") == Decimal("0.10")
    assert card.price("h100", "gpu") == Decimal("1.00")


def test_parallel_fold_equals_sequential(
    ledger: Ledger, add_job: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Large SQLite ledgers are folded on every core; the figures and the counted receipts
    must be exactly those of one process (jobs crossing a month boundary included)."""
    from computeproof.reports import build

    for i in range(1, 13):
        add_job(i, f"2026-01-{10 + i}T10:00:00Z", f"2026-01-{10 + i}T12:00:00Z",
                gpus=1 + i % 3, user=("alice", "bob")[i % 2], busy_ms=i * 1_000_000)  # fmt: skip
    add_job(13, "2026-01-31T20:00:00Z", "2026-02-01T04:00:00Z", gpus=2)  # spans the month
    p = params("2026-01-01", "2026-02-28", group_by=("account", "user", "month"))
    single = build.build_report(ledger, p, check="sample", workers=1)
    monkeypatch.setattr(build, "PARALLEL_MIN_JOBS", 1)
    split = build.build_report(ledger, p, check="sample", workers=2)
    assert split["ledger_check"]["ok"] and split["ledger_check"]["jobs_checked"] == 13
    for key in ("totals", "groups", "receipts", "notes"):
        assert split[key] == single[key], key


def test_a_stores_usage_row_starts_with_the_fields_of_a_job_usage() -> None:
    """reports.source reads a JobUsage off the front of a store's UsageRow."""
    from computeproof.reports.usage import JobUsage
    from computeproof.store.interface import UsageRow

    assert UsageRow._fields[: len(JobUsage._fields)] == JobUsage._fields
