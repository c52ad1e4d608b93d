"""A training run's folder: the names of its files, and reading its checkpoint.

A run folder holds ``config.toml`` (the effective config), ``metrics.json`` (one record per evaluation),
``checkpoint.pt`` (everything needed to continue exactly) and ``point_cloud.ply`` (Inria layout, in the
run's world frame). `gsplat_py.training.trainer` writes them; the post-training tools read them.

:func:`load_checkpoint` is the one reader of checkpoints: a weights-only load (tensors and plain data; a
file holding any other Python object is refused, not executed), then :func:`checkpoint_problem` checks
every field the trainer wrote against what the trainer and the tools will do with it.
"""

from __future__ import annotations

import math
import pickle
from pathlib import Path
from typing import Any

import torch
from torch import Tensor

from ..io.paths import PathLike, input_file_problem
from ..model import PARAM_NAMES, SH_DEGREE_OF_COUNT
from .config import ConfigError, config_from_dict

__all__ = [
    "CHECKPOINT_FILE",
    "CHECKPOINT_FORMAT",
    "CONFIG_FILE",
    "METRICS_FILE",
    "PLY_FILE",
    "RUN_FILES",
    "TrainingError",
    "checkpoint_problem",
    "load_checkpoint",
]

CHECKPOINT_FILE = "checkpoint.pt"
CONFIG_FILE = "config.toml"
METRICS_FILE = "metrics.json"
PLY_FILE = "point_cloud.ply"
RUN_FILES = (CONFIG_FILE, METRICS_FILE, CHECKPOINT_FILE, PLY_FILE)
CHECKPOINT_FORMAT = 1


class TrainingError(RuntimeError):
    """A run that cannot start or cannot go on (unwritable output, no views, NaN loss, no checkpoint...)."""


def load_checkpoint(path: PathLike) -> dict:
    """A checkpoint written by the trainer; ``path`` is the file or the run folder holding it. TrainingError
    (one line, naming the file and the field) for anything else."""
    path = Path(path)
    if path.is_dir():
        path = path / CHECKPOINT_FILE
    if not path.exists():
        raise TrainingError(f"{path}: no checkpoint here (expected a run folder holding {CHECKPOINT_FILE})")
    problem = input_file_problem(path)
    if problem is not None:
        raise TrainingError(f"{path}: cannot read the checkpoint: {problem}")
    expected = f"expected a {CHECKPOINT_FILE} written by gsplat-py train"
    try:
        checkpoint = torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as error:
        # torch's multi-line message: a refused object names an "Unsupported global"; anything else is damage
        detail = str(error).split("WeightsUnpickler error:")[-1].strip()
        if "Unsupported global" not in detail:
            reason = detail.splitlines()[0] if detail else type(error).__name__
            raise TrainingError(f"{path}: not a readable checkpoint ({reason}; {expected})") from None
        raise TrainingError(
            f"{path}: not a gsplat_py checkpoint: it holds Python objects other than tensors and plain data, "
            f"which are not loaded ({expected})"
        ) from None
    except Exception as error:  # torch raises many types for a damaged file
        raise TrainingError(f"{path}: not a readable checkpoint ({_first_line(error)}; {expected})") from None
    problem = checkpoint_problem(checkpoint)
    if problem is not None:
        raise TrainingError(f"{path}: not a gsplat_py checkpoint of format {CHECKPOINT_FORMAT}: {problem}")
    return checkpoint


def _first_line(error: Exception) -> str:
    lines = str(error).strip().splitlines()
    return f"{type(error).__name__}: {lines[0] if lines else ''}"


# The fields of a checkpoint (`Trainer.save_checkpoint` writes them) and the types each may have.
_FIELDS: dict[str, tuple[type, ...]] = {
    "format": (int,),
    "step": (int,),
    "params": (dict,),
    "optimizers": (dict,),
    "strategy_state": (dict,),
    "pose_correction": (dict, type(None)),
    "pose_optimizer": (dict, type(None)),
    "torch_rng": (Tensor,),
    "cuda_rng": (Tensor, type(None)),
    "view_generator": (Tensor,),
    "view_order": (list,),
    "elapsed_s": (float, int),
    "metrics": (list,),
    "config": (dict,),
    "transform": (Tensor,),
    "scene_scale": (float, int),
}
# Fields added after format 1 was fixed: a checkpoint written before them has none, and still resumes.
_OPTIONAL_FIELDS: dict[str, tuple[type, ...]] = {
    "appearance": (dict, type(None)),
    "appearance_optimizer": (dict, type(None)),
    "monitor": (dict, type(None)),
}
# The lists of the monitor's state (`gsplat_py.training.monitor.RunMonitor.state_dict`).
_MONITOR_LISTS = (
    "view_losses",
    "visits",
    "first_losses",
    "recent_views",
    "recent_losses",
    "named_views",
    "dropped_views",
    "warnings",
)
# The shape of each parameter after its first dimension N ("K": any valid number of SH coefficients - 1).
_PARAM_SHAPES: dict[str, tuple[Any, ...]] = {
    "means": (3,),
    "scales": (3,),
    "quats": (4,),
    "opacities": (),
    "sh0": (1, 3),
    "shN": ("K", 3),
}


def checkpoint_problem(checkpoint: Any) -> str | None:
    """What makes ``checkpoint`` (a loaded object) unusable as a gsplat_py checkpoint, or None."""
    if not isinstance(checkpoint, dict):
        return f"expected a dict of fields, got {type(checkpoint).__name__}"
    for name, types in _FIELDS.items():
        if name not in checkpoint:
            return f"no field {name!r}"
        if not isinstance(checkpoint[name], types) or isinstance(checkpoint[name], bool):
            expected = " or ".join(t.__name__ for t in types)
            return f"{name} is a {type(checkpoint[name]).__name__}, expected {expected}"
    for name, types in _OPTIONAL_FIELDS.items():
        if name in checkpoint and not isinstance(checkpoint[name], types):
            expected = " or ".join(t.__name__ for t in types)
            return f"{name} is a {type(checkpoint[name]).__name__}, expected {expected}"
    monitor = checkpoint.get("monitor")
    if monitor is not None and not all(isinstance(monitor.get(key), list) for key in _MONITOR_LISTS):
        return f"monitor: expected the lists {', '.join(_MONITOR_LISTS)}"
    if checkpoint["format"] != CHECKPOINT_FORMAT:
        return f"format is {checkpoint['format']!r}"
    if checkpoint["step"] < 0 or not math.isfinite(checkpoint["elapsed_s"]):
        return (
            f"step {checkpoint['step']}, elapsed_s {checkpoint['elapsed_s']}: expected a step >= 0 and a time"
        )
    if any(isinstance(index, bool) or not isinstance(index, int) for index in checkpoint["view_order"]):
        return "view_order: expected a list of view indices"
    for name in ("torch_rng", "view_generator"):
        if checkpoint[name].dtype != torch.uint8:
            return f"{name}: expected a random-generator state (uint8), got {checkpoint[name].dtype}"
    transform = checkpoint["transform"]
    if (
        tuple(transform.shape) != (4, 4)
        or not transform.is_floating_point()
        or not transform.isfinite().all()
    ):
        return "transform: expected a finite 4x4 matrix"
    return (
        _params_problem(checkpoint["params"])
        or _optimizers_problem(checkpoint)
        or _config_problem(checkpoint)
    )


def _params_problem(params: dict) -> str | None:
    if set(params) != set(PARAM_NAMES):
        return f"params has {sorted(params)}, expected {list(PARAM_NAMES)}"
    if not all(isinstance(value, Tensor) for value in params.values()):
        return "params: expected tensors"
    n = params["means"].shape[0] if params["means"].dim() > 0 else -1
    for name, tail in _PARAM_SHAPES.items():
        value = params[name]
        shape = tuple(value.shape)
        matches = len(shape) == 1 + len(tail) and shape[0] == n
        matches = matches and all(size == want or want == "K" for size, want in zip(shape[1:], tail))
        if name == "shN" and matches:
            matches = shape[1] + 1 in SH_DEGREE_OF_COUNT
        if not matches:
            expected = "[" + ", ".join(["N", *map(str, tail)]) + "]"
            return f"params.{name} has shape {list(shape)}, expected {expected} with N = {n} (from means)"
        if not value.is_floating_point() or not bool(value.isfinite().all()):
            return f"params.{name}: expected finite floating-point values"
    return None


def _optimizers_problem(checkpoint: dict) -> str | None:
    optimizers = checkpoint["optimizers"]
    if set(optimizers) != set(PARAM_NAMES):
        return f"optimizers has {sorted(optimizers)}, expected {list(PARAM_NAMES)}"
    for name, state_dict in optimizers.items():
        if not isinstance(state_dict, dict) or not {"state", "param_groups"} <= set(state_dict):
            return f"optimizers.{name}: expected an optimizer state (state, param_groups)"
        for moments in state_dict["state"].values():
            for key in ("exp_avg", "exp_avg_sq"):
                moment = moments.get(key) if isinstance(moments, dict) else None
                if not isinstance(moment, Tensor) or moment.shape != checkpoint["params"][name].shape:
                    return f"optimizers.{name}: {key} does not match params.{name}"
    return None


def _config_problem(checkpoint: dict) -> str | None:
    try:
        config_from_dict(checkpoint["config"])
    except ConfigError as error:
        return f"config: {error}"
    return None
