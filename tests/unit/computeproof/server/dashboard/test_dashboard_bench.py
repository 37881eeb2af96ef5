"""bench/bench_dashboard.py runs on a small ledger and prints what its docstring promises
(its figures are not checked: tests never assert on time)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[5]


def test_bench_dashboard_prints_its_figures(tmp_path: Path) -> None:
    r = subprocess.run(
        [sys.executable, str(REPO / "bench" / "bench_dashboard.py"), "--jobs", "40"],
        capture_output=True,
        text=True,
        cwd=tmp_path,
        timeout=300,
        env={**os.environ, "PYTHONPATH": str(REPO)},
    )
    assert r.returncode == 0, r.stderr
    out = json.loads(r.stdout)
    assert out["jobs"] == 40 and out["requests"] > 100 and out["target_p95_ms"] == 200
    for name in ("page_p50_ms", "page_p95_ms", "json_p50_ms", "json_p95_ms"):
        assert out[name] > 0, name
    assert "page job id search" in out["by_kind"] and "json deep page" in out["by_kind"]
    assert list(tmp_path.iterdir()) == []  # its ledger lived in a temporary directory
