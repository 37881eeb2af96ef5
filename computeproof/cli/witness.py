"""`computeproof witness`: run a witness (C2SP tlog-witness) and print the keys to set it up."""

from __future__ import annotations

import logging
import sys

import click

from computeproof.cli import State, main, pass_state


@main.group()
def witness() -> None:
    """Witnesses: cosign the ledger's checkpoints only while the log stays append-only."""


def _witness_name(name: str | None) -> str:
    import socket

    return name or f"{socket.gethostname()}/computeproof-witness"


@witness.command("serve")
@click.option("--key", "key_path", required=True, help="The witness's Ed25519 key file "
              "(created, 0600, if missing; back it up).")  # fmt: skip
@click.option("--state", "state_dir", required=True,
              help="Directory for the latest checkpoint of each log (kept durably).")  # fmt: skip
@click.option(
    "--log",
    "logs",
    multiple=True,
    required=True,
    metavar="VKEY",
    help="A log to witness: its verifier key (`computeproof witness log-key` on the "
    "ledger's host). Repeatable.",
)
@click.option(
    "--name", default=None, help="The witness's name (default: <hostname>/computeproof-witness)."
)
@click.option("--listen", default="127.0.0.1", show_default=True, help="Address to listen on.")
@click.option("--port", type=click.IntRange(0, 65535), default=7380, show_default=True,
              help="Port; 0 picks a free one (printed).")  # fmt: skip
@click.option("--prefix", default="", help="URL path prefix of the endpoints (e.g. /w1).")
def witness_serve(
    key_path: str,
    state_dir: str,
    logs: tuple[str, ...],
    name: str | None,
    listen: str,
    port: int,
    prefix: str,
) -> None:
    """Serve add-checkpoint over HTTP until interrupted; print the verifier key first."""
    from computeproof.keys import load_or_create_signer
    from computeproof.witness.server import WitnessHTTPServer
    from computeproof.witness.service import Witness, parse_logs
    from computeproof.witness.state import WitnessState

    known = parse_logs(logs)  # a bad --log creates nothing
    signer = load_or_create_signer(key_path)
    w = Witness(_witness_name(name), signer, known, WitnessState(state_dir))
    server = WitnessHTTPServer((listen, port), w, prefix)
    logging.basicConfig(level=logging.WARNING, format="computeproof-witness: %(message)s")
    click.echo(f"witness {server.witness.vkey}")
    click.echo(f"listening on {server.url} (logs: {', '.join(sorted(server.witness.logs))})")
    sys.stdout.flush()
    try:
        server.serve_forever()
    except KeyboardInterrupt:
        pass
    finally:
        server.server_close()


@witness.command("key")
@click.option("--key", "key_path", required=True, help="The witness's Ed25519 key file.")
@click.option("--name", default=None, help="The witness's name (as given to `witness serve`).")
def witness_key(key_path: str, name: str | None) -> None:
    """Print a witness's verifier key (for a ledger's `witnesses` and `--witness`)."""
    from computeproof.checkpoint import cosigner_verifier_key
    from computeproof.keys import load_signer

    signer = load_signer(key_path)
    click.echo(cosigner_verifier_key(_witness_name(name), signer.public_raw))


@witness.command("log-key")
@pass_state
def witness_log_key(state: State) -> None:
    """Print the configured ledger's verifier key (for `witness serve --log`)."""
    from computeproof.checkpoint import verifier_key
    from computeproof.ledger import open_ledger

    with open_ledger(state.config) as ledger:
        click.echo(verifier_key(ledger.origin, ledger.signer().public_raw))
