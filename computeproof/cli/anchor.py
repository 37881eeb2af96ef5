"""`computeproof anchor`: commit the ledger's latest checkpoint to a public registry, list
anchors, attach them to receipts, check them on chain, and run the local dev chain."""

from __future__ import annotations

import json
import os
import signal
import sys
import threading
from typing import Any

import click

from computeproof.cli import (
    EXIT_FAILED_CHECK,
    State,
    echo_json,
    fail,
    main,
    pass_state,
    read_input,
    term,
)
from computeproof.ledger import open_ledger


@main.group()
def anchor() -> None:
    """Anchor checkpoints on a public chain (ERC-7053 on any EVM chain, or Numbers)."""


def _print_record(record: Any, fresh: bool, as_json: bool) -> None:
    if as_json:
        echo_json({**record.to_json(), "id": record.id, "new": fresh})
        return
    reg = record.registry
    where = (
        f"chain {reg['chain_id']} transaction {reg['tx_hash']} (block {reg['block_number']}, "
        f"log {reg['log_index']})"
        if record.kind == "evm"
        else f"Numbers asset {term(reg['nid'])}"
        + (f", commit {reg['commit_tx']}" if "commit_tx" in reg else ", commit pending")
    )
    verb = "anchored" if fresh else "already anchored"
    click.echo(f"{verb} checkpoint {record.size} of {term(record.origin)}: {where}")


def _evm_anchorer(
    dev: str | None,
    rpc: str | None,
    contract: str | None,
    key: str | None,
    chain_id: int | None,
    asset_cid: str | None,
) -> Any:
    from computeproof.anchors.evm import EvmAnchorer, connect, load_account

    if dev:
        from computeproof.anchors.devchain import read_state

        info = read_state(dev)
        rpc, contract, key = rpc or info.rpc_url, contract or info.contract, key or info.key_file
        chain_id = chain_id or info.chain_id
    if not (rpc and contract and key):
        fail("give --rpc, --contract and --key (or --dev DIR for the local dev chain)")
    return EvmAnchorer(connect(rpc), contract, load_account(key), asset_cid, chain_id)


@anchor.command("evm")
@click.option("--rpc", default=None, help="JSON-RPC URL of the chain's node.")
@click.option("--contract", default=None, help="Address of the ERC-7053 registry.")
@click.option("--key", default=None, help="File with the hex private key that pays (0600).")
@click.option(
    "--chain-id", type=int, default=None, help="Refuse a node on another chain (Jade: 10507)."
)
@click.option("--asset-cid", default=None, help="assetCid to commit under (default: origin).")
@click.option(
    "--dev",
    "dev",
    default=None,
    metavar="DIR",
    help="Use the dev chain `anchor devchain --dir DIR` runs.",
)
@click.option("--force", is_flag=True, help="Anchor even if this checkpoint already is.")
@click.option("--json", "as_json", is_flag=True, help="Print JSON.")
@pass_state
def anchor_evm(
    state: State,
    rpc: str | None,
    contract: str | None,
    key: str | None,
    chain_id: int | None,
    asset_cid: str | None,
    dev: str | None,
    force: bool,
    as_json: bool,
) -> None:
    """Commit the latest checkpoint to an ERC-7053 registry on an EVM chain."""
    from computeproof.anchors import anchor_checkpoint

    anchorer = _evm_anchorer(dev, rpc, contract, key, chain_id, asset_cid)
    with open_ledger(state.config) as ledger:
        record, fresh = anchor_checkpoint(ledger, anchorer, force)
    _print_record(record, fresh, as_json)


def _capture_client(token: str | None, token_file: str | None, api: str, history: str) -> Any:
    from computeproof.anchors.numbers import CaptureClient

    if token_file:
        try:
            with open(token_file, encoding="utf-8") as f:
                token = f.read().strip()
        except OSError as e:
            fail(f"cannot read the Capture token file {term(token_file)}: {e.strerror}")
        except UnicodeDecodeError:
            fail(f"the Capture token file {term(token_file)} is not text")
    if not token:
        fail("no Capture token: set CAPTURE_TOKEN or give --capture-token-file")
    return CaptureClient(token, api, history)


def _capture_options(f: Any) -> Any:
    from computeproof.anchors.numbers import API_URL, HISTORY_URL

    for option in reversed(
        (
            click.option(
                "--capture-token",
                envvar="CAPTURE_TOKEN",
                default=None,
                show_envvar=True,
                help="Capture API token (better from the environment or a file).",
            ),
            click.option("--capture-token-file", default=None, help="File holding the token."),
            click.option("--api-url", default=API_URL, show_default=True, help="Capture API."),
            click.option("--history-url", default=HISTORY_URL, help="Commit history API."),
        )
    ):
        f = option(f)
    return f


@anchor.command("numbers")
@_capture_options
@click.option(
    "--scope",
    type=click.Choice(["log", "month", "day"]),
    default="log",
    show_default=True,
    help="One Numbers asset for the log, or one a month or a day.",
)
@click.option(
    "--commit-wait",
    type=float,
    default=60.0,
    show_default=True,
    help="Seconds to wait for the commit transaction to show in the history.",
)
@click.option("--force", is_flag=True, help="Anchor even if this checkpoint already is.")
@click.option("--json", "as_json", is_flag=True, help="Print JSON.")
@pass_state
def anchor_numbers(
    state: State,
    capture_token: str | None,
    capture_token_file: str | None,
    api_url: str,
    history_url: str,
    scope: str,
    commit_wait: float,
    force: bool,
    as_json: bool,
) -> None:
    """Commit the latest checkpoint to Numbers Mainnet through the Capture API
    (0.1 NUM + gas a checkpoint)."""
    from computeproof.anchors import anchor_checkpoint
    from computeproof.anchors.numbers import NumbersAnchorer

    client = _capture_client(capture_token, capture_token_file, api_url, history_url)
    try:
        anchorer = NumbersAnchorer(client, scope, commit_wait)
        with open_ledger(state.config) as ledger:
            record, fresh = anchor_checkpoint(ledger, anchorer, force)
    finally:
        client.close()
    _print_record(record, fresh, as_json)


@anchor.command("job")
@click.argument("job")
@_capture_options
@click.option("--json", "as_json", is_flag=True, help="Print JSON.")
@pass_state
def anchor_job(
    state: State,
    job: str,
    capture_token: str | None,
    capture_token_file: str | None,
    api_url: str,
    history_url: str,
    as_json: bool,
) -> None:
    """The seed's per-job mode: a Numbers asset for JOB and a commit per event
    (0.1 NUM + gas each)."""
    from computeproof.anchors.numbers import anchor_job_events

    client = _capture_client(capture_token, capture_token_file, api_url, history_url)
    try:
        with open_ledger(state.config) as ledger:
            records = anchor_job_events(ledger, client, job)
    finally:
        client.close()
    if as_json:
        echo_json([{**r.to_json(), "id": r.id} for r in records])
        return
    nid = records[0].registry["nid"] if records else None
    click.echo(
        f"committed {len(records)} events of job {term(job)}"
        + (f" to Numbers asset {term(nid)}" if nid else " (all were committed before)")
    )


@anchor.command("refresh")
@_capture_options
@click.option("--json", "as_json", is_flag=True, help="Print JSON.")
@pass_state
def anchor_refresh(
    state: State,
    capture_token: str | None,
    capture_token_file: str | None,
    api_url: str,
    history_url: str,
    as_json: bool,
) -> None:
    """Record the commit transactions of Numbers anchors the history now shows."""
    from computeproof.anchors.numbers import refresh_commits

    client = _capture_client(capture_token, capture_token_file, api_url, history_url)
    try:
        with open_ledger(state.config) as ledger:
            updated = refresh_commits(ledger, client)
    finally:
        client.close()
    if as_json:
        echo_json([{**r.to_json(), "id": r.id} for r in updated])
    else:
        click.echo(f"{len(updated)} Numbers anchors got their commit transaction")


@anchor.command("list")
@click.option("--json", "as_json", is_flag=True, help="Print JSON.")
@pass_state
def anchor_list(state: State, as_json: bool) -> None:
    """List the ledger's anchors, oldest checkpoint first."""
    from computeproof.anchors import anchors_of
    from computeproof.cli import add_row, console, table

    with open_ledger(state.config) as ledger:
        records = anchors_of(ledger)
    if as_json:
        echo_json([{**r.to_json(), "id": r.id} for r in records])
        return
    tbl = table("id", "kind", "size", "registry", "transaction", "anchored at")
    for r in records:
        reg = r.registry
        tx = reg.get("tx_hash") or reg.get("commit_tx") or "(pending)"
        where = reg.get("contract") or reg.get("nid") or ""
        add_row(tbl, [r.id, r.kind, r.size, where, tx, r.anchored_at])
    console().print(tbl)


@anchor.command("attach")
@click.argument("receipt", type=click.Path(dir_okay=False, allow_dash=True))
@click.option("-o", "--output", required=True, help="Receipt file to write ('-' for stdout).")
@pass_state
def anchor_attach(state: State, receipt: str, output: str) -> None:
    """Add to a RECEIPT exported earlier the anchors of its checkpoint or later ones,
    with the consistency proofs that reach them."""
    from computeproof.anchors.receipts import attach_anchors

    try:
        bundle = json.loads(read_input(receipt, "receipt"))
    except ValueError:
        fail(f"{receipt} is not a receipt (not JSON)")
    if not isinstance(bundle, dict):
        fail(f"{receipt} is not a receipt")
    with open_ledger(state.config) as ledger:
        count = attach_anchors(ledger, bundle)
    text = json.dumps(bundle, indent=1, sort_keys=True) + "\n"
    if output == "-":
        click.echo(text, nl=False)
    else:
        try:
            with open(output, "w", encoding="utf-8") as f:
                f.write(text)
        except OSError as e:
            fail(f"cannot write {output}: {e.strerror}")
    click.echo(f"the receipt carries {count} anchors", err=True)


@anchor.command("check")
@click.argument("receipt", type=click.Path(dir_okay=False, allow_dash=True))
@click.option("--rpc", required=True, help="JSON-RPC URL of the chain the anchors are on.")
@click.option("--json", "as_json", is_flag=True, help="Print JSON.")
def anchor_check(receipt: str, rpc: str, as_json: bool) -> None:
    """Verify RECEIPT and look its anchors up on chain (as `receipt verify
    --check-anchors`). Exit 0 confirmed, 1 not."""
    from computeproof.anchors.verify import verify_with_anchors

    ok, out = verify_with_anchors(read_input(receipt, "receipt"), None, rpc)
    print_anchor_check(receipt, ok, out, as_json)


def print_anchor_check(receipt: str, ok: bool, out: dict[str, Any], as_json: bool) -> None:
    """Print the outcome of :func:`verify_with_anchors`; exit 1 if it failed."""
    if as_json:
        echo_json(out)
    elif not ok:
        click.echo(f"INVALID receipt {term(receipt)}: {term(out['reason'])}")
    else:
        for c in out["anchors_on_chain"]:
            mark = "confirmed" if c["checked"] else "skipped"
            extra = f", {c['confirmations']} confirmations" if c["checked"] else ""
            click.echo(f"{mark}: {c['kind']} anchor of checkpoint {c['size']}: "
                       f"{term(c['detail'])}{extra}")  # fmt: skip
    if not ok:
        sys.exit(EXIT_FAILED_CHECK)


@anchor.command("devchain")
@click.option("--dir", "directory", required=True, help="Directory for devchain.json and its key.")
@click.option("--port", type=int, default=8545, show_default=True, help="Port on 127.0.0.1.")
@click.option(
    "--chain-id", type=int, default=None, help="Chain id (default: a new random one a run)."
)
@click.option(
    "--exit-after", type=float, default=0.0, help="Stop after this many seconds (0: on a signal)."
)
def anchor_devchain(directory: str, port: int, chain_id: int | None, exit_after: float) -> None:
    """Serve a local EVM (py-evm) over JSON-RPC on 127.0.0.1 with an ERC-7053 registry
    deployed and a funded key, for the demo and tests. Its state is in memory: anchors
    made on it verify only while it runs."""
    from computeproof.anchors.devchain import STATE_FILE, DevChain, write_state

    os.makedirs(directory, mode=0o700, exist_ok=True)
    key_file = os.path.join(directory, "chain.key")
    for stale in (key_file, os.path.join(directory, STATE_FILE)):
        if os.path.exists(stale):  # a previous run's: its chain is gone with its process
            os.unlink(stale)
    chain = DevChain(key_file, port, chain_id)
    stop = threading.Event()
    for signum in (signal.SIGTERM, signal.SIGINT):
        signal.signal(signum, lambda *_: stop.set())
    info = chain.start()
    try:
        path = write_state(directory, info)
        click.echo(
            f"dev chain {info.chain_id} at {info.rpc_url}: registry {info.contract}, key "
            f"{info.key_file}; state in {path}",
            err=True,
        )
        stop.wait(exit_after or None)
    finally:
        chain.stop()
        if os.path.exists(os.path.join(directory, STATE_FILE)):
            os.unlink(os.path.join(directory, STATE_FILE))
