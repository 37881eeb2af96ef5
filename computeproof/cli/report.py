"""Commands over computeproof.reports: `report` and `report verify`."""

from __future__ import annotations

import os
import sys
from decimal import Decimal, InvalidOperation

import click

from computeproof.cli import (
    EXIT_FAILED_CHECK,
    EXIT_UNTRUSTED,
    State,
    echo_json,
    fail,
    main,
    pass_state,
    term,
    trust_options,
)
from computeproof.config import Config
from computeproof.errors import ReportError
from computeproof.ledger import open_ledger

FORMATS = ("csv", "json", "html", "pdf")
SITE_DIR = "/etc/computeproof"


def _site_file(config: Config, name: str) -> str | None:
    """``name`` beside the config file, else in /etc/computeproof, if it exists."""
    dirs = [os.path.dirname(config.source)] if config.source not in ("defaults", "") else []
    for d in [*dirs, SITE_DIR]:
        path = os.path.join(d, name)
        if os.path.exists(path):
            return path
    return None


def _split(values: tuple[str, ...]) -> tuple[str, ...]:
    return tuple(v.strip() for item in values for v in item.split(",") if v.strip())


@main.group("report", invoke_without_command=True)
@click.option("--from", "date_from", metavar="DATE", help="Period start (UTC, inclusive).")
@click.option(
    "--to",
    "date_to",
    metavar="DATE",
    help="Period end (UTC): a date or month includes that whole day or month.",
)
@click.option("--account", "accounts", multiple=True, help="Only these accounts (repeatable).")
@click.option("--user", "users", multiple=True, help="Only these users (repeatable).")
@click.option(
    "--grant",
    "grants",
    multiple=True,
    help="Only time billed to these grants ('(no grant)' for unbilled).",
)
@click.option(
    "--group-by",
    default="account",
    show_default=True,
    help="Comma-separated: account,user,partition,gpu_model,month,grant,pi.",
)
@click.option(
    "--format",
    "fmt",
    type=click.Choice(FORMATS),
    default=None,
    help="Output format (default: from the -o file extension, else json).",
)
@click.option("-o", "--output", default=None, help="File to write ('-': stdout, csv/json).")
@click.option(
    "--ratecard",
    default=None,
    help="Rate card TOML (default: ratecard.toml beside the config file).",
)
@click.option(
    "--grants",
    "grants_file",
    default=None,
    help="Grant map TOML (default: grants.toml beside the config file).",
)
@click.option(
    "--grid-intensity",
    default=None,
    metavar="G_PER_KWH",
    help="Grid carbon intensity in gCO2e/kWh (default: from the rate card).",
)
@click.option(
    "--check",
    type=click.Choice(("receipts", "sample")),
    default="receipts",
    show_default=True,
    help="Verify every counted receipt, or a random sample.",
)
@click.option(
    "--sample-size",
    type=click.IntRange(min=1, max=10**9),
    default=1000,
    show_default=True,
    help="Receipts checked with --check sample.",
)
@click.option(
    "--allow-unverified",
    is_flag=True,
    help="Produce the report even if the ledger fails its checks (marked UNVERIFIED).",
)
@click.option("--include-synthetic", is_flag=True, help="Count benchmark (synthetic) jobs.")
@click.pass_context
def report(
    ctx: click.Context,
    date_from: str | None,
    date_to: str | None,
    accounts: tuple[str, ...],
    users: tuple[str, ...],
    grants: tuple[str, ...],
    group_by: str,
    fmt: str | None,
    output: str | None,
    ratecard: str | None,
    grants_file: str | None,
    grid_intensity: str | None,
    check: str,
    sample_size: int,
    allow_unverified: bool,
    include_synthetic: bool,
) -> None:
    """Write a verifiable GPU usage report for a period (CSV, JSON, HTML or PDF)."""
    if ctx.invoked_subcommand is not None:
        return
    if not date_from or not date_to:
        fail("report needs --from DATE and --to DATE")
    if not output:
        fail("report needs -o FILE ('-' for stdout)")
    fmt = fmt or (os.path.splitext(output)[1].lstrip(".").lower() if output != "-" else "json")
    if fmt not in FORMATS:
        fail(f"cannot tell the format from {output!r}; pass --format {'|'.join(FORMATS)}")
    if output == "-" and fmt in ("html", "pdf"):
        fail(f"--format {fmt} needs -o FILE")
    state: State = ctx.find_object(State)  # type: ignore[assignment]

    from computeproof.reports.build import build_report
    from computeproof.reports.dates import parse_period
    from computeproof.reports.grants import load_grants, to_ms
    from computeproof.reports.ratecard import decimal_value, load_ratecard
    from computeproof.reports.usage import ReportParams

    lo, hi = parse_period(date_from, date_to)
    config = state.config
    card_path = ratecard or config.ratecard or _site_file(config, "ratecard.toml")
    grants_path = grants_file or config.grants or _site_file(config, "grants.toml")
    card = load_ratecard(card_path) if card_path else None
    gmap = load_grants(grants_path) if grants_path else None
    grid: Decimal | None = card.grid_intensity_g_per_kwh if card is not None else None
    if grid_intensity is not None:
        try:
            grid = decimal_value(Decimal(grid_intensity), "--grid-intensity")
        except InvalidOperation as e:
            raise ReportError(f"--grid-intensity {grid_intensity!r} is not a number") from e
    params = ReportParams(
        from_ms=to_ms(lo),
        to_ms=to_ms(hi),
        accounts=_split(accounts),
        users=_split(users),
        grants=_split(grants),
        group_by=_split((group_by,)) or ("account",),
        include_synthetic=include_synthetic,
        grid_intensity_g_per_kwh=grid,
        ratecard=card,
        grant_map=gmap,
    )
    if fmt == "pdf":
        from computeproof.reports.pdf import find_chromium

        find_chromium()  # fail before the work, not after
    with open_ledger(config) as ledger:
        doc = build_report(
            ledger,
            params,
            check=check,  # type: ignore[arg-type]
            allow_unverified=allow_unverified,
            sample_size=sample_size,
        )
    notes = doc["notes"]
    assert isinstance(notes, list)
    if card is None:
        notes.append("no rate card: cost not computed (--ratecard FILE)")
    if grid is None:
        notes.append("no grid intensity: CO2e not computed (--grid-intensity G)")
    if gmap is None:
        notes.append("no grant map: every job is reported under '(no grant)' (--grants FILE)")
    _write(doc, fmt, output)
    totals = doc["totals"]
    assert isinstance(totals, dict)
    if output != "-":
        click.echo(
            f"wrote {fmt} report: {totals['jobs']} jobs, "
            f"{totals['allocated_gpu_hours']} allocated GPU-hours -> {output}",
            err=True,
        )
    check_state = doc["ledger_check"]
    assert isinstance(check_state, dict)
    if not check_state["ok"]:
        click.echo(
            "warning: the ledger failed the report's checks; the report is marked UNVERIFIED",
            err=True,
        )


def _write(doc: dict[str, object], fmt: str, output: str) -> None:
    from computeproof.reports.render import render_csv, render_html, render_json

    if fmt == "pdf":
        from computeproof.reports.pdf import html_to_pdf

        html_to_pdf(render_html(doc, os.path.basename(output)), output)
        return
    text = (
        {"csv": render_csv, "json": render_json}[fmt](doc)
        if fmt != "html"
        else render_html(doc, os.path.basename(output))
    )
    if output == "-":
        click.echo(text, nl=False)
        return
    try:
        with open(output, "w", encoding="utf-8") as f:
            f.write(text)
    except OSError as e:
        raise ReportError(f"cannot write {output}: {e.strerror}") from e


@report.command("verify")
@click.argument("file", type=click.Path(dir_okay=False))
@trust_options
@click.option("--json", "as_json", is_flag=True, help="Print JSON.")
@pass_state
def report_verify(
    state: State,
    file: str,
    ledger_key: str | None,
    witnesses: tuple[str, ...],
    quorum: int | None,
    as_json: bool,
) -> None:
    """Recompute every figure of a JSON or HTML report from its receipts, against the trust
    roots (--ledger-key, trusted_ledger_keys, --witness). Exit 1 on mismatch, 3 when it
    matches but no trust root vouches for the ledger key."""
    from computeproof.reports.verify import load_report, verify_report
    from computeproof.trust import roots_from_options

    config = state.config
    roots = roots_from_options(
        ledger_key, witnesses, quorum, config.trusted_ledger_keys, config.source
    )
    doc = load_report(file)
    with open_ledger(config) as ledger:
        r = verify_report(ledger, doc, roots=roots)
    verdict = "VERIFIED" if r.ok and r.trusted else "UNTRUSTED" if r.ok else "MISMATCH"
    if as_json:
        echo_json(
            {
                "ok": r.ok and r.trusted,
                "verdict": verdict,
                "checked": r.checked,
                "problems": r.problems,
                "warnings": r.warnings,
                "trust": None if r.trust is None else r.trust.to_json(),
            }
        )
    else:
        key = r.trust.ledger_key if r.trust is not None else "?"
        text = {
            "VERIFIED": "VERIFIED: every figure matches its receipts",
            "MISMATCH": "DOES NOT MATCH its receipts",
            "UNTRUSTED": f"UNTRUSTED: every figure matches its receipts, under the ledger's own "
            f"key {key}, which no trust root vouches for; pin it with --ledger-key (or list "
            "it in trusted_ledger_keys, or give --witness keys)",
        }[verdict]
        click.echo(f"report {term(file)}: {text}")
        for c in r.checked:
            click.echo(f"  checked: {term(c)}")
        for w in r.warnings:
            click.echo(f"  warning: {term(w)}")
        for p in r.problems:
            click.echo(f"  problem: {term(p)}")
    if verdict == "MISMATCH":
        sys.exit(EXIT_FAILED_CHECK)
    if verdict == "UNTRUSTED":
        sys.exit(EXIT_UNTRUSTED)
