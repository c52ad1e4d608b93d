"""The differentiable renderer, the bottom layer of gsplat_py: importable on its own (it imports nothing
else of the package).

- `pipeline.rasterization`: gsplat's ``rasterization`` (the public entry point);
- `pipeline_2dgs.rasterization_2dgs`: gsplat's 2D Gaussian splatting (surfels), with its two ops in
  `reference_2dgs` (plain PyTorch) and `ops_2dgs` (compiled);
- `ops`: the four ops as autograd wrappers around the compiled C++/CUDA kernels (``gsplat_py._C``);
- `reference`: the same four ops in plain PyTorch, the test oracle and the fallback without the extension;
- `limits`: the limits the kernels are built around; `_backend`: loading the extension, choosing a device.
"""

from . import ops, reference
from ._backend import cuda_backend_available, extension_available, resolve_device
from .pipeline import RollingShutterType, rasterization, rasterization_2dgs

__all__ = [
    "cuda_backend_available",
    "extension_available",
    "ops",
    "RollingShutterType",
    "rasterization",
    "rasterization_2dgs",
    "reference",
    "resolve_device",
]
