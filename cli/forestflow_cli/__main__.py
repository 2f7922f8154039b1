"""`python -m forestflow_cli` is `ffctl`."""

from forestflow_cli.main import run

run()
