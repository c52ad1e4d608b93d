"""Which scene a run uses: the data options of a run, and the bundled sample scene.

The sample scene (`snowmiku`, 97 photos with their COLMAP model) ships inside the installed package
(``gsplat_py/_bundled/snowmiku``, copied there by setup.py) and lives at ``data/snowmiku`` in a source
checkout; an editable install uses the checkout's copy.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from .colmap_dataset import DatasetError, SceneData, load_colmap_scene, user_cache_folder
from .sfm import existing_model

__all__ = ["DataConfig", "BUNDLED_SCENE_NAME", "bundled_scene", "load_scene", "photos_to_pose", "scene_name"]

BUNDLED_SCENE_NAME = "snowmiku"
_PACKAGE = Path(__file__).resolve().parents[1]
_INSTALLED_COPY = _PACKAGE / "_bundled" / BUNDLED_SCENE_NAME
_CHECKOUT_COPY = _PACKAGE.parent / "data" / BUNDLED_SCENE_NAME


@dataclass
class DataConfig:
    path: str | None = None  # COLMAP scene folder; None trains the bundled sample scene
    data_factor: int = 4  # images_N/ (or images/ downscaled by N and cached)
    test_every: int = 8  # every k-th image (sorted by name) is held out; 0 holds out none
    normalize: bool = True  # gsplat's world normalisation (similarity from cameras + principal axes)
    cache_dir: str | None = None  # downscaled/undistorted images; default: DATA/.gsplat_py_cache
    drop_outlier_cameras: bool = True  # leave cameras far outside the others (or of a wrong size) out
    drop_far_points: bool = True  # leave SfM points far outside the cameras' region out of the init


def bundled_scene() -> Path:
    """The folder of the bundled sample scene; DatasetError saying how to get it when it is missing."""
    for folder in (_INSTALLED_COPY, _CHECKOUT_COPY):
        if (folder / "sparse").is_dir():
            return folder
    raise DatasetError(
        f"the bundled sample scene '{BUNDLED_SCENE_NAME}' is not installed (looked in {_INSTALLED_COPY} and "
        f"{_CHECKOUT_COPY}): give a scene folder, or install gsplat_py from its source repository, "
        "which carries it in data/"
    )


def scene_name(config: DataConfig) -> str:
    """The scene's folder name (the sample scene's name when ``config.path`` is unset)."""
    return Path(config.path).resolve().name if config.path is not None else BUNDLED_SCENE_NAME


def load_scene(config: DataConfig) -> SceneData:
    """The scene ``config`` names, loaded with its options (the bundled sample scene when ``path`` is unset).

    An installed sample scene caches its undistorted images in the user's cache folder, not inside the
    installed package."""
    root = Path(config.path) if config.path is not None else bundled_scene()
    cache_dir: Path | None = Path(config.cache_dir) if config.cache_dir is not None else None
    if cache_dir is None and root == _INSTALLED_COPY:
        cache_dir = user_cache_folder(root)
    return load_colmap_scene(
        root,
        data_factor=config.data_factor,
        test_every=config.test_every,
        normalize=config.normalize,
        cache_dir=cache_dir,
        drop_outlier_cameras=config.drop_outlier_cameras,
        drop_far_points=config.drop_far_points,
    )


def photos_to_pose(config: DataConfig) -> Path | None:
    """The folder ``config`` names when it holds no COLMAP model yet, so that structure from motion must
    pose its photos before it can be loaded (`gsplat_py.data.sfm.run_sfm`); else None."""
    if config.path is None:
        return None
    root = Path(config.path)
    return root if root.is_dir() and existing_model(root) is None else None
