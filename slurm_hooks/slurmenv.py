"""Parsing of what Slurm hands a Prolog/Epilog: SLURM_* variables and their formats.

Pure functions over strings, standard library only (the hooks import this).

What Slurm 22.05 really passes (dumped from the test cluster, see conf/INSTALL.md):
all four hooks get SLURM_JOB_ID, SLURM_JOB_RESTART_COUNT, SLURM_JOB_UID/GID/USER,
SLURM_JOB_ACCOUNT, SLURM_JOB_PARTITION, SLURM_JOB_WORK_DIR. Node hooks add
SLURMD_NODENAME, SLURM_CONF, SLURM_JOB_GPUS / CUDA_VISIBLE_DEVICES (this node's GRES
indices) and SLURM_HET_JOB_ID, but no array ids and no het offset. Controller hooks add
SLURM_ARRAY_JOB_ID / SLURM_ARRAY_TASK_ID, SLURM_HET_JOB_ID / SLURM_HET_JOB_OFFSET,
SLURM_JOB_NAME, SLURM_JOB_NODELIST, but no SLURM_CONF, no GPU indices and no submit time
(those come from one ``scontrol show job``). Epilogs add SLURM_JOB_EXIT_CODE2 "3:0".
"""

from computeproof.errors import SlurmError

TYPE_CHECKING = False
if TYPE_CHECKING:
    from collections.abc import Mapping


def env_int(env: "Mapping[str, str]", name: str) -> int | None:
    """The non-negative integer in ``env[name]``, None when unset, empty or not a number."""
    value = env.get(name, "").strip()
    if value.isdigit() and value.isascii():
        return int(value)
    return None


def job_id_of(env: dict[str, str]) -> int:
    """SLURM_JOB_ID (or the older SLURM_JOBID) as an integer; SlurmError if absent."""
    job_id = env_int(env, "SLURM_JOB_ID")
    if job_id is None:
        job_id = env_int(env, "SLURM_JOBID")
    if job_id is None:
        raise SlurmError("SLURM_JOB_ID is missing or not a number: not run by Slurm?")
    return job_id


def restart_count(env: dict[str, str]) -> int | None:
    """The job's restart count (SLURM_JOB_RESTART_COUNT; SLURM_RESTART_COUNT in job envs)."""
    n = env_int(env, "SLURM_JOB_RESTART_COUNT")
    return n if n is not None else env_int(env, "SLURM_RESTART_COUNT")


def display_id(
    job_id: int,
    array_job_id: int | None = None,
    array_task_id: int | None = None,
    het_job_id: int | None = None,
    het_job_offset: int | None = None,
) -> str:
    """Slurm's display id: "123", "100_4" for an array task, "200+1" for a het component."""
    if array_job_id is not None and array_task_id is not None:
        return f"{array_job_id}_{array_task_id}"
    if het_job_id is not None and het_job_offset is not None:
        return f"{het_job_id}+{het_job_offset}"
    return str(job_id)


def display_id_from_env(env: dict[str, str], job_id: int) -> str:
    """The display id from whatever array/het variables this hook was given."""
    return display_id(
        job_id,
        env_int(env, "SLURM_ARRAY_JOB_ID"),
        env_int(env, "SLURM_ARRAY_TASK_ID"),
        env_int(env, "SLURM_HET_JOB_ID"),
        env_int(env, "SLURM_HET_JOB_OFFSET"),
    )


def parse_int_ranges(text: str) -> list[int]:
    """Expand "0,2", "0-3", "0-1,3" (Slurm index lists) into integers, in order."""
    out: list[int] = []
    text = text.strip()
    if not text:
        return out
    for part in text.split(","):
        part = part.strip()
        lo, sep, hi = part.partition("-")
        if not (lo.isdigit() and lo.isascii()) or (sep and not (hi.isdigit() and hi.isascii())):
            raise SlurmError(f"bad index list {text!r}")
        if sep:
            first, last = int(lo), int(hi)
            if last < first:
                raise SlurmError(f"bad index range {part!r} in {text!r}")
            out.extend(range(first, last + 1))
        else:
            out.append(int(lo))
    return out


def gpu_indices(env: dict[str, str]) -> list[int]:
    """This node's GRES GPU indices: SLURM_JOB_GPUS, else CUDA_VISIBLE_DEVICES if numeric."""
    raw = env.get("SLURM_JOB_GPUS")
    if raw is None:
        raw = env.get("CUDA_VISIBLE_DEVICES", "")
        # CUDA_VISIBLE_DEVICES may hold UUIDs or "NoDevFiles"; only Slurm's indices count.
        if not all(c in "0123456789,-" for c in raw):
            return []
    return parse_int_ranges(raw)


def split_top(text: str, opening: str = "[", closing: str = "]") -> list[str]:
    """Split on the commas outside brackets (a hostlist's ``[]``, a GRES detail's ``()``);
    empty parts are dropped."""
    parts, depth, start = [], 0, 0
    for i, c in enumerate(text):
        if c == opening:
            depth += 1
        elif c == closing:
            depth -= 1
        elif c == "," and depth == 0:
            parts.append(text[start:i])
            start = i + 1
    parts.append(text[start:])
    return [p for p in parts if p]


def expand_hostlist(text: str) -> list[str]:
    """Expand a Slurm hostlist ("c[1-3,5],gpu01") into names, keeping zero padding."""
    names: list[str] = []
    for part in split_top(text.strip()):
        open_at = part.find("[")
        if open_at < 0:
            names.append(part)
            continue
        close_at = part.find("]", open_at)
        if close_at < 0:
            raise SlurmError(f"bad hostlist {text!r}")
        prefix, body, rest = part[:open_at], part[open_at + 1 : close_at], part[close_at + 1 :]
        tails = expand_hostlist(rest) if rest else [""]
        for piece in body.split(","):
            lo, sep, hi = piece.partition("-")
            if not lo.isdigit() or (sep and not hi.isdigit()):
                raise SlurmError(f"bad hostlist {text!r}")
            width = len(lo)
            numbers = range(int(lo), int(hi) + 1) if sep else [int(lo)]
            for n in numbers:
                for tail in tails:
                    names.append(f"{prefix}{n:0{width}d}{tail}")
    return names


def parse_exit_code(text: str) -> tuple[int, int] | None:
    """Slurm's "<exit>:<signal>" (SLURM_JOB_EXIT_CODE2, scontrol ExitCode) as integers."""
    code, sep, sig = text.strip().partition(":")
    if sep and code.isdigit() and sig.isdigit():
        return int(code), int(sig)
    return None
