"""`python -m slurm_hooks.cli`."""

from slurm_hooks.cli import main

main()
