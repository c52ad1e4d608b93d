"""``python -m gsplat_py``: the command line, and what each ``train --nproc`` (or torchrun) worker runs."""

import os
import sys

from .cli import main

status = main()
if "WORLD_SIZE" in os.environ:
    # A training worker skips the interpreter's teardown. After a peer died, gloo's threads, destroyed
    # there, now and then abort the process (SIGABRT, "terminate called without an active exception")
    # after its error was printed, replacing the status; destroying the process group first made that
    # rarer, not gone. Everything the run saved is already on disk, written whole and then renamed.
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(status)
sys.exit(status)
