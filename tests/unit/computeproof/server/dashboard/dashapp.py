"""Helpers of the dashboard tests: test settings and a ledger opener over the demo ledger."""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterator

from demo import open_demo_ledger

from computeproof.ledger import Ledger
from computeproof.server.dashboard import DashboardSettings

ADMIN_TOKEN = "test-admin-token-0123456789"
HEADER = "X-Remote-User"


def opener(directory: str) -> Callable[[], contextlib.AbstractContextManager[Ledger]]:
    """``open_ledger`` over the demo ledger in ``directory``."""

    @contextlib.contextmanager
    def opened() -> Iterator[Ledger]:
        with open_demo_ledger(directory) as ledger:
            yield ledger

    return opened


def settings(**change: object) -> DashboardSettings:
    """Test settings: the admin token, and the proxy header trusted from the test client."""
    base: dict[str, object] = {
        "admin_token": ADMIN_TOKEN,
        "identity_header": HEADER,
        "trusted_proxies": ("testclient", "127.0.0.1"),
        "admin_users": ("root",),
        "page_size": 20,
    }
    base.update(change)
    return DashboardSettings(**base)  # type: ignore[arg-type]
