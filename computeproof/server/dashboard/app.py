"""A stand-alone ASGI app serving only the dashboard over one ledger (tests, and
`computeproof dashboard` until `computeproof serve` includes the router itself)."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator

from fastapi import FastAPI

from computeproof.config import Config
from computeproof.ledger import Ledger, open_ledger
from computeproof.server.dashboard.routes import OpenLedger, build_router
from computeproof.server.dashboard.settings import DashboardSettings


def ledger_opener(config: Config) -> OpenLedger:
    """``open_ledger`` for :func:`build_router`: the configured ledger, one per request
    (an SQLite connection costs well under a millisecond to open)."""

    @contextlib.contextmanager
    def opened() -> Iterator[Ledger]:
        with open_ledger(config) as ledger:
            ledger.workers = 1  # a request never forks verification workers
            yield ledger

    return opened


def create_app(settings: DashboardSettings, opener: OpenLedger) -> FastAPI:
    """A FastAPI app with the dashboard router and nothing else (no API docs routes)."""
    app = FastAPI(title="ComputeProof dashboard", docs_url=None, redoc_url=None, openapi_url=None)
    app.include_router(build_router(settings, opener))
    return app
