"""`python -m slurm_hooks`: the whole `computeproof` command, Slurm side included."""

from slurm_hooks.cli import main

main()
