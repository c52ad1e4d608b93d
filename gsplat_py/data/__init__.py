"""Datasets: COLMAP scene folders as training and test views (see `gsplat_py.data.colmap_dataset`)."""

from .colmap_dataset import DatasetError, SceneData, View, load_colmap_scene

__all__ = ["DatasetError", "SceneData", "View", "load_colmap_scene"]
