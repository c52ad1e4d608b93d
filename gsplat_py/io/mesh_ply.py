"""Triangle meshes as binary little-endian PLY files (what MeshLab, Blender, Open3D and trimesh read):

    ply
    format binary_little_endian 1.0
    comment <each comment line>
    element vertex V
    property float x / y / z
    property uchar red / green / blue          (when the mesh has vertex colours)
    element face F
    property list uchar int vertex_indices
    end_header

followed by V vertex rows and F face rows (a count byte 3 and three int32 indices, counter-clockwise seen
from the side the surface faces). Written atomically through `gsplat_py.io.atomic`.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from .atomic import atomic_open
from .paths import PathLike

__all__ = ["write_mesh_ply"]


def write_mesh_ply(
    path: PathLike,
    vertices: np.ndarray,
    faces: np.ndarray,
    colors: np.ndarray | None = None,
    comments: Sequence[str] = (),
) -> None:
    """Write ``vertices`` [V, 3] (float32), ``faces`` [F, 3] (vertex indices) and optional ``colors``
    [V, 3] (uint8) to ``path``; ValueError for shapes that do not agree, an index out of range or a comment
    with a line break, before the file is touched."""
    vertices = np.asarray(vertices)
    faces = np.asarray(faces)
    if vertices.ndim != 2 or vertices.shape[1] != 3:
        raise ValueError(f"vertices: expected shape [V, 3], got {list(vertices.shape)}")
    if faces.ndim != 2 or faces.shape[1] != 3:
        raise ValueError(f"faces: expected shape [F, 3], got {list(faces.shape)}")
    if faces.size and (faces.min() < 0 or faces.max() >= len(vertices)):
        raise ValueError(
            f"faces: expected vertex indices in [0, {len(vertices)}), got {faces.min()}..{faces.max()}"
        )
    if len(vertices) >= 2**31:
        raise ValueError(f"vertices: {len(vertices)} vertices do not fit the int32 indices of a PLY face")
    if colors is not None and (colors.shape != vertices.shape or colors.dtype != np.uint8):
        raise ValueError(
            f"colors: expected uint8 of shape {list(vertices.shape)} (as vertices), got {colors.dtype} "
            f"{list(colors.shape)}"
        )
    for line in comments:
        if "\n" in line or "\r" in line:
            raise ValueError(f"comments: a comment cannot hold a line break: {line!r}")
    vertex_fields = [("x", "<f4"), ("y", "<f4"), ("z", "<f4")]
    if colors is not None:
        vertex_fields += [("red", "u1"), ("green", "u1"), ("blue", "u1")]
    vertex_rows = np.empty(len(vertices), dtype=vertex_fields)
    for axis, name in enumerate("xyz"):
        vertex_rows[name] = vertices[:, axis]
    if colors is not None:
        for channel, name in enumerate(("red", "green", "blue")):
            vertex_rows[name] = colors[:, channel]
    face_rows = np.empty(len(faces), dtype=[("count", "u1"), ("indices", "<i4", (3,))])
    face_rows["count"] = 3
    face_rows["indices"] = faces
    header = ["ply", "format binary_little_endian 1.0", *(f"comment {line}" for line in comments)]
    header += [f"element vertex {len(vertices)}"]
    header += [f"property float {name}" for name in "xyz"]
    if colors is not None:
        header += [f"property uchar {name}" for name in ("red", "green", "blue")]
    header += [f"element face {len(faces)}", "property list uchar int vertex_indices", "end_header"]
    with atomic_open(path) as file:
        file.write(("\n".join(header) + "\n").encode("ascii"))
        file.write(vertex_rows.tobytes())
        file.write(face_rows.tobytes())
