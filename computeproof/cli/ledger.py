"""`computeproof ledger`: verify the log, sign checkpoints, prove consistency, upgrade
and back up the ledger."""

from __future__ import annotations

import json
import os
import sys
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
    tty_progress,
)
from computeproof.ledger import open_ledger


@main.group("ledger")
def ledger_group() -> None:
    """Verify the log, sign checkpoints, prove consistency."""


@ledger_group.command("verify")
@click.option(
    "--backup",
    is_flag=True,
    help="The file is a backup copy: being behind the ledger's last signed checkpoint is expected.",
)
@click.option("--json", "as_json", is_flag=True, help="Print JSON.")
@pass_state
def ledger_verify(state: State, backup: bool, as_json: bool) -> None:
    """Re-hash every leaf, re-check every signature, rebuild the tree, check checkpoints,
    the job index, and that the log extends the last checkpoint the ledger signed."""
    with open_ledger(state.config) as ledger:
        report = ledger.verify(tty_progress("verified", "leaves", not as_json), backup)
        warnings = report.warnings + ledger.store.warnings()
    out = {
        "ok": report.ok,
        "size": report.size,
        "signatures": report.signatures,
        "checkpoints": report.checkpoints,
        "first_bad_index": report.first_bad_index,
        "problems": report.problems,
        "notes": report.notes,
        "warnings": warnings,
    }
    if as_json:
        echo_json(out)
    elif report.ok:
        click.echo(
            f"ledger OK: {report.size} leaves, {report.signatures} signatures, "
            f"{report.checkpoints} checkpoints verified"
        )
    else:
        where = report.first_bad_index
        click.echo(
            "ledger FAILED verification"
            + ("" if where is None else f"; first bad leaf index {where}")
        )
        for p in report.problems:
            click.echo(f"  {term(p)}")
    if not as_json:
        for n in report.notes:
            click.echo(f"note: {term(n)}")
        for w in warnings:
            click.echo(f"warning: {term(w)}", err=True)
    if not report.ok:
        sys.exit(EXIT_FAILED_CHECK)


@ledger_group.command("reindex")
@click.option("--json", "as_json", is_flag=True, help="Print JSON.")
@pass_state
def ledger_reindex(state: State, as_json: bool) -> None:
    """Rebuild the job index from the verified receipts (after `ledger verify` found it
    differs); refused, unchanged, when the log itself fails verification."""
    with open_ledger(state.config) as ledger:
        report, fixed = ledger.reindex(tty_progress("verified", "leaves", not as_json))
    out = {
        "rebuilt": bool(fixed),
        "fixed": fixed,
        "log_ok": not report.bad_leaves,
        "problems": report.problems,
    }
    if as_json:
        echo_json(out)
    elif not out["log_ok"]:
        click.echo("the log itself FAILED verification; the job index was left as it is:")
        for p in report.problems:
            click.echo(f"  {term(p)}")
    elif fixed:
        click.echo(f"job index rebuilt from the receipts ({fixed} problems fixed)")
    else:
        click.echo("the job index already matches the receipts; nothing to do")
    if not out["log_ok"]:
        sys.exit(EXIT_FAILED_CHECK)


def _checkpoint_json(size: int, root: bytes, note: str) -> dict[str, Any]:
    import base64

    return {
        "size": size,
        "root": base64.b64encode(root).decode(),
        "root_hex": root.hex(),
        "note": note,
    }


@ledger_group.command("upgrade")
@click.option("--json", "as_json", is_flag=True, help="Print JSON.")
@pass_state
def ledger_upgrade(state: State, as_json: bool) -> None:
    """Bring the ledger file to this version's schema (one transaction; safe to rerun)."""
    with open_ledger(state.config) as ledger:
        before, after = ledger.store.upgrade(tty_progress("copied", "leaves", not as_json))
    out = {"db": state.config.db, "schema_before": before, "schema": after}
    if as_json:
        echo_json(out)
    elif before == after:
        click.echo(f"{term(state.config.db)}: schema {after} already; nothing to do")
    else:
        click.echo(
            f"{term(state.config.db)}: upgraded from schema {before} to {after} "
            "(the old leaf table's space is reused by new leaves; VACUUM returns it)"
        )


@ledger_group.command("backup")
@click.argument("dest", type=click.Path(dir_okay=False))
@click.option("--json", "as_json", is_flag=True, help="Print JSON.")
@pass_state
def ledger_backup(state: State, dest: str, as_json: bool) -> None:
    """Write a consistent copy of the live ledger to the new file DEST (0600)."""
    with open_ledger(state.config) as ledger:
        leaves = ledger.store.backup(dest)
    size = os.path.getsize(dest)
    out = {"db": state.config.db, "backup": dest, "leaves": leaves, "bytes": size}
    if as_json:
        echo_json(out)
    else:
        click.echo(
            f"wrote {term(dest)}: {leaves} leaves, {size / 2**20:.1f} MiB "
            f"(check it with `computeproof ledger verify --backup --db {term(dest)}`)"
        )


@ledger_group.command("checkpoint")
@click.option("--json", "as_json", is_flag=True, help="Print JSON.")
@pass_state
def ledger_checkpoint(state: State, as_json: bool) -> None:
    """Sign and print a checkpoint (C2SP signed note) of the log as it is now."""
    from computeproof.checkpoint import verifier_key
    from computeproof.keys import format_public_key

    with open_ledger(state.config) as ledger:
        cp = ledger.checkpoint()
        public = ledger.signer().public_raw
        cosigned_by = sorted(ledger.store.cosignatures(cp.size))
        origin = ledger.origin
    if as_json:
        echo_json(
            {
                **_checkpoint_json(cp.size, cp.root, cp.note),
                "ledger_key": format_public_key(public),  # for --ledger-key, trusted keys
                "verifier_key": verifier_key(origin, public),  # for `witness serve --log`
                "cosigned_by": cosigned_by,
            }
        )
    else:
        click.echo(cp.note, nl=False)


@ledger_group.command("consistency")
@click.argument("old_checkpoint_file", type=click.Path(dir_okay=False, allow_dash=True))
@click.option("--json", "as_json", is_flag=True, help="Print JSON.")
@pass_state
def ledger_consistency(state: State, old_checkpoint_file: str, as_json: bool) -> None:
    """Prove the current log extends OLD_CHECKPOINT_FILE (a note or `checkpoint --json`)."""
    import base64

    from computeproof.errors import CheckpointError, ProofError

    raw = read_input(old_checkpoint_file, "checkpoint file")
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError:
        fail(f"{old_checkpoint_file} is not a checkpoint: not UTF-8 text")
    if text.lstrip().startswith("{"):
        try:
            text = json.loads(text)["note"]
        except (ValueError, KeyError, TypeError, RecursionError):
            fail(f"{old_checkpoint_file}: JSON without a 'note' field")
        if not isinstance(text, str):
            fail(f"{old_checkpoint_file}: its 'note' field is not text")
    with open_ledger(state.config) as ledger:
        try:
            old, new, proof = ledger.prove_extends(text)
            out: dict[str, Any] = {
                "consistent": True,
                "old_size": old.size,
                "new_size": new.size,
                "proof": [base64.b64encode(h).decode() for h in proof],
            }
        except (CheckpointError, ProofError) as e:
            out = {"consistent": False, "reason": str(e)}
    if as_json:
        echo_json(out)
    elif out["consistent"]:
        click.echo(
            f"consistent: the log ({out['new_size']} leaves) extends checkpoint "
            f"{out['old_size']}; proof of {len(out['proof'])} hashes verified"
        )
    else:
        click.echo(f"NOT consistent: {term(out['reason'])}")
    if not out["consistent"]:
        sys.exit(EXIT_FAILED_CHECK)
