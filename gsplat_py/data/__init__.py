"""Scenes: COLMAP folders loaded as training and test views, their world frames, and the bundled sample
scene (see `gsplat_py.data.colmap_dataset` and `gsplat_py.data.scenes`)."""

from .colmap_dataset import DatasetError, SceneData, View, load_colmap_scene
from .scene_check import SceneCheck
from .scenes import DataConfig, bundled_scene, load_scene

__all__ = [
    "DataConfig",
    "DatasetError",
    "SceneCheck",
    "SceneData",
    "View",
    "bundled_scene",
    "load_colmap_scene",
    "load_scene",
]
