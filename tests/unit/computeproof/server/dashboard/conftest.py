"""Fixtures of the dashboard tests: the demo ledger, and apps over it."""

from __future__ import annotations

import sys
from collections.abc import Callable
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parent))
pytest.importorskip("fastapi")
pytest.importorskip("httpx")

from dashapp import ADMIN_TOKEN, HEADER, opener, settings
from demo import build_demo
from fastapi.testclient import TestClient

from computeproof.server.dashboard.app import create_app


@pytest.fixture(scope="session")
def demo_dir(tmp_path_factory: pytest.TempPathFactory) -> str:
    """A demo ledger shared by the read-only tests (do not append to it)."""
    d = tmp_path_factory.mktemp("dashboard-demo")
    build_demo(str(d))
    return str(d)


@pytest.fixture
def make_client(demo_dir: str) -> Callable[..., TestClient]:
    """A test client over the demo ledger; ``user`` sets the proxy header, ``admin`` the
    bearer token."""

    def make(user: str | None = None, admin: bool = False, **change: object) -> TestClient:
        headers = {}
        if user is not None:
            headers[HEADER] = user
        if admin:
            headers["Authorization"] = f"Bearer {ADMIN_TOKEN}"
        app = create_app(settings(**change), opener(demo_dir))
        return TestClient(app, headers=headers, follow_redirects=False)

    return make
