"""bench/bench_collector.py runs on a clean checkout (its own PostgreSQL and collector)
and prints the figures its docstring promises (not checked: tests never assert on time)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
pytestmark = pytest.mark.postgres


def test_bench_collector_prints_its_figures(tmp_path: Path) -> None:
    sys.path.insert(0, str(REPO / "tests"))
    from pgharness import find_bindir

    if find_bindir() is None:
        pytest.skip("PostgreSQL is not installed (apt-get install postgresql)")
    r = subprocess.run(
        [
            sys.executable,
            str(REPO / "bench" / "bench_collector.py"),
            "--events-per-host",
            "300",
            "--batch",
            "100",
            "--latency-batches",
            "5",
            "--processes",
            "1",
            "--freshness-samples",
            "2",
        ],
        capture_output=True,
        text=True,
        cwd=tmp_path,
        timeout=600,
        env={**os.environ, "PYTHONPATH": str(REPO)},
    )
    assert r.returncode == 0, r.stderr[-3000:]
    out = json.loads(r.stdout)
    assert out["events"] == 1200 and out["forwarders"] == 4
    for name in (
        "http_events_per_s",
        "local_events_per_s",
        "ratio",
        "batch100_latency_p50_ms",
        "batch100_latency_p99_ms",
    ):
        assert out[name] > 0, name
    assert out["accepted_to_checkpoint_max_ms"] >= 0 and out["checkpoint_samples"] == 2
    assert out["ratio"] == round(out["http_events_per_s"] / out["local_events_per_s"], 3) or (
        abs(out["ratio"] - out["http_events_per_s"] / out["local_events_per_s"]) < 0.01
    )
    assert list(tmp_path.iterdir()) == []  # its ledgers and keys lived in a temporary directory
