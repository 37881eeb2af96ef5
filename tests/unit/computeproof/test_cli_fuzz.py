"""Every command and option of `computeproof`, driven with hostile input: random text with
control characters, huge and negative integers, binary files, deeply nested JSON and TOML,
directories, missing paths. Whatever the input, the answer is an exit code and at most a
one-line error, never a traceback (issue: hostile input and single faults, item 10).

Bounded: a fixed seed, a fixed number of invocations a command; commands that run until
stopped (services) are called with --help only.
"""

from __future__ import annotations

import random
from collections.abc import Callable, Iterator
from pathlib import Path

import click
import pytest
from click.testing import CliRunner

from computeproof.keys import Signer, write_key
from computeproof.ledger import Ledger
from computeproof.store.sqlite import SQLiteStore
from slurm_hooks.cli import main

ORIGIN = "computeproof.test.ledger"
# services and loops: they would wait for a signal, so only their --help is exercised
LONG_RUNNING = {
    "agent run",
    "serve",
    "witness serve",
    "dashboard",
    "controller run",
    "anchor devchain",
}
ROUNDS = 6  # invocations a command beyond the fixed ones
EXPECTED_CODES = {0, 1, 2, 3}  # ok, a failed check, an error, untrusted; never 70 (a bug)


def _commands(group: click.Group, prefix: tuple[str, ...] = ()) -> Iterator[tuple[str, ...]]:
    for name, command in sorted(group.commands.items()):
        path = (*prefix, name)
        if isinstance(command, click.Group):
            if command.invoke_without_command:
                yield path
            yield from _commands(command, path)
        else:
            yield path


def _command(path: tuple[str, ...]) -> click.Command:
    command: click.Command = main
    for name in path:
        assert isinstance(command, click.Group)
        command = command.commands[name]
    return command


COMMANDS = list(_commands(main))


@pytest.fixture(scope="module")
def hostile_files(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    d = tmp_path_factory.mktemp("hostile")
    files = {
        "binary": d / "binary.bin",
        "nested_json": d / "nested.json",
        "nested_toml": d / "nested.toml",
        "empty": d / "empty",
        "text": d / "text.txt",
        "directory": d / "a-directory",
        "missing": d / "does-not-exist",
    }
    files["binary"].write_bytes(bytes(range(256)) * 64 + b"\xff\xfe\x00\x80")
    files["nested_json"].write_text("[" * 100_000 + "]" * 100_000)
    files["nested_toml"].write_text("x = " + "[" * 50_000 + "]" * 50_000 + "\n")
    files["empty"].write_bytes(b"")
    files["text"].write_text("job 1\nJobId=2 JobName=x\r\n\x1b[31mred\x00\n")
    files["directory"].mkdir()
    return files


@pytest.fixture
def site(
    tmp_path: Path, host_signer: Signer, make_lifecycle: Callable, sign_all: Callable
) -> dict[str, str]:
    """A configured site with a small ledger; its environment for the CLI."""
    db, config = tmp_path / "ledger.db", tmp_path / "config.toml"
    config.write_text(
        f'cluster = "c1"\ndb = "{db}"\nspool_dir = "{tmp_path / "spool"}"\n'
        f'host_key = "{tmp_path / "host.key"}"\nledger_key = "{tmp_path / "ledger.key"}"\n'
        f'ledger_origin = "{ORIGIN}"\nrun_dir = "{tmp_path / "run"}"\n'
        # no Slurm commands here: reconcile must fail fast with a one-line error
        f'slurm_bin = "{tmp_path / "no-slurm"}"\nagent_socket = "{tmp_path / "no.sock"}"\n'
    )
    write_key(str(tmp_path / "host.key"), host_signer)
    with Ledger(SQLiteStore(str(db)), ORIGIN, str(tmp_path / "ledger.key"), workers=1) as led:
        led.enroll(host_signer.public_raw, ["ctl", "node1", "node2"])
        led.append(sign_all(make_lifecycle("100")))
    return {"COMPUTEPROOF_CONFIG": str(config), "COMPUTEPROOF_DB": None}  # type: ignore[dict-item]


def _texts(rng: random.Random) -> list[str]:
    noise = "".join(
        rng.choice("ab\n\r\t\x1b[;m\x00\x7f\u2028\u202e\\\"'%$`{}|=") for _ in range(12)
    )
    return [
        noise,
        "99999999999999999999999",
        "-1",
        "-99999999999999999999",
        "1e308",
        "",
        "../../../../etc/shadow",
        "JobId=1 JobName=x\nJobId=2",
        "[red]markup[/red]",
        "ed25519:" + "A" * 43 + "=",
        "2026-13-45",
        "nan",
    ]


def _invocations(
    path: tuple[str, ...], files: dict[str, Path], rng: random.Random
) -> Iterator[list[str]]:
    command = _command(path)
    yield [*path, "--help"]
    if " ".join(path) in LONG_RUNNING:
        return
    texts = _texts(rng)
    file_values = [str(p) for p in files.values()]
    arguments = [p for p in command.params if isinstance(p, click.Argument)]
    options = [
        p
        for p in command.params
        if isinstance(p, click.Option)
        and p.name not in ("global_config_path", "global_db")
        and not p.hidden
    ]

    def value_for(param: click.Parameter) -> str:
        if isinstance(param.type, click.Path | click.File) or rng.random() < 0.3:
            return rng.choice(file_values)
        if isinstance(param.type, click.Choice):
            return rng.choice([*map(str, param.type.choices), rng.choice(texts)])
        return rng.choice(texts)

    for _ in range(ROUNDS):
        args = [*path]
        for arg in arguments:
            count = 1 if arg.nargs == 1 else rng.randint(1, 3)
            args.extend(value_for(arg) for _ in range(count))
        for opt in rng.sample(options, k=min(len(options), rng.randint(0, 4))):
            flag = opt.opts[0]
            if opt.is_flag:
                if flag == "--loop":
                    continue
                args.append(flag)
            elif opt.name == "interval":  # forward --loop would not return
                continue
            else:
                args.extend([flag, value_for(opt)])
        yield args


@pytest.mark.parametrize("path", COMMANDS, ids=[" ".join(p) for p in COMMANDS])
def test_hostile_input_never_ends_in_a_traceback(
    path: tuple[str, ...],
    site: dict[str, str],
    hostile_files: dict[str, Path],
    tmp_path: Path,
) -> None:
    rng = random.Random(" ".join(path))  # deterministic, different a command
    runner = CliRunner()
    for args in _invocations(path, hostile_files, rng):
        with runner.isolated_filesystem(temp_dir=tmp_path):
            result = runner.invoke(main, args, env=site, catch_exceptions=True)
        shown = f"computeproof {' '.join(map(repr, args))} exited {result.exit_code}:\n"
        shown += result.output
        assert result.exception is None or isinstance(result.exception, SystemExit), (
            shown + f"\n{type(result.exception).__name__}: {result.exception}"
        )
        assert result.exit_code in EXPECTED_CODES, shown
        assert "Traceback" not in result.output, shown
        errors = [line for line in result.stderr.splitlines() if "error" in line.lower()]
        assert len(errors) <= 1 or result.exit_code == 0, shown


def test_every_command_is_fuzzed() -> None:
    names = {" ".join(p) for p in COMMANDS}
    # the walk reaches the leaves of every group, so a new command is fuzzed by default
    assert {"jobs show", "receipt verify", "report verify", "ledger consistency"} <= names
    assert "report" in names  # a group that is itself a command


def test_an_internal_error_is_one_line_with_its_own_exit_code(
    site: dict[str, str], monkeypatch: pytest.MonkeyPatch
) -> None:
    import computeproof.cli.jobs as jobs_cli

    def broken(*args: object, **kwargs: object) -> object:
        raise ZeroDivisionError("a bug")

    monkeypatch.setattr(jobs_cli, "job_json", broken)
    result = CliRunner().invoke(main, ["jobs", "list"], env=site)
    assert result.exit_code == 70, result.output
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and "internal error: ZeroDivisionError: a bug" in lines[0]
    assert "Traceback" not in result.output
    traced = CliRunner().invoke(main, ["--traceback", "jobs", "list"], env=site)
    assert isinstance(traced.exception, ZeroDivisionError)
