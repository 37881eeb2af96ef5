"""The hooks' view of the configuration, read without tomllib or dataclasses.

computeproof.config.load_config is the reference loader, but importing tomllib and
dataclasses costs more than the interpreter's start, and the hooks have a latency budget
of about one interpreter start. conf/config.toml is therefore kept flat: one
``key = value`` a line, values a basic or literal string, true/false, a decimal integer or
a one-line list of strings. This module parses exactly that subset. A file outside the
subset is handed to tomllib (slow but correct), so a valid TOML file never breaks a hook;
a file tomllib rejects too is a broken configuration (ConfigError).

Resolution matches load_config: ``$COMPUTEPROOF_CONFIG`` else
/etc/computeproof/config.toml (missing = defaults), then the COMPUTEPROOF_SPOOL and
COMPUTEPROOF_CLUSTER environment overrides.
"""

import posix

from computeproof.errors import ConfigError
from computeproof.posixfs import join, lexists, node_path

DEFAULT_CONFIG_PATH = "/etc/computeproof/config.toml"

# Every key load_config knows, with its default; tests/unit/slurm_hooks/test_hookconfig.py
# checks this table against computeproof.config.Config so the two cannot drift apart.
# "host" defaults to the kernel's node name (socket.gethostname without importing socket).
DEFAULTS: dict[str, object] = {
    "cluster": "cluster",
    "db": "/var/lib/computeproof/ledger.db",
    "spool_dir": "/var/spool/computeproof",
    "run_dir": "/run/computeproof",
    "host_key": "/etc/computeproof/host.key",
    "ledger_key": "/etc/computeproof/ledger.key",
    "ledger_origin": "",
    "enrolled_keys": "/etc/computeproof/enrolled",
    "strict": False,
    "private_fields": (),
    "host": "",
    "slurm_bin": "/usr/bin",
    "sample_interval": 5,
    "progress_interval": 300,
    "orphan_check_interval": 60,
    "forward_interval": 0,
    "forward_retention_days": 7,
    "trusted_ledger_keys": (),
    "witnesses": (),
    "agent_socket": "",
    "prometheus_port": 0,
    "prometheus_address": "127.0.0.1",
    "prometheus_format": "native",
    "energy_interval": 30,
    "artifact_max_bytes": 16 * 2**30,
    "artifact_job_bytes": 64 * 2**30,
    "jobstats_gpustat_dir": "",
    "dcgm_job_mapping_dir": "",
    "ratecard": "",
    "grants": "",
    "controller_poll_interval": 1,
    "anchor_target": "",
    "anchor_interval": 3600,
    "anchor_rpc_url": "",
    "anchor_contract": "",
    "anchor_key": "",
    "anchor_chain_id": 0,
    "anchor_asset_cid": "",
    "anchor_capture_token_file": "",
    "anchor_capture_api": "",
    "anchor_history_url": "",
    "anchor_scope": "log",
    "collector_url": "",
    "collector_ca": "",
    "collector_timeout": 30,
    "serve_listen": "127.0.0.1:8443",
    "serve_tls_cert": "",
    "serve_tls_key": "",
    "serve_checkpoint_ms": 1000,
    "serve_max_request_bytes": 16 * 1024 * 1024,
    "serve_rate_limit": 50,
    "serve_clock_window": 300,
    "serve_open_reads": False,
}

_ENV = {"COMPUTEPROOF_SPOOL": "spool_dir", "COMPUTEPROOF_CLUSTER": "cluster"}


class HookConfig:
    """The settings a hook needs; attribute names are those of computeproof.config.Config."""

    __slots__ = (
        "agent_socket",
        "cluster",
        "dcgm_job_mapping_dir",
        "host",
        "jobstats_gpustat_dir",
        "private_fields",
        "run_dir",
        "slurm_bin",
        "source",
        "spool_dir",
        "strict",
    )

    def __init__(self, values: dict[str, object], source: str = "defaults") -> None:
        merged = dict(DEFAULTS)
        merged.update(values)
        self.cluster = str(merged["cluster"])
        self.spool_dir = str(merged["spool_dir"])
        self.run_dir = str(merged["run_dir"])
        self.strict = bool(merged["strict"])
        pf = merged["private_fields"]
        self.private_fields = tuple(str(v) for v in pf) if isinstance(pf, list | tuple) else ()
        self.host = str(merged["host"]) or posix.uname().nodename
        self.slurm_bin = str(merged["slurm_bin"])
        self.agent_socket = str(merged["agent_socket"])
        self.jobstats_gpustat_dir = str(merged["jobstats_gpustat_dir"])
        self.dcgm_job_mapping_dir = str(merged["dcgm_job_mapping_dir"])
        self.source = source

    def binding_path(self, node: str, job_id: int) -> str:
        """Where the Prolog writes job ``job_id``'s GPU binding on ``node`` (as Config does)."""
        return join(self.run_dir, node, "jobs", f"{job_id}.json")

    def agent_socket_path(self, node: str) -> str:
        """The agent's Unix socket for ``node``: configured, else under the node's run dir."""
        return self.agent_socket or join(self.run_dir, node, "agent.sock")

    def slurm_command(self, name: str) -> str:
        """Absolute path of a Slurm client command (hooks run with no PATH)."""
        return join(self.slurm_bin, name)


class _Subset(Exception):
    """The file is outside the flat subset; tomllib decides."""


_BASIC_ESCAPES = {"b": "\b", "t": "\t", "n": "\n", "f": "\f", "r": "\r", '"': '"', "\\": "\\"}


def _bare_key(key: str) -> bool:
    return bool(key) and all(c.isascii() and (c.isalnum() or c in "_-") for c in key)


def _string(text: str, i: int) -> tuple[str, int]:
    """Parse a one-line basic or literal string starting at text[i]; return (value, end)."""
    quote = text[i]
    if text.startswith(quote * 3, i):
        raise _Subset("multi-line string")
    out: list[str] = []
    j = i + 1
    while j < len(text):
        c = text[j]
        if c == quote:
            return "".join(out), j + 1
        if quote == '"' and c == "\\":
            esc = text[j + 1 : j + 2]
            if esc in _BASIC_ESCAPES:
                out.append(_BASIC_ESCAPES[esc])
                j += 2
                continue
            if esc in ("u", "U"):
                width = 4 if esc == "u" else 8
                digits = text[j + 2 : j + 2 + width]
                if len(digits) != width or not all(d in "0123456789abcdefABCDEF" for d in digits):
                    raise _Subset("bad unicode escape")
                out.append(chr(int(digits, 16)))
                j += 2 + width
                continue
            raise _Subset("unknown escape")
        if c < " " and c != "\t":
            raise _Subset("control character in string")
        out.append(c)
        j += 1
    raise _Subset("unterminated string")


def _skip_space(text: str, i: int) -> int:
    while i < len(text) and text[i] in " \t":
        i += 1
    return i


def _value(text: str, i: int) -> tuple[object, int]:
    c = text[i : i + 1]
    if c in ('"', "'"):
        return _string(text, i)
    if c == "[":
        items: list[object] = []
        i = _skip_space(text, i + 1)
        while True:
            if text[i : i + 1] == "]":
                return items, i + 1
            if text[i : i + 1] not in ('"', "'"):
                raise _Subset("list of something other than strings")
            item, i = _string(text, i)
            items.append(item)
            i = _skip_space(text, i)
            if text[i : i + 1] == ",":
                i = _skip_space(text, i + 1)
            elif text[i : i + 1] != "]":
                raise _Subset("list not closed on its line")
    end = i
    while end < len(text) and text[end] not in " \t#":
        end += 1
    word = text[i:end]
    if word == "true":
        return True, end
    if word == "false":
        return False, end
    digits = word[1:] if word[:1] in "+-" else word
    # TOML integers: no leading zeros, underscores only between digits.
    if (
        digits
        and digits.replace("_", "").isdigit()
        and digits.isascii()
        and not (len(digits) > 1 and digits[0] == "0")
        and "__" not in digits
        and digits[0] != "_"
        and digits[-1] != "_"
    ):
        return int(word.replace("_", "")), end
    raise _Subset(f"value {word!r} outside the flat subset")


def parse_flat_toml(text: str) -> dict[str, object]:
    """Parse the flat TOML subset config.toml uses; raise _Subset for anything else."""
    values: dict[str, object] = {}
    for line in text.split("\n"):
        line = line.rstrip("\r")
        i = _skip_space(line, 0)
        if i == len(line) or line[i] == "#":
            continue
        eq = line.find("=", i)
        if eq < 0:
            raise _Subset("not a key = value line")
        key = line[i:eq].rstrip(" \t")
        if not _bare_key(key):
            raise _Subset(f"key {key!r} is not a bare key")
        if key in values:
            raise _Subset("duplicate key")
        j = _skip_space(line, eq + 1)
        if j == len(line):
            raise _Subset("missing value")
        value, j = _value(line, j)
        j = _skip_space(line, j)
        if j < len(line):
            if line[j] != "#":
                raise _Subset("text after the value")
            if any((c < " " and c != "\t") or c == "\x7f" for c in line[j:]):
                raise _Subset("control character in comment")
        values[key] = value
    return values


def _check(path: str, data: dict[str, object]) -> dict[str, object]:
    """Validate keys and types as load_config does; return the accepted values."""
    out: dict[str, object] = {}
    for name, value in data.items():
        if name not in DEFAULTS:
            raise ConfigError(f"{path}: unknown key '{name}'; see conf/config.toml for the keys")
        default = DEFAULTS[name]
        if isinstance(default, bool):
            ok = isinstance(value, bool)
        elif isinstance(default, int):
            ok = isinstance(value, int) and not isinstance(value, bool) and value >= 0
        elif isinstance(default, tuple):
            ok = isinstance(value, list) and all(isinstance(v, str) for v in value)
        else:
            ok = isinstance(value, str) and bool(value)
        if not ok:
            raise ConfigError(f"{path}: '{name}' has the wrong type or value: {value!r}")
        out[name] = value
    return out


def read_config_file(path: str) -> dict[str, object]:
    """The validated key/values of one config file (fast subset, else tomllib)."""
    try:
        with open(path, "rb") as f:
            raw = f.read()
    except PermissionError as e:
        raise ConfigError(f"config file {path} is not readable: permission denied") from e
    except OSError as e:
        raise ConfigError(f"config file {path} cannot be read: {e.strerror}") from e
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as e:
        raise ConfigError(f"{path}: not UTF-8") from e
    try:
        data = parse_flat_toml(text)
    except _Subset:
        # Valid TOML that is not flat-formatted still works, only slower.
        import tomllib

        try:
            data = tomllib.loads(text)
        except tomllib.TOMLDecodeError as e:
            raise ConfigError(f"{path}: invalid TOML: {e}") from e
    return _check(path, data)


def load_hook_config(environ: dict[str, str] | None = None) -> HookConfig:
    """Load the configuration for a hook: the file, then environment overrides."""
    if environ is None:
        import os  # not on the hook path: hooks pass their environment

        environ = dict(os.environ)
    env = environ
    path = env.get("COMPUTEPROOF_CONFIG") or ""
    explicit = bool(path)
    path = path or DEFAULT_CONFIG_PATH
    source = path
    try:
        values = read_config_file(path)
    except ConfigError:
        if not explicit and not lexists(path):
            values, source = {}, "defaults"
        else:
            raise
    for var, name in _ENV.items():
        if env.get(var):
            values[name] = env[var]
    if "%n" in str(values.get("spool_dir", "")):
        try:
            values["spool_dir"] = node_path(
                str(values["spool_dir"]), env, str(values.get("host") or posix.uname().nodename)
            )
        except ValueError as e:
            raise ConfigError(f"{source}: spool_dir: {e}") from e
    return HookConfig(values, source)
