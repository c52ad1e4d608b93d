"""The differentiable renderer, the bottom layer of gsplat_py: importable on its own (it imports nothing
else of the package).

- `pipeline.rasterization`: gsplat's ``rasterization`` (the public entry point);
- `ops`: the four ops as autograd wrappers around the compiled C++/CUDA kernels (``gsplat_py._C``);
- `reference`: the same four ops in plain PyTorch, the test oracle and the fallback without the extension;
- `limits`: the limits the kernels are built around; `_backend`: loading the extension, choosing a device.
"""

from . import ops, reference
from ._backend import cuda_backend_available, extension_available, resolve_device
from .pipeline import rasterization

__all__ = [
    "cuda_backend_available",
    "extension_available",
    "ops",
    "rasterization",
    "reference",
    "resolve_device",
]
