"""A real Prometheus server (Debian's ``prometheus`` package) started by a test.

It listens on a free loopback port, keeps its data in the test's temporary directory,
scrapes the given targets every second and is stopped (SIGTERM, then SIGKILL) at the end.
"""

from __future__ import annotations

import json
import shutil
import socket
import subprocess
import time
import urllib.parse
import urllib.request
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def promtool() -> str:
    path = shutil.which("promtool")
    if path is None:
        pytest.fail("promtool is missing: apt-get install prometheus (or make deb-deps)")
    return path


class Prometheus:
    """One Prometheus process scraping ``targets`` ({"host:port": {label: value}})."""

    def __init__(self, workdir: Path, targets: dict[str, dict[str, str]]) -> None:
        binary = shutil.which("prometheus")
        if binary is None:
            pytest.fail("Prometheus is missing: apt-get install prometheus (or make deb-deps)")
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        workdir.mkdir(parents=True, exist_ok=True)
        static = [{"targets": [t], "labels": labels} for t, labels in targets.items()]
        config = {
            "global": {"scrape_interval": "1s", "evaluation_interval": "1s"},
            "scrape_configs": [
                {"job_name": "computeproof-agent", "scrape_interval": "1s",
                 "scrape_timeout": "1s", "static_configs": static}
            ],
        }  # fmt: skip
        (workdir / "prometheus.yml").write_text(json.dumps(config))  # JSON is YAML
        self.log = open(workdir / "prometheus.log", "wb")  # noqa: SIM115 - closed in stop()
        self.proc = subprocess.Popen(
            [
                binary,
                f"--config.file={workdir / 'prometheus.yml'}",
                f"--storage.tsdb.path={workdir / 'data'}",
                f"--web.listen-address=127.0.0.1:{self.port}",
                "--log.level=warn",
            ],
            stdout=self.log,
            stderr=self.log,
        )
        deadline = time.monotonic() + 60
        while True:
            try:
                with urllib.request.urlopen(f"{self.url}/-/ready", timeout=2) as r:
                    if r.status == 200:
                        break
            except OSError:
                pass
            if self.proc.poll() is not None or time.monotonic() > deadline:
                self.stop()
                pytest.fail(f"Prometheus did not start: {(workdir / 'prometheus.log').read_text()}")
            time.sleep(0.2)

    def query(self, promql: str, at: float | None = None) -> list[dict[str, Any]]:
        """The result vector of an instant query (``at``: Unix time, default now)."""
        params = {"query": promql}
        if at is not None:
            params["time"] = f"{at:.3f}"
        url = f"{self.url}/api/v1/query?{urllib.parse.urlencode(params)}"
        with urllib.request.urlopen(url, timeout=10) as r:
            body = json.loads(r.read())
        assert body["status"] == "success", body
        result = body["data"]["result"]
        assert isinstance(result, list)
        return result

    def wait_for(
        self, promql: str, ok: Callable[[list[dict[str, Any]]], bool], timeout: float = 30
    ) -> list[dict[str, Any]]:
        """Query until ``ok(result)``; fail the test after ``timeout`` seconds."""
        deadline = time.monotonic() + timeout
        while True:
            result = self.query(promql)
            if ok(result):
                return result
            if time.monotonic() > deadline:
                pytest.fail(f"Prometheus never answered {promql!r} as expected: {result}")
            time.sleep(0.2)

    def stop(self) -> None:
        """Stop the server."""
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(timeout=20)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(timeout=20)
        self.log.close()


def by_label(result: list[dict[str, Any]], label: str) -> dict[str, float]:
    """An instant vector as {label value: sample value}."""
    return {r["metric"].get(label, ""): float(r["value"][1]) for r in result}
