"""The four Slurm hooks: PrologSlurmctld, Prolog, Epilog, EpilogSlurmctld.

    prolog_slurmctld  -> scheduled    (controller: who, where, what was asked and given)
    prolog            -> started      (each node: its GPUs, by minor number; binding file)
    epilog            -> node_done    (each node: the agent's GPU summary; binding removed)
    epilog_slurmctld  -> completed    (controller: exit code, times, GPU-seconds)
                         + a detached watcher that records final_state (finalstate.py)

A hook never harms a job: any failure is logged to syslog and stderr, counted in
``<spool>/hook-failures`` and the hook exits 0, unless the site set ``strict = true``
(then it exits 1: a failing Prolog drains the node and holds the job). A watchdog
(SIGALRM) ends a hook that is stuck anyway. Only cheap modules are imported here
(no json, no subprocess, no signal/enum, not even os: posix and computeproof.posixfs
instead): see bench/bench_hook.py for the budget.
"""

import posix
import sys

from computeproof import posixfs
from computeproof.errors import CanonicalError, ComputeProofError, ConfigError, SlurmError
from computeproof.event import new_event, utc_now
from computeproof.spool import Spool
from slurm_hooks import slurmenv
from slurm_hooks.hookconfig import DEFAULT_CONFIG_PATH, HookConfig, load_hook_config

TYPE_CHECKING = False
if TYPE_CHECKING:
    import signal as _signal
    from types import FrameType
else:
    import _signal  # the C module: signal.py imports enum, ~8 ms

HOOKS = ("prolog_slurmctld", "prolog", "epilog", "epilog_slurmctld")
# Failures must end well inside a second; the watchdog is the backstop for a hung disk.
SCONTROL_TIMEOUT = 0.7
AGENT_TIMEOUT = 0.7
WATCHDOG_SECONDS = 3
FAILURE_COUNTER = "hook-failures"


def failure_line(kind: str, message: str, job_id: int | None = None) -> str:
    """The one line a failure is reported as."""
    return f"computeproof {kind}: job {job_id if job_id is not None else '?'}: {message}"


def log(kind: str, message: str, job_id: int | None = None) -> None:
    """One line to syslog (daemon facility) and stderr; never raises."""
    line = failure_line(kind, message, job_id)
    try:
        import syslog

        syslog.openlog("computeproof-hook", syslog.LOG_PID, syslog.LOG_DAEMON)
        syslog.syslog(syslog.LOG_ERR, line)
    except Exception:
        pass
    try:
        sys.stderr.write(line + "\n")
        sys.stderr.flush()
    except Exception:
        pass


def count_failure(spool_dir: str, line: str = "") -> None:
    """Increment ``<spool>/hook-failures`` under an flock, keep ``line`` as the last; best effort.

    ``hook-failures.last`` holds the latest failure's line for hosts without syslog.
    """
    try:
        import fcntl

        path = posixfs.join(spool_dir, FAILURE_COUNTER)
        fd = posix.open(path, posix.O_RDWR | posix.O_CREAT, 0o600)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX)
            raw = posix.read(fd, 64).strip()
            n = int(raw) + 1 if raw.isdigit() else 1
            posix.lseek(fd, 0, 0)
            posix.ftruncate(fd, 0)
            posix.write(fd, b"%d\n" % n)
            if line:
                last = path + ".last"
                with open(last, "w", encoding="utf-8", errors="replace") as f:
                    f.write(line + "\n")
        finally:
            posix.close(fd)
    except (OSError, ValueError):
        pass


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


def _scontrol(
    config: HookConfig, env: dict[str, str], job_id: int
) -> tuple[dict[str, str], list[dict[str, str]]]:
    """The job's ``scontrol show job -o -d`` record (one controller RPC, bounded)."""
    from slurm_hooks import command
    from slurm_hooks.scontrol import parse_show_job

    out = command.run(
        [config.slurm_command("scontrol"), "show", "job", "-o", "-d", str(job_id)],
        timeout=SCONTROL_TIMEOUT,
        env=command.client_env(env),  # TZ=UTC: the times below are read as UTC
    )
    # An array or het job id prints one line per task or component: take this job's.
    for line in out.decode("utf-8", "replace").splitlines():
        if line.startswith(f"JobId={job_id} "):
            return parse_show_job(line)
    raise SlurmError(f"scontrol show job printed no record for job {job_id}")


def _identity(
    env: dict[str, str], job_id: int, record: dict[str, str] | None
) -> tuple[str, dict[str, int | None]]:
    """The display id and array/het ids, from the environment, else the job record."""
    ids: dict[str, int | None] = {
        "array_job_id": slurmenv.env_int(env, "SLURM_ARRAY_JOB_ID"),
        "array_task_id": slurmenv.env_int(env, "SLURM_ARRAY_TASK_ID"),
        "het_job_id": slurmenv.env_int(env, "SLURM_HET_JOB_ID"),
        "het_job_offset": slurmenv.env_int(env, "SLURM_HET_JOB_OFFSET"),
    }
    if record is not None:
        for name, key in (
            ("array_job_id", "ArrayJobId"),
            ("array_task_id", "ArrayTaskId"),
            ("het_job_id", "HetJobId"),
            ("het_job_offset", "HetJobOffset"),
        ):
            value = record.get(key, "")
            if ids[name] is None and value.isdigit():
                ids[name] = int(value)
    job = slurmenv.display_id(
        job_id, ids["array_job_id"], ids["array_task_id"], ids["het_job_id"], ids["het_job_offset"]
    )
    return job, ids


def _controller_record(
    config: HookConfig, env: dict[str, str], job_id: int
) -> tuple[dict[str, str] | None, list[dict[str, str]], str]:
    try:
        record, details = _scontrol(config, env, job_id)
        return record, details, "scontrol"
    except (SlurmError, OSError) as e:
        # The event is still worth writing from the environment alone; say what is missing.
        return None, [], f"unavailable: {e}"


def _restarts(env: dict[str, str], record: dict[str, str] | None) -> int | None:
    """The restart count: Slurm's hook variable, else the job record's Restarts=."""
    from_env = slurmenv.restart_count(env)
    if from_env is not None:
        return from_env
    if record is not None and record.get("Restarts", "").isdigit():
        return int(record["Restarts"])
    return None


def _gpu_indices_by_node(details: list[dict[str, str]]) -> dict[str, list[int]]:
    from slurm_hooks.scontrol import parse_gres_indices

    out: dict[str, list[int]] = {}
    for group in details:
        indices = parse_gres_indices(group.get("GRES", ""))
        for node in slurmenv.expand_hostlist(group.get("Nodes", "")):
            out[node] = indices
    return out


def prolog_slurmctld(config: HookConfig, env: dict[str, str], job_id: int) -> None:
    """Record ``scheduled``: the job's owner, placement, requested and allocated TRES."""
    from slurm_hooks import scontrol as sc

    record, details, source = _controller_record(config, env, job_id)
    rec = record or {}
    job, ids = _identity(env, job_id, record)
    user, uid = sc.parse_user(rec.get("UserId", ""))
    tres = sc.parse_tres(rec.get("TRES", ""))
    req_tres = sc.parse_tres(rec["ReqTRES"]) if "ReqTRES" in rec else None
    nodelist = env.get("SLURM_JOB_NODELIST") or rec.get("NodeList", "")
    submit = sc.parse_time(rec.get("SubmitTime"), utc=True)
    eligible = sc.parse_time(rec.get("EligibleTime"), utc=True)
    start = sc.parse_time(rec.get("StartTime"), utc=True)
    payload: dict[str, object] = {
        "user": env.get("SLURM_JOB_USER") or user,
        "uid": slurmenv.env_int(env, "SLURM_JOB_UID") if "SLURM_JOB_UID" in env else uid,
        "gid": slurmenv.env_int(env, "SLURM_JOB_GID"),
        "group": env.get("SLURM_JOB_GROUP"),
        "account": env.get("SLURM_JOB_ACCOUNT") or _value(rec, "Account"),
        "partition": env.get("SLURM_JOB_PARTITION") or _value(rec, "Partition"),
        "qos": _value(rec, "QOS") or env.get("SLURM_JOB_QOS"),
        "job_name": env.get("SLURM_JOB_NAME") or _value(rec, "JobName"),
        "work_dir": _value(rec, "WorkDir") or env.get("SLURM_JOB_WORK_DIR"),
        "nodes": slurmenv.expand_hostlist(nodelist) if nodelist else [],
        "num_nodes": _int(rec, "NumNodes"),
        "num_cpus": _int(rec, "NumCPUs"),
        "submit_time": sc.rfc3339(submit),
        "eligible_time": sc.rfc3339(eligible),
        "start_time": sc.rfc3339(start),
        "submit_epoch": submit,
        "start_epoch": start,
        "time_limit_s": sc.parse_duration(rec.get("TimeLimit")),
        "tres_requested": req_tres,
        "tres_per_node": _value(rec, "TresPerNode"),
        "tres_allocated": tres,
        "gpus": sc.gpu_count(tres),
        "gpu_indices": _gpu_indices_by_node(details),
        "restarts": _restarts(env, record),
        "controller": posix.uname().nodename,
        "slurm_record": source,
        **ids,
    }
    run = start_run(config, CONTROLLER, job_id, _restarts(env, record))
    _write(
        config, new_event("scheduled", config.cluster, job, job_id, config.host, payload, run=run)
    )


def epilog_slurmctld(config: HookConfig, env: dict[str, str], job_id: int) -> None:
    """Queue ``completed`` and ``final_state`` for the controller's collector; no RPC.

    The job is still COMPLETING here and the environment lacks its times, TRES and the
    signal of a cancelled job (SLURM_JOB_EXIT_CODE2 reads 0:0 then). Rather than one
    ``scontrol`` call per job, the hook leaves the run's marker with this environment and
    the hook's time, and the one collector per controller reads every ended job with one
    ``squeue`` call a second (see finalstate.py) and writes ``completed`` with
    this hook's time, then ``final_state`` once accounting has it.
    """
    from slurm_hooks.finalstate import COMPLETED_ENV, queue_final_state

    job, ids = _identity(env, job_id, None)
    run, run_source = end_run(config, CONTROLLER, job_id, _restarts(env, None))
    completed: dict[str, object] = {
        "time": utc_now(),
        "run_source": run_source,
        "ids": ids,
        "env": {name: env[name] for name in COMPLETED_ENV if name in env},
    }
    queue_final_state(config, job, job_id, run, completed=completed)


def _value(rec: dict[str, str], key: str) -> str | None:
    from slurm_hooks.scontrol import unset

    value = rec.get(key)
    return None if value is None or unset(value) else value


def _int(rec: dict[str, str], key: str) -> int | None:
    value = rec.get(key, "")
    return int(value) if value.isdigit() else None


CONTROLLER = "@slurmctld"  # run_dir entry of the controller hooks; "@" is in no node name


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
            count_failure(config.spool_dir, failure_line(kind, what, job_id))
        posix._exit(1 if strict else 0)

    _signal.signal(_signal.SIGALRM, on_alarm)
    _signal.alarm(WATCHDOG_SECONDS)
    try:
        handler = _HANDLERS.get(kind)
        if handler is None:
            raise ComputeProofError(f"unknown hook {kind!r}; expected one of {HOOKS}")
        job_id = slurmenv.job_id_of(env)
        try:
            config = load_hook_config(env)
        except ConfigError:
            strict = _strict_hint(env)
            raise
        strict = config.strict
        if kind.endswith("_slurmctld"):
            _find_slurm_conf(env)
        handler(config, env, job_id)
        return 0
    except Exception as e:
        # Everything, not only our own errors: a bug here must not drain a node.
        what = str(e) if isinstance(e, ComputeProofError) else f"{type(e).__name__}: {e}"
        log(kind, what, job_id)
        count_failure(
            config.spool_dir if config is not None else _default_spool(env),
            failure_line(kind, what, job_id),
        )
        return 1 if strict else 0
    finally:
        _signal.alarm(0)


def _find_slurm_conf(env: dict[str, str]) -> None:
    """Give scontrol/sacct slurmctld's SLURM_CONF: Slurm does not pass it to its hooks.

    Without it the clients only find /etc/slurm/slurm.conf (or DNS SRV records); a site
    whose slurmctld runs with SLURM_CONF or ``-f FILE`` would see them fail. It goes into
    ``env`` and the process environment (the collector this hook may fork inherits it).
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


def _default_spool(env: dict[str, str]) -> str:
    """Where to count a failure when the config did not load: its spool_dir line if it has
    one (the counter admins alert on lives there), else the default spool."""
    from slurm_hooks.hookconfig import DEFAULTS

    hint = _config_hint(env, "spool_dir") or ""
    # only a plain quoted absolute path counts; anything else is part of the breakage
    if not (len(hint) > 3 and hint[0] == hint[-1] == '"' and hint[1] == "/" and "\\" not in hint):
        hint = ""
    return env.get("COMPUTEPROOF_SPOOL") or hint[1:-1] or str(DEFAULTS["spool_dir"])
