"""`python -m computeproof.cli`: the receipt library's commands (no Slurm side)."""

from computeproof.cli import main

main()
