"""gsplat_py: differentiable 3D Gaussian splatting with its own C++ rasterizer."""

from .rendering import rasterization

__version__ = "0.1.0"
__all__ = ["rasterization", "__version__"]
