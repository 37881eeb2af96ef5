"""The bench/ scripts that are not a CLI command run on a clean checkout and print what
their docstrings promise (their figures are not checked: tests never assert on time)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]


def test_ingest_breakdown_prints_its_parts(tmp_path: Path) -> None:
    r = subprocess.run(
        [sys.executable, str(REPO / "bench" / "bench_ingest_breakdown.py"), "--jobs", "20",
         "--hosts", "2"],
        capture_output=True, text=True, cwd=tmp_path, timeout=300,
        env={**os.environ, "PYTHONPATH": str(REPO)},
    )  # fmt: skip
    assert r.returncode == 0, r.stderr
    out = json.loads(r.stdout)
    assert out["events"] >= 20 * 5 and out["cores"] == (os.cpu_count() or 1)
    for name in ("verify_us", "open_us", "commit_us", "pipeline_cpu_us", "budget_us"):
        assert out[name] > 0, name
    assert out["budget_left_us"] == round(out["budget_us"] - out["verify_us"], 1)
    assert out["besides_verify_us"] == round(out["open_us"] + out["commit_us"], 1)
    assert "ingesting" in r.stderr
    assert list(tmp_path.iterdir()) == []  # its ledgers live in a temporary directory


def test_ingest_scale_prints_a_row_per_step(tmp_path: Path) -> None:
    r = subprocess.run(
        [sys.executable, str(REPO / "bench" / "bench_ingest_scale.py"), "--jobs", "1400",
         "--hosts", "2", "--step", "100", "--dir", str(tmp_path)],
        capture_output=True, text=True, cwd=tmp_path, timeout=300,
        env={**os.environ, "PYTHONPATH": str(REPO)},
    )  # fmt: skip
    assert r.returncode == 0, r.stderr
    out = json.loads(r.stdout)
    # over 8,192 events: two batches, each past the 100-leaf step, so a row each
    leaves = [row["leaves"] for row in out["steps"]]
    assert out["events"] > 8192 and leaves == [8192, out["events"]]
    assert all(row["events_per_s"] > 0 for row in out["steps"])
    assert list(tmp_path.iterdir()) == []  # the ledger went with its temporary directory
