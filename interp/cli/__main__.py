"""`python -m interp.cli`: the `interp` command, e.g. under `torchrun -m interp.cli ...`."""

from interp.cli import app

app()
