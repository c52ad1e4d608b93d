"""One rank of tests/test_distributed_training.py's lost-peer test, started with torchrun's variables (RANK,
WORLD_SIZE=2, MASTER_ADDR, MASTER_PORT): joins the group with `process_group` and exchanges counts; rank 1
kills itself (SIGKILL) at its 20th exchange, and rank 0 leaves the ``with`` block with status 3 when its
exchange fails, as the CLI's worker does with a TrainingError."""

import os
import signal
import sys

import torch

from gsplat_py.rendering.distributed import all_gather_counts
from gsplat_py.training.distributed import process_group, processes_from_environment

LOST_PEER_STATUS = 3
KILLED_AT_EXCHANGE = 20

processes = processes_from_environment()
assert processes is not None and processes.world_size == 2
with process_group(processes, torch.device("cpu"), timeout_s=30.0):
    for exchange in range(10_000):
        if processes.rank == 1 and exchange == KILLED_AT_EXCHANGE:
            os.kill(os.getpid(), signal.SIGKILL)
        try:
            all_gather_counts(exchange, processes.world_size, torch.device("cpu"))
        except RuntimeError:
            sys.exit(LOST_PEER_STATUS)
sys.exit(0)  # rank 0 never got an error: the test fails on this status
