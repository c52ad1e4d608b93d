"""The world frame a model or a set of cameras is in, and how a PLY header records it.

A COLMAP scene has two frames here: COLMAP's own (the one its poses and points are in, and the one 3DGS
implementations that do not normalise train in) and the normalised frame of `gsplat_py.data.normalize`, in
which `gsplat-py train` works. The two differ by a similarity x_normalised = T x_colmap; a
:class:`WorldFrame` names a frame and, when known, its T. Moving Gaussians and cameras between frames is
`gsplat_py.tools.frames`.

PLY header comments (viewers ignore comments): ``gsplat_py frame colmap|normalized`` and, for a known T,
``gsplat_py from_colmap`` followed by its 16 numbers row by row.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import torch
from torch import Tensor

from ..io.ply import PlyFormatError
from .geometry import split_similarity

__all__ = [
    "FRAME_NAMES",
    "FRAME_COMMENT_KEY",
    "FROM_COLMAP_COMMENT_KEY",
    "WorldFrame",
    "frame_comments",
    "frame_from_comments",
]

FRAME_NAMES = ("colmap", "normalized")
FRAME_COMMENT_KEY = "gsplat_py frame"
FROM_COLMAP_COMMENT_KEY = "gsplat_py from_colmap"


@dataclass(frozen=True)
class WorldFrame:
    """A world frame: ``name`` is "colmap" or "normalized"; ``from_colmap`` (float64 [4, 4]) the similarity
    from COLMAP's frame to it (the identity for "colmap"), None when it is not known (a normalised frame
    whose scene has not been loaded)."""

    name: str
    from_colmap: Tensor | None

    @staticmethod
    def colmap() -> WorldFrame:
        return WorldFrame("colmap", torch.eye(4, dtype=torch.float64))

    @staticmethod
    def normalized(from_colmap: Tensor | None) -> WorldFrame:
        return WorldFrame("normalized", None if from_colmap is None else from_colmap.double())


def frame_comments(frame: WorldFrame) -> list[str]:
    """The PLY header comments that record ``frame`` (read back by :func:`frame_from_comments`)."""
    comments = [f"{FRAME_COMMENT_KEY} {frame.name}"]
    if frame.name == "normalized" and frame.from_colmap is not None:
        numbers = " ".join(repr(float(v)) for v in frame.from_colmap.reshape(-1))
        comments.append(f"{FROM_COLMAP_COMMENT_KEY} {numbers}")
    return comments


def frame_from_comments(path: object, comments: Sequence[str]) -> WorldFrame | None:
    """The frame the header comments of the PLY ``path`` record, None if they record none;
    :class:`PlyFormatError` naming the file for a malformed record."""
    values = {}
    for comment in comments:
        for key in (FRAME_COMMENT_KEY, FROM_COLMAP_COMMENT_KEY):
            if comment.startswith(key + " "):
                values[key] = comment[len(key) + 1 :].split()
    if FRAME_COMMENT_KEY not in values:
        return None
    name = " ".join(values[FRAME_COMMENT_KEY])
    if name not in FRAME_NAMES:
        raise PlyFormatError(
            f"{path}: header comment '{FRAME_COMMENT_KEY} {name}': expected one of {', '.join(FRAME_NAMES)}"
        )
    if name == "colmap":
        return WorldFrame.colmap()
    numbers = values.get(FROM_COLMAP_COMMENT_KEY)
    if numbers is None:
        return WorldFrame.normalized(None)
    try:
        matrix = torch.tensor([float(v) for v in numbers], dtype=torch.float64)
    except ValueError:
        matrix = torch.empty(0)
    if matrix.numel() != 16 or not bool(torch.isfinite(matrix).all()):
        raise PlyFormatError(
            f"{path}: header comment '{FROM_COLMAP_COMMENT_KEY}': expected 16 finite numbers (a 4x4 matrix)"
        )
    try:
        split_similarity(matrix.reshape(4, 4))
    except ValueError as error:
        raise PlyFormatError(f"{path}: header comment '{FROM_COLMAP_COMMENT_KEY}': {error}") from None
    return WorldFrame.normalized(matrix.reshape(4, 4))
