"""A training run's folder: the names of its files, and reading its checkpoint.

A run folder holds ``config.toml`` (the effective config), ``metrics.json`` (one record per evaluation),
``checkpoint.pt`` (everything needed to continue exactly) and ``point_cloud.ply`` (Inria layout, in the
run's world frame). `gsplat_py.training.trainer` writes them; the post-training tools read them.
"""

from __future__ import annotations

from pathlib import Path

import torch

from ..io.paths import PathLike

__all__ = [
    "CHECKPOINT_FILE",
    "CHECKPOINT_FORMAT",
    "CONFIG_FILE",
    "METRICS_FILE",
    "PLY_FILE",
    "TrainingError",
    "load_checkpoint",
]

CHECKPOINT_FILE = "checkpoint.pt"
CONFIG_FILE = "config.toml"
METRICS_FILE = "metrics.json"
PLY_FILE = "point_cloud.ply"
CHECKPOINT_FORMAT = 1


class TrainingError(RuntimeError):
    """A run that cannot start or cannot go on (unwritable output, no views, NaN loss, no checkpoint...)."""


def load_checkpoint(path: PathLike) -> dict:
    """A checkpoint written by the trainer; ``path`` is the file or the run folder holding it."""
    path = Path(path)
    if path.is_dir():
        path = path / CHECKPOINT_FILE
    if not path.exists():
        raise TrainingError(f"{path}: no checkpoint here (expected a run folder holding {CHECKPOINT_FILE})")
    try:
        checkpoint = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as error:  # torch raises many types for a damaged file
        raise TrainingError(f"{path}: not a readable checkpoint ({type(error).__name__}: {error})") from None
    if not isinstance(checkpoint, dict) or checkpoint.get("format") != CHECKPOINT_FORMAT:
        raise TrainingError(f"{path}: not a gsplat_py checkpoint of format {CHECKPOINT_FORMAT}")
    return checkpoint
