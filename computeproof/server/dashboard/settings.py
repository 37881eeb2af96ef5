"""The dashboard's settings: one typed, immutable object the serving process builds once."""

from __future__ import annotations

from dataclasses import dataclass

from computeproof.errors import ConfigError


@dataclass(frozen=True)
class DashboardSettings:
    """Who may see what, what key the site publishes, and how pages page and refresh.

    Access: a request is an admin's when it carries ``admin_token`` (the login form's
    cookie, or ``Authorization: Bearer``), or when ``identity_header`` names one of
    ``admin_users``; it is an ordinary user's (who sees only their own jobs) when
    ``identity_header`` names anyone else. The header is believed only from the reverse
    proxies in ``trusted_proxies`` (peer addresses), which must strip it from clients'
    requests. With neither configured, nobody but an admin token holder sees anything.
    """

    admin_token: str | None = None
    identity_header: str | None = None  # e.g. "X-Remote-User", set by the reverse proxy
    trusted_proxies: tuple[str, ...] = ("127.0.0.1", "::1")
    admin_users: tuple[str, ...] = ()
    # the ledger key the site publishes for verifiers to pin ("ed25519:BASE64"); None: the
    # ledger's own stored key, read when a page asks for it
    published_ledger_key: str | None = None
    private_to_admins: bool = True  # admins see private fields' disclosed values
    private_to_owner: bool = True  # a job's user sees that job's private fields
    mount_path: str = ""  # URL path prefix the router is served under ("" or "/dash")
    site_name: str = "ComputeProof"
    page_size: int = 50
    max_page_size: int = 500
    count_cap: int = 100_000  # counting matching jobs stops here ("more than N")
    refresh_s: int = 10  # polling period when server-sent events are unavailable
    stream_poll_ms: int = 1000  # how often the live stream looks at the log's size
    stream_max_s: int = 300  # a live stream ends after this; the browser reconnects
    # analytics: the report's inputs (see `computeproof report`)
    ratecard: str | None = None
    grants: str | None = None
    grid_intensity_g_per_kwh: str | None = None
    analytics_check_sample: int = 200  # receipts re-verified for an analytics page
    cookie_secure: bool = False  # set the session cookie's Secure flag (behind HTTPS)

    def __post_init__(self) -> None:
        if self.admin_token is not None and len(self.admin_token) < 16:
            raise ConfigError("the dashboard admin token must be at least 16 characters")
        if self.identity_header is not None and not _header_name(self.identity_header):
            raise ConfigError(
                f"identity header {self.identity_header!r} is not an HTTP header name"
            )
        if self.mount_path and (
            not self.mount_path.startswith("/") or self.mount_path.endswith("/")
        ):
            raise ConfigError(
                f"dashboard mount path {self.mount_path!r} must start with '/' and not end "
                "with one (or be empty)"
            )
        for name in ("page_size", "max_page_size", "refresh_s", "stream_poll_ms", "stream_max_s"):
            if getattr(self, name) < 1:
                raise ConfigError(f"dashboard {name} must be at least 1")
        if self.page_size > self.max_page_size:
            raise ConfigError("dashboard page_size must not exceed max_page_size")


def _header_name(name: str) -> bool:
    token = "!#$%&'*+-.^_`|~"
    return bool(name) and all(c.isascii() and (c.isalnum() or c in token) for c in name)
