"""Typed, immutable configuration: defaults, then the TOML file, then environment, then flags.

The file is ``$COMPUTEPROOF_CONFIG`` or /etc/computeproof/config.toml (missing is fine:
defaults work with no configuration). Every key is optional; see conf/config.toml.
Environment overrides: COMPUTEPROOF_DB, COMPUTEPROOF_SPOOL, COMPUTEPROOF_CLUSTER.
"""

from __future__ import annotations

import os
import socket
from dataclasses import dataclass, field, fields, replace

from computeproof.errors import ConfigError
from computeproof.posixfs import node_path

DEFAULT_CONFIG_PATH = "/etc/computeproof/config.toml"


@dataclass(frozen=True)
class Config:
    """Everything the CLI, hooks, agent and ledger need to know about a site."""

    cluster: str = "cluster"
    db: str = "/var/lib/computeproof/ledger.db"
    spool_dir: str = "/var/spool/computeproof"
    run_dir: str = "/run/computeproof"
    host_key: str = "/etc/computeproof/host.key"
    ledger_key: str = "/etc/computeproof/ledger.key"
    ledger_origin: str = ""
    enrolled_keys: str = "/etc/computeproof/enrolled"
    strict: bool = False
    private_fields: tuple[str, ...] = ()
    host: str = field(default_factory=socket.gethostname)
    slurm_bin: str = "/usr/bin"
    sample_interval: int = 5
    progress_interval: int = 300
    orphan_check_interval: int = 60
    forward_interval: int = 0  # agent and controller collector forward every N s; 0: not
    forward_retention_days: int = 7  # forwarded events kept for `forward --replay-since`
    agent_socket: str = ""
    prometheus_port: int = 0
    # GPU agent (slurm_hooks/agent; docs/metrics.md, conf/config.toml)
    prometheus_address: str = "127.0.0.1"  # where the agent's exporter listens
    prometheus_format: str = "native"  # native, jobstats or both
    energy_interval: int = 30  # seconds between GPU energy counter reads; 0: every pass
    artifact_max_bytes: int = 16 * 2**30  # bytes one artifact request may have hashed
    artifact_job_bytes: int = 64 * 2**30  # bytes all of a job's artifact requests may
    jobstats_gpustat_dir: str = ""  # Prolog/Epilog keep jobstats' gpustat files here
    dcgm_job_mapping_dir: str = ""  # and dcgm-exporter's --hpc-job-mapping-dir files here
    # ledger public keys ("ed25519:...") that `receipt verify` and `report verify` trust
    trusted_ledger_keys: tuple[str, ...] = ()
    # witnesses the ledger submits each new checkpoint to: "<URL> <witness verifier key>"
    witnesses: tuple[str, ...] = ()
    # the collector (`computeproof serve`): forwarders post to collector_url when it is set
    collector_url: str = ""  # https://collector:8443
    collector_ca: str = ""  # CA file the collector's certificate is checked against
    collector_timeout: int = 30  # seconds one request to the collector may take
    serve_listen: str = "127.0.0.1:8443"  # host:port `computeproof serve` listens on
    serve_tls_cert: str = ""  # its certificate chain (PEM); empty: plain HTTP
    serve_tls_key: str = ""
    serve_checkpoint_ms: int = 1000  # sign a checkpoint at most this often, when the log grew
    serve_max_request_bytes: int = 16 * 1024 * 1024
    serve_rate_limit: int = 50  # signed requests a second from one host key (burst: twice)
    serve_clock_window: int = 300  # seconds a signed request's created time may be off
    serve_open_reads: bool = False  # job queries and receipts without a signed request
    ratecard: str = ""  # rate card TOML; default: ratecard.toml beside the config
    grants: str = ""  # grant map TOML; default: grants.toml beside the config
    controller_poll_interval: int = 1  # seconds between the controller collector's polls
    # the collector's periodic anchoring (computeproof/anchors/periodic.py): off unless set
    anchor_target: str = ""  # "evm" (an ERC-7053 registry) or "numbers" (the Capture API)
    anchor_interval: int = 3600  # seconds between anchors, each only when the log grew
    anchor_rpc_url: str = ""  # evm: the chain node's JSON-RPC URL
    anchor_contract: str = ""  # evm: the registry's address
    anchor_key: str = ""  # evm: file holding the hex private key that pays (0600)
    anchor_chain_id: int = 0  # evm: refuse a node on another chain (0: any; Jade 10507)
    anchor_asset_cid: str = ""  # evm: the assetCid committed under (default: the origin)
    anchor_capture_token_file: str = ""  # numbers: file holding the Capture API token
    anchor_capture_api: str = ""  # numbers: the Capture API (default: Numbers' own)
    anchor_history_url: str = ""  # numbers: its commit history API (default: Numbers' own)
    anchor_scope: str = "log"  # numbers: one asset for the log, or one a "month" or "day"
    source: str = "defaults"

    @property
    def origin(self) -> str:
        """The checkpoint origin line: configured, else derived from the cluster name."""
        return self.ledger_origin or f"computeproof.{self.cluster}.ledger"

    def node_dir(self, node: str) -> str:
        """Per-node run directory (several slurmd may share one host in the test cluster)."""
        return os.path.join(self.run_dir, node)

    def binding_path(self, node: str, job_id: int) -> str:
        """Where the Prolog writes job ``job_id``'s GPU binding on ``node``."""
        return os.path.join(self.run_dir, node, "jobs", f"{job_id}.json")

    def agent_socket_path(self, node: str) -> str:
        """The agent's Unix socket for ``node``: configured, else under the node's run dir."""
        return self.agent_socket or os.path.join(self.run_dir, node, "agent.sock")


_ENV = {
    "COMPUTEPROOF_DB": "db",
    "COMPUTEPROOF_SPOOL": "spool_dir",
    "COMPUTEPROOF_CLUSTER": "cluster",
}


def _coerce(path: str, name: str, value: object, default: object) -> object:
    if isinstance(default, bool):
        if not isinstance(value, bool):
            raise ConfigError(f"{path}: '{name}' must be true or false, not {value!r}")
        return value
    if isinstance(default, int):
        if not isinstance(value, int) or isinstance(value, bool) or value < 0:
            raise ConfigError(f"{path}: '{name}' must be a non-negative integer, not {value!r}")
        return value
    if isinstance(default, tuple):
        if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
            raise ConfigError(f"{path}: '{name}' must be a list of strings, not {value!r}")
        return tuple(value)
    if not isinstance(value, str) or not value:
        raise ConfigError(f"{path}: '{name}' must be a non-empty string, not {value!r}")
    return value


def load_config(
    path: str | None = None,
    environ: dict[str, str] | None = None,
    **overrides: object,
) -> Config:
    """Load the configuration once; ``overrides`` (flags) win over file and environment."""
    import tomllib

    env = os.environ if environ is None else environ
    path = path or env.get("COMPUTEPROOF_CONFIG") or None
    explicit = path is not None
    path = path or DEFAULT_CONFIG_PATH
    base = Config()
    known = {f.name: getattr(base, f.name) for f in fields(Config) if f.name != "source"}
    values: dict[str, object] = {}
    try:
        with open(path, "rb") as f:
            data = tomllib.load(f)
        values["source"] = path
    except FileNotFoundError as e:
        if explicit:
            raise ConfigError(
                f"config file {path} does not exist; create it, or point --config or "
                "COMPUTEPROOF_CONFIG at an existing one"
            ) from e
        data = {}
    except PermissionError as e:
        raise ConfigError(
            f"config file {path} is not readable: permission denied; computeproof-job reads "
            "it as the job's user, so make it 0644 in a directory of mode 0755"
        ) from e
    except IsADirectoryError as e:
        raise ConfigError(f"config path {path} is a directory; point it at a TOML file") from e
    except OSError as e:
        raise ConfigError(f"cannot read config file {path}: {e.strerror or e}") from e
    except UnicodeDecodeError as e:
        raise ConfigError(f"{path}: not UTF-8 text ({e.reason} at byte {e.start})") from e
    except tomllib.TOMLDecodeError as e:
        raise ConfigError(f"{path}: invalid TOML: {e}") from e
    for name, value in data.items():
        if name not in known:
            raise ConfigError(f"{path}: unknown key '{name}'; see conf/config.toml for the keys")
        values[name] = _coerce(path, name, value, known[name])
    for var, name in _ENV.items():
        if env.get(var):
            values[name] = env[var]
    for name, value in overrides.items():
        if value is not None:
            values[name] = value
    for name in ("spool_dir", "host_key"):  # %n: the node's name (one file, many nodes)
        if "%n" in str(values.get(name, "")):
            try:
                host = str(values.get("host") or base.host)
                values[name] = node_path(str(values[name]), dict(env), host)
            except ValueError as e:
                raise ConfigError(f"{path}: {name}: {e}") from e
    return replace(base, **values)  # type: ignore[arg-type]
