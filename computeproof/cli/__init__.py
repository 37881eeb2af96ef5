"""The `computeproof` command line: thin click commands over the library.

One module a command group (keys, ledger, jobs, receipt, forward + spool, report, bench);
each registers its commands on ``main``, and the Slurm side (slurm_hooks.cli) adds its own
to the same group. Errors are handled once, in :class:`Main`: the project's errors become
one line on stderr and exit 2 (sigstore-python's pattern), and nothing a user types ends
in a traceback. A command parses its arguments, calls the library and prints the result:
a table or lines for people (every user-supplied string through :func:`term`), or JSON
with ``--json``.
"""

from __future__ import annotations

import json
import sys
from collections.abc import Callable
from typing import Any, NoReturn

import click

from computeproof.config import Config, load_config
from computeproof.errors import ComputeProofError

EXIT_FAILED_CHECK = 1  # a verification or reconciliation found a problem
EXIT_ERROR = 2  # bad input, bad configuration, environment failure
EXIT_UNTRUSTED = 3  # valid only under a key no trust root vouches for (docs/trust.md)
EXIT_INTERNAL = 70  # a bug of ours (EX_SOFTWARE); the one line says how to see more


class State:
    """Per-invocation state: the global flags and the configuration, loaded once."""

    def __init__(self, config_path: str | None, db: str | None) -> None:
        self.config_path = config_path
        self.db = db
        self._config: Config | None = None

    @property
    def config(self) -> Config:
        """The site configuration (file, environment, then --db)."""
        if self._config is None:
            self._config = load_config(self.config_path, db=self.db)
        return self._config


pass_state = click.make_pass_decorator(State)


def fail(message: str, code: int = EXIT_ERROR) -> NoReturn:
    """Print one error line to stderr and exit."""
    click.echo(f"computeproof: error: {term(message)}", err=True)
    sys.exit(code)


# Control characters (C0, DEL, C1), line and paragraph separators and bidirectional
# overrides: a user string holding one could draw fake lines or reorder what is shown.
_UNSAFE = frozenset(
    [*range(0x20), *range(0x7F, 0xA0), 0x2028, 0x2029, *range(0x202A, 0x202F),
     *range(0x2066, 0x206A)]
)  # fmt: skip
_TERM_ESCAPES = {c: f"\\x{c:02x}" if c < 0x100 else f"\\u{c:04x}" for c in _UNSAFE}
_TERM_ESCAPES[ord("\\")] = "\\\\"


def term(value: object) -> str:
    """``value`` as text safe for a terminal line: control characters, line separators and
    bidi overrides escaped (``\\x0a``), backslashes doubled, and a value recorded as
    ``{"non_utf8": ...}`` shown as its escaped bytes."""
    if isinstance(value, dict) and set(value) == {"non_utf8"}:
        import base64
        import binascii

        try:
            raw = base64.b64decode(str(value["non_utf8"]), validate=True)
        except (binascii.Error, ValueError):
            return "<non-UTF-8: undecodable>"
        return "<non-UTF-8: " + repr(raw)[2:-1] + ">"
    text = value if isinstance(value, str) else str(value)
    if text.isprintable() and "\\" not in text:
        return text
    out = text.translate(_TERM_ESCAPES)
    # lone surrogates (bytes a decoder could not read) are shown, not sent to the terminal
    return out.encode("utf-8", "backslashreplace").decode("utf-8")


def tty_progress(label: str, unit: str, shown: bool) -> Callable[[int, int], None] | None:
    """A ``(done, total)`` callback that keeps one ``label done/total unit`` line up to date
    on stderr, ended when done reaches total; None unless ``shown`` and stderr is a
    terminal (scripts and --json get no progress)."""
    if not (shown and sys.stderr.isatty()):
        return None

    def progress(done: int, total: int) -> None:
        click.echo(f"\r{label} {done}/{total} {unit}", err=True, nl=False)
        if done >= total:
            click.echo("", err=True)

    return progress


def trust_options(command: Callable[..., Any]) -> Callable[..., Any]:
    """--ledger-key, --witness and --quorum: the trust roots of `receipt verify` and
    `report verify` (computeproof/trust.py); without --ledger-key, the config's
    trusted_ledger_keys are the ledger key roots."""
    command = click.option(
        "--quorum",
        type=click.IntRange(min=1),
        default=None,
        help="How many of the --witness keys must vouch (default: all).",
    )(command)
    command = click.option(
        "--witness",
        "witnesses",
        multiple=True,
        metavar="VKEY",
        help="Trust a witness: its verifier key (name+id+base64). Repeatable.",
    )(command)
    return click.option(
        "--ledger-key",
        default=None,
        help="Trust only this ledger public key (ed25519:BASE64).",
    )(command)


def echo_json(value: Any) -> None:
    """Print ``value`` as indented JSON for scripts (non-ASCII escaped: safe on any
    terminal)."""
    click.echo(json.dumps(value, indent=2, sort_keys=True, default=str))


def console() -> Any:
    """A rich console; piped output keeps whole values instead of 80-column truncation."""
    from rich.console import Console

    return Console() if sys.stdout.isatty() else Console(width=250)


def table(*columns: str) -> Any:
    """A rich table whose cells are added with :func:`add_row` (never parsed as markup)."""
    from rich.table import Table

    return Table(*columns)


def add_row(tbl: Any, values: list[object]) -> None:
    """Add user-supplied values to a rich table as plain text, escaped by :func:`term`:
    rich would otherwise read "[red]" in a job name as markup."""
    from rich.text import Text

    tbl.add_row(*(Text(term(v)) for v in values))


def read_input(path: str, what: str) -> bytes:
    """The bytes of ``path`` ('-' for stdin); a one-line error if it cannot be read."""
    try:
        if path == "-":
            return sys.stdin.buffer.read()
        with open(path, "rb") as f:
            return f.read()
    except OSError as e:
        fail(f"cannot read {what} {path}: {e.strerror}")


class Main(click.Group):
    """The top-level group: turns every error a command raises into one line and an exit
    code. Subcommands run inside this ``invoke``, so this is the only handler needed."""

    def invoke(self, ctx: click.Context) -> Any:
        try:
            return super().invoke(ctx)
        except ComputeProofError as e:
            fail(str(e))
        except KeyboardInterrupt:
            fail("interrupted", 130)
        except (click.exceptions.Exit, click.ClickException, click.Abort):
            raise
        except RecursionError:
            fail("the input is nested too deeply to read")
        except Exception as e:  # a bug of ours: one line, not a traceback
            if ctx.meta.get("computeproof.traceback"):
                raise
            fail(
                f"internal error: {type(e).__name__}: {e} "
                "(rerun with --traceback to see where, and please report it)",
                EXIT_INTERNAL,
            )


@click.group(cls=Main, context_settings={"help_option_names": ["-h", "--help"]})
@click.option(
    "--config",
    "config_path",
    envvar="COMPUTEPROOF_CONFIG",
    default=None,
    help="TOML config file (default /etc/computeproof/config.toml).",
)
@click.option(
    "--db",
    default=None,
    help="Ledger SQLite file (default from config, then /var/lib/computeproof/ledger.db).",
)
@click.option("--traceback", is_flag=True, hidden=True, help="Show tracebacks of internal errors.")
@click.version_option(package_name="computeproof")
@click.pass_context
def main(ctx: click.Context, config_path: str | None, db: str | None, traceback: bool) -> None:
    """Verifiable GPU job receipts for Slurm clusters."""
    ctx.obj = State(config_path, db)
    ctx.meta["computeproof.traceback"] = traceback


_GLOBAL_FLAGS = (
    ("--config", "config_path", "TOML config file (as the global --config)."),
    ("--db", "db", "Ledger SQLite file (as the global --db)."),
)


def _set_global(attr: str) -> Callable[[click.Context, click.Parameter, str | None], None]:
    def callback(ctx: click.Context, param: click.Parameter, value: str | None) -> None:
        if value is not None:  # the configuration is loaded later, on first use
            setattr(ctx.ensure_object(State), attr, value)

    return callback


def accept_global_flags(group: click.Group) -> None:
    """Let every command take --config and --db after its name as well as before it
    (`computeproof jobs list --db F` = `computeproof --db F jobs list`), except where a
    command has an option of that name of its own (`bench ingest --db`). A group that is
    a command itself (`report`) takes them too. Safe to call again after adding commands."""
    for command in group.commands.values():
        if isinstance(command, click.Group):
            accept_global_flags(command)
            if not command.invoke_without_command:
                continue
        taken = {opt for param in command.params for opt in getattr(param, "opts", ())}
        for flag, attr, help_text in _GLOBAL_FLAGS:
            if flag not in taken:
                option = click.Option(
                    [flag, f"global_{attr}"],
                    expose_value=False,
                    callback=_set_global(attr),
                    help=help_text,
                )
                command.params.append(option)


# One module a command group. A missing module is a packaging error, not a reason to run
# without its commands, so the import is not guarded.
COMMAND_MODULES = (
    "keys", "ledger", "jobs", "receipt", "forward", "report", "bench", "anchor", "dashboard",
    "witness", "serve",
)  # fmt: skip


def _register() -> None:
    import importlib

    for name in COMMAND_MODULES:
        importlib.import_module(f"computeproof.cli.{name}")
    accept_global_flags(main)


_register()
