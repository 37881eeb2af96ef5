"""`computeproof serve`: the collector (computeproof.server) on uvicorn."""

from __future__ import annotations

import contextlib
import os
import signal
import socket
import sys

import click

from computeproof.cli import State, fail, main, pass_state, term


def parse_listen(text: str) -> tuple[str, int]:
    """``host:port`` (``[::1]:8443`` for IPv6) as (host, port)."""
    host, sep, port = text.rpartition(":")
    if not sep or not port.isdigit() or not 0 < int(port) < 65536 or not host:
        fail(f"listen address {text!r} is not HOST:PORT (e.g. 0.0.0.0:8443)")
    return host.strip("[]"), int(port)


@main.command()
@click.option("--listen", default=None, help="HOST:PORT (default: serve_listen in the config).")
@click.option("--tls-cert", default=None, help="Certificate chain, PEM (serve_tls_cert).")
@click.option("--tls-key", default=None, help="Its private key, PEM (serve_tls_key).")
@click.option(
    "--processes",
    type=click.IntRange(1, 64),
    default=1,
    show_default=True,
    help="Collector processes sharing the port (and the database).",
)
@click.option("--allow-root", is_flag=True, help="Run even as root (not recommended).")
@click.option(
    "--dashboard",
    "with_dashboard",
    is_flag=True,
    help="Serve the web dashboard too (/, /jobs/..., /analytics; docs/dashboard.md).",
)
@click.option(
    "--dashboard-token",
    envvar="COMPUTEPROOF_DASHBOARD_TOKEN",
    default=None,
    help="The dashboard's admin token (default: a new random one, printed at start).",
)
@click.option(
    "--identity-header",
    default=None,
    metavar="NAME",
    help="Dashboard: trust this header (e.g. X-Remote-User) for the user, from --proxy.",
)
@click.option(
    "--proxy",
    "proxies",
    multiple=True,
    metavar="ADDR",
    help="Dashboard: peer address of the trusted proxy (repeatable).",
)
@click.option("--admin-user", "admin_users", multiple=True, help="Dashboard: admin user names.")
@click.option("--log-level", type=click.Choice(["debug", "info", "warning", "error"]),
              default="info", show_default=True)  # fmt: skip
@pass_state
def serve(
    state: State,
    listen: str | None,
    tls_cert: str | None,
    tls_key: str | None,
    processes: int,
    allow_root: bool,
    with_dashboard: bool,
    dashboard_token: str | None,
    identity_header: str | None,
    proxies: tuple[str, ...],
    admin_users: tuple[str, ...],
    log_level: str,
) -> None:
    """Run the collector: signed events from every host's forwarder over HTTPS into the
    ledger, checkpoints, proofs, job queries and receipts (docs/design/collector.md)."""
    if os.geteuid() == 0 and not allow_root:
        fail(
            "refusing to run as root: run the collector as its own unprivileged user "
            "(conf/computeproof-serve.service), or pass --allow-root"
        )
    try:
        import uvicorn

        from computeproof.server.app import create_app
    except ImportError as e:
        fail(f"the collector needs the server extra: pip install 'computeproof[server]' ({e})")
    import logging
    import multiprocessing

    from computeproof.store.postgres import redact

    config = state.config
    host, port = parse_listen(listen or config.serve_listen)
    cert, key = tls_cert or config.serve_tls_cert, tls_key or config.serve_tls_key
    if bool(cert) != bool(key):
        fail("give both the TLS certificate and its key (serve_tls_cert, serve_tls_key)")
    for path in (cert, key):
        if path and not os.access(path, os.R_OK):
            fail(f"cannot read {path}: check the path and that this user may read it")
    # worker processes that check signatures start from a clean server process, never
    # forked from this one's threads (TLS and database locks would come along)
    multiprocessing.set_start_method("forkserver", force=True)
    logging.basicConfig(
        level=log_level.upper(), format="%(asctime)s %(name)s %(levelname)s %(message)s"
    )
    sock = socket.socket(socket.AF_INET6 if ":" in host else socket.AF_INET)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    try:
        sock.bind((host, port))
    except OSError as e:
        fail(f"cannot listen on {host}:{port}: {e.strerror}")
    sock.listen(2048)
    sock.set_inheritable(True)
    scheme = "https" if cert else "http"
    if not cert and host not in ("127.0.0.1", "::1", "localhost"):
        click.echo(
            "computeproof serve: warning: plain HTTP on a non-loopback address: events "
            "and private-field openings travel unencrypted (give serve_tls_cert)",
            err=True,
        )
    click.echo(
        f"computeproof serve: {scheme}://{term(host)}:{port}/ over {term(redact(config.db))}, "
        f"{processes} process{'es' if processes > 1 else ''}",
        err=True,
    )
    sys.stderr.flush()

    dashboard = None
    if with_dashboard:
        import secrets

        from computeproof.server.dashboard import DashboardSettings

        token = dashboard_token or secrets.token_urlsafe(24)
        dashboard = DashboardSettings(
            admin_token=token,
            identity_header=identity_header,
            trusted_proxies=proxies or ("127.0.0.1", "::1"),
            admin_users=admin_users,
            ratecard=config.ratecard or None,
            grants=config.grants or None,
            cookie_secure=bool(cert),
        )
        if not dashboard_token:
            click.echo(
                f"dashboard: sign in as admin at {scheme}://{term(host)}:{port}/login?token={token}",
                err=True,
            )

    def run_one() -> None:
        app = create_app(config, dashboard=dashboard)
        server = uvicorn.Server(
            uvicorn.Config(
                app,
                ssl_certfile=cert or None,
                ssl_keyfile=key or None,
                log_level=log_level,
                access_log=log_level == "debug",
                server_header=False,
                timeout_graceful_shutdown=10,
            )
        )
        server.run(sockets=[sock])

    if processes == 1:
        run_one()
        return
    children = []
    for _ in range(processes):
        pid = os.fork()
        if pid == 0:
            try:
                run_one()
            finally:
                os._exit(0)
        children.append(pid)

    def stop(signum: int, frame: object) -> None:
        for pid in children:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGTERM)

    signal.signal(signal.SIGTERM, stop)
    signal.signal(signal.SIGINT, stop)
    status = 0
    for pid in children:
        _, code = os.waitpid(pid, 0)
        status = status or os.waitstatus_to_exitcode(code)
    sys.exit(status)
