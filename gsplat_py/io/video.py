"""MP4 (H.264) video files of rendered frames, through PyAV (``pip install av``), an optional dependency
whose wheels ship their own FFmpeg libraries.

    with VideoWriter("flythrough.mp4", fps=30) as video:
        for frame in frames:            # uint8 [H, W, 3], all of one size
            video.add(frame)

H.264 in yuv420p (the pixel format every player decodes) needs even sizes: a frame with an odd width or
height is padded by repeating its last column or row. The file is written atomically: it appears, complete,
when the writer closes without an error.
"""

from __future__ import annotations

import os
from fractions import Fraction
from typing import Any

import numpy as np

from ..errors import MissingPackageError
from .atomic import atomic_open
from .paths import PathLike

__all__ = [
    "VideoWriter",
    "require_video_encoder",
    "encoded_size",
    "VIDEO_INSTALL_HINT",
    "VIDEO_SUFFIX",
]

VIDEO_INSTALL_HINT = "pip install av"
VIDEO_SUFFIX = ".mp4"  # the container VideoWriter writes (H.264 in MP4)
_CRF = "18"  # x264's constant-quality setting: visually lossless for renders, a few MB a minute


def require_video_encoder():
    """The PyAV module; MissingPackageError naming the pip command when it is not installed."""
    try:
        import av
    except ImportError:
        raise MissingPackageError(f"writing MP4 video needs the PyAV package: {VIDEO_INSTALL_HINT}") from None
    return av


def encoded_size(width: int, height: int) -> tuple[int, int]:
    """The (width, height) of the video of width x height frames: rounded up to even numbers."""
    return width + width % 2, height + height % 2


class VideoWriter:
    """Encodes frames to ``path`` as H.264 MP4 at ``fps`` frames per second (see the module docstring)."""

    def __init__(self, path: PathLike, fps: float):
        if not fps > 0:
            raise ValueError(f"fps must be positive, got {fps}")
        self._av = require_video_encoder()
        self.path = os.fspath(path)
        self.fps = fps
        self.frame_count = 0
        # PyAV objects (untyped), created by __enter__ and the first add()
        self._file_context: Any = None
        self._container: Any = None
        self._stream: Any = None
        self._size = (0, 0)

    def __enter__(self) -> VideoWriter:
        self._file_context = atomic_open(self.path)
        file = self._file_context.__enter__()
        self._container = self._av.open(file, mode="w", format="mp4")
        return self

    def add(self, frame: np.ndarray) -> None:
        """Append one uint8 [H, W, 3] RGB frame (the first one sets the size; the others must match)."""
        height, width = frame.shape[:2]
        if self._stream is None:
            self._size = (width, height)
            self._stream = self._container.add_stream(
                "libx264", rate=Fraction(self.fps).limit_denominator(1001)
            )
            self._stream.width, self._stream.height = encoded_size(width, height)
            self._stream.pix_fmt = "yuv420p"
            self._stream.options = {"crf": _CRF}
        elif (width, height) != self._size:
            raise ValueError(
                f"{self.path}: frame {self.frame_count} is {width}x{height}; the video is "
                f"{self._size[0]}x{self._size[1]}"
            )
        padded_width, padded_height = encoded_size(width, height)
        if (padded_width, padded_height) != (width, height):
            frame = np.pad(
                frame, ((0, padded_height - height), (0, padded_width - width), (0, 0)), mode="edge"
            )
        picture = self._av.VideoFrame.from_ndarray(np.ascontiguousarray(frame), format="rgb24")
        self._container.mux(self._stream.encode(picture))
        self.frame_count += 1

    def __exit__(self, exc_type, exc, traceback) -> None:
        try:
            if exc_type is None:
                if self._stream is None:
                    raise ValueError(f"{self.path}: no frames to write")
                self._container.mux(self._stream.encode(None))  # flush the encoder's delayed frames
            self._container.close()
        except BaseException as error:
            self._file_context.__exit__(type(error), error, error.__traceback__)
            raise
        self._file_context.__exit__(exc_type, exc, traceback)
