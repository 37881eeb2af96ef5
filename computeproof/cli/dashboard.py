"""`computeproof dashboard`: the dashboard over the configured ledger, on one host.

Until `computeproof serve` (the collector) includes the dashboard router itself, this is
how a site or the demo looks at its ledger in a browser. It only reads the ledger (a
receipt download or a report signs a checkpoint when the log grew, as the CLI does).
"""

from __future__ import annotations

import secrets

import click

from computeproof.cli import State, fail, main, pass_state


def _listen(value: str) -> tuple[str, int]:
    host, _, port = value.rpartition(":")
    if not host or not port.isdigit() or not 0 < int(port) < 65536:
        raise click.BadParameter(f"{value!r} is not HOST:PORT (e.g. 127.0.0.1:8765)")
    return host.strip("[]"), int(port)


@main.command("dashboard")
@click.option(
    "--listen",
    default="127.0.0.1:8765",
    show_default=True,
    help="HOST:PORT to serve on. Anything but loopback needs a TLS-terminating proxy.",
)
@click.option(
    "--admin-token",
    envvar="COMPUTEPROOF_DASHBOARD_TOKEN",
    default=None,
    help="Admin token (default: a new random one, printed in the sign-in link).",
)
@click.option(
    "--identity-header",
    default=None,
    metavar="NAME",
    help="Trust this request header (e.g. X-Remote-User) for the user name, from --proxy.",
)
@click.option(
    "--proxy",
    "proxies",
    multiple=True,
    metavar="ADDR",
    help="Peer address of the trusted reverse proxy (repeatable; default loopback).",
)
@click.option("--admin-user", "admin_users", multiple=True, help="User names that are admins.")
@click.option(
    "--ledger-key",
    default=None,
    help="The ledger key to publish for verifiers to pin (default: the ledger's own).",
)
@click.option("--ratecard", default=None, help="Rate card TOML for analytics costs.")
@click.option("--grants", "grants_file", default=None, help="Grant map TOML for analytics.")
@pass_state
def dashboard(
    state: State,
    listen: str,
    admin_token: str | None,
    identity_header: str | None,
    proxies: tuple[str, ...],
    admin_users: tuple[str, ...],
    ledger_key: str | None,
    ratecard: str | None,
    grants_file: str | None,
) -> None:
    """Serve the web dashboard over the ledger (jobs, receipts verified in the browser,
    analytics) until interrupted; prints the sign-in link."""
    try:
        import uvicorn

        from computeproof.server.dashboard import DashboardSettings
        from computeproof.server.dashboard.app import create_app, ledger_opener
    except ImportError as e:
        fail(f"the dashboard needs the server extra: pip install 'computeproof[server]' ({e})")
    host, port = _listen(listen)
    token = admin_token or secrets.token_urlsafe(24)

    def settings() -> DashboardSettings:
        from computeproof.ledger import open_ledger

        with open_ledger(state.config):  # a missing ledger is an error now, not per request
            pass
        return DashboardSettings(
            admin_token=token,
            identity_header=identity_header,
            trusted_proxies=proxies or ("127.0.0.1", "::1"),
            admin_users=admin_users,
            published_ledger_key=ledger_key,
            ratecard=ratecard or state.config.ratecard or None,
            grants=grants_file or state.config.grants or None,
        )

    app = create_app(settings(), ledger_opener(state.config))
    shown = f"[{host}]" if ":" in host else host
    click.echo(f"computeproof dashboard on http://{shown}:{port}/ over {state.config.db}")
    click.echo(f"sign in as admin: http://{shown}:{port}/login?token={token}")
    uvicorn.run(app, host=host, port=port, log_level="warning", proxy_headers=False)
