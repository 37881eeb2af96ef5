"""Which job-info backend to use: pyslurm where it matches the running Slurm, else the
client commands. Kept apart from jobinfo.py (the interface) so that no backend module
imports the module that chooses between them."""

from __future__ import annotations

from computeproof.config import Config
from computeproof.errors import SlurmError
from slurm_hooks.jobinfo import JobInfo


def job_info(config: Config) -> JobInfo:
    """The pyslurm backend when usable, else the Slurm CLI backend."""
    from slurm_hooks.pyslurm_backend import load_pyslurm
    from slurm_hooks.slurmcli import SlurmCli

    try:
        backend = load_pyslurm(config.slurm_bin)
    except SlurmError:
        backend = None
    return backend if backend is not None else SlurmCli(config.slurm_bin)
