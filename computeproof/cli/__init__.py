"""The `computeproof` command line: thin click commands over the library.

Each subsystem keeps its commands in its own module here and registers them on ``main``;
the Slurm side (slurm_hooks.cli) adds its own to the same group. Every command runs its work through
:func:`run`, the one place where the project's errors become one clear line and an exit
code (sigstore-python's pattern).
"""

from __future__ import annotations

import json
import sys
from collections.abc import Callable
from typing import Any, NoReturn, TypeVar

import click

from computeproof.config import Config, load_config
from computeproof.errors import ComputeProofError

T = TypeVar("T")

EXIT_FAILED_CHECK = 1  # a verification or reconciliation found a problem
EXIT_ERROR = 2  # bad input, bad configuration, environment failure
EXIT_UNTRUSTED = 3  # valid only under a key no trust root vouches for (docs/trust.md)


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
    click.echo(f"computeproof: error: {message}", err=True)
    sys.exit(code)


def run(work: Callable[[], T]) -> T:
    """Run ``work``; turn the project's errors into one line and exit code 2."""
    try:
        return work()
    except ComputeProofError as e:
        fail(str(e))
    except KeyboardInterrupt:
        fail("interrupted", 130)


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
    `report verify` (computeproof/trust.py); the config's trusted_ledger_keys add to them."""
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
    """Print ``value`` as indented JSON for scripts."""
    click.echo(json.dumps(value, indent=2, sort_keys=True, default=str))


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
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
@click.version_option(package_name="computeproof")
@click.pass_context
def main(ctx: click.Context, config_path: str | None, db: str | None) -> None:
    """Verifiable GPU job receipts for Slurm clusters."""
    ctx.obj = State(config_path, db)


_GLOBAL_FLAGS = (
    ("--config", "config_path", "TOML config file (as the global --config)."),
    ("--db", "db", "Ledger SQLite file (as the global --db)."),
)


def _set_global(attr: str) -> Callable[[click.Context, click.Parameter, str | None], None]:
    def callback(ctx: click.Context, param: click.Parameter, value: str | None) -> None:
        if value is not None:  # the configuration is loaded later, on first use
            setattr(ctx.ensure_object(State), attr, value)

    return callback


def _accept_global_flags(group: click.Group) -> None:
    """Let every command take --config and --db after its name as well as before it
    (`computeproof jobs list --db F` = `computeproof --db F jobs list`), except where a
    command has an option of that name of its own (`bench ingest --db`). A group that is
    a command itself (`report`) takes them too."""
    for command in group.commands.values():
        if isinstance(command, click.Group):
            _accept_global_flags(command)
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
COMMAND_MODULES = ("ledger", "report", "witness")


def _register() -> None:
    import importlib

    for name in COMMAND_MODULES:
        importlib.import_module(f"computeproof.cli.{name}")
    _accept_global_flags(main)


_register()
