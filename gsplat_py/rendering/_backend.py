"""Loads the compiled extension (gsplat_py._C) that registers the torch.ops.gsplat_py ops."""

import importlib
import warnings
from dataclasses import dataclass

import torch

BUILD_HINT = (
    "gsplat_py's C++ extension (gsplat_py._C) is not built or does not load; build it from a source checkout "
    "with `pip install --no-build-isolation .` (see README)"
)


@dataclass
class _LoadState:
    checked: bool = False
    available: bool = False
    error: ImportError | None = None


_state = _LoadState()


def extension_available() -> bool:
    """True when the compiled ops are loaded; warns once (with the build command) when they are not."""
    if not _state.checked:
        _state.checked = True
        try:
            importlib.import_module("gsplat_py._C")  # importing registers the ops
            _state.available = True
        except ImportError as error:
            _state.error = error
            warnings.warn(
                f"{BUILD_HINT}; using the slow pure-PyTorch reference instead ({error})",
                RuntimeWarning,
                stacklevel=2,
            )
    return _state.available


def cuda_backend_available() -> bool:
    """True when the extension was built with its CUDA kernels and this torch can use a GPU."""
    if not extension_available() or not torch.cuda.is_available():
        return False
    return torch._C._dispatch_has_kernel_for_dispatch_key("gsplat_py::rasterize_forward", "CUDA")


def resolve_device(name: str) -> torch.device:
    """The device a run named: "cpu", "cuda", "cuda:N", or "auto" (the GPU when the CUDA kernels are
    built and a GPU is visible, else the CPU). ValueError, saying why, for a GPU that cannot be used."""
    if name == "auto":
        return torch.device("cuda" if cuda_backend_available() else "cpu")
    try:
        device = torch.device(name)
    except RuntimeError:
        raise ValueError(f"device {name!r}: expected 'auto', 'cpu', 'cuda' or 'cuda:N'") from None
    if device.type not in ("cpu", "cuda"):
        raise ValueError(f"device {name!r}: gsplat_py runs on 'cpu' or 'cuda'")
    if device.type == "cuda":
        if torch.version.cuda is None:
            reason = f"torch {torch.__version__} has no CUDA"
        elif not torch.cuda.is_available():
            reason = "no GPU is visible"
        elif not cuda_backend_available():
            reason = "gsplat_py was built without its CUDA kernels (rebuild where torch has CUDA and nvcc)"
        elif device.index is not None and device.index >= torch.cuda.device_count():
            reason = f"only {torch.cuda.device_count()} GPU(s) are visible"
        else:
            return device
        raise ValueError(f"device {name!r} asks for a GPU, but {reason}; use 'cpu'")
    return device


def require_extension() -> None:
    """Raises a RuntimeError that says how to build the extension when it is missing."""
    if not extension_available():
        raise RuntimeError(f"{BUILD_HINT}. Import error: {_state.error}")


def build_report() -> list[str]:
    """Lines saying which compiled backends this installation has and which kernels this machine uses."""
    lines = [f"torch {torch.__version__} (CUDA {torch.version.cuda or 'none'})"]
    if not extension_available():
        lines.append(f"compiled backends: none ({_state.error}); the pure-PyTorch reference is used")
        return lines
    simd = torch.ops.gsplat_py.simd_level()
    lines.append(
        f"CPU backend: built; rasterizer kernels for {simd} on this CPU (GSPLAT_PY_SIMD selects a lower one)"
    )
    if torch._C._dispatch_has_kernel_for_dispatch_key("gsplat_py::rasterize_forward", "CUDA"):
        gpus = torch.cuda.device_count() if torch.cuda.is_available() else 0
        lines.append(f"CUDA backend: built; {gpus} GPU(s) visible")
    else:
        lines.append("CUDA backend: not built (it needs a torch with CUDA and nvcc when gsplat_py is built)")
    return lines
