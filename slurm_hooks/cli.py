"""The `computeproof` command with the Slurm side's commands added: ``agent
run|sample|summary``, ``gpus``, ``reconcile`` and, inside a job, ``progress`` and
``artifact``, which talk to the node agent's socket.

computeproof.cli holds the receipt library's commands and never imports this package;
the console script is this module's ``main``, the same click group with these added.
"""

from __future__ import annotations

import contextlib
import logging
import os
import signal
import sys
import threading
from typing import Any

import click

from computeproof.cli import (
    EXIT_FAILED_CHECK,
    State,
    accept_global_flags,
    add_row,
    console,
    echo_json,
    main,
    pass_state,
    table,
    term,
)
from computeproof.errors import AgentError, ReportError
from computeproof.ledger import open_ledger

__all__ = ["main"]  # the console script: computeproof.cli's group with the commands below

_NODE = click.option(
    "--node",
    envvar="SLURMD_NODENAME",
    default=None,
    help="Slurm node name (default: $SLURMD_NODENAME, then the host name).",
)


@main.group()
def agent() -> None:
    """The per-node GPU agent."""


@agent.command("run")
@_NODE
@pass_state
def agent_run(state: State, node: str | None) -> None:
    """Run the agent in the foreground until SIGTERM or SIGINT."""
    from slurm_hooks.agent.daemon import Agent
    from slurm_hooks.agent.server import AgentServer

    config = state.config
    node = node or config.host
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(message)s")

    from slurm_hooks.agent.metrics import exporter_for

    raise_fd_limit()
    the_agent = Agent(config, node)
    the_agent.refresh()
    exporter = exporter_for(the_agent)
    server = AgentServer(config.agent_socket_path(node), the_agent)
    stop = threading.Event()
    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, lambda *_: stop.set())
    server.start()
    logging.getLogger("computeproof.agent").info(
        "agent for node %s listening on %s", node, server.path
    )
    try:
        the_agent.run(stop)
    finally:
        server.stop()
        if exporter is not None:
            exporter.close()


def raise_fd_limit(ceiling: int = 65536) -> None:
    """Raise the soft descriptor limit to the hard one (at most ``ceiling``): the socket's
    caps bound what callers can hold, and headroom keeps bindings readable meanwhile."""
    import resource

    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    target = ceiling if hard == resource.RLIM_INFINITY else min(hard, ceiling)
    if soft != resource.RLIM_INFINITY and soft < target:
        with contextlib.suppress(ValueError, OSError):
            resource.setrlimit(resource.RLIMIT_NOFILE, (target, hard))


@agent.command("sample")
@_NODE
@click.option("--once", is_flag=True, default=True, help="One pass (the default and only mode).")
@click.option("--json", "as_json", is_flag=True, help="Print JSON.")
@pass_state
def agent_sample(state: State, node: str | None, once: bool, as_json: bool) -> None:
    """One NVML sampling pass with job attribution, printed."""
    from slurm_hooks.agent.daemon import inspect

    config = state.config
    result = inspect(config, node or config.host)
    if as_json:
        echo_json(result)
        return
    if result["error"]:
        click.echo(f"no reading: {term(result['error'])}")
    gpu_rows: list[dict[str, Any]] = result["gpus"]  # type: ignore[assignment]
    for g in gpu_rows:
        r = g["reading"] or {}
        click.echo(
            f"gpu {g['index']} minor {g['minor']} jobs {g['job_ids'] or '-'} "
            f"util {r.get('utilization')}% mem {r.get('memory_used')} B "
            f"power {r.get('power_mw')} mW energy {r.get('energy_mj')} mJ"
        )


@agent.command("summary")
@_NODE
@click.argument("job_id", type=int)
@click.option("--json", "as_json", is_flag=True, help="Print the whole summary as JSON.")
@pass_state
def agent_summary(state: State, node: str | None, job_id: int, as_json: bool) -> None:
    """Print a job's node summary (from the agent, else its persisted state)."""
    from slurm_hooks.agent.client import node_summary

    config = state.config
    node = node or config.host

    summary = node_summary(config, node, job_id)
    if summary is None:
        raise AgentError(f"no summary for job {job_id} on node {node}")
    if as_json:
        echo_json(summary)
        return
    for line in summary_lines(summary):
        click.echo(term(line))


def _seconds(ms: object) -> str:
    return f"{int(ms) / 1000:g} s" if isinstance(ms, int) else "?"


def _figures(d: dict[str, Any]) -> str:
    energy = d.get("energy_mj")
    memory = d.get("max_memory_bytes")
    return (
        f"{d.get('samples', 0)} samples, measured {_seconds(d.get('measured_ms'))}, "
        f"unmeasured {_seconds(d.get('unmeasured_ms'))}, busy {_seconds(d.get('busy_ms'))}, "
        f"utilization-weighted {_seconds(d.get('util_weighted_ms'))}, energy "
        + (f"{energy / 1e6:g} kJ" if isinstance(energy, int) else "?")
        + (f" ({d['energy_method']})" if d.get("energy_method") else "")
        + ", max memory "
        + (f"{memory / 2**30:.2f} GiB" if isinstance(memory, int) else "?")
    )


def summary_lines(summary: dict[str, Any]) -> list[str]:
    """A job's node summary for a terminal: totals, then one line per GPU."""
    totals = summary.get("totals") or {}
    lines = [
        f"job {summary.get('job')} (run {summary.get('run')}) on {summary.get('node')}: "
        + _figures(totals)
    ]
    extra = [f"{totals[k]} {k.replace('_', ' ')}" for k in ("foreign_processes", "xids")
             if totals.get(k)]  # fmt: skip
    if extra:
        lines.append("  " + ", ".join(extra))
    for g in summary.get("gpus") or ():
        lines.append(
            f"  GPU {g.get('slurm_index')} (minor {g.get('minor')}, "
            f"{g.get('uuid') or 'no UUID'}): {_figures(g)}"
        )
    return lines


@main.command("gpus")
@_NODE
@click.option("--json", "as_json", is_flag=True, help="Print JSON.")
@pass_state
def gpus(state: State, node: str | None, as_json: bool) -> None:
    """The node's GPUs and which job holds each."""
    from slurm_hooks.agent.daemon import inspect

    config = state.config

    result = inspect(config, node or config.host)
    if result["error"] and not result["gpus"]:
        raise AgentError(str(result["error"]))
    keys = ("index", "minor", "uuid", "name", "pci_bus_id", "memory_total")
    gpu_rows: list[dict[str, Any]] = result["gpus"]  # type: ignore[assignment]
    rows = [{**{k: g[k] for k in keys}, "job_id": (g["job_ids"] or [None])[0]} for g in gpu_rows]
    if as_json:
        echo_json(rows)
        return
    tbl = table("index", "minor", "name", "uuid", "pci bus id", "memory", "job")
    for g in rows:
        memory = g["memory_total"]
        add_row(
            tbl,
            [
                g["index"],
                g["minor"],
                g["name"],
                g["uuid"],
                g["pci_bus_id"],
                f"{memory // 2**20} MiB" if isinstance(memory, int) else "?",
                "-" if g["job_id"] is None else g["job_id"],
            ],
        )
    console().print(tbl)


def _epoch(value: str | None) -> tuple[int | None, int | None]:
    if value is None:
        return None, None
    done, _, total = value.partition("/")
    try:
        return int(done), (int(total) if total else None)
    except ValueError as e:
        raise click.BadParameter("use N or N/TOTAL, e.g. 15/30", param_hint="--epoch") from e


@main.command("progress")
@_NODE
@click.option("--percent", type=click.IntRange(0, 100), default=None, help="Percent done.")
@click.option("--epoch", default=None, help="Epoch reached, N or N/TOTAL.")
@click.option("--message", default=None, help="A short note.")
@click.option("--json", "as_json", is_flag=True, help="Print the recorded event as JSON.")
@pass_state
def progress(
    state: State,
    node: str | None,
    percent: int | None,
    epoch: str | None,
    message: str | None,
    as_json: bool,
) -> None:
    """Record the job's progress (run inside the job)."""
    from slurm_hooks.agent.client import record_progress

    config = state.config
    done, total = _epoch(epoch)
    path = config.agent_socket_path(node or config.host)
    event = record_progress(path, percent, done, total, message)
    if as_json:
        echo_json(event)
    else:
        click.echo(f"recorded progress (seq {event['seq']})")


@main.command("artifact")
@_NODE
@click.argument("paths", nargs=-1, required=True, type=click.Path(dir_okay=False))
@click.option("--json", "as_json", is_flag=True, help="Print the recorded event as JSON.")
@pass_state
def artifact(state: State, node: str | None, paths: tuple[str, ...], as_json: bool) -> None:
    """Record output files' SHA-256 and size (run inside the job)."""
    from slurm_hooks.agent.client import record_artifacts

    config = state.config
    path = config.agent_socket_path(node or config.host)
    event = record_artifacts(path, paths)
    if as_json:
        echo_json(event)
        return
    payload: dict[str, Any] = event["payload"]  # type: ignore[assignment]
    for a in payload["artifacts"]:
        click.echo(f"{term(a['sha256'])}  {term(a['size'])}  {term(a['path'])}")


@main.command("reconcile")
@click.option("--since", required=True, metavar="DATE", help="Compare jobs since this date.")
@click.option("--until", default=None, metavar="DATE", help="Up to this date (default: now).")
@click.option("--json", "as_json", is_flag=True, help="Print JSON.")
@pass_state
def reconcile_cmd(state: State, since: str, until: str | None, as_json: bool) -> None:
    """Compare Slurm accounting (GPU jobs) with the ledger. Exit 1 if anything differs."""
    import time

    from computeproof.reports.dates import parse_date, parse_date_arg
    from computeproof.reports.grants import to_ms
    from slurm_hooks.reconcile import reconcile, slurm_accounting

    lo = to_ms(parse_date(since, "--since")) // 1000
    hi = to_ms(parse_date(until, "--until")) // 1000 if until else int(time.time())
    if hi <= lo:
        raise ReportError(f"--since {since} is not before --until {until or 'now'}")
    config = state.config
    records = slurm_accounting(config, lo, hi)
    with open_ledger(config) as ledger:
        out = reconcile(ledger, config.cluster, records, parse_date_arg(since, "--since")).to_json()
    if as_json:
        echo_json(out)
    else:
        click.echo(
            f"Slurm accounted {out['slurm_gpu_jobs']} GPU jobs; the ledger has receipts "
            f"of {out['ledger_jobs']} jobs since {term(since)}"
        )
        labels = (
            ("missing", "no receipts"),
            ("incomplete", "incomplete receipts"),
            ("unknown_to_slurm", "receipts Slurm does not know"),
            ("mismatched", "GPU count or elapsed time differ"),
        )
        for key, label in labels:
            items = out[key]
            assert isinstance(items, list)
            for item in items:
                extra = item.get("missing_events") or item.get("problems") or ""
                click.echo(
                    f"  {label}: job {term(item['job'])} {term(item.get('state') or '')} "
                    f"{term(', '.join(extra)) if extra else ''}".rstrip()
                )
        click.echo("reconciled: OK" if out["ok"] else "reconciled: DIFFERENCES FOUND")
    if not out["ok"]:
        sys.exit(EXIT_FAILED_CHECK)


# --------------------------------------------------------------------------------------
# The controller's collector (slurm_hooks/controller.py): scheduled, completed and
# final_state for every job. Kept apart from the agent's commands above.


@main.group("controller")
def controller_group() -> None:
    """The controller's collector (run it on the slurmctld host)."""


@controller_group.command("run")
@click.option(
    "--interval",
    type=click.FloatRange(min=0.05),
    default=None,
    metavar="SECONDS",
    help="Seconds between polls (default: controller_poll_interval, 1).",
)
@click.option(
    "--since",
    default=None,
    metavar="DATE",
    help="On the first start, also record the jobs that ended since DATE (from accounting).",
)
@click.option("--once", is_flag=True, help="Poll once (every batched read due), then exit.")
@pass_state
def controller_run(state: State, interval: float | None, since: str | None, once: bool) -> None:
    """Write scheduled, completed and final_state for every job, polling Slurm until
    SIGTERM or SIGINT."""
    from slurm_hooks.backend import job_info
    from slurm_hooks.controller import Collector, lock

    config = state.config
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(message)s")
    held = lock(config)
    try:
        collector = Collector(config, job_info(config))
        if since is not None and collector.state.cursor is None:
            from computeproof.reports.dates import parse_date
            from computeproof.reports.grants import to_ms

            collector.state.cursor = to_ms(parse_date(since, "--since")) // 1000
        if once:
            collector.detail_interval = collector.accounting_interval = 0.0
            collector.poll()
            click.echo(f"{collector.written} events written")
            return
        stop = threading.Event()
        for sig in (signal.SIGTERM, signal.SIGINT):
            signal.signal(sig, lambda *_: stop.set())
        every = interval if interval is not None else max(1, config.controller_poll_interval)
        logging.getLogger("computeproof.controller").info(
            "collector for cluster %s polling every %g s (spool %s)",
            config.cluster,
            every,
            config.spool_dir,
        )
        wrote = threading.Event()
        if config.forward_interval > 0:
            from slurm_hooks.controller import forward_loop

            threading.Thread(
                target=forward_loop, args=(config, stop, wrote), name="forwarding", daemon=True
            ).start()
        collector.run(stop, every, wrote)
        wrote.set()  # the forwarder sees stop
    finally:
        os.close(held)


accept_global_flags(main)

if __name__ == "__main__":
    main()
