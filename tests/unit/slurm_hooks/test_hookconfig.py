"""The hooks' flat config parser against tomllib and computeproof.config."""

from __future__ import annotations

import dataclasses
import os
import tomllib
from pathlib import Path

import pytest

from computeproof.config import Config, load_config
from computeproof.errors import ConfigError
from slurm_hooks import hookconfig
from slurm_hooks.hookconfig import _Subset, load_hook_config, parse_flat_toml

REPO = Path(__file__).resolve().parents[3]

FLAT_SAMPLES = [
    'cluster = "c1"\n',
    "cluster = 'lit\\eral'  # comment\n",
    "strict = true\nstrict_not = false\n",
    "n = 1_000\nm = -5\nz = 0\n",
    'l = ["a", "b",]\nempty = []\n',
    'esc = "tab\\there \\"q\\" \\u00e9 \\U0001F600"\n',
    "# only comments\n\n   \t\n",
    'k-e_y = "x"\r\nother = "y"\r\n',
]


@pytest.mark.parametrize("text", FLAT_SAMPLES)
def test_subset_agrees_with_tomllib(text: str) -> None:
    assert parse_flat_toml(text) == tomllib.loads(text)


@pytest.mark.parametrize(
    "text",
    [
        "[table]\nx = 1\n",
        'x = """multi"""\n',
        "x = [\n  'a',\n]\n",
        "x = 1.5\n",
        "x = 2025-01-01\n",
        "x = {a = 1}\n",
        "a.b = 1\n",
        'x = "a" y\n',
        "x = 01\n",
    ],
)
def test_outside_subset_is_left_to_tomllib(text: str) -> None:
    with pytest.raises(_Subset):
        parse_flat_toml(text)


def test_example_config_is_flat_and_matches_tomllib() -> None:
    text = (REPO / "conf" / "config.toml").read_text()
    assert parse_flat_toml(text) == tomllib.loads(text)


def test_example_config_documents_every_key() -> None:
    text = (REPO / "conf" / "config.toml").read_text()
    keys = {f.name for f in dataclasses.fields(Config)} - {"source"}
    for key in keys:
        assert f"\n# {key} = " in text or f"\n{key} = " in text, key


def test_defaults_table_matches_config() -> None:
    base = Config()
    fields = {f.name for f in dataclasses.fields(Config)} - {"source"}
    assert set(hookconfig.DEFAULTS) == fields
    for name, default in hookconfig.DEFAULTS.items():
        if name == "host":
            continue
        assert getattr(base, name) == default, name


def _write(tmp_path: Path, text: str) -> str:
    path = tmp_path / "config.toml"
    path.write_text(text)
    return str(path)


def test_same_values_as_load_config(tmp_path: Path) -> None:
    path = _write(
        tmp_path,
        'cluster = "cp"\nspool_dir = "/s"\nrun_dir = "/r"\nstrict = true\n'
        'private_fields = ["user", "job_name"]\nslurm_bin = "/opt/slurm/bin"\nhost = "h1"\n',
    )
    env = {"COMPUTEPROOF_CONFIG": path}
    full = load_config(environ=env)
    hook = load_hook_config(env)
    for name in HookSlots:
        if name != "source":
            assert getattr(hook, name) == getattr(full, name), name
    assert hook.binding_path("c1", 7) == full.binding_path("c1", 7)
    assert hook.agent_socket_path("c1") == full.agent_socket_path("c1")


HookSlots = hookconfig.HookConfig.__slots__


def test_non_flat_valid_toml_still_loads(tmp_path: Path) -> None:
    path = _write(tmp_path, 'private_fields = [\n  "user",\n]\ncluster = """x"""\n')
    config = load_hook_config({"COMPUTEPROOF_CONFIG": path})
    assert config.private_fields == ("user",)
    assert config.cluster == "x"


@pytest.mark.parametrize(
    "text", ["cluster = \n", "nope = 1\n", "strict = 1\n", "cluster = 3\n", "[t]\nstrict = true\n"]
)
def test_broken_config_raises(tmp_path: Path, text: str) -> None:
    path = _write(tmp_path, text)
    with pytest.raises(ConfigError):
        load_hook_config({"COMPUTEPROOF_CONFIG": path})


def test_missing_explicit_file_is_an_error(tmp_path: Path) -> None:
    with pytest.raises(ConfigError):
        load_hook_config({"COMPUTEPROOF_CONFIG": str(tmp_path / "none.toml")})


def test_missing_default_file_means_defaults(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    monkeypatch.setattr(hookconfig, "DEFAULT_CONFIG_PATH", str(tmp_path / "absent.toml"))
    config = load_hook_config({"COMPUTEPROOF_SPOOL": "/sp", "COMPUTEPROOF_CLUSTER": "cc"})
    assert config.source == "defaults"
    assert (config.spool_dir, config.cluster) == ("/sp", "cc")
    assert config.host == os.uname().nodename


def test_unreadable_file_is_an_error(tmp_path: Path) -> None:
    path = _write(tmp_path, 'cluster = "x"\n')
    os.chmod(path, 0)
    if os.access(path, os.R_OK):  # root reads anything: use a directory instead
        path = str(tmp_path)
    with pytest.raises(ConfigError):
        load_hook_config({"COMPUTEPROOF_CONFIG": path})


def test_example_config_uncommented_parses_like_tomllib_and_load_config(tmp_path: Path) -> None:
    lines = (REPO / "conf" / "config.toml").read_text().splitlines()
    keys = {f.name for f in dataclasses.fields(Config)}
    active = [
        line[2:]
        for line in lines
        if line.startswith("# ") and line[2:].split(" = ")[0] in keys and " = " in line
    ]
    text = "\n".join(active) + "\n"
    assert parse_flat_toml(text) == tomllib.loads(text)
    # Empty strings are defaults in the example but load_config refuses them: drop those.
    path = _write(tmp_path, "\n".join(a for a in active if not a.endswith('""')) + "\n")
    full = load_config(environ={"COMPUTEPROOF_CONFIG": path})
    hook = load_hook_config({"COMPUTEPROOF_CONFIG": path})
    assert (hook.cluster, hook.spool_dir, hook.strict) == (
        full.cluster,
        full.spool_dir,
        full.strict,
    )
    assert hook.private_fields == full.private_fields == ("user", "job_name", "work_dir")


@pytest.mark.parametrize(
    ("env", "want"),
    [
        ({"SLURMD_NODENAME": "c2"}, "/var/spool/cp/c2"),  # a slurmd's hook or agent
        ({}, "/var/spool/cp/h1"),  # the controller, a CLI: the host name
    ],
)
def test_node_name_in_spool_dir(tmp_path: Path, env: dict[str, str], want: str) -> None:
    """``%n`` in spool_dir (and host_key) is the node's name, as in SlurmdSpoolDir: one file
    gives two slurmd on one host a spool each; the hooks and load_config agree."""
    path = _write(tmp_path, 'spool_dir = "/var/spool/cp/%n"\nhost_key = "/k/%n.key"\nhost = "h1"\n')
    env = {"COMPUTEPROOF_CONFIG": path, **env}
    full = load_config(environ=env)
    assert load_hook_config(env).spool_dir == full.spool_dir == want
    assert full.host_key == f"/k/{want.rsplit('/', 1)[1]}.key"


def test_node_name_that_is_not_a_name_is_refused(tmp_path: Path) -> None:
    path = _write(tmp_path, 'spool_dir = "/var/spool/cp/%n"\n')
    env = {"COMPUTEPROOF_CONFIG": path, "SLURMD_NODENAME": "../etc"}
    with pytest.raises(ConfigError, match="node name"):
        load_hook_config(env)
    with pytest.raises(ConfigError, match="node name"):
        load_config(environ=env)
