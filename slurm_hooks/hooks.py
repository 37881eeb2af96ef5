"""The four Slurm hooks: Prolog and Epilog on every node; PrologSlurmctld and
EpilogSlurmctld on the controller, both optional.

    prolog            -> started      (each node: its GPUs, by minor number; binding file)
    epilog            -> node_done    (each node: the agent's GPU summary; binding removed)
    prolog_slurmctld  -> scheduled    (optional: a record written before the job may start)
    epilog_slurmctld  -> nothing      (kept as a no-op for slurm.conf files that name it)

The controller's collector (controller.py, `computeproof controller run`) writes
scheduled, completed and final_state for every job from batched reads; PrologSlurmctld
only adds a synchronous record, at a Python start and one squeue call a job on the
controller. Both build ``scheduled`` with lifecycle.py, under the same id: the ledger
keeps one.

A hook never harms a job: any failure is logged to syslog and stderr, counted in
``hook-failures`` in the spool and in the run dir (hooklog.py), and the hook exits 0,
unless the site set ``strict = true`` (then it exits 1: a failing Prolog drains the node
and holds the job). A value a job's user controls (name, work dir, paths: any bytes) never
makes a hook fail. A watchdog (SIGALRM) ends a hook that is stuck anyway. Only cheap
modules are imported here (no json, no subprocess, no signal/enum, not even os: posix and
computeproof.posixfs instead): see bench/bench_hook.py for the budget.
"""

import posix

from computeproof import posixfs
from computeproof.errors import CanonicalError, ComputeProofError, ConfigError, SlurmError
from computeproof.event import new_event, utc_now
from computeproof.spool import Spool
from slurm_hooks import slurmenv
from slurm_hooks.hookconfig import DEFAULT_CONFIG_PATH, HookConfig, load_hook_config
from slurm_hooks.hooklog import count_failure, failure_line, log

TYPE_CHECKING = False
if TYPE_CHECKING:
    import signal as _signal
    from types import FrameType
else:
    import _signal  # the C module: signal.py imports enum, ~8 ms

HOOKS = ("prolog_slurmctld", "prolog", "epilog", "epilog_slurmctld")
# Failures must end well inside a second; the watchdog is the backstop for a hung disk.
SQUEUE_TIMEOUT = 0.7
AGENT_TIMEOUT = 0.7
WATCHDOG_SECONDS = 3
__all__ = ["HOOKS", "count_failure", "failure_line", "log", "main"]


def _config_hint(environ: dict[str, str], name: str) -> str | None:
    """The raw value of ``name = value`` on a line of its own in a config file that does
    not parse (so a broken config still says where its spool is and whether it is strict)."""
    path = environ.get("COMPUTEPROOF_CONFIG") or DEFAULT_CONFIG_PATH
    try:
        with open(path, "rb") as f:
            lines = f.read().decode("utf-8", "replace").splitlines()
    except OSError:
        return None
    for line in lines:
        key, sep, value = line.partition("=")
        if sep and key.strip() == name:
            return value.split("#")[0].strip()
    return None


def _strict_hint(environ: dict[str, str]) -> bool:
    """Whether an unparsable config file still says ``strict = true`` on a line of its own."""
    return _config_hint(environ, "strict") == "true"


def _write(config: HookConfig, event: dict[str, object]) -> None:
    Spool(config.spool_dir).write(event)


def _live_record(
    config: HookConfig, env: dict[str, str], job_id: int
) -> "tuple[dict[str, object] | None, str]":
    """The controller's record of the job (``squeue -O`` of fields no user sets; one
    bounded RPC) and its source, or (None, why not)."""
    from slurm_hooks import command
    from slurm_hooks.slurmtext import SAFE_FORMAT, parse_squeue_safe

    argv = [config.slurm_command("squeue"), "-h", "-t", "all", "-j", str(job_id),
            "-O", SAFE_FORMAT]  # fmt: skip
    try:
        # TZ=UTC: the times are read as UTC
        out = command.run(argv, timeout=SQUEUE_TIMEOUT, env=command.client_env(env))
    except (SlurmError, OSError) as e:
        # The event is still worth writing from the environment alone; say what is missing.
        return None, f"env only: {e}"
    for rec in parse_squeue_safe(out.decode("utf-8", "replace")):
        if rec["job_id"] == job_id:
            return rec, "squeue"
    return None, f"env only: squeue printed no record of job {job_id}"


def _identity(
    env: dict[str, str], job_id: int, record: "dict[str, object] | None"
) -> tuple[str, dict[str, int | None]]:
    """The display id and array/het ids, from the environment, else the job record."""
    ids: dict[str, int | None] = {
        "array_job_id": slurmenv.env_int(env, "SLURM_ARRAY_JOB_ID"),
        "array_task_id": slurmenv.env_int(env, "SLURM_ARRAY_TASK_ID"),
        "het_job_id": slurmenv.env_int(env, "SLURM_HET_JOB_ID"),
        "het_job_offset": slurmenv.env_int(env, "SLURM_HET_JOB_OFFSET"),
    }
    if record is not None:
        for name in ids:
            value = record.get(name)
            if ids[name] is None and isinstance(value, int):
                ids[name] = value
    job = slurmenv.display_id(
        job_id, ids["array_job_id"], ids["array_task_id"], ids["het_job_id"], ids["het_job_offset"]
    )
    return job, ids


def _restarts(env: dict[str, str], record: "dict[str, object] | None") -> int | None:
    """The restart count: Slurm's hook variable, else the job record's."""
    from_env = slurmenv.restart_count(env)
    if from_env is not None:
        return from_env
    restarts = record.get("restarts") if record is not None else None
    return restarts if isinstance(restarts, int) else None


def prolog_slurmctld(config: HookConfig, env: dict[str, str], job_id: int) -> None:
    """Record ``scheduled`` before the job may start (the collector records it too,
    under the same id; this hook is for sites that want it synchronous and strict)."""
    from slurm_hooks.lifecycle import scheduled_payload

    rec, source = _live_record(config, env, job_id)
    job, ids = _identity(env, job_id, rec)
    # SLURM_JOB_RESTART_COUNT is the run about to start (it is the epilogs that see it early)
    run = _restarts(env, rec) or 0
    record = {**(rec or {}), **ids}
    payload = scheduled_payload(record, source, "PrologSlurmctld", env)
    _write(
        config, new_event("scheduled", config.cluster, job, job_id, config.host, payload, run=run)
    )


def epilog_slurmctld(config: HookConfig, env: dict[str, str], job_id: int) -> None:
    """Nothing: the collector records ``completed`` and ``final_state``.

    As EpilogSlurmctld runs, a cancelled job's signal is known neither to its environment
    (SLURM_JOB_EXIT_CODE2 0:0) nor to slurmctld (squeue 0:0 while COMPLETING), so a record
    written here would be wrong where the collector's, a poll later, is right. The hook
    stays, exiting 0 at once, for slurm.conf files that still name it."""


def _run_file(config: HookConfig, where: str, job_id: int) -> str:
    # Under run_dir (tmpfs on a real node): only a prolog -> epilog hand-over, per boot.
    return posixfs.join(config.run_dir, where, "runs", str(job_id))


def _read_run(path: str) -> int | None:
    try:
        with open(path, "rb") as f:
            raw = f.read().strip()
    except OSError:
        return None
    return int(raw) if raw.isdigit() else None


def start_run(config: HookConfig, where: str, job_id: int, run: int | None) -> int:
    """At a prolog: this run's number, kept in ``<run_dir>/<where>/runs/<job_id>``.

    The matching epilog reads it back, because by then Slurm has already counted a
    requeue (SLURM_JOB_RESTART_COUNT reads 1 in the epilogs of a requeued first run).
    ``run`` None (a Slurm that gives no restart count) counts this host's prologs of
    the job id since boot instead: 0, then +1 for each requeue that lands here again.
    """
    path = _run_file(config, where, job_id)
    if run is None:
        seen = _read_run(path)
        run = 0 if seen is None else seen + 1
    try:
        _write_small(path, b"%d\n" % run)
    except OSError as e:
        raise ComputeProofError(f"cannot record run number in {path}: {e.strerror}") from e
    return run


def _write_small(path: str, data: bytes) -> None:
    """Write a small root-only file, creating its directory (0700) only when missing."""
    flags = posix.O_WRONLY | posix.O_CREAT | posix.O_TRUNC
    try:
        fd = posix.open(path, flags, 0o600)
    except FileNotFoundError:
        posixfs.make_dirs(posixfs.dirname(path))
        fd = posix.open(path, flags, 0o600)
    try:
        posix.write(fd, data)
    finally:
        posix.close(fd)


def end_run(config: HookConfig, where: str, job_id: int, fallback: int | None) -> tuple[int, str]:
    """At an epilog: (run, source), the run its prolog recorded, else ``fallback``."""
    path = _run_file(config, where, job_id)
    run = _read_run(path)
    if run is not None:
        if fallback is not None:
            # Slurm counts restarts itself, so the file is only needed until now.
            try:  # noqa: SIM105 - contextlib costs an import on the hook path
                posix.unlink(path)
            except OSError:
                pass
        return run, "prolog"
    return (fallback, "env") if fallback is not None else (0, "default")


def _node(env: dict[str, str]) -> str:
    node = env.get("SLURMD_NODENAME")
    if not node:
        raise SlurmError("SLURMD_NODENAME is not set: not run by slurmd?")
    return node


def _write_binding(path: str, binding: dict[str, object]) -> None:
    from computeproof.canonical import canonical_bytes

    tmp = f"{path}.tmp.{posix.getpid()}"
    # /run is tmpfs: atomic rename is what matters, fsync would buy nothing.
    _write_small(tmp, canonical_bytes(binding) + b"\n")
    posix.rename(tmp, path)


def prolog(config: HookConfig, env: dict[str, str], job_id: int) -> None:
    """Record ``started`` for this node and write the job's GPU binding file."""
    from slurm_hooks import gres

    node = _node(env)
    job = slurmenv.display_id_from_env(env, job_id)
    run = start_run(config, node, job_id, slurmenv.restart_count(env))
    indices = slurmenv.gpu_indices(env)
    resolution = "none"
    gpus: list[dict[str, object]] = []
    if indices:
        conf = gres.gres_conf_path(env.get("SLURM_CONF"))
        try:
            with open(conf) as f:
                files = gres.gpu_device_files(f.read(), node)
            resolution = "gres.conf"
        except (OSError, SlurmError) as e:
            files = []
            resolution = f"unresolved: {conf}: {e}"
        gpus = gres.resolve_gpus(indices, files)
        if resolution == "gres.conf" and any(g["minor"] is None for g in gpus):
            resolution = "partial: some indices have no device file in gres.conf"
    now = utc_now()
    uid = slurmenv.env_int(env, "SLURM_JOB_UID")
    user = env.get("SLURM_JOB_USER", "")
    binding: dict[str, object] = {
        "cluster": config.cluster,
        "job": job,
        "job_id": job_id,
        "run": run,
        "uid": uid,
        "user": user,
        "account": env.get("SLURM_JOB_ACCOUNT", ""),  # for the agent's metrics labels
        "node": node,
        "gpus": [g for g in gpus if g["minor"] is not None],
        "time": now,
    }
    payload: dict[str, object] = {
        "node": node,
        "uid": uid,
        "gid": slurmenv.env_int(env, "SLURM_JOB_GID"),
        "user": user or None,
        "partition": env.get("SLURM_JOB_PARTITION"),
        "work_dir": env.get("SLURM_JOB_WORK_DIR"),
        "het_job_id": slurmenv.env_int(env, "SLURM_HET_JOB_ID"),
        "slurm_job_gpus": env.get("SLURM_JOB_GPUS"),
        "gpus": gpus,
        "gpu_resolution": resolution,
        "run_source": "env" if slurmenv.restart_count(env) is not None else "node",
        "binding_path": config.binding_path(node, job_id),
    }
    # The event first: it is the durable fact; the binding only feeds the agent.
    _write(
        config, new_event("started", config.cluster, job, job_id, node, payload, run=run, time=now)
    )
    if uid is not None:
        _write_binding(config.binding_path(node, job_id), binding)
        if config.jobstats_gpustat_dir or config.dcgm_job_mapping_dir:  # opt-in: jobmap.py
            from slurm_hooks import jobmap

            for problem in jobmap.prolog(config, node, job_id, uid, gpus):
                log("prolog", problem, job_id)


def epilog(config: HookConfig, env: dict[str, str], job_id: int) -> None:
    """Record ``node_done`` with the agent's GPU summary and remove the binding file."""
    from slurm_hooks.agentclient import node_summary

    node = _node(env)
    job = slurmenv.display_id_from_env(env, job_id)
    run, run_source = end_run(config, node, job_id, slurmenv.restart_count(env))
    summary, source = node_summary(config, node, job_id, AGENT_TIMEOUT)
    exit_code = slurmenv.parse_exit_code(env.get("SLURM_JOB_EXIT_CODE2", ""))
    payload: dict[str, object] = {
        "node": node,
        "uid": slurmenv.env_int(env, "SLURM_JOB_UID"),
        "slurm_job_gpus": env.get("SLURM_JOB_GPUS"),
        "exit_code_env": env.get("SLURM_JOB_EXIT_CODE2"),
        "exit_code": exit_code[0] if exit_code else None,
        "signal": exit_code[1] if exit_code else None,
        "gpu_summary": summary,
        "gpu_summary_source": source,
        "run_source": run_source,
    }
    event = new_event("node_done", config.cluster, job, job_id, node, payload, run=run)
    try:
        _write(config, event)
    except CanonicalError as e:
        if summary is None:
            raise
        # An agent answer that canonical JSON refuses must not cost the node_done fact.
        payload["gpu_summary"] = None
        payload["gpu_summary_source"] = f"invalid: {e}"
        _write(config, new_event("node_done", config.cluster, job, job_id, node, payload, run=run))
    try:  # noqa: SIM105 - contextlib costs an import on the hook path
        posix.unlink(config.binding_path(node, job_id))
    except (FileNotFoundError, NotADirectoryError):
        pass  # none was written (a run dir that cannot hold one has none to remove)
    if config.jobstats_gpustat_dir or config.dcgm_job_mapping_dir:  # opt-in: jobmap.py
        from slurm_hooks import jobmap

        for problem in jobmap.epilog(config, job_id):
            log("epilog", problem, job_id)


_HANDLERS = {
    "prolog_slurmctld": prolog_slurmctld,
    "prolog": prolog,
    "epilog": epilog,
    "epilog_slurmctld": epilog_slurmctld,
}


def main(kind: str, environ: dict[str, str] | None = None) -> int:
    """Run hook ``kind`` and return its exit status: 0, or 1 on failure in strict mode."""
    env = posixfs.environ() if environ is None else environ
    job_id: int | None = None
    config: HookConfig | None = None
    strict = False

    def on_alarm(signum: int, frame: "FrameType | None") -> None:
        what = f"watchdog: still running after {WATCHDOG_SECONDS} s, giving up"
        log(kind, what, job_id)
        if config is not None:
            count_failure(config.spool_dir, failure_line(kind, what, job_id), config.run_dir)
        posix._exit(1 if strict else 0)

    _signal.signal(_signal.SIGALRM, on_alarm)
    _signal.alarm(WATCHDOG_SECONDS)
    try:
        handler = _HANDLERS.get(kind)
        if handler is None:
            raise ComputeProofError(f"unknown hook {kind!r}; expected one of {HOOKS}")
        if handler is epilog_slurmctld:
            return 0  # records nothing: not even a broken config is its concern
        job_id = slurmenv.job_id_of(env)
        try:
            config = load_hook_config(env)
        except ConfigError:
            strict = _strict_hint(env)
            raise
        strict = config.strict
        if kind == "prolog_slurmctld":
            _find_slurm_conf(env)
        handler(config, env, job_id)
        return 0
    except Exception as e:
        # Everything, not only our own errors: a bug here must not drain a node.
        what = str(e) if isinstance(e, ComputeProofError) else f"{type(e).__name__}: {e}"
        log(kind, what, job_id)
        count_failure(
            config.spool_dir if config is not None else _default_dir(env, "spool_dir"),
            failure_line(kind, what, job_id),
            config.run_dir if config is not None else _default_dir(env, "run_dir"),
        )
        return 1 if strict else 0
    finally:
        _signal.alarm(0)


def _find_slurm_conf(env: dict[str, str]) -> None:
    """Give squeue slurmctld's SLURM_CONF: Slurm does not pass it to its controller hooks.

    Without it the clients only find /etc/slurm/slurm.conf (or DNS SRV records); a site
    whose slurmctld runs with SLURM_CONF or ``-f FILE`` would see them fail. It goes into
    ``env`` and the process environment.
    """
    if env.get("SLURM_CONF"):
        return
    ppid = posix.getppid()
    found = b""
    try:
        with open(f"/proc/{ppid}/environ", "rb") as f:
            for item in f.read().split(b"\0"):
                if item.startswith(b"SLURM_CONF="):
                    found = item[11:]
                    break
        if not found:
            with open(f"/proc/{ppid}/cmdline", "rb") as f:
                args = f.read().split(b"\0")
            for i, arg in enumerate(args[:-1]):
                if arg == b"-f" and args[i + 1]:
                    found = args[i + 1]
                    break
    except OSError:
        pass
    if found:
        env["SLURM_CONF"] = found.decode("utf-8", "surrogateescape")
        posixfs.setenv("SLURM_CONF", env["SLURM_CONF"])


def _default_dir(env: dict[str, str], key: str) -> str:
    """Where to count a failure when the config did not load: its ``key`` line if it has
    one (the counters admins alert on live there), else the default."""
    from slurm_hooks.hookconfig import DEFAULTS

    hint = _config_hint(env, key) or ""
    # only a plain quoted absolute path counts; anything else is part of the breakage
    if not (len(hint) > 3 and hint[0] == hint[-1] == '"' and hint[1] == "/" and "\\" not in hint):
        hint = ""
    if key == "spool_dir" and env.get("COMPUTEPROOF_SPOOL"):
        return env["COMPUTEPROOF_SPOOL"]
    return hint[1:-1] or str(DEFAULTS[key])
