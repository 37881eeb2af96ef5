"""`computeproof keys`: host keys: create, enroll in the ledger, list, revoke."""

from __future__ import annotations

import contextlib
from typing import Any

import click

from computeproof.cli import State, add_row, console, echo_json, fail, main, pass_state, table
from computeproof.errors import ComputeProofError
from computeproof.keys import Signer, format_public_key, load_signer, write_key
from computeproof.ledger import open_ledger


@main.group()
def keys() -> None:
    """Host keys: create, enroll in the ledger, list, revoke."""


@keys.command("init")
@click.option("--out", default=None, help="Key file to write (default: host_key from config).")
@click.option("--force", is_flag=True, help="Replace an existing key file.")
@click.option(
    "--enroll",
    "enroll_hosts",
    multiple=True,
    metavar="HOST",
    help="Also enroll the new key in the ledger for HOST ('*' for any); repeatable.",
)
@click.option("--json", "as_json", is_flag=True, help="Print JSON.")
@pass_state
def keys_init(
    state: State, out: str | None, force: bool, enroll_hosts: tuple[str, ...], as_json: bool
) -> None:
    """Write a new Ed25519 host key (mode 0600) and print its public key."""
    path = out or state.config.host_key
    signer = Signer.generate()
    write_key(path, signer, overwrite=force)
    if enroll_hosts:
        with open_ledger(state.config, create=True) as ledger:
            ledger.enroll(signer.public_raw, enroll_hosts)
    info = {
        "path": path,
        "public_key": format_public_key(signer.public_raw),
        "key_id": signer.key_id,
        "enrolled_for": list(enroll_hosts),
    }
    if as_json:
        echo_json(info)
    else:
        click.echo(info["public_key"])
        click.echo(f"key id {info['key_id']} written to {path}", err=True)


@keys.command("enroll")
@click.argument("public_key")
@click.option(
    "--host",
    "hosts",
    multiple=True,
    required=True,
    help="Host (node) name this key signs for; '*' for any. Repeatable.",
)
@click.option(
    "--replace",
    is_flag=True,
    help="Replace the key's host list (default: add these hosts to it).",
)
@pass_state
def keys_enroll(state: State, public_key: str, hosts: tuple[str, ...], replace: bool) -> None:
    """Trust PUBLIC_KEY (ed25519:BASE64, or a key file path) for events from --host."""
    text = public_key
    if not text.startswith("ed25519:"):
        with contextlib.suppress(ComputeProofError):
            text = format_public_key(load_signer(public_key).public_raw)
    with open_ledger(state.config, create=True) as ledger:
        key = ledger.enroll(text, hosts, replace=replace)
    click.echo(f"enrolled key {key.key_id} for {', '.join(key.hosts)}")


@keys.command("list")
@click.option("--json", "as_json", is_flag=True, help="Print JSON.")
@pass_state
def keys_list(state: State, as_json: bool) -> None:
    """List enrolled host keys."""
    with open_ledger(state.config) as ledger:
        rows: list[dict[str, Any]] = [
            {
                "key_id": k.key_id,
                "public_key": format_public_key(k.public_raw),
                "hosts": list(k.hosts),
                "enrolled": k.enrolled,
                "revoked": k.revoked,
            }
            for k in ledger.store.enrolled().values()
        ]
    if as_json:
        echo_json(rows)
        return
    tbl = table("key id", "hosts", "enrolled", "revoked")
    for r in rows:
        add_row(
            tbl, [str(r["key_id"])[:16], ",".join(r["hosts"]), r["enrolled"], r["revoked"] or ""]
        )
    console().print(tbl)


@keys.command("revoke")
@click.argument("key_id")
@pass_state
def keys_revoke(state: State, key_id: str) -> None:
    """Refuse new events signed by KEY_ID (old ones still verify)."""
    from computeproof.event import utc_now

    with open_ledger(state.config) as ledger:
        matches = [k for k in ledger.store.enrolled() if k.startswith(key_id)]
        if len(matches) != 1:
            fail(f"key id {key_id!r} matches {len(matches)} enrolled keys; give more digits")
        ledger.store.revoke(matches[0], utc_now())
    click.echo(f"revoked {key_id}")
