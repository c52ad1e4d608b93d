"""Trained models on disk, for rendering and export: a training run, its checkpoint, or a splat file of any
format `gsplat_py.io.formats` reads (PLY, compressed PLY, SPZ, SOG, .splat).

    model = load_model("outputs/snowmiku-20261122-150000")   # or RUN/checkpoint.pt, or any splat file
    model.splats, model.sh_degree, model.frame

Which world frame (`gsplat_py.data.world_frame`) a model is in:

- a training output folder, or its ``checkpoint.pt``: the run's frame, normalised (``data.normalize``, the
  default) with the similarity the checkpoint records, or COLMAP's;
- a file that records its frame: ``gsplat-py export`` writes the lines ``gsplat_py frame colmap|normalized``
  and, for a known normalisation, ``gsplat_py from_colmap`` followed by the 16 numbers of the 4x4 similarity,
  row by row, as header comments of a PLY or a compressed PLY and in meta.json's ``asset.comments`` of a SOG;
- a file that records none (an SPZ or a .splat, which have no place for it, or a PLY from elsewhere): the
  frame ``model_frame`` declares; without it, the run's when the file is in a training output folder (beside
  its ``config.toml``, such as ``RUN/point_cloud.ply``), else COLMAP's frame (the Inria code and most 3DGS
  implementations train there). A file in a run folder also gets the run's scene, whatever its frame.

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
from ..io.formats import FORMAT_SUFFIXES, format_of_name, read_splat_file
from ..io.paths import PathLike
from ..io.sog import META_FILE
from ..model import GaussianSplats, model_type_from_comments, params_to_splats
from ..training.checkpoint import CHECKPOINT_FILE, CONFIG_FILE, PLY_FILE, load_checkpoint
from ..training.config import Config, config_from_dict, load_config
from .frames import frame_change, transform_cameras

__all__ = ["SavedModel", "load_model", "scene_views", "scene_normalization"]


@dataclass(frozen=True)
class SavedModel:
    """A model loaded from ``source``. ``run`` is the training output folder it belongs to (with that run's
    ``config``, and ``step`` and ``elapsed_s`` when its checkpoint was there), None for a stand-alone file.
    ``model_type`` (`gsplat_py.model.MODEL_TYPES`) says which rasterizer renders it: a checkpoint's run
    config, a file's ``gsplat_py model_type`` header comment, else its run's, else "3dgs"."""

    splats: GaussianSplats
    frame: WorldFrame
    source: Path
    run: Path | None = None
    config: Config | None = None
    step: int | None = None
    elapsed_s: float | None = None
    model_type: str = "3dgs"

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
    splats = splats.with_sh_degree(config.model.sh_degree_at(step))
    frame = _run_frame(config, checkpoint)
    _check_declared_frame(checkpoint_path, frame, model_frame, "the frame of its training run")
    return SavedModel(
        splats, frame, checkpoint_path, run, config, step, float(checkpoint["elapsed_s"]), config.model.type
    )


def _run_of(path: Path) -> Path | None:
    """The training output folder a model file is in (beside its config.toml), None for a stand-alone file."""
    return path.parent if (path.parent / CONFIG_FILE).is_file() else None


def _run_records(run: Path) -> tuple[dict | None, Config]:
    """A run folder's checkpoint (None without one) and config."""
    checkpoint = load_checkpoint(run) if (run / CHECKPOINT_FILE).is_file() else None
    if checkpoint is not None:
        return checkpoint, config_from_dict(checkpoint["config"])
    return None, load_config(str(run / CONFIG_FILE))


def default_frame_name(path: PathLike) -> str:
    """The frame `load_model` takes a file at ``path`` that records none to be in, without ``model_frame``:
    its training run's when it is in a run folder, else COLMAP's."""
    run = _run_of(Path(path))
    if run is None:
        return "colmap"
    checkpoint, config = _run_records(run)
    return _run_frame(config, checkpoint).name


def _load_file(path: Path, model_frame: str | None) -> SavedModel:
    loaded = read_splat_file(path)
    recorded = frame_from_comments(path, loaded.comments) if loaded.comments is not None else None
    run = _run_of(path)
    checkpoint, config = _run_records(run) if run is not None else (None, None)
    run_frame = _run_frame(config, checkpoint) if config is not None else None
    if recorded is not None:
        _check_declared_frame(path, recorded, model_frame, "as the file records")
        frame = recorded
    elif run_frame is not None and model_frame in (None, run_frame.name):
        frame = run_frame
    elif model_frame == "normalized":
        frame = WorldFrame.normalized(None)
    else:
        frame = WorldFrame.colmap()
    step = int(checkpoint["step"]) if checkpoint is not None else None
    elapsed = float(checkpoint["elapsed_s"]) if checkpoint is not None else None
    try:
        model_type = model_type_from_comments(loaded.comments)
    except ValueError as error:
        raise ValueError(f"{path}: {error}") from None
    if model_type is None:
        model_type = config.model.type if config is not None else "3dgs"
    return SavedModel(loaded.splats, frame, path, run, config, step, elapsed, model_type)


def load_model(path: PathLike, model_frame: str | None = None) -> SavedModel:
    """The model at ``path``: a training output folder, a ``checkpoint.pt`` or a splat file of any format of
    `gsplat_py.io.formats` (module docstring).

    ``model_frame`` ("colmap" or "normalized") is the frame of a file that does not record one; for any other
    model it must agree with the frame the model is known to be in. Errors name the file and the problem.
    """
    if model_frame is not None and model_frame not in FRAME_NAMES:
        raise ParameterError("model_frame", f"expected one of {', '.join(FRAME_NAMES)}, got {model_frame!r}")
    path = Path(path)
    if path.is_dir():
        if (path / CHECKPOINT_FILE).is_file():
            return _warn_if_empty(_load_run(path, path / CHECKPOINT_FILE, model_frame))
        if (path / PLY_FILE).is_file():
            return _warn_if_empty(_load_file(path / PLY_FILE, model_frame))
        raise ValueError(
            f"{path}: not a training output folder (expected {CHECKPOINT_FILE} or {PLY_FILE} in it)"
        )
    if not path.exists():
        raise ValueError(
            f"{path}: no such file or folder (expected a training output folder, a checkpoint or a splat "
            "file)"
        )
    if path.suffix.lower() == ".pt":
        return _warn_if_empty(_load_run(path.parent, path, model_frame))
    if format_of_name(path) is not None:
        return _warn_if_empty(_load_file(path, model_frame))
    suffixes = ", ".join(FORMAT_SUFFIXES.values())
    raise ValueError(
        f"{path}: not a model (expected a training output folder, a {CHECKPOINT_FILE} or a splat file: "
        f"{suffixes}, {META_FILE})"
    )


def _warn_if_empty(model: SavedModel) -> SavedModel:
    if model.splats.num_gaussians == 0:
        warnings.warn(
            f"{model.source}: the model has no Gaussians; its renders show only the background", stacklevel=3
        )
    return model


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
