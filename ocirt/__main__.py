"""`python -m ocirt` runs the CLI."""

from ocirt.cli import run_and_exit

run_and_exit()
