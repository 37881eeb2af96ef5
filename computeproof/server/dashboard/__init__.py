"""The dashboard: jobs, lifecycle logs, GPU charts, receipts verified in the browser, and
usage analytics, served from a ledger by the collector (or `computeproof dashboard`).

    from computeproof.server.dashboard import DashboardSettings, build_router
    app.include_router(build_router(settings, open_ledger))

Pages are rendered on the server (Jinja2, autoescaped) and work without scripts; small
JavaScript modules under static/ add live updates and the receipt verifier, which checks
a receipt in the browser (WebCrypto Ed25519 and SHA-256) against a key the viewer pins,
trusting nothing the server says. Access rules are in access.py; what pages show is
computed in view.py; docs/dashboard.md is the guide.
"""

from __future__ import annotations

from computeproof.server.dashboard.routes import build_router
from computeproof.server.dashboard.settings import DashboardSettings

__all__ = ["DashboardSettings", "build_router"]
