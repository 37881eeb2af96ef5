"""Tests of computeproof/config.py: defaults, TOML file, environment, flags, errors."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import pytest

from computeproof import config as config_module
from computeproof.config import Config, load_config
from computeproof.errors import ConfigError


@pytest.fixture(autouse=True)
def no_system_config(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    """Never read this machine's /etc/computeproof/config.toml."""
    monkeypatch.setattr(config_module, "DEFAULT_CONFIG_PATH", str(tmp_path / "absent.toml"))


def _write(tmp_path: Path, text: str) -> str:
    path = tmp_path / "config.toml"
    path.write_text(text)
    return str(path)


def test_defaults_without_a_file() -> None:
    cfg = load_config(None, {})
    assert cfg.source == "defaults"
    assert cfg == dataclasses.replace(Config(), host=cfg.host)
    assert cfg.origin == "computeproof.cluster.ledger"
    assert cfg.strict is False and cfg.private_fields == ()


def test_file_values(tmp_path: Path) -> None:
    path = _write(
        tmp_path,
        """
cluster = "c1"
db = "/tmp/l.db"
strict = true
private_fields = ["user", "job_name"]
sample_interval = 2
ledger_origin = "example.org/ledger"
""",
    )
    cfg = load_config(path, {})
    assert (cfg.cluster, cfg.db, cfg.strict, cfg.sample_interval) == ("c1", "/tmp/l.db", True, 2)
    assert cfg.private_fields == ("user", "job_name")
    assert cfg.origin == "example.org/ledger" and cfg.source == path
    assert load_config(path, {"COMPUTEPROOF_CONFIG": "/elsewhere"}).source == path  # arg wins


def test_config_from_environment(tmp_path: Path) -> None:
    path = _write(tmp_path, 'cluster = "envcluster"\n')
    cfg = load_config(None, {"COMPUTEPROOF_CONFIG": path})
    assert cfg.cluster == "envcluster" and cfg.origin == "computeproof.envcluster.ledger"


def test_precedence_file_env_flags(tmp_path: Path) -> None:
    path = _write(tmp_path, 'cluster = "file"\ndb = "/file.db"\nspool_dir = "/file/spool"\n')
    env = {"COMPUTEPROOF_DB": "/env.db", "COMPUTEPROOF_CLUSTER": "env", "COMPUTEPROOF_SPOOL": ""}
    cfg = load_config(path, env, db="/flag.db", cluster=None)
    assert cfg.db == "/flag.db"  # flag over environment over file
    assert cfg.cluster == "env"  # a None flag is no flag
    assert cfg.spool_dir == "/file/spool"  # an empty variable is no variable


def test_frozen() -> None:
    cfg = load_config(None, {})
    with pytest.raises(dataclasses.FrozenInstanceError):
        cfg.db = "/x"  # type: ignore[misc]


def test_paths() -> None:
    cfg = Config(run_dir="/run/cp")
    assert cfg.node_dir("n1") == "/run/cp/n1"
    assert cfg.binding_path("n1", 42) == "/run/cp/n1/jobs/42.json"
    assert cfg.agent_socket_path("n1") == "/run/cp/n1/agent.sock"
    assert Config(agent_socket="/s.sock").agent_socket_path("n1") == "/s.sock"


def test_explicit_missing_file(tmp_path: Path) -> None:
    path = str(tmp_path / "missing.toml")
    with pytest.raises(ConfigError, match=f"config file {path} does not exist"):
        load_config(path, {})
    with pytest.raises(ConfigError, match="does not exist"):
        load_config(None, {"COMPUTEPROOF_CONFIG": path})


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("cluster = ", "invalid TOML"),
        ("[section\n", "invalid TOML"),
        ('clusterr = "c1"\n', "unknown key 'clusterr'"),
        ("[ledger]\ndb = 'x'\n", "unknown key 'ledger'"),
        ('strict = "yes"\n', "'strict' must be true or false"),
        ("strict = 1\n", "'strict' must be true or false"),
        ('sample_interval = "5"\n', "'sample_interval' must be a non-negative integer"),
        ("sample_interval = true\n", "'sample_interval' must be a non-negative integer"),
        ("sample_interval = -1\n", "'sample_interval' must be a non-negative integer"),
        ("sample_interval = 1.5\n", "'sample_interval' must be a non-negative integer"),
        ('private_fields = "user"\n', "'private_fields' must be a list of strings"),
        ("private_fields = [1]\n", "'private_fields' must be a list of strings"),
        ('db = ""\n', "'db' must be a non-empty string"),
        ("db = 5\n", "'db' must be a non-empty string"),
    ],
)
def test_bad_files_name_the_file(tmp_path: Path, text: str, message: str) -> None:
    path = _write(tmp_path, text)
    with pytest.raises(ConfigError) as info:
        load_config(path, {})
    assert str(info.value).startswith(path)
    assert message in str(info.value)


def test_directory_as_config(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match=str(tmp_path)):
        load_config(str(tmp_path), {})


def test_non_utf8_config(tmp_path: Path) -> None:
    path = tmp_path / "config.toml"
    path.write_bytes(b'cluster = "\xff"\n')
    with pytest.raises(ConfigError, match=str(path)):
        load_config(str(path), {})
