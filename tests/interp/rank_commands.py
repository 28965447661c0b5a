"""Run several `interp` commands in one process, in turn: under torchrun, each rank runs
them all, so one launch (one start-up per rank) checks every workflow's split.

Usage: python -m tests.interp.rank_commands ARGV_JSON  (a JSON list of argv lists)
"""

from __future__ import annotations

import json
import sys

from interp.cli import app

if __name__ == "__main__":
    for argv in json.loads(sys.argv[1]):
        code = app(argv, prog_name="interp", standalone_mode=False)
        if code:  # the command printed its one-line error
            sys.exit(code)
