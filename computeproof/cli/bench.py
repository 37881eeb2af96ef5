"""`computeproof bench`: benchmarks that print figures."""

from __future__ import annotations

import click

from computeproof.cli import echo_json, main


@main.group()
def bench() -> None:
    """Benchmarks that print figures."""


def _proof_sizes(ctx: click.Context, param: click.Parameter, value: str) -> list[int]:
    """--proof-sizes: leaf counts, each 1 or more; an empty value times no proofs."""
    if not value.strip():
        return []
    try:
        sizes = [int(s) for s in value.split(",")]
    except ValueError:
        sizes = [0]
    if min(sizes) < 1 or max(sizes) > 10**9:
        raise click.BadParameter(
            f"{value!r} is not a comma-separated list of leaf counts (each 1 to 10^9), "
            "e.g. 10000,1000000; an empty value times no proofs"
        )
    return sizes


@bench.command("ingest")
@click.option("--db", "db_path", required=True, help="SQLite file to create (must be new).")
@click.option(
    "--jobs", "n_jobs", type=click.IntRange(min=1, max=10**7), default=1000, show_default=True
)
@click.option(
    "--hosts", "n_hosts", type=click.IntRange(min=1, max=10**5), default=8, show_default=True
)
@click.option(
    "--proof-sizes",
    "sizes",
    default="10000,1000000",
    show_default=True,
    callback=_proof_sizes,
    help="Log sizes at which to time inclusion proofs (comma-separated; empty for none).",
)
@click.option("--json", "as_json", is_flag=True, help="Print JSON.")
def bench_ingest(db_path: str, n_jobs: int, n_hosts: int, sizes: list[int], as_json: bool) -> None:
    """Ingest N synthetic signed job lifecycles and print throughput figures."""
    from computeproof.throughput import run_ingest_bench

    def progress(msg: str) -> None:
        if not as_json:
            click.echo(msg, err=True)

    out = run_ingest_bench(db_path, n_jobs, n_hosts, sizes, progress)
    if as_json:
        echo_json(out)
    else:
        for k, v in out.items():
            click.echo(f"{k}: {v}")
