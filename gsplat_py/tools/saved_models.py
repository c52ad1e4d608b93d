"""Trained models on disk, for rendering and export: a training run, its checkpoint, or any Inria PLY.

    model = load_model("outputs/snowmiku-20261122-150000")   # or RUN/checkpoint.pt, or any .ply
    model.splats, model.sh_degree, model.frame

Which world frame (`gsplat_py.data.world_frame`) a model is in:

- a training output folder, or its ``checkpoint.pt``: the run's frame, normalised (``data.normalize``, the
  default) with the similarity the checkpoint records, or COLMAP's;
- a PLY whose header records its frame (``gsplat-py export`` writes the comment lines
  ``gsplat_py frame colmap|normalized`` and, for a known normalisation, ``gsplat_py from_colmap`` followed by
  the 16 numbers of the 4x4 similarity, row by row);
- a PLY in a training output folder (beside its ``config.toml``), such as ``RUN/point_cloud.ply``: the run's
  (its scene is the run's, whatever the frame);
- any other PLY, e.g. one trained by the Inria code or another 3DGS implementation on the COLMAP data:
  COLMAP's frame, unless ``model_frame="normalized"`` says it is in gsplat_py's normalisation of the scene;
- a ``.splat`` file (no header, SH degree 0, `gsplat_py.io.splat`): like a PLY that records no frame, and
  never part of a run (``gsplat-py export`` writes them in either frame).

The model's scene (:func:`scene_views`) is the ``data`` folder given, else the one its training run used;
its views are loaded in the model's frame.

A checkpoint's SH coefficients are cut to the degree the run had reached (the higher ones are still zero
then), so a model renders and exports at the degree it was trained to.
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass, replace
from pathlib import Path

import torch
from torch import Tensor

from ..data import DataConfig, SceneData, View, load_scene
from ..data.world_frame import FRAME_NAMES, WorldFrame, frame_from_comments
from ..errors import ParameterError
from ..io.paths import PathLike
from ..io.ply import read_ply, read_ply_comments
from ..io.splat import read_splat_model
from ..model import GaussianSplats, params_to_splats
from ..training.checkpoint import CHECKPOINT_FILE, CONFIG_FILE, PLY_FILE, load_checkpoint
from ..training.config import Config, config_from_dict, load_config
from .frames import frame_change, transform_cameras

__all__ = ["SavedModel", "load_model", "scene_views", "scene_normalization"]


@dataclass(frozen=True)
class SavedModel:
    """A model loaded from ``source``. ``run`` is the training output folder it belongs to (with that run's
    ``config``, and ``step`` and ``elapsed_s`` when its checkpoint was there), None for a stand-alone PLY."""

    splats: GaussianSplats
    frame: WorldFrame
    source: Path
    run: Path | None = None
    config: Config | None = None
    step: int | None = None
    elapsed_s: float | None = None

    @property
    def sh_degree(self) -> int:
        return self.splats.sh_degree


def _run_frame(config: Config, checkpoint: dict | None) -> WorldFrame:
    if not config.data.normalize:
        return WorldFrame.colmap()
    return WorldFrame.normalized(checkpoint["transform"] if checkpoint is not None else None)


def _check_declared_frame(source: Path, frame: WorldFrame, model_frame: str | None, reason: str) -> None:
    if model_frame is not None and model_frame != frame.name:
        raise ValueError(
            f"{source}: the model is in the {frame.name} frame ({reason}), not the {model_frame} frame"
        )


def _load_run(run: Path, checkpoint_path: Path, model_frame: str | None) -> SavedModel:
    checkpoint = load_checkpoint(checkpoint_path)
    config = config_from_dict(checkpoint["config"])
    step = int(checkpoint["step"])
    splats = params_to_splats(checkpoint["params"])
    splats = replace(splats, sh=splats.sh[:, : (config.model.sh_degree_at(step) + 1) ** 2].contiguous())
    frame = _run_frame(config, checkpoint)
    _check_declared_frame(checkpoint_path, frame, model_frame, "the frame of its training run")
    return SavedModel(splats, frame, checkpoint_path, run, config, step, float(checkpoint["elapsed_s"]))


def _undeclared_frame(model_frame: str | None) -> WorldFrame:
    """The frame of a model file that records none: COLMAP's unless ``model_frame`` says normalised."""
    return WorldFrame.normalized(None) if model_frame == "normalized" else WorldFrame.colmap()


def _load_ply(path: Path, model_frame: str | None) -> SavedModel:
    splats = read_ply(path)
    recorded = frame_from_comments(path, read_ply_comments(path))
    run = path.parent if (path.parent / CONFIG_FILE).is_file() else None
    if run is None:
        if recorded is not None:
            _check_declared_frame(path, recorded, model_frame, "as its header records")
            return SavedModel(splats, recorded, path)
        return SavedModel(splats, _undeclared_frame(model_frame), path)
    # In a training output folder: the run's scene and step, and its frame unless the header records one.
    checkpoint = load_checkpoint(run) if (run / CHECKPOINT_FILE).is_file() else None
    config = (
        config_from_dict(checkpoint["config"])
        if checkpoint is not None
        else load_config(str(run / CONFIG_FILE))
    )
    if recorded is not None:
        frame, reason = recorded, "as its header records"
    else:
        frame, reason = _run_frame(config, checkpoint), f"the frame of the training run in {run}"
    _check_declared_frame(path, frame, model_frame, reason)
    step = int(checkpoint["step"]) if checkpoint is not None else None
    elapsed = float(checkpoint["elapsed_s"]) if checkpoint is not None else None
    return SavedModel(splats, frame, path, run, config, step, elapsed)


def load_model(path: PathLike, model_frame: str | None = None) -> SavedModel:
    """The model at ``path``: a training output folder, a ``checkpoint.pt``, a PLY or a ``.splat`` file
    (module docstring).

    ``model_frame`` ("colmap" or "normalized") is the frame of a PLY that does not record one; for any other
    model it must agree with the frame the model is known to be in. Errors name the file and the problem.
    """
    if model_frame is not None and model_frame not in FRAME_NAMES:
        raise ParameterError("model_frame", f"expected one of {', '.join(FRAME_NAMES)}, got {model_frame!r}")
    path = Path(path)
    if path.is_dir():
        if (path / CHECKPOINT_FILE).is_file():
            return _load_run(path, path / CHECKPOINT_FILE, model_frame)
        if (path / PLY_FILE).is_file():
            return _load_ply(path / PLY_FILE, model_frame)
        raise ValueError(
            f"{path}: not a training output folder (expected {CHECKPOINT_FILE} or {PLY_FILE} in it)"
        )
    if not path.exists():
        raise ValueError(
            f"{path}: no such file or folder (expected a training output folder, a checkpoint, a .ply or a "
            ".splat file)"
        )
    if path.suffix.lower() == ".ply":
        return _load_ply(path, model_frame)
    if path.suffix.lower() == ".splat":
        return SavedModel(read_splat_model(path), _undeclared_frame(model_frame), path)
    if path.suffix.lower() == ".pt":
        return _load_run(path.parent, path, model_frame)
    raise ValueError(
        f"{path}: not a model (expected a training output folder, a {CHECKPOINT_FILE}, a .ply or a .splat "
        "file)"
    )


# --------------------------------------------------------------------------------------------------------
# The model's scene


def _load_scene(
    model: SavedModel, data: Path | None, data_factor: int | None, normalize: bool, need: str
) -> SceneData:
    """``data`` (else the run's scene), with the run's data factor (unless ``data_factor`` is given), split
    and cache folder."""
    run_data = model.config.data if model.config is not None else DataConfig()
    if data is None and model.config is None:
        raise ParameterError(
            "data", f"{model.source}: {need} needs the scene the model was trained on: give it with {{data}}"
        )
    return load_scene(
        replace(
            run_data,
            path=str(data) if data is not None else run_data.path,
            data_factor=data_factor if data_factor is not None else run_data.data_factor,
            normalize=normalize,
        )
    )


def scene_views(
    model: SavedModel,
    data: Path | None = None,
    data_factor: int | None = None,
    need: str = "rendering its views",
) -> tuple[SavedModel, SceneData]:
    """The model's scene (``data``, else its run's) with every view's camera in the model's frame, and the
    model with its frame known.

    ``data_factor`` overrides the run's. A model in a normalised frame whose similarity is not known gets
    the scene's (the returned model records it); one whose similarity differs from the scene's (other data?)
    gets the views moved into its frame, with a warning. ``need`` completes the error without a scene.
    """
    normalized = model.frame.name == "normalized"
    scene = _load_scene(model, data, data_factor, normalized, need)
    scene_frame = WorldFrame.normalized(scene.transform) if normalized else WorldFrame.colmap()
    if model.frame.from_colmap is None:
        model = replace(model, frame=scene_frame)
    change = frame_change(scene_frame, model.frame, str(scene.root))
    if change is not None:
        warnings.warn(
            f"{scene.root}: the scene's normalisation differs from the one of {model.source}: is this the "
            "data it "
            "was trained on? Its cameras are moved into the model's frame",
            stacklevel=2,
        )
        scene = replace(
            scene,
            train_views=_views_moved(scene.train_views, change),
            test_views=_views_moved(scene.test_views, change),
        )
    return model, scene


def _views_moved(views: list[View], change: Tensor) -> list[View]:
    if not views:
        return views
    moved = transform_cameras(torch.stack([view.world_to_camera for view in views]), change).float()
    return [replace(view, world_to_camera=matrix) for view, matrix in zip(views, moved)]


def scene_normalization(
    model: SavedModel,
    data: Path | None = None,
    data_factor: int | None = None,
    need: str = "the normalised frame",
) -> Tensor:
    """The similarity from COLMAP's frame to the normalised frame of the model's scene: the model's own when
    it records one, else computed from the scene (``data``, else its run's)."""
    if model.frame.name == "normalized" and model.frame.from_colmap is not None:
        return model.frame.from_colmap
    return _load_scene(model, data, data_factor, True, need).transform.double()
