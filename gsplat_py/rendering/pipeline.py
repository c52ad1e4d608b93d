"""High-level rasterization API, a drop-in replacement for ``gsplat.rasterization`` (gsplat 1.5).

The pipeline (see ``docs/architecture.md``) is composed from four ops that exist twice with identical
signatures: ``gsplat_py.ops`` (compiled C++ with hand-written backward) and ``gsplat_py.reference``
(plain PyTorch). Both are imported lazily so this module can be imported before either exists.
"""

from __future__ import annotations

import math
import operator
import warnings
from collections.abc import Sequence
from typing import SupportsIndex, cast

import torch
from torch import Tensor

from . import _backend
from .limits import MAX_SH_DEGREE, MAX_TILE_SIZE

__all__ = ["rasterization"]

RENDER_MODES = ("RGB", "D", "ED", "RGB+D", "RGB+ED")
RASTERIZE_MODES = ("classic", "antialiased")
CAMERA_MODELS = ("pinhole", "ortho")
UNIMPLEMENTED_CAMERA_MODELS = ("fisheye", "ftheta")  # exist in gsplat, not (yet) here
BACKENDS = ("auto", "cpp", "reference")
FLOAT_DTYPES = (torch.float32, torch.float64)


# --------------------------------------------------------------------------------------------------
# Input validation helpers
# --------------------------------------------------------------------------------------------------

Dim = int | str  # a literal size, or a symbol ("N", "C", "D", "K") bound across arguments


class _Dims:
    """Symbolic sizes bound while validating: symbol -> (value, name of the argument it came from)."""

    def __init__(self) -> None:
        self.sizes: dict[str, tuple[int, str]] = {}
        self.mins: dict[str, tuple[int, str]] = {}  # symbol -> (minimum, reason)

    def describe(self, spec: Sequence[Dim], source_of_unbound: bool = False) -> str:
        """`[N, 4] with N=100 (from means)` for the symbols of ``spec`` that are already known."""
        text = "[" + ", ".join(str(d) for d in spec) + "]"
        clauses = []
        for sym in dict.fromkeys(d for d in spec if isinstance(d, str)):
            if sym in self.sizes:
                value, source = self.sizes[sym]
                clauses.append(f"{sym}={value} (from {source})")
            elif sym in self.mins:
                minimum, reason = self.mins[sym]
                clauses.append(f"{sym} >= {minimum}" + (f" ({reason})" if reason else ""))
        return text + (" with " + ", ".join(clauses) if clauses else "")


def _fmt_shape(shape: Sequence[int]) -> str:
    return "[" + ", ".join(str(int(s)) for s in shape) + "]"


def _check_shape(name: str, x: object, specs: Sequence[Sequence[Dim]], dims: _Dims, note: str = "") -> int:
    """Check that ``x`` is a tensor matching one of ``specs`` (chosen by ndim) and bind its symbols.

    Returns the index of the matching spec. Raises ``ValueError`` naming the argument, the expected
    shape(s) and the received shape.
    """
    expected = " or ".join(dims.describe(s) for s in specs) + note
    if not isinstance(x, Tensor):
        raise ValueError(f"{name}: expected a torch.Tensor of shape {expected}, got {type(x).__name__}")
    got = _fmt_shape(x.shape)
    candidates = [i for i, s in enumerate(specs) if len(s) == x.dim()]
    if not candidates:
        raise ValueError(f"{name}: expected shape {expected}, got {got}")
    idx = candidates[0]
    spec = specs[idx]
    new: dict[str, tuple[int, str]] = {}
    for d, size in zip(spec, x.shape):
        size = int(size)
        if isinstance(d, int):
            ok = size == d
        else:
            known = dims.sizes.get(d, new.get(d, (None, None)))[0]
            ok = size == known if known is not None else size >= dims.mins.get(d, (0, ""))[0]
            if ok and known is None:
                new[d] = (size, name)
        if not ok:
            raise ValueError(f"{name}: expected shape {dims.describe(spec)}{note}, got {got}")
    dims.sizes.update(new)
    return idx


def _check_dtype_device(tensors: dict[str, Tensor | None]) -> None:
    """All given tensors: floating, float32/float64, one common dtype and one common device."""
    ref_name, ref = next((name, x) for name, x in tensors.items() if x is not None)
    for name, x in tensors.items():
        if x is None:
            continue
        if not x.is_floating_point() or x.dtype not in FLOAT_DTYPES:
            raise ValueError(
                f"{name}: expected a floating dtype (torch.float32 or torch.float64), got {x.dtype}"
            )
        if x.dtype != ref.dtype:
            raise ValueError(
                f"{name}: expected dtype {ref.dtype} (from {ref_name}; all float inputs must share one "
                f"dtype), got {x.dtype}"
            )
        if x.device != ref.device:
            raise ValueError(
                f"{name}: expected device {ref.device} (from {ref_name}; all inputs must be on one device), "
                f"got {x.device}"
            )


def _check_finite(tensors: dict[str, Tensor | None]) -> None:
    present = {name: x for name, x in tensors.items() if x is not None and x.numel() > 0}
    if not present:
        return
    # One multi-tensor reduction (a single kernel on a GPU) instead of an element-wise mask on the hot
    # path, and one read of the result: finite norms prove every entry finite; only a non-finite norm
    # (a bad entry, or an overflow) pays for the full check.
    norms = torch._foreach_norm([x.detach() for x in present.values()])
    if bool(torch.isfinite(torch.stack(norms)).all()):
        return
    for name, x in present.items():
        finite = torch.isfinite(x.detach())
        if not bool(finite.all()):
            bad = int((~finite).sum())
            raise ValueError(
                f"{name}: expected only finite values, got {bad} non-finite (NaN/Inf) "
                f"entr{'y' if bad == 1 else 'ies'} in a tensor of shape {_fmt_shape(x.shape)}"
            )


def _check_int(name: str, value: object, minimum: int, maximum: int | None = None) -> int:
    expected = f"an int >= {minimum}" if maximum is None else f"an int in {minimum}..{maximum}"
    if isinstance(value, bool) or isinstance(value, float):
        raise ValueError(f"{name}: expected {expected}, got {value!r} ({type(value).__name__})")
    try:
        ivalue = operator.index(cast(SupportsIndex, value))  # int, numpy ints, 0-dim integer tensors
    except TypeError:
        raise ValueError(f"{name}: expected {expected}, got {value!r} ({type(value).__name__})") from None
    if ivalue < minimum or (maximum is not None and ivalue > maximum):
        raise ValueError(f"{name}: expected {expected}, got {ivalue}")
    return ivalue


def _check_real(name: str, value: object, allow_inf: bool = False) -> float:
    try:
        fvalue = float(value)  # type: ignore[arg-type]
    except (TypeError, ValueError):
        raise ValueError(f"{name}: expected a real number, got {value!r} ({type(value).__name__})") from None
    if math.isnan(fvalue) or (math.isinf(fvalue) and not allow_inf):
        raise ValueError(f"{name}: expected a finite real number, got {value!r}")
    return fvalue


def _check_choice(name: str, value: object, choices: Sequence[str]) -> str:
    if value not in choices:
        raise ValueError(f"{name}: expected one of {', '.join(repr(c) for c in choices)}, got {value!r}")
    return value  # type: ignore[return-value]


def _check_camera_model(camera_model: object) -> str:
    if camera_model in CAMERA_MODELS:
        return camera_model
    supported = ", ".join(repr(c) for c in CAMERA_MODELS)
    if camera_model in UNIMPLEMENTED_CAMERA_MODELS:
        raise NotImplementedError(
            f"camera_model={camera_model!r} is not implemented yet in gsplat_py; supported: {supported}"
        )
    raise NotImplementedError(
        f"camera_model={camera_model!r} is not supported; supported: {supported} "
        f"({', '.join(repr(c) for c in UNIMPLEMENTED_CAMERA_MODELS)} are not implemented yet)"
    )


# --------------------------------------------------------------------------------------------------
# Backend selection
# --------------------------------------------------------------------------------------------------


def _compiled_backend_for(device: torch.device) -> str | None:
    """Why the compiled ops cannot run on ``device``, or None when they can."""
    if not _backend.extension_available():
        return f"{_backend.BUILD_HINT}; or pass backend='reference'"
    if device.type == "cpu":
        return None
    if device.type == "cuda":
        if _backend.cuda_backend_available():
            return None
        return (
            "gsplat_py._C was built without its CUDA kernels (the build needs a CUDA-enabled torch and nvcc; "
            "rebuild on such a machine), or pass backend='reference'"
        )
    return f"the compiled ops run on CPU and CUDA tensors, not on {device.type}; pass backend='reference'"


def _select_backend(backend: str, device: torch.device):
    """Return ``(module providing the four ops, name of the backend used)``."""
    if backend == "reference":
        from . import reference

        return reference, "reference"
    problem = _compiled_backend_for(device)
    if backend == "cpp" and problem is not None:
        raise RuntimeError(f"backend='cpp' cannot run on {device}: {problem}")
    if problem is None:  # "cpp", or "auto" where the compiled ops can run
        from . import ops

        return ops, "cpp"
    if device.type == "cuda":
        warnings.warn(
            f"gsplat_py: using the slow pure-PyTorch reference on {device}: {problem}",
            RuntimeWarning,
            stacklevel=3,
        )
    from . import reference

    return reference, "reference"


# --------------------------------------------------------------------------------------------------
# Rasterization
# --------------------------------------------------------------------------------------------------


def _zero_link(tensors: Sequence[Tensor | None]) -> Tensor | None:
    """A scalar 0 that depends on every tensor requiring grad (their gradient through it is 0).

    Used when nothing is rasterized (N=0 or every Gaussian culled), so that the outputs stay part of
    the autograd graph and backward yields zero gradients instead of None or an error. The sum of an
    empty slice is 0 whatever the tensor holds (``t.sum() * 0`` is NaN for an inf entry, such as the
    conic of a Gaussian culled for an overflowing covariance).
    """
    link = None
    for t in tensors:
        if t is not None and t.requires_grad:
            term = t.reshape(-1)[:0].sum()
            link = term if link is None else link + term
    return link


def _camera_positions(viewmats: Tensor) -> Tensor:
    """[C, 3] camera centres (the translation of the inverse of each world-to-camera matrix), differentiable;
    ValueError naming ``viewmats`` for a matrix that has no inverse."""
    inverses, info = torch.linalg.inv_ex(viewmats)
    singular = torch.nonzero(info).flatten().tolist()
    if singular:
        raise ValueError(
            f"viewmats: camera {singular[0]} has a singular world-to-camera matrix (expected an invertible "
            f"[4, 4] rigid transform; {len(singular)} of {len(viewmats)} cameras are singular)"
        )
    return inverses[:, :3, 3]


def rasterization(
    means: Tensor,  # [N, 3]
    quats: Tensor,  # [N, 4] wxyz, any norm
    scales: Tensor,  # [N, 3]
    opacities: Tensor,  # [N]
    colors: Tensor,  # [(C,) N, D] or [(C,) N, K, 3] SH coefficients
    viewmats: Tensor,  # [C, 4, 4] world-to-camera
    Ks: Tensor,  # [C, 3, 3]
    width: int,
    height: int,
    near_plane: float = 0.01,
    far_plane: float = 1e10,
    radius_clip: float = 0.0,
    eps2d: float = 0.3,
    sh_degree: int | None = None,
    backgrounds: Tensor | None = None,  # [C, D]
    render_mode: str = "RGB",
    rasterize_mode: str = "classic",
    absgrad: bool = False,
    tile_size: int = 16,
    camera_model: str = "pinhole",
    backend: str = "auto",
) -> tuple[Tensor, Tensor, dict]:
    """Rasterize N 3D Gaussians into C images, with the semantics of ``gsplat.rasterization`` 1.5.

    Args:
        means: Gaussian centres ``[N, 3]``.
        quats: rotations as quaternions ``(w, x, y, z)`` ``[N, 4]``, need not be normalised.
        scales: per-axis scales (linear, not log) ``[N, 3]``.
        opacities: opacities ``[N]`` (post-sigmoid).
        colors: if ``sh_degree`` is None, features ``[N, D]`` or ``[C, N, D]``; otherwise SH coefficients
            ``[N, K, 3]`` or ``[C, N, K, 3]`` with ``K >= (sh_degree + 1)**2``.
        viewmats: world-to-camera matrices ``[C, 4, 4]``.
        Ks: intrinsics ``[C, 3, 3]``.
        width, height: image size in pixels.
        near_plane, far_plane: depth range outside which Gaussians are culled.
        radius_clip: Gaussians whose 2D radius (pixels) is <= this in both axes are culled.
        eps2d: added to the diagonal of the 2D covariance (low-pass filter).
        sh_degree: SH degree 0..3 or None (``colors`` are then the rendered features).
        backgrounds: ``[C, D]`` background per camera, D = channels rendered except the depth channel
            of "RGB+D"/"RGB+ED" (a zero is appended for it); ``[C, 1]`` for "D"/"ED".
        render_mode: "RGB", "D" (accumulated depth), "ED" (expected depth), "RGB+D" or "RGB+ED".
        rasterize_mode: "classic" or "antialiased" (opacities multiplied by the Mip-Splatting
            compensation factor).
        absgrad: if True, ``meta["means2d"].absgrad`` holds the summed absolute per-pixel 2D-mean
            gradients after backward (AbsGS).
        tile_size: tile size in pixels.
        camera_model: "pinhole" or "ortho" ("fisheye" and "ftheta" are not implemented yet).
        backend: "auto" (the compiled CPU or CUDA ops for the tensors' device if built, else the
            reference), "cpp" (compiled ops, an error if they are not built for that device) or
            "reference" (plain PyTorch).

    Returns:
        ``(render_colors [C, H, W, D'], render_alphas [C, H, W, 1], meta)`` where ``D'`` is the number
        of rendered channels (including the depth channel for depth modes) and ``meta`` holds the
        intermediate results (radii, means2d, depths, conics, opacities, compensations, tiles_per_gauss,
        isect_offsets, flatten_ids, n_isects, width, height, tile_size, tile_width, tile_height,
        n_cameras, render_mode, rasterize_mode, backend).
    """
    # ---- scalar / mode arguments --------------------------------------------------------------
    render_mode = _check_choice("render_mode", render_mode, RENDER_MODES)
    rasterize_mode = _check_choice("rasterize_mode", rasterize_mode, RASTERIZE_MODES)
    camera_model = _check_camera_model(camera_model)
    backend = _check_choice("backend", backend, BACKENDS)
    width = _check_int("width", width, 1)
    height = _check_int("height", height, 1)
    tile_size = _check_int("tile_size", tile_size, 1, MAX_TILE_SIZE)
    if sh_degree is not None:
        sh_degree = _check_int("sh_degree", sh_degree, 0, MAX_SH_DEGREE)
    near_plane = _check_real("near_plane", near_plane)
    far_plane = _check_real("far_plane", far_plane, allow_inf=True)
    radius_clip = _check_real("radius_clip", radius_clip)
    eps2d = _check_real("eps2d", eps2d)
    absgrad = bool(absgrad)

    # ---- tensor shapes ------------------------------------------------------------------------
    dims = _Dims()
    dims.mins["C"] = (1, "at least one camera")
    dims.mins["D"] = (1, "at least one channel")
    _check_shape("means", means, [("N", 3)], dims)
    _check_shape("quats", quats, [("N", 4)], dims)
    _check_shape("scales", scales, [("N", 3)], dims)
    _check_shape("opacities", opacities, [("N",)], dims)
    _check_shape("viewmats", viewmats, [("C", 4, 4)], dims)
    _check_shape("Ks", Ks, [("C", 3, 3)], dims)
    if sh_degree is None:
        per_camera_colors = _check_shape("colors", colors, [("N", "D"), ("C", "N", "D")], dims) == 1
        n_color_channels = dims.sizes["D"][0]
    else:
        dims.mins["K"] = ((sh_degree + 1) ** 2, f"sh_degree={sh_degree}")
        per_camera_colors = _check_shape("colors", colors, [("N", "K", 3), ("C", "N", "K", 3)], dims) == 1
        n_color_channels = 3
        dims.sizes["D"] = (3, "colors, SH")
    if backgrounds is not None:
        if render_mode in ("D", "ED"):
            _check_shape(
                "backgrounds",
                backgrounds,
                [("C", 1)],
                dims,
                note=f" (render_mode={render_mode!r} renders only the depth channel)",
            )
        else:
            _check_shape("backgrounds", backgrounds, [("C", "D")], dims)
    N = dims.sizes["N"][0]
    C = dims.sizes["C"][0]

    # ---- dtypes, devices, values --------------------------------------------------------------
    float_inputs = {
        "means": means,
        "quats": quats,
        "scales": scales,
        "opacities": opacities,
        "colors": colors,
        "viewmats": viewmats,
        "Ks": Ks,
        "backgrounds": backgrounds,
    }
    _check_dtype_device(float_inputs)
    _check_finite(float_inputs)

    impl, backend_used = _select_backend(backend, means.device)

    # The ops expect contiguous tensors; .contiguous() is a no-op (same tensor) when already so.
    means, quats, scales, opacities, colors, viewmats, Ks = (
        t.contiguous() for t in (means, quats, scales, opacities, colors, viewmats, Ks)
    )
    if backgrounds is not None:
        backgrounds = backgrounds.contiguous()
    user_inputs = (means, quats, scales, opacities, colors, viewmats, Ks, backgrounds)

    tile_width = math.ceil(width / tile_size)
    tile_height = math.ceil(height / tile_size)
    device = means.device
    antialiased = rasterize_mode == "antialiased"

    # ---- 1. projection --------------------------------------------------------------------------
    if N > 0:
        radii, means2d, depths, conics, compensations = impl.project_gaussians(
            means,
            quats,
            scales,
            viewmats,
            Ks,
            width,
            height,
            eps2d=eps2d,
            near_plane=near_plane,
            far_plane=far_plane,
            radius_clip=radius_clip,
            opacities=opacities,
            calc_compensations=antialiased,
            camera_model=camera_model,
        )
        means2d = means2d.contiguous()
    else:  # nothing to project: empty intermediates (ops are not required to handle N=0)
        radii = torch.zeros((C, 0, 2), dtype=torch.int32, device=device)
        means2d = means.new_zeros((C, 0, 2)).requires_grad_(means.requires_grad)
        depths = means.new_zeros((C, 0))
        conics = means.new_zeros((C, 0, 3))
        compensations = means.new_zeros((C, 0)) if antialiased else None

    if antialiased:
        opacities_cn = opacities[None, :] * compensations  # [C, N]
    else:
        opacities_cn = opacities[None, :].expand(C, N).contiguous()  # [C, N]

    # ---- 2. colours ------------------------------------------------------------------------------
    if sh_degree is None:
        colors_cn = colors if per_camera_colors else colors[None].expand(C, N, n_color_channels)
    elif N > 0:
        campos = _camera_positions(viewmats)  # [C, 3]; viewmat gradient flows via view dirs
        dirs = means[None, :, :] - campos[:, None, :]  # [C, N, 3]
        # The op reads only the first (sh_degree + 1)^2 bases, so the coefficients go in unsliced: a slice
        # would cost a copy forward and a zero-filled [N, K, 3] gradient backward. With one camera, a view
        # instead of an expand keeps the backward from reducing over a size-1 dimension (another copy).
        coeffs = colors
        if not per_camera_colors:
            coeffs = coeffs[None] if C == 1 else coeffs[None].expand(C, *colors.shape)
        masks = (radii > 0).all(dim=-1)  # [C, N]
        colors_cn = impl.spherical_harmonics(sh_degree, dirs.contiguous(), coeffs.contiguous(), masks=masks)
        colors_cn = torch.clamp_min(colors_cn + 0.5, 0.0)
    else:
        colors_cn = means.new_zeros((C, 0, 3))

    if render_mode in ("RGB+D", "RGB+ED"):
        colors_cn = torch.cat([colors_cn, depths[..., None]], dim=-1)
        if backgrounds is not None:
            backgrounds = torch.cat([backgrounds, backgrounds.new_zeros((C, 1))], dim=-1)
    elif render_mode in ("D", "ED"):
        colors_cn = depths[..., None]
    colors_cn = colors_cn.contiguous()
    n_channels = colors_cn.shape[-1]

    # ---- 3. tile binning -------------------------------------------------------------------------
    if N > 0:
        tiles_per_gauss, isect_offsets, flatten_ids = impl.bin_gaussians_to_tiles(
            means2d, radii, depths, tile_size, tile_width, tile_height
        )
    else:
        tiles_per_gauss = torch.zeros((C, 0), dtype=torch.int32, device=device)
        isect_offsets = torch.zeros((C, tile_height, tile_width), dtype=torch.int32, device=device)
        flatten_ids = torch.zeros((0,), dtype=torch.int32, device=device)
    n_isects = int(flatten_ids.numel())

    if means2d.requires_grad:
        means2d.retain_grad()  # densification strategies read meta["means2d"].grad, as in gsplat

    # ---- 4. rasterization ------------------------------------------------------------------------
    if n_isects > 0:
        render_colors, render_alphas = impl.rasterize_to_pixels(
            means2d,
            conics,
            colors_cn,
            opacities_cn,
            width,
            height,
            tile_size,
            isect_offsets,
            flatten_ids,
            backgrounds=backgrounds,
            absgrad=absgrad,
        )
    else:
        # Nothing visible (N=0 or everything culled): background and alpha 0, with zero gradients.
        if backgrounds is not None:
            render_colors = backgrounds[:, None, None, :].expand(C, height, width, n_channels).contiguous()
        else:
            render_colors = means.new_zeros((C, height, width, n_channels))
        render_alphas = means.new_zeros((C, height, width, 1))
        link = _zero_link(user_inputs + (means2d, depths, conics, colors_cn, opacities_cn))
        if link is not None:
            render_colors = render_colors + link
            render_alphas = render_alphas + link
        if absgrad:
            means2d.absgrad = torch.zeros_like(means2d.detach())

    if render_mode in ("ED", "RGB+ED"):
        # expected depth: accumulated depth normalised by the accumulated weight
        render_colors = torch.cat(
            [render_colors[..., :-1], render_colors[..., -1:] / render_alphas.clamp(min=1e-10)], dim=-1
        )

    meta = {
        "camera_ids": None,  # gsplat's packed-mode fields; this implementation is never packed
        "gaussian_ids": None,
        "radii": radii,
        "means2d": means2d,
        "depths": depths,
        "conics": conics,
        "opacities": opacities_cn,
        "compensations": compensations,
        "tiles_per_gauss": tiles_per_gauss,
        "isect_offsets": isect_offsets,
        "flatten_ids": flatten_ids,
        "n_isects": n_isects,
        "width": width,
        "height": height,
        "tile_size": tile_size,
        "tile_width": tile_width,
        "tile_height": tile_height,
        "n_cameras": C,
        "render_mode": render_mode,
        "rasterize_mode": rasterize_mode,
        "backend": backend_used,
    }
    return render_colors, render_alphas, meta
