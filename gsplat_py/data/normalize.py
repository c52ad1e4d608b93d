"""Normalising a scene's world frame, as gsplat's examples/datasets/normalize.py does.

`normalize_scene` composes two similarities:

1. `similarity_from_cameras`: rotate so that the cameras' mean up direction is +z, move the "focus" (the
   per-coordinate median of the points of the cameras' optical axes nearest the origin) to the origin, and
   scale so that the median camera distance from it is 1.
2. `align_principal_axes` (when there are at least 3 SfM points): move the points' per-coordinate median
   to the origin and rotate the points' principal axes onto x, y, z (x the largest variance, z the
   smallest), with z pointing along the cameras' mean up direction.

gsplat's own code differs in two details that do not change what it intends: its step 1 turns the up
direction onto -y (the comment says +z) and its "upside down" fix after step 2 guesses the sign of z from
the points (median above mean); here z is +up by construction and its sign after step 2 comes from the
cameras. All arrays are float64 numpy; transforms are 4x4 and act on column vectors (x' = T x).
"""

from __future__ import annotations

import numpy as np

__all__ = [
    "align_principal_axes",
    "normalize_scene",
    "similarity_from_cameras",
    "transform_camera_to_world",
    "transform_points",
]

# OpenCV camera axes: x right, y down, z forward.
CAMERA_UP = np.array([0.0, -1.0, 0.0])
CAMERA_FORWARD = np.array([0.0, 0.0, 1.0])
WORLD_UP = np.array([0.0, 0.0, 1.0])


def _rotation_onto(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """The rotation that takes the unit vector ``a`` onto the unit vector ``b`` (the shortest one)."""
    axis, cosine = np.cross(a, b), float(a @ b)
    if cosine < -1.0 + 1e-12:
        # Opposite vectors: half a turn about any axis perpendicular to a.
        helper = np.eye(3)[np.argmin(np.abs(a))]
        perpendicular = np.cross(a, helper)
        perpendicular /= np.linalg.norm(perpendicular)
        return 2.0 * np.outer(perpendicular, perpendicular) - np.eye(3)
    skew = np.array([[0.0, -axis[2], axis[1]], [axis[2], 0.0, -axis[0]], [-axis[1], axis[0], 0.0]])
    return np.eye(3) + skew + skew @ skew / (1.0 + cosine)


def similarity_from_cameras(camera_to_world: np.ndarray) -> np.ndarray:
    """The similarity (4x4) of step 1 (module docstring) for OpenCV camera-to-world matrices [N, 4, 4]."""
    rotations, centres = camera_to_world[:, :3, :3], camera_to_world[:, :3, 3]
    up = (rotations @ CAMERA_UP).mean(axis=0)
    up_to_z = _rotation_onto(up / np.linalg.norm(up), WORLD_UP)
    forwards = (up_to_z @ rotations) @ CAMERA_FORWARD
    centres = centres @ up_to_z.T
    nearest_to_origin = centres - np.sum(centres * forwards, axis=-1, keepdims=True) * forwards
    translation = -np.median(nearest_to_origin, axis=0)
    median_distance = float(np.median(np.linalg.norm(centres + translation, axis=-1)))
    # A single camera (or all of them at the focus) gives no scale; leave it as it is.
    scale = 1.0 / median_distance if median_distance > 0.0 else 1.0
    transform = np.eye(4)
    transform[:3, :3] = scale * up_to_z
    transform[:3, 3] = scale * translation
    return transform


def align_principal_axes(points: np.ndarray, up: np.ndarray = WORLD_UP) -> np.ndarray:
    """The rigid transform (4x4) of step 2 (module docstring) for points [P, 3], P >= 3, z towards ``up``."""
    centre = np.median(points, axis=0)
    eigenvalues, eigenvectors = np.linalg.eigh(np.cov(points - centre, rowvar=False))
    axes = eigenvectors[:, np.argsort(eigenvalues)[::-1]]
    if axes[:, 2] @ up < 0.0:
        axes[:, 2] *= -1.0
    if np.linalg.det(axes) < 0.0:
        axes[:, 0] *= -1.0
    transform = np.eye(4)
    transform[:3, :3] = axes.T
    transform[:3, 3] = -axes.T @ centre
    return transform


def transform_points(transform: np.ndarray, points: np.ndarray) -> np.ndarray:
    """Points [P, 3] mapped by the 4x4 similarity ``transform``."""
    return points @ transform[:3, :3].T + transform[:3, 3]


def transform_camera_to_world(transform: np.ndarray, camera_to_world: np.ndarray) -> np.ndarray:
    """Camera-to-world matrices [N, 4, 4] in the frame ``transform`` (a similarity) maps the world to.

    The centres move with the similarity; the rotations only rotate (the scale is divided out), so the
    results stay rigid and distances in camera space scale like the world.
    """
    scale = np.cbrt(np.linalg.det(transform[:3, :3]))
    result = transform @ camera_to_world
    result[:, :3, :3] /= scale
    return result


def normalize_scene(camera_to_world: np.ndarray, points: np.ndarray) -> np.ndarray:
    """The similarity (4x4) that normalises a scene: step 1, then step 2 if there are 3 points or more."""
    transform = similarity_from_cameras(camera_to_world)
    if len(points) >= 3:
        transform = align_principal_axes(transform_points(transform, points)) @ transform
    return transform
