"""`computeproof receipt`: export a job's receipt bundle and verify one offline."""

from __future__ import annotations

import json
import sys

import click

from computeproof.cli import (
    EXIT_FAILED_CHECK,
    EXIT_UNTRUSTED,
    State,
    echo_json,
    fail,
    main,
    pass_state,
    read_input,
    term,
    trust_options,
)
from computeproof.ledger import open_ledger


@main.group()
def receipt() -> None:
    """Export and verify job receipts (offline)."""


@receipt.command("export")
@click.argument("job")
@click.option("-o", "--output", required=True, help="Receipt file to write ('-' for stdout).")
@click.option("--disclose", is_flag=True, help="Include private-field openings.")
@pass_state
def receipt_export(state: State, job: str, output: str, disclose: bool) -> None:
    """Write JOB's receipt bundle: envelopes, inclusion proofs, checkpoint, keys."""
    from computeproof.bundle import export_bundle

    with open_ledger(state.config) as ledger:
        bundle = export_bundle(ledger, job, disclose=disclose)
    text = json.dumps(bundle, indent=1, sort_keys=True) + "\n"
    job_info, entries = bundle["job"], bundle["entries"]
    assert isinstance(job_info, dict) and isinstance(entries, list)
    if output == "-":
        click.echo(text, nl=False)
        return
    try:
        with open(output, "w", encoding="utf-8") as f:
            f.write(text)
    except OSError as e:
        fail(f"cannot write {output}: {e.strerror}")
    click.echo(
        f"wrote receipt of job {term(job_info['job'])} ({len(entries)} events) to {term(output)}",
        err=True,
    )


@receipt.command("verify")
@click.argument("file", type=click.Path(dir_okay=False, allow_dash=True))
@trust_options
@click.option(
    "--check-anchors",
    "rpc_url",
    default=None,
    metavar="RPC_URL",
    help="Also look the receipt's anchors up on the chain behind this JSON-RPC node.",
)
@click.option("--json", "as_json", is_flag=True, help="Print JSON.")
@pass_state
def receipt_verify(
    state: State,
    file: str,
    ledger_key: str | None,
    witnesses: tuple[str, ...],
    quorum: int | None,
    rpc_url: str | None,
    as_json: bool,
) -> None:
    """Verify a receipt FILE with no database and no network (but the chain node with
    --check-anchors), against the trust roots (--ledger-key, trusted_ledger_keys,
    --witness). Exit 0 VALID, 1 INVALID, 3 UNTRUSTED (valid only under its own key)."""
    from computeproof.bundle import verify_bundle
    from computeproof.errors import BundleError
    from computeproof.trust import roots_from_options

    data = read_input(file, "receipt")
    config = state.config
    roots = roots_from_options(
        ledger_key, witnesses, quorum, config.trusted_ledger_keys, config.source
    )
    try:
        report = verify_bundle(data, roots=roots)
    except BundleError as e:
        if as_json:
            echo_json({"verdict": "INVALID", "valid": False, "reason": str(e)})
        else:
            click.echo(f"INVALID receipt {term(file)}: {term(e)}")
        sys.exit(EXIT_FAILED_CHECK)
    trust = report.trust
    assert trust is not None
    verdict = "VALID" if trust.trusted else "UNTRUSTED"
    untrusted = (
        f"UNTRUSTED: valid under the bundle's own ledger key {trust.ledger_key}, which no "
        "trust root vouches for; pin it with --ledger-key (or list it in trusted_ledger_keys, "
        "or give --witness keys)"
    )
    if rpc_url is not None:
        from computeproof.anchors.verify import verify_with_anchors
        from computeproof.cli.anchor import print_anchor_check

        ok, out = verify_with_anchors(data, None, rpc_url)  # the trust was judged above
        out.update({"verdict": verdict if ok else "INVALID", "trust": trust.to_json()})
        out["valid"] = ok and trust.trusted
        if ok and not as_json:
            click.echo(f"{verdict} receipt for job {term(out['job'])}, checkpoint of size "
                       f"{out['checkpoint_size']}; anchors:")  # fmt: skip
        print_anchor_check(file, ok, out, as_json)
        if not as_json:
            click.echo(trust.summary() if trust.trusted else untrusted)
        if not trust.trusted:
            sys.exit(EXIT_UNTRUSTED)
        return
    if as_json:
        echo_json(
            {
                "verdict": verdict,
                "valid": trust.trusted,
                "job": report.job_key,
                "events": len(report.events),
                "checkpoint_size": report.checkpoint_size,
                "lifecycle": report.lifecycle,
                "disclosed": report.disclosed,
                "anchors": report.anchors,
                "trust": trust.to_json(),
            }
        )
    elif trust.trusted:
        life = ", ".join(f"{k} x{v}" for k, v in sorted(report.lifecycle.items()))
        click.echo(
            f"VALID receipt for job {term(report.job)} ({term(report.job_key)}): "
            f"{len(report.events)} events ({term(life)}) included in checkpoint of size "
            f"{report.checkpoint_size}"
        )
        click.echo(term(trust.summary()))
    else:
        click.echo(untrusted)
    if not trust.trusted:
        sys.exit(EXIT_UNTRUSTED)
