"""Commands over the receipts library: keys, ledger, jobs, receipts, forward, spool, bench."""

from __future__ import annotations

import contextlib
import csv
import io
import json
import os
import sys
from typing import Any

import click

from computeproof.cli import (
    EXIT_FAILED_CHECK,
    EXIT_UNTRUSTED,
    State,
    echo_json,
    fail,
    main,
    pass_state,
    run,
    trust_options,
    tty_progress,
)
from computeproof.errors import ComputeProofError
from computeproof.keys import (
    Signer,
    format_public_key,
    load_signer,
    write_key,
)
from computeproof.ledger import Ledger, open_ledger
from computeproof.store.interface import JobFilter, JobRow


def _console() -> Any:
    from rich.console import Console

    # piped output keeps whole values instead of rich's 80-column truncation
    return Console() if sys.stdout.isatty() else Console(width=250)


# -- keys --------------------------------------------------------------------------------


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

    def work() -> dict[str, Any]:
        path = out or state.config.host_key
        signer = Signer.generate()
        write_key(path, signer, overwrite=force)
        if enroll_hosts:
            with open_ledger(state.config, create=True) as ledger:
                ledger.enroll(signer.public_raw, enroll_hosts)
        return {
            "path": path,
            "public_key": format_public_key(signer.public_raw),
            "key_id": signer.key_id,
            "enrolled_for": list(enroll_hosts),
        }

    info = run(work)
    if as_json:
        echo_json(info)
    else:
        click.echo(info["public_key"])
        click.echo(f"key id {info['key_id']} written to {info['path']}", err=True)


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

    def work() -> tuple[str, tuple[str, ...]]:
        text = public_key
        if not text.startswith("ed25519:"):
            with contextlib.suppress(ComputeProofError):
                text = format_public_key(load_signer(public_key).public_raw)
        with open_ledger(state.config, create=True) as ledger:
            key = ledger.enroll(text, hosts, replace=replace)
            return key.key_id, key.hosts

    kid, enrolled_for = run(work)
    click.echo(f"enrolled key {kid} for {', '.join(enrolled_for)}")


@keys.command("list")
@click.option("--json", "as_json", is_flag=True, help="Print JSON.")
@pass_state
def keys_list(state: State, as_json: bool) -> None:
    """List enrolled host keys."""

    def work() -> list[dict[str, Any]]:
        with open_ledger(state.config) as ledger:
            return [
                {
                    "key_id": k.key_id,
                    "public_key": format_public_key(k.public_raw),
                    "hosts": list(k.hosts),
                    "enrolled": k.enrolled,
                    "revoked": k.revoked,
                }
                for k in ledger.store.enrolled().values()
            ]

    rows = run(work)
    if as_json:
        echo_json(rows)
        return
    from rich.table import Table

    table = Table("key id", "hosts", "enrolled", "revoked")
    for r in rows:
        table.add_row(
            str(r["key_id"])[:16],
            ",".join(r["hosts"]),
            str(r["enrolled"]),
            str(r["revoked"] or ""),
        )
    _console().print(table)


@keys.command("revoke")
@click.argument("key_id")
@pass_state
def keys_revoke(state: State, key_id: str) -> None:
    """Refuse new events signed by KEY_ID (old ones still verify)."""
    from computeproof.event import utc_now

    def work() -> bool:
        with open_ledger(state.config) as ledger:
            matches = [k for k in ledger.store.enrolled() if k.startswith(key_id)]
            if len(matches) != 1:
                fail(f"key id {key_id!r} matches {len(matches)} enrolled keys; give more digits")
            return ledger.store.revoke(matches[0], utc_now())

    run(work)
    click.echo(f"revoked {key_id}")


# -- ledger ------------------------------------------------------------------------------


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
    """Re-hash every leaf, re-check every signature, rebuild the tree, check checkpoints."""

    def work() -> dict[str, Any]:
        with open_ledger(state.config) as ledger:
            report = ledger.verify(tty_progress("verified", "leaves", not as_json), backup)
            return {
                "ok": report.ok,
                "size": report.size,
                "signatures": report.signatures,
                "checkpoints": report.checkpoints,
                "first_bad_index": report.first_bad_index,
                "problems": report.problems,
                "notes": report.notes,
                "warnings": report.warnings + _ledger_warnings(ledger),
            }

    out = run(work)
    if as_json:
        echo_json(out)
    elif out["ok"]:
        click.echo(
            f"ledger OK: {out['size']} leaves, {out['signatures']} signatures, "
            f"{out['checkpoints']} checkpoints verified"
        )
    else:
        click.echo(
            "ledger FAILED verification"
            + (
                f"; first bad leaf index {out['first_bad_index']}"
                if out["first_bad_index"] is not None
                else ""
            )
        )
        for p in out["problems"]:
            click.echo(f"  {p}")
    if not as_json:
        for n in out["notes"]:
            click.echo(f"note: {n}")
        for w in out["warnings"]:
            click.echo(f"warning: {w}", err=True)
    if not out["ok"]:
        sys.exit(EXIT_FAILED_CHECK)


def _ledger_warnings(ledger: Ledger) -> list[str]:
    """What is wrong around a sound ledger: a ledger file other users can read (it holds
    the openings of private fields; versions before 2026-11-26 created it 0644)."""
    from computeproof.store.sqlite import SQLiteStore, readable_by_others

    store = ledger.store
    if not isinstance(store, SQLiteStore) or (mode := readable_by_others(store.path)) is None:
        return []
    return [
        f"{store.path} is readable by other users (mode {mode:o}) and holds the "
        f"openings of private fields: chmod 600 {store.path}*"
    ]


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
    from computeproof.store.sqlite import SQLiteStore

    def work() -> dict[str, Any]:
        with open_ledger(state.config) as ledger:
            if not isinstance(ledger.store, SQLiteStore):
                fail(f"{state.config.db} is not a SQLite ledger; there is nothing to upgrade")
            before, after = ledger.store.upgrade(tty_progress("copied", "leaves", not as_json))
            return {"db": state.config.db, "schema_before": before, "schema": after}

    out = run(work)
    if as_json:
        echo_json(out)
    elif out["schema_before"] == out["schema"]:
        click.echo(f"{out['db']}: schema {out['schema']} already; nothing to do")
    else:
        click.echo(
            f"{out['db']}: upgraded from schema {out['schema_before']} to {out['schema']} "
            "(the old leaf table's space is reused by new leaves; VACUUM returns it)"
        )


@ledger_group.command("reindex")
@click.option("--json", "as_json", is_flag=True, help="Print JSON.")
@pass_state
def ledger_reindex(state: State, as_json: bool) -> None:
    """Rebuild the job index from the verified receipts (after `ledger verify` found it
    differs); refused, unchanged, when the log itself fails verification."""

    def work() -> dict[str, Any]:
        with open_ledger(state.config) as ledger:
            report, fixed = ledger.reindex(tty_progress("verified", "leaves", not as_json))
        return {
            "rebuilt": bool(fixed),
            "fixed": fixed,
            "log_ok": not report.bad_leaves,
            "problems": report.problems,
        }

    out = run(work)
    if as_json:
        echo_json(out)
    elif not out["log_ok"]:
        click.echo("the log itself FAILED verification; the job index was left as it is:")
        for p in out["problems"]:
            click.echo(f"  {p}")
    elif out["rebuilt"]:
        click.echo(f"job index rebuilt from the receipts ({out['fixed']} problems fixed)")
    else:
        click.echo("the job index already matches the receipts; nothing to do")
    if not out["log_ok"]:
        sys.exit(EXIT_FAILED_CHECK)


@ledger_group.command("backup")
@click.argument("dest", type=click.Path(dir_okay=False))
@click.option("--json", "as_json", is_flag=True, help="Print JSON.")
@pass_state
def ledger_backup(state: State, dest: str, as_json: bool) -> None:
    """Write a consistent copy of the live ledger to the new file DEST (0600)."""
    from computeproof.store.sqlite import SQLiteStore

    def work() -> dict[str, Any]:
        with open_ledger(state.config) as ledger:
            if not isinstance(ledger.store, SQLiteStore):
                fail(f"{state.config.db} is not a SQLite ledger; back it up with its server")
            ledger.store.backup(dest)
        copy = SQLiteStore(dest, create=False)
        try:
            leaves = copy.size()
        finally:
            copy.close()
        return {"db": state.config.db, "backup": dest, "leaves": leaves,
                "bytes": os.path.getsize(dest)}  # fmt: skip

    out = run(work)
    if as_json:
        echo_json(out)
    else:
        click.echo(
            f"wrote {out['backup']}: {out['leaves']} leaves, {out['bytes'] / 2**20:.1f} MiB "
            f"(check it with `computeproof ledger verify --backup --db {out['backup']}`)"
        )


@ledger_group.command("checkpoint")
@click.option("--json", "as_json", is_flag=True, help="Print JSON.")
@pass_state
def ledger_checkpoint(state: State, as_json: bool) -> None:
    """Sign and print a checkpoint (C2SP signed note) of the log as it is now."""

    def work() -> dict[str, Any]:
        from computeproof.checkpoint import verifier_key

        with open_ledger(state.config) as ledger:
            cp = ledger.checkpoint()
            public = ledger.signer().public_raw
            return {
                **_checkpoint_json(cp.size, cp.root, cp.note),
                "ledger_key": format_public_key(public),  # for --ledger-key, trusted keys
                "verifier_key": verifier_key(ledger.origin, public),  # for witness --log
                "cosigned_by": sorted(ledger.store.cosignatures(cp.size)),
            }

    out = run(work)
    if as_json:
        echo_json(out)
    else:
        click.echo(out["note"], nl=False)


@ledger_group.command("consistency")
@click.argument("old_checkpoint_file", type=click.Path(dir_okay=False))
@click.option("--json", "as_json", is_flag=True, help="Print JSON.")
@pass_state
def ledger_consistency(state: State, old_checkpoint_file: str, as_json: bool) -> None:
    """Prove the current log extends OLD_CHECKPOINT_FILE (a note or `checkpoint --json`)."""
    import base64

    from computeproof.errors import CheckpointError, ProofError

    def work() -> dict[str, Any]:
        try:
            with open(old_checkpoint_file, encoding="utf-8") as f:
                text = f.read()
        except OSError as e:
            fail(f"cannot read {old_checkpoint_file}: {e.strerror}")
        if text.lstrip().startswith("{"):
            try:
                text = json.loads(text)["note"]
            except (ValueError, KeyError, TypeError):
                fail(f"{old_checkpoint_file}: JSON without a 'note' field")
        with open_ledger(state.config) as ledger:
            try:
                old, new, proof = ledger.prove_extends(text)
            except (CheckpointError, ProofError) as e:
                return {"consistent": False, "reason": str(e)}
            return {
                "consistent": True,
                "old_size": old.size,
                "new_size": new.size,
                "proof": [base64.b64encode(h).decode() for h in proof],
            }

    out = run(work)
    if as_json:
        echo_json(out)
    elif out["consistent"]:
        click.echo(
            f"consistent: the log ({out['new_size']} leaves) extends checkpoint "
            f"{out['old_size']}; proof of {len(out['proof'])} hashes verified"
        )
    else:
        click.echo(f"NOT consistent: {out['reason']}")
    if not out["consistent"]:
        sys.exit(EXIT_FAILED_CHECK)


# -- jobs --------------------------------------------------------------------------------

JOB_SORT_KEYS = ("start", "end", "job", "user", "account", "gpus", "state", "elapsed")


def job_json(row: JobRow) -> dict[str, Any]:
    """A job index row as JSON for `jobs list --json`."""
    totals = row.fields.get("gpu_totals") or {}
    assert isinstance(totals, dict)
    return {
        "job_id": row.job,
        "slurm_job_id": row.job_id,
        "run": row.run,
        "cluster": row.cluster,
        "user": row.user,
        "account": row.account,
        "partition": row.partition,
        "state": row.state,
        "gpus": row.gpus,
        "gpu_model": row.gpu_model,
        "nodes": row.nodes.split(",") if row.nodes else [],
        "submit": row.submit,
        "start": row.start,
        "end": row.end,
        "elapsed_s": row.elapsed_s,
        "exit_code": row.exit_code,
        "events": row.events,
        "synthetic": row.synthetic,
        "busy_gpu_hours": (
            round(int(totals["busy_gpu_ms"]) / 3_600_000, 6) if "busy_gpu_ms" in totals else None
        ),
        "energy_kwh": (
            round(int(totals["energy_mj"]) / 3.6e9, 9) if "energy_mj" in totals else None
        ),
    }


@main.group()
def jobs() -> None:
    """Query job receipts."""


@jobs.command("list")
@click.option("--user", "users", multiple=True, help="Only these users (repeatable).")
@click.option("--account", "accounts", multiple=True, help="Only these accounts.")
@click.option("--partition", "partitions", multiple=True, help="Only these partitions.")
@click.option("--state", "states", multiple=True, help="Only these final states (COMPLETED...).")
@click.option("--node", "nodes", multiple=True, help="Only jobs that ran on these nodes.")
@click.option("--gpu-model", "gpu_models", multiple=True, help="Only these GPU models.")
@click.option("--since", default=None, help="Jobs that ended at/after this date (or run).")
@click.option("--until", default=None, help="Jobs that started before this date.")
@click.option(
    "--sort", "sort_key", type=click.Choice(JOB_SORT_KEYS), default="start", show_default=True
)
@click.option("--reverse", is_flag=True, help="Sort descending.")
@click.option("--limit", type=int, default=None, help="At most this many rows.")
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
    """List jobs with receipts."""
    from computeproof.reports.dates import parse_date_arg

    def work() -> list[dict[str, Any]]:
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
        field = (
            "elapsed_s" if sort_key == "elapsed" else "job_id" if sort_key == "job" else sort_key
        )
        rows.sort(
            key=lambda r: (
                r[field] is None,
                str(r[field]).zfill(20) if isinstance(r[field], int) else str(r[field] or ""),
            ),
            reverse=reverse,
        )
        return rows[:limit] if limit is not None else rows

    rows = run(work)
    if as_json:
        echo_json(rows)
        return
    columns = (
        "job_id",
        "cluster",
        "user",
        "account",
        "partition",
        "state",
        "gpus",
        "start",
        "end",
        "elapsed_s",
        "synthetic",
    )
    if as_csv:
        buf = io.StringIO()
        writer = csv.DictWriter(
            buf,
            fieldnames=[*columns, "nodes", "gpu_model", "busy_gpu_hours", "energy_kwh"],
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
    from rich.table import Table

    table = Table(*columns)
    for r in rows:
        table.add_row(
            *(
                ""
                if r[c] is None
                else "yes"
                if r[c] is True
                else ""
                if r[c] is False
                else str(r[c])
                for c in columns
            )
        )
    _console().print(table)


@jobs.command("show")
@click.argument("job")
@click.option("--json", "as_json", is_flag=True, help="Print JSON.")
@pass_state
def jobs_show(state: State, job: str, as_json: bool) -> None:
    """Show JOB's lifecycle (one numbered line per event) from its verified receipt."""
    from computeproof.verifiedjob import job_view

    def work() -> dict[str, Any]:
        with open_ledger(state.config) as ledger:
            view = job_view(ledger, job)
        return {
            "job_id": view.row.job,
            "cluster": view.row.cluster,
            "run": view.row.run,
            "summary": job_json(view.row),
            "gpus": gpu_figures([(None, e) for e in view.events]),
            "events": [
                {
                    "type": e["type"],
                    "time": e["time"],
                    "host": e["host"],
                    "leaf_index": e["leaf_index"],
                    "seq": e["seq"],
                    "payload": e["payload"],
                }
                for e in view.events
            ],
            "verification": {
                "ok": view.verified,
                "reason": view.reason,
                "checkpoint_size": view.checkpoint_size,
                "trust": None if view.trust is None else view.trust.to_json(),
                "index_differences": view.index_differences,
                "notes": view.notes,
            },
        }

    out = run(work)
    v = out["verification"]
    if as_json:
        echo_json(out)
    else:
        s = out["summary"]
        assert isinstance(s, dict)
        click.echo(
            f"job {out['job_id']} on {out['cluster']} (run {out['run']}): user "
            f"{s['user']}, account {s['account']}, state {s['state']}, "
            f"{s['gpus'] if s['gpus'] is not None else '?'} GPUs"
            + ("" if v["ok"] else "  (from the job index: NOT verified)")
        )
        for i, e in enumerate(out["events"], 1):
            detail = _event_detail(e["type"], e["payload"])
            click.echo(
                f"{i:3d}. {e['time']}  {e['type']:<11} {e['host']:<12} "
                f"leaf {e['leaf_index']:<8} {detail}"
            )
        if out["gpus"]:
            click.echo("GPUs (measured by the node agent):")
            for g in out["gpus"]:
                util = g["mean_utilization_percent"]
                mem = g["max_memory_bytes"]
                click.echo(
                    f"     {g['node']} minor {g['minor']} {g['uuid']} {g['model']}: "
                    f"busy {g['busy_gpu_hours']:.4f} GPU-h, mean util "
                    f"{'?' if util is None else util}%, max mem "
                    f"{'?' if mem is None else round(mem / 2**30, 2)} GiB, energy "
                    f"{g['energy_kwh']:.6f} kWh ({g['energy_method']}), unmeasured "
                    f"{g['unmeasured_ms']} ms"
                )
        if v["ok"]:
            click.echo(
                f"receipt verified: signatures, inclusion proofs and checkpoint "
                f"{v['checkpoint_size']} OK; every figure above is from the verified events"
            )
        else:
            click.echo(f"receipt FAILED verification: {v['reason']}")
        for n in v["notes"]:
            click.echo(f"note: {n}")
        if v["index_differences"]:
            click.echo(
                "WARNING: the job index differs from the receipts ("
                + "; ".join(v["index_differences"])
                + "); run `computeproof ledger verify`"
            )
    if not v["ok"] or v["index_differences"]:
        sys.exit(EXIT_FAILED_CHECK)


def gpu_figures(events: list[tuple[Any, dict[str, Any]]]) -> list[dict[str, Any]]:
    """Per-GPU figures from the job's node_done summaries (the agent's measurements)."""
    out = []
    for _, event in events:
        summary = event["payload"].get("gpu_summary") if event["type"] == "node_done" else None
        if not isinstance(summary, dict):
            continue
        for g in summary.get("gpus") or []:
            measured = g.get("measured_ms") or 0
            out.append(
                {
                    "node": event["host"],
                    "minor": g.get("minor"),
                    "uuid": g.get("uuid"),
                    "model": g.get("name"),
                    "busy_gpu_hours": round((g.get("busy_ms") or 0) / 3_600_000, 6),
                    "mean_utilization_percent": (
                        round(g.get("util_percent_ms", 0) / measured, 1) if measured else None
                    ),
                    "max_memory_bytes": g.get("max_memory_bytes"),
                    "energy_kwh": round((g.get("energy_mj") or 0) / 3.6e9, 9),
                    "energy_method": g.get("energy_method"),
                    "unmeasured_ms": g.get("unmeasured_ms"),
                }
            )
    return out


def _event_detail(etype: str, payload: dict[str, Any]) -> str:
    if etype == "started":
        gpus = payload.get("gpus") or []
        return f"GPUs {','.join(str(g.get('minor')) for g in gpus) or 'none'} (minor)"
    if etype in ("completed", "final_state"):
        # completed: the state Slurm showed then (older receipts: at the epilog)
        seen = payload.get("state_seen") or payload.get("state_at_epilog")
        state = payload.get("state") or f"{seen or '?'} (when seen)"
        reason = f" reason {payload['reason']}" if payload.get("reason") else ""
        return (
            f"state {state} exit {payload.get('exit_code', '?')}{reason} "
            f"elapsed {payload.get('elapsed_s', '?')}s GPUs {payload.get('gpus', '?')}"
        )
    if etype == "progress":
        bits = [f"{k}={payload[k]}" for k in ("percent", "epoch", "message") if k in payload]
        return " ".join(bits) or "GPU sample summary"
    if etype == "artifact":
        return "; ".join(
            f"{a.get('path')} sha256 {str(a.get('sha256'))[:16]}... {a.get('size')} bytes"
            for a in payload.get("artifacts") or []
        )
    if etype == "node_done":
        src = payload.get("gpu_summary_source", "?")
        return f"GPU summary from {src}"
    if etype == "scheduled":
        return f"partition {payload.get('partition', '?')} nodes {payload.get('nodes', '?')}"
    return ""


# -- receipts ----------------------------------------------------------------------------


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

    def work() -> dict[str, Any]:
        with open_ledger(state.config) as ledger:
            return export_bundle(ledger, job, disclose=disclose)

    bundle = run(work)
    text = json.dumps(bundle, indent=1, sort_keys=True) + "\n"
    if output == "-":
        click.echo(text, nl=False)
        return
    try:
        with open(output, "w", encoding="utf-8") as f:
            f.write(text)
    except OSError as e:
        fail(f"cannot write {output}: {e.strerror}")
    click.echo(
        f"wrote receipt of job {bundle['job']['job']} "
        f"({len(bundle['entries'])} events) to {output}",
        err=True,
    )


@receipt.command("verify")
@click.argument("file", type=click.Path(dir_okay=False, allow_dash=True))
@trust_options
@click.option("--json", "as_json", is_flag=True, help="Print JSON.")
@pass_state
def receipt_verify(
    state: State,
    file: str,
    ledger_key: str | None,
    witnesses: tuple[str, ...],
    quorum: int | None,
    as_json: bool,
) -> None:
    """Verify a receipt FILE with no database and no network, against the trust roots
    (--ledger-key, trusted_ledger_keys, --witness). Exit 0 VALID, 1 INVALID, 3 UNTRUSTED
    (valid only under its own ledger key)."""
    from computeproof.bundle import verify_bundle
    from computeproof.errors import BundleError
    from computeproof.trust import roots_from_options

    try:
        data = sys.stdin.buffer.read() if file == "-" else open(file, "rb").read()  # noqa: SIM115
    except OSError as e:
        fail(f"cannot read {file}: {e.strerror}")
    roots = run(
        lambda: roots_from_options(
            ledger_key,
            witnesses,
            quorum,
            state.config.trusted_ledger_keys,
            state.config.source,
        )
    )
    try:
        report = verify_bundle(data, roots=roots)
    except BundleError as e:
        if as_json:
            echo_json({"verdict": "INVALID", "valid": False, "reason": str(e)})
        else:
            click.echo(f"INVALID receipt {file}: {e}")
        sys.exit(EXIT_FAILED_CHECK)
    trust = report.trust
    assert trust is not None
    verdict = "VALID" if trust.trusted else "UNTRUSTED"
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
                "trust": trust.to_json(),
            }
        )
    elif trust.trusted:
        life = ", ".join(f"{k} x{v}" for k, v in sorted(report.lifecycle.items()))
        click.echo(
            f"VALID receipt for job {report.job} ({report.job_key}): {len(report.events)} events "
            f"({life}) included in checkpoint of size {report.checkpoint_size}"
        )
        click.echo(trust.summary())
    else:
        click.echo(
            f"UNTRUSTED: valid under the bundle's own ledger key {trust.ledger_key}, which no "
            "trust root vouches for; pin it with --ledger-key (or list it in "
            "trusted_ledger_keys, or give --witness keys)"
        )
    if not trust.trusted:
        sys.exit(EXIT_UNTRUSTED)


# -- spool and forwarder -----------------------------------------------------------------


@main.command()
@click.option(
    "--loop",
    "interval",
    type=float,
    default=None,
    help="Keep forwarding every INTERVAL seconds (default: one pass).",
)
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
def forward(state: State, interval: float | None, replay_since: str | None, as_json: bool) -> None:
    """Sign spooled events with the host key and append them to the ledger."""
    import dataclasses
    import time

    from computeproof.forward import forward_configured

    if replay_since is not None:
        _replay(state, replay_since, as_json)
        return

    def once() -> dict[str, Any]:
        # a backlog (the ledger was down for hours) takes a while: show how far, on a tty
        shown = tty_progress("forwarding:", "events", interval is None and not as_json)
        r = forward_configured(state.config, progress=shown)
        assert r is not None  # waited for the lock
        return dataclasses.asdict(r)

    while True:
        if interval is None:
            out = run(once)
        else:
            # a loop outlives a ledger that is down for a while: say so, try again
            try:
                out = once()
            except ComputeProofError as err:
                click.echo(f"computeproof: error: {err}; retrying in {interval:g} s", err=True)
                time.sleep(interval)
                continue
        if as_json:
            echo_json(out)
        else:
            click.echo(
                f"forwarded {out['forwarded']}, duplicates {out['duplicates']}, "
                f"rejected {out['failed']}, waiting {out['remaining']}"
            )
            for e in out["errors"]:
                click.echo(f"  rejected: {e}", err=True)
        if interval is None:
            return
        time.sleep(interval)


def _replay(state: State, since_text: str, as_json: bool) -> None:
    """`forward --replay-since`: the library does the work; this prints it."""
    import dataclasses
    import datetime as dt

    from computeproof.forward import replay_configured
    from computeproof.reports.dates import parse_date

    def work() -> dict[str, Any]:
        since = parse_date(since_text, "--replay-since").replace(tzinfo=dt.UTC).timestamp()
        shown = tty_progress("replaying:", "events", not as_json)
        return dataclasses.asdict(replay_configured(state.config, since, shown))

    out = run(work)
    if as_json:
        echo_json(out)
    else:
        click.echo(
            f"replayed {out['found']} events forwarded since {since_text}: {out['appended']} "
            f"appended, {out['present']} already in the log, {out['refused']} refused; "
            f"the log has {out['size']} leaves"
        )
        for e in out["errors"]:
            click.echo(f"  refused: {e}", err=True)
        click.echo(
            "the log extends the last checkpoint the ledger signed again"
            if out["rollback"] is None
            else f"still: {out['rollback']}"
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
    """How many events wait in the spool, how many were rejected, and why."""
    import os

    from computeproof.spool import Spool

    def work() -> dict[str, Any]:
        sp = Spool(state.config.spool_dir)
        failures = sp.failures()
        hook_failures = 0
        try:
            with open(os.path.join(sp.path, "hook-failures")) as f:
                hook_failures = int(f.read().strip() or 0)  # the hooks keep a counter
        except (OSError, ValueError):
            pass
        last_hook_failure = None
        try:  # the latest failure's line, kept by the hooks beside the counter
            with open(os.path.join(sp.path, "hook-failures.last")) as f:
                last_hook_failure = f.read().strip() or None
        except (OSError, UnicodeDecodeError):
            pass
        return {
            "spool": sp.path,
            "waiting": sp.count_pending(),
            "kept_forwarded": sp.count_forwarded(),
            "failed": len(failures),
            "failures": [{"file": f, "reason": r} for f, r in failures],
            "hook_failures": hook_failures,
            "last_hook_failure": last_hook_failure,
            "last_forward": sp.forward_status(),
        }

    out = run(work)
    if as_json:
        echo_json(out)
        return
    click.echo(
        f"spool {out['spool']}: {out['waiting']} waiting to be forwarded, "
        f"{out['failed']} rejected, {out['hook_failures']} hook failures logged, "
        f"{out['kept_forwarded']} forwarded events kept for replay"
    )
    if out["last_hook_failure"]:
        click.echo(f"last hook failure: {out['last_hook_failure']}")
    if out["last_forward"]:
        click.echo(f"last forward: {out['last_forward']}")
    for f in out["failures"][:20]:
        click.echo(f"  rejected {f['file']}: {f['reason']}")
    if len(out["failures"]) > 20:
        click.echo(f"  ... and {len(out['failures']) - 20} more (--json lists all)")


@spool.command("retry")
@pass_state
def spool_retry(state: State) -> None:
    """Move rejected events back to the spool for the next `computeproof forward`."""
    from computeproof.spool import Spool

    moved = run(lambda: Spool(state.config.spool_dir).retry_failed())
    click.echo(f"moved {moved} rejected events back to the spool")


# -- bench -------------------------------------------------------------------------------


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
    if min(sizes) < 1:
        raise click.BadParameter(
            f"{value!r} is not a comma-separated list of leaf counts (each 1 or more), "
            "e.g. 10000,1000000; an empty value times no proofs"
        )
    return sizes


@bench.command("ingest")
@click.option("--db", "db_path", required=True, help="SQLite file to create (must be new).")
@click.option("--jobs", "n_jobs", type=click.IntRange(min=1), default=1000, show_default=True)
@click.option("--hosts", "n_hosts", type=click.IntRange(min=1), default=8, show_default=True)
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

    out = run(lambda: run_ingest_bench(db_path, n_jobs, n_hosts, sizes, progress))
    if as_json:
        echo_json(out)
    else:
        for k, v in out.items():
            click.echo(f"{k}: {v}")
