"""gsplat_py: differentiable 3D Gaussian splatting with its own C++ rasterizer.

The layers, each importing only the ones before it (docs/architecture.md): ``rendering`` (the
differentiable renderer) -> ``model``, ``io`` -> ``data`` -> ``training``, ``strategy`` -> ``tools``
(rendering and exporting trained models) -> ``cli``.
"""

import os

# OpenMP workers that spin-wait between parallel regions steal the CPU the Python side of a training
# step needs: a training-like loop ran 1.7x slower on a busy 2-core machine (BENCHMARKS.md). The runtime
# reads this when torch loads it, so it is set before importing torch; a value the user set is kept.
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

from ._version import __version__  # noqa: E402
from .rendering import RollingShutterType, rasterization, rasterization_2dgs  # noqa: E402

__all__ = ["RollingShutterType", "rasterization", "rasterization_2dgs", "__version__"]
