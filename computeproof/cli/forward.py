"""`computeproof forward` and `computeproof spool`: the forwarder and its local spool."""

from __future__ import annotations

import dataclasses
import sys
import time
from typing import Any

import click

from computeproof.cli import (
    EXIT_FAILED_CHECK,
    State,
    echo_json,
    main,
    pass_state,
    term,
    tty_progress,
)
from computeproof.config import Config
from computeproof.errors import ComputeProofError


@main.command()
@click.option(
    "--loop",
    "interval",
    type=click.FloatRange(min=0.01),
    default=None,
    help="Keep forwarding every INTERVAL seconds (default: one pass).",
)
@click.option(
    "--to",
    "url",
    default=None,
    help="Post to the collector at URL (https://host:8443; default: collector_url).",
)
@click.option("--ca", "ca_file", default=None, help="CA file for the collector (collector_ca).")
@click.option(
    "--replay-since",
    "replay_since",
    default=None,
    metavar="DATE",
    help="After restoring the ledger from a backup: send the events forwarded since DATE "
    "(UTC, YYYY-MM-DD[THH:MM[:SS]]) again, in log order; the ledger keeps each once.",
)
@click.option("--json", "as_json", is_flag=True, help="Print JSON.")
@pass_state
def forward(
    state: State,
    interval: float | None,
    url: str | None,
    ca_file: str | None,
    replay_since: str | None,
    as_json: bool,
) -> None:
    """Sign spooled events with the host key and append them to the ledger, or post them
    to the collector (--to, or collector_url in the config)."""
    from computeproof.forward import forward_configured

    config = state.config
    if url is not None or ca_file is not None:
        config = dataclasses.replace(
            config,
            collector_url=url if url is not None else config.collector_url,
            collector_ca=ca_file if ca_file is not None else config.collector_ca,
        )
        if not config.collector_url:
            raise click.UsageError("--ca needs a collector: --to URL or collector_url")
    if replay_since is not None:
        _replay(config, replay_since, as_json)
        return

    while True:
        # a backlog (the ledger was down for hours) takes a while: show how far, on a tty
        shown = tty_progress("forwarding:", "events", interval is None and not as_json)
        try:
            result = forward_configured(config, progress=shown)
        except ComputeProofError as err:
            if interval is None:
                raise
            # a loop outlives a ledger that is down for a while: say so, try again
            click.echo(f"computeproof: error: {term(err)}; retrying in {interval:g} s", err=True)
            time.sleep(interval)
            continue
        assert result is not None  # waited for the lock
        out = dataclasses.asdict(result)
        if as_json:
            echo_json(out)
        else:
            click.echo(
                f"forwarded {out['forwarded']}, duplicates {out['duplicates']}, "
                f"rejected {out['failed']}, waiting {out['remaining']}"
            )
            for e in out["errors"]:
                click.echo(f"  rejected: {term(e)}", err=True)
        if interval is None:
            return
        time.sleep(interval)


def _replay(config: Config, since_text: str, as_json: bool) -> None:
    """`forward --replay-since`: the library does the work; this prints it."""
    import datetime as dt

    from computeproof.forward import replay_configured
    from computeproof.reports.dates import parse_date

    since = parse_date(since_text, "--replay-since").replace(tzinfo=dt.UTC).timestamp()
    shown = tty_progress("replaying:", "events", not as_json)
    out = dataclasses.asdict(replay_configured(config, since, shown))
    if as_json:
        echo_json(out)
    else:
        click.echo(
            f"replayed {out['found']} events forwarded since {term(since_text)}: "
            f"{out['appended']} appended, {out['present']} already in the log, "
            f"{out['refused']} refused; the log has {out['size']} leaves"
        )
        for e in out["errors"]:
            click.echo(f"  refused: {term(e)}", err=True)
        click.echo(
            "the log extends the last checkpoint the ledger signed again"
            if out["rollback"] is None
            else f"still: {term(out['rollback'])}"
        )
    if out["rollback"] is not None or out["refused"]:
        sys.exit(EXIT_FAILED_CHECK)


@main.group()
def spool() -> None:
    """The local spool of events waiting to be forwarded."""


@spool.command("status")
@click.option("--json", "as_json", is_flag=True, help="Print JSON.")
@pass_state
def spool_status(state: State, as_json: bool) -> None:
    """How many events wait in the spool, how many were rejected, and why; hook failures
    counted in the spool and on the run directory (which still counts when the spool's
    disk is full)."""
    from computeproof.spool import Spool, read_failure_counter

    config = state.config
    sp = Spool(config.spool_dir)
    failures = sp.failures()
    in_spool, last_spool = read_failure_counter(sp.path)
    in_run_dir, last_run_dir = read_failure_counter(config.run_dir)
    out: dict[str, Any] = {
        "spool": sp.path,
        "waiting": sp.count_pending(),
        "kept_forwarded": sp.count_forwarded(),
        "failed": len(failures),
        "failures": [{"file": f, "reason": r} for f, r in failures],
        # the larger count: each hook failure is counted in both places when it can be
        "hook_failures": max(in_spool, in_run_dir),
        "hook_failures_spool": in_spool,
        "hook_failures_run_dir": in_run_dir,
        "last_hook_failure": last_run_dir or last_spool,
        "last_forward": sp.forward_status(),
    }
    if as_json:
        echo_json(out)
        return
    click.echo(
        f"spool {term(out['spool'])}: {out['waiting']} waiting to be forwarded, "
        f"{out['failed']} rejected, {out['hook_failures']} hook failures logged, "
        f"{out['kept_forwarded']} forwarded events kept for replay"
    )
    if in_run_dir > in_spool:
        click.echo(
            f"warning: {in_run_dir - in_spool} hook failures were counted only in "
            f"{term(config.run_dir)}: the spool could not be written (disk full?)"
        )
    if out["last_hook_failure"]:
        click.echo(f"last hook failure: {term(out['last_hook_failure'])}")
    if out["last_forward"]:
        click.echo(f"last forward: {term(out['last_forward'])}")
    for f in out["failures"][:20]:
        click.echo(f"  rejected {term(f['file'])}: {term(f['reason'])}")
    if len(out["failures"]) > 20:
        click.echo(f"  ... and {len(out['failures']) - 20} more (--json lists all)")


@spool.command("retry")
@pass_state
def spool_retry(state: State) -> None:
    """Move rejected events back to the spool for the next `computeproof forward`."""
    from computeproof.spool import Spool

    moved = Spool(state.config.spool_dir).retry_failed()
    click.echo(f"moved {moved} rejected events back to the spool")
