"""Run several `interp` commands in one process, in turn: under torchrun, each rank runs
them all, so one launch (one start-up per rank) checks every workflow's split.

Rank 0 writes a command's tables after the ranks have met, so the ranks meet again before
the next command, which may read them (the ablation reads the retrieval scores).

Usage: python -m tests.interp.rank_commands ARGV_JSON  (a JSON list of argv lists)
"""

from __future__ import annotations

import json
import sys

from interp.cli import app
from interp.shards import barrier, current_shard

if __name__ == "__main__":
    for argv in json.loads(sys.argv[1]):
        code = app(argv, prog_name="interp", standalone_mode=False)
        if code:  # the command printed its one-line error
            sys.exit(code)
        if current_shard().count > 1:
            barrier()
