"""`computeproof jobs`: list jobs with receipts, show one job's lifecycle."""

from __future__ import annotations

import csv
import io
import sys
from typing import Any

import click

from computeproof.cli import (
    EXIT_FAILED_CHECK,
    State,
    add_row,
    console,
    echo_json,
    main,
    pass_state,
    table,
    term,
)
from computeproof.jobview import (
    JOB_SORT_KEYS,
    JOB_STATES,
    event_detail,
    job_json,
    sort_jobs,
)
from computeproof.ledger import open_ledger
from computeproof.store.interface import JobFilter

LIST_COLUMNS = (
    "job_id", "cluster", "user", "account", "partition", "state", "gpus", "start", "end",
    "elapsed_s", "synthetic",
)  # fmt: skip


@main.group()
def jobs() -> None:
    """Query job receipts."""


@jobs.command("list")
@click.option("--user", "users", multiple=True, help="Only these users (repeatable).")
@click.option("--account", "accounts", multiple=True, help="Only these accounts.")
@click.option("--partition", "partitions", multiple=True, help="Only these partitions.")
@click.option(
    "--state",
    "states",
    multiple=True,
    type=click.Choice(JOB_STATES, case_sensitive=False),
    help="Only these final states (COMPLETED...).",
)
@click.option("--node", "nodes", multiple=True, help="Only jobs that ran on these nodes.")
@click.option("--gpu-model", "gpu_models", multiple=True, help="Only these GPU models.")
@click.option("--since", default=None, help="Jobs that ended at/after this date (or run).")
@click.option("--until", default=None, help="Jobs that started before this date.")
@click.option(
    "--sort", "sort_key", type=click.Choice(JOB_SORT_KEYS), default="start", show_default=True
)
@click.option("--reverse", is_flag=True, help="Sort descending.")
@click.option("--limit", type=click.IntRange(min=0), default=None, help="At most this many rows.")
@click.option("--json", "as_json", is_flag=True, help="Print JSON.")
@click.option("--csv", "as_csv", is_flag=True, help="Print CSV.")
@pass_state
def jobs_list(
    state: State,
    users: tuple[str, ...],
    accounts: tuple[str, ...],
    partitions: tuple[str, ...],
    states: tuple[str, ...],
    nodes: tuple[str, ...],
    gpu_models: tuple[str, ...],
    since: str | None,
    until: str | None,
    sort_key: str,
    reverse: bool,
    limit: int | None,
    as_json: bool,
    as_csv: bool,
) -> None:
    """List jobs with receipts (from the job index; `jobs show` verifies one job)."""
    from computeproof.reports.dates import parse_date_arg

    selection = JobFilter(
        users=users,
        accounts=accounts,
        partitions=partitions,
        states=tuple(s.upper() for s in states),
        nodes=nodes,
        gpu_models=gpu_models,
        since=parse_date_arg(since, "--since") if since else None,
        until=parse_date_arg(until, "--until") if until else None,
    )
    with open_ledger(state.config) as ledger:
        rows = [job_json(r) for r in ledger.jobs(selection)]
    sort_jobs(rows, sort_key, reverse)
    if limit is not None:
        rows = rows[:limit]
    if as_json:
        echo_json(rows)
        return
    if as_csv:
        buf = io.StringIO()
        writer = csv.DictWriter(
            buf,
            fieldnames=[*LIST_COLUMNS, "nodes", "gpu_model", "busy_gpu_hours", "energy_kwh"],
            extrasaction="ignore",
        )
        writer.writeheader()
        for r in rows:
            writer.writerow({**r, "nodes": ",".join(r["nodes"])})
        click.echo(buf.getvalue(), nl=False)
        return
    if not rows:
        click.echo("no jobs match")
        return
    tbl = table(*LIST_COLUMNS)
    for r in rows:
        add_row(tbl, [_cell(r[c]) for c in LIST_COLUMNS])
    console().print(tbl)


def _cell(value: object) -> object:
    if value is None or value is False:
        return ""
    return "yes" if value is True else value


@jobs.command("show")
@click.argument("job")
@click.option("--json", "as_json", is_flag=True, help="Print JSON.")
@pass_state
def jobs_show(state: State, job: str, as_json: bool) -> None:
    """Show JOB's lifecycle (one numbered line per event) from its verified receipt."""
    from computeproof.verifiedjob import job_view, view_json

    with open_ledger(state.config) as ledger:
        view = job_view(ledger, job)
    out = view_json(view)
    if as_json:
        echo_json(out)
    else:
        _print_job(out)
    if not view.verified or view.index_differences:
        sys.exit(EXIT_FAILED_CHECK)


def _print_job(out: dict[str, Any]) -> None:
    s, v = out["summary"], out["verification"]
    click.echo(
        f"job {term(out['job_id'])} on {term(out['cluster'])} (run {out['run']}): user "
        f"{term(s['user'])}, account {term(s['account'])}, state {term(s['state'])}, "
        f"{s['gpus'] if s['gpus'] is not None else '?'} GPUs"
        + ("" if v["ok"] else "  (from the job index: NOT verified)")
    )
    for i, e in enumerate(out["events"], 1):
        detail = term(event_detail(e["type"], e["payload"]))
        click.echo(
            f"{i:3d}. {term(e['time'])}  {e['type']:<11} {term(e['host']):<12} "
            f"leaf {e['leaf_index']:<8} {detail}"
        )
    if out["gpus"]:
        click.echo("GPUs (measured by the node agent):")
        for g in out["gpus"]:
            util = g["mean_utilization_percent"]
            mem = g["max_memory_bytes"]
            click.echo(
                f"     {term(g['node'])} minor {term(g['minor'])} {term(g['uuid'])} "
                f"{term(g['model'])}: busy {g['busy_gpu_hours']:.4f} GPU-h, mean util "
                f"{'?' if util is None else util}%, max mem "
                f"{'?' if not isinstance(mem, int) else round(mem / 2**30, 2)} GiB, energy "
                f"{g['energy_kwh']:.6f} kWh ({term(g['energy_method'])}), unmeasured "
                f"{term(g['unmeasured_ms'])} ms"
            )
    if v["ok"]:
        click.echo(
            f"receipt verified: signatures, inclusion proofs and checkpoint "
            f"{v['checkpoint_size']} OK; every figure above is from the verified events"
        )
    else:
        click.echo(f"receipt FAILED verification: {term(v['reason'])}")
    for n in v["notes"]:
        click.echo(f"note: {term(n)}")
    if v["index_differences"]:
        click.echo(
            "WARNING: the job index differs from the receipts ("
            + term("; ".join(v["index_differences"]))
            + "); run `computeproof ledger verify`"
        )
