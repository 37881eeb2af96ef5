"""Who is looking: an admin (every job), a user (their own jobs), or nobody (a login page).

Identity comes from two places only: the site's admin token (a login cookie holding an
HMAC of it, or ``Authorization: Bearer``), and the user name a trusted reverse proxy puts
in a header after authenticating the user. The header is ignored unless the request came
from one of the configured proxy addresses, so a client that reaches the service directly
cannot name itself.
"""

from __future__ import annotations

import hashlib
import hmac
from dataclasses import dataclass

from computeproof.server.dashboard.settings import DashboardSettings
from computeproof.store.interface import JobFilter, JobRow

SESSION_COOKIE = "computeproof_dashboard"
_SESSION_CONTEXT = b"computeproof dashboard admin session v1"


@dataclass(frozen=True)
class Viewer:
    """The person a request is served to."""

    name: str | None  # the user name the proxy vouched for; None for a token admin
    admin: bool

    @property
    def label(self) -> str:
        """How the page header names the viewer."""
        if self.name is not None:
            return self.name + (" (admin)" if self.admin else "")
        return "admin (token)"

    def restrict(self, selection: JobFilter) -> JobFilter:
        """``selection`` narrowed to the jobs this viewer may see."""
        if self.admin:
            return selection
        from dataclasses import replace

        # an ordinary user's own jobs only, whatever user filter the request asked for
        return replace(selection, users=(self.name or "",))

    def may_see(self, row: JobRow) -> bool:
        """Whether this viewer may see job ``row`` at all."""
        return self.admin or (self.name is not None and row.user == self.name)

    def may_see_private(self, row: JobRow, settings: DashboardSettings) -> bool:
        """Whether this viewer may see the disclosed values of ``row``'s private fields."""
        if self.admin:
            return settings.private_to_admins
        return settings.private_to_owner and self.may_see(row)


def session_value(token: str) -> str:
    """The login cookie's value for an admin token: an HMAC of it, so the cookie does
    not carry the token itself."""
    return hmac.new(token.encode(), _SESSION_CONTEXT, hashlib.sha256).hexdigest()


def token_matches(settings: DashboardSettings, given: str) -> bool:
    """Whether ``given`` is the admin token (constant time)."""
    if not settings.admin_token:
        return False
    return hmac.compare_digest(given.encode(), settings.admin_token.encode())


def resolve_viewer(
    settings: DashboardSettings,
    headers: dict[str, str],
    cookies: dict[str, str],
    peer: str | None,
) -> Viewer | None:
    """The viewer of a request (header names lower-case), or None when it carries no
    identity the site trusts."""
    if settings.admin_token:
        auth = headers.get("authorization", "")
        if auth[:7].lower() == "bearer " and token_matches(settings, auth[7:].strip()):
            return Viewer(None, True)
        cookie = cookies.get(SESSION_COOKIE)
        if cookie and hmac.compare_digest(
            cookie.encode(), session_value(settings.admin_token).encode()
        ):
            return Viewer(None, True)
    if settings.identity_header and peer is not None and peer in settings.trusted_proxies:
        name = headers.get(settings.identity_header.lower(), "").strip()
        if name:
            return Viewer(name, name in settings.admin_users)
    return None
