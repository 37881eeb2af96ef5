"""`report verify`, the ledger checks a report makes, renderers and the CLI."""

from __future__ import annotations

import json
import os
import shutil
import subprocess

import pytest
from click.testing import CliRunner

from computeproof.errors import ReportError
from computeproof.keys import format_public_key
from computeproof.ledger import Ledger
from computeproof.reports.build import build_report
from computeproof.reports.dates import parse_period
from computeproof.reports.grants import to_ms
from computeproof.reports.render import render_csv, render_html, render_json
from computeproof.reports.usage import ReportParams
from computeproof.reports.verify import load_report, verify_report
from slurm_hooks.cli import main
from slurm_hooks.reconcile import reconcile


def _params(**kw: object) -> ReportParams:
    lo, hi = parse_period("2026-01-01", "2026-02-28")
    return ReportParams(from_ms=to_ms(lo), to_ms=to_ms(hi), **kw)  # type: ignore[arg-type]


@pytest.fixture
def filled(ledger: Ledger, add_job) -> Ledger:
    add_job(
        1,
        "2026-01-05T10:00:00Z",
        "2026-01-05T11:00:00Z",
        gpus=2,
        busy_ms=3_600_000,
        energy_mj=1_000_000,
    )
    add_job(
        2,
        "2026-01-31T22:00:00Z",
        "2026-02-01T02:00:00Z",
        gpus=4,
        user="bob",
        account="biology",
        busy_ms=1_234_567,
    )
    add_job(3, "2026-02-07T10:00:00Z", "2026-02-07T12:00:00Z", gpus=1, state="FAILED")
    return ledger


def test_verify_matches_then_detects_tampered_total(filled: Ledger, tmp_path) -> None:
    doc = build_report(filled, _params(group_by=("account", "month")))
    assert verify_report(filled, json.loads(render_json(doc))).ok
    tampered = json.loads(render_json(doc))
    tampered["totals"]["allocated_gpu_hours"] += 1
    r = verify_report(filled, tampered)
    assert not r.ok
    assert any("totals.allocated_gpu_hours" in p for p in r.problems)
    dropped = json.loads(render_json(doc))
    dropped["receipts"]["jobs"] = dropped["receipts"]["jobs"][1:]
    r = verify_report(filled, dropped)
    assert not r.ok and any("not listed" in p for p in r.problems)


def test_verify_detects_tampered_checkpoint(filled: Ledger) -> None:
    doc = json.loads(render_json(build_report(filled, _params())))
    doc["checkpoint"]["note"] = doc["checkpoint"]["note"].replace(
        f"\n{doc['checkpoint']['size']}\n", f"\n{doc['checkpoint']['size'] - 1}\n"
    )
    with pytest.raises(ReportError, match="checkpoint"):
        verify_report(filled, doc)


def test_html_is_self_contained_and_verifiable(filled: Ledger, tmp_path) -> None:
    doc = build_report(filled, _params(group_by=("user",)))
    html = render_html(doc, "r.html")
    assert "http://" not in html and "https://" not in html
    assert "<script src" not in html and "<link" not in html
    assert html.count("<svg") == 3
    path = os.path.join(tmp_path, "r.html")
    with open(path, "w") as f:
        f.write(html)
    assert verify_report(filled, load_report(path)).ok
    rows = render_csv(doc).splitlines()
    assert rows[0].startswith("user,jobs,allocated_gpu_hours")
    assert rows[-1].startswith("TOTAL,3,")


def test_report_refuses_a_tampered_ledger(filled: Ledger) -> None:
    store = filled.store
    row = next(iter(store.leaves(2, 3)))
    forged = row.envelope.replace(b'"sig":"', b'"sig":"A', 1)[:-6] + row.envelope[-5:]
    store.db.execute("UPDATE leaves SET envelope = ? WHERE idx = 2", (forged,))  # type: ignore[attr-defined]
    with pytest.raises(ReportError, match="allow-unverified"):
        build_report(filled, _params())
    doc = build_report(filled, _params(), allow_unverified=True)
    assert doc["ledger_check"]["ok"] is False
    assert "UNVERIFIED" in render_html(doc)


def test_report_refuses_a_tampered_job_index(filled: Ledger) -> None:
    filled.store.db.execute("UPDATE jobs SET gpus = 64 WHERE job_id = 1")  # type: ignore[attr-defined]
    with pytest.raises(ReportError, match="gpus"):
        build_report(filled, _params())
    sampled = build_report(filled, _params(), check="sample", allow_unverified=True)
    assert sampled["ledger_check"]["ok"] is False  # the sample covers all 3 jobs


def test_reconcile_finds_missing_incomplete_unknown_and_mismatch(
    filled: Ledger, add_job, ledger: Ledger
) -> None:
    base = {"user": "alice", "account": "physics", "state": "COMPLETED"}
    records = [
        {**base, "job": "1", "job_id": 1, "gpus": 2, "elapsed_s": 3600},
        {**base, "job": "2", "job_id": 2, "gpus": 2, "elapsed_s": 14400},  # GPU mismatch
        {**base, "job": "9", "job_id": 9, "gpus": 1, "elapsed_s": 60, "start_epoch": 1},
        {**base, "job": "8", "job_id": 8, "gpus": 0, "elapsed_s": 60},  # CPU-only: ignored
    ]
    r = reconcile(filled, "c1", records, "2026-01-01T00:00:00")  # type: ignore[arg-type]
    assert [m["job"] for m in r.missing] == ["9"]
    assert [m["job"] for m in r.mismatched] == ["2"]
    assert [u["job"] for u in r.unknown_to_slurm] == ["3"]
    assert not r.incomplete and not r.ok


def _cli_env(ledger: Ledger, tmp_path) -> dict[str, str]:
    cfg = os.path.join(tmp_path, "config.toml")
    with open(cfg, "w") as f:
        f.write(
            f'cluster = "c1"\ndb = "{ledger.store.path}"\n'  # type: ignore[attr-defined]
            f'ledger_key = "{ledger.ledger_key_path}"\n'
            f'ledger_origin = "{ledger.origin}"\n'
            f'trusted_ledger_keys = ["{format_public_key(ledger.signer().public_raw)}"]\n'
        )
    return {"COMPUTEPROOF_CONFIG": cfg}


def test_cli_report_and_verify(filled: Ledger, tmp_path) -> None:
    filled.latest_checkpoint()
    env = _cli_env(filled, tmp_path)
    out = os.path.join(tmp_path, "r.json")
    runner = CliRunner()
    r = runner.invoke(
        main,
        [
            "report",
            "--from",
            "2026-01-01",
            "--to",
            "2026-02",
            "-o",
            out,
            "--grid-intensity",
            "300",
            "--group-by",
            "account,month",
        ],
        env=env,
    )
    assert r.exit_code == 0, r.output
    with open(out) as f:
        doc = json.load(f)
    assert doc["totals"]["co2e_kg"] is not None
    assert runner.invoke(main, ["report", "verify", out], env=env).exit_code == 0
    doc["groups"][0]["busy_gpu_hours"] = 99
    with open(out, "w") as f:
        json.dump(doc, f)
    r = runner.invoke(main, ["report", "verify", out], env=env)
    assert r.exit_code == 1 and "DOES NOT MATCH" in r.output
    r = runner.invoke(
        main, ["report", "--from", "2026-02-01", "--to", "2026-01-01", "-o", out], env=env
    )
    assert r.exit_code == 2 and "not before" in r.output


@pytest.mark.skipif(not shutil.which("chromium"), reason="headless Chromium is not installed")
def test_chromium_renders_html_without_console_errors_and_prints_pdf(
    filled: Ledger, tmp_path
) -> None:
    from computeproof.reports.pdf import chromium_args, html_to_pdf

    html = render_html(build_report(filled, _params(group_by=("account", "month"))))
    page = os.path.join(tmp_path, "r.html")
    with open(page, "w") as f:
        f.write(html)
    png = os.path.join(tmp_path, "r.png")
    cmd = [
        *chromium_args("chromium", os.path.join(tmp_path, "profile")),
        "--enable-logging=stderr",
        "--v=0",
        f"--screenshot={png}",
        "--window-size=1280,2000",
        f"file://{page}",
    ]
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=120, check=False)
    assert proc.returncode == 0, proc.stderr[-2000:]
    with open(png, "rb") as f:
        data = f.read()
    assert data[:8] == b"\x89PNG\r\n\x1a\n" and len(data) > 20_000
    console = [ln for ln in proc.stderr.splitlines() if "CONSOLE" in ln or "Uncaught" in ln]
    assert not console, console
    if os.environ.get("REPORT_SCREENSHOT"):
        shutil.copy(png, os.environ["REPORT_SCREENSHOT"])
    pdf = os.path.join(tmp_path, "r.pdf")
    html_to_pdf(html, pdf)
    with open(pdf, "rb") as f:
        assert f.read(5) == b"%PDF-"
