"""High-level rasterization API, a drop-in replacement for ``gsplat.rasterization`` (gsplat 1.5).

The pipeline (see ``docs/architecture.md``) is composed from four ops that exist twice with identical
signatures: ``gsplat_py.ops`` (compiled C++ with hand-written backward) and ``gsplat_py.reference``
(plain PyTorch). Both are imported lazily so this module can be imported before either exists.
"""

from __future__ import annotations

import enum
import math
import operator
import warnings
from collections.abc import Sequence
from typing import SupportsIndex, cast

import torch
from torch import Tensor

from . import _backend
from . import distributed as _distributed
from .limits import MAX_SH_DEGREE, MAX_TILE_SIZE

__all__ = ["RollingShutterType", "rasterization", "rasterization_2dgs"]

RENDER_MODES = ("RGB", "D", "ED", "RGB+D", "RGB+ED")
RASTERIZE_MODES = ("classic", "antialiased")
CAMERA_MODELS = ("pinhole", "ortho", "fisheye")
UNIMPLEMENTED_CAMERA_MODELS = ("ftheta",)  # exist in gsplat, not (yet) here
BACKENDS = ("auto", "cpp", "reference")
FLOAT_DTYPES = (torch.float32, torch.float64)
HALF_DTYPES = (torch.float16, torch.bfloat16)  # accepted as gsplat does, computed in float32


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


def _compute_dtype(dtype: torch.dtype) -> torch.dtype:
    return torch.float32 if dtype in HALF_DTYPES else dtype


def _check_dtype_device(tensors: dict[str, Tensor | None]) -> None:
    """All given tensors: floating, float32/float64 (half precision counting as float32, in which it is
    computed), one common dtype and one common device."""
    ref_name, ref = next((name, x) for name, x in tensors.items() if x is not None)
    for name, x in tensors.items():
        if x is None:
            continue
        if not x.is_floating_point() or _compute_dtype(x.dtype) not in FLOAT_DTYPES:
            raise ValueError(
                f"{name}: expected a floating dtype (torch.float32 or torch.float64; float16 and bfloat16 "
                f"are computed in float32), got {x.dtype}"
            )
        if _compute_dtype(x.dtype) != _compute_dtype(ref.dtype):
            raise ValueError(
                f"{name}: expected dtype {_compute_dtype(ref.dtype)} (from {ref_name}; all float inputs must "
                f"share one dtype), got {x.dtype}"
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


def _check_int(
    name: str, value: object, minimum: int, maximum: int | None = None, integral_float: bool = False
) -> int:
    """An int (numpy ints and 0-dim integer tensors too; with integral_float, also a float such as 640.0,
    which gsplat accepts for image sizes) in minimum..maximum."""
    expected = f"an int >= {minimum}" if maximum is None else f"an int in {minimum}..{maximum}"
    if integral_float and isinstance(value, float) and value.is_integer():
        value = int(value)
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
    """[..., C, 3] camera centres (the translation of the inverse of each world-to-camera matrix),
    differentiable; ValueError naming ``viewmats`` for a matrix that has no inverse."""
    inverses, info = torch.linalg.inv_ex(viewmats)
    singular = torch.nonzero(info.reshape(-1)).flatten().tolist()
    if singular:
        raise ValueError(
            f"viewmats: camera {singular[0]} has a singular world-to-camera matrix (expected an invertible "
            f"[4, 4] rigid transform; {len(singular)} of {info.numel()} cameras are singular)"
        )
    return inverses[..., :3, 3]


class RollingShutterType(enum.Enum):
    """gsplat's shutter types; only GLOBAL (the default) is implemented."""

    ROLLING_TOP_TO_BOTTOM = 0
    ROLLING_LEFT_TO_RIGHT = 1
    ROLLING_BOTTOM_TO_TOP = 2
    ROLLING_RIGHT_TO_LEFT = 3
    GLOBAL = 4


def _check_unimplemented(**options: object) -> None:
    """NotImplementedError naming the first gsplat option that is set to something this library lacks."""
    for name, value in options.items():
        if name == "rolling_shutter":
            if getattr(value, "name", value) != "GLOBAL":
                raise NotImplementedError(
                    f"rolling_shutter={value!r}: only the global shutter is implemented"
                )
        elif value is not None and value is not False:
            raise NotImplementedError(f"{name}: not implemented in gsplat_py (got {_short(value)})")


def _short(value: object) -> str:
    if isinstance(value, Tensor):
        return f"a tensor of shape {_fmt_shape(value.shape)}"
    return repr(value)


def _check_color_shapes(
    colors: object,
    sh_rest: object,
    backgrounds: object,
    sh_degree: int | None,
    render_mode: str,
    batch: tuple[int, ...],
    dims: _Dims,
) -> bool:
    """Checks the shapes of ``colors`` (features, or SH coefficients with ``sh_degree``; only the first
    with ``sh_rest``, the others) and ``backgrounds`` against ``dims``; whether the colours are given per
    camera."""
    if sh_degree is None:
        if sh_rest is not None:
            raise ValueError("sh_rest: SH coefficients need sh_degree (got sh_degree=None)")
        specs: list[tuple[Dim, ...]] = [(*batch, "N", "D"), (*batch, "C", "N", "D")]
        per_camera_colors = _check_shape("colors", colors, specs, dims) == 1
    elif sh_rest is None:
        dims.mins["K"] = ((sh_degree + 1) ** 2, f"sh_degree={sh_degree}")
        specs = [(*batch, "N", "K", 3), (*batch, "C", "N", "K", 3)]
        per_camera_colors = _check_shape("colors", colors, specs, dims) == 1
    else:
        specs = [(*batch, "N", 1, 3), (*batch, "C", "N", 1, 3)]
        per_camera_colors = (
            _check_shape("colors", colors, specs, dims, note=" (the first SH coefficient, with sh_rest)") == 1
        )
        dims.mins["R"] = ((sh_degree + 1) ** 2 - 1, f"sh_degree={sh_degree}")
        rest_spec: tuple[Dim, ...] = (
            (*batch, "C", "N", "R", 3) if per_camera_colors else (*batch, "N", "R", 3)
        )
        _check_shape(
            "sh_rest", sh_rest, [rest_spec], dims, note=" (the SH coefficients after the first, as colors)"
        )
    if sh_degree is not None:
        dims.sizes["D"] = (3, "colors, SH")
    if backgrounds is not None:
        if render_mode in ("D", "ED"):
            # gsplat renders depth on a zero background whatever the backgrounds hold.
            _check_shape("backgrounds", backgrounds, [(*batch, "C", "X")], dims)
        else:
            _check_shape("backgrounds", backgrounds, [(*batch, "C", "D")], dims)
    return per_camera_colors


def _batch_dims(means: object) -> tuple[int, ...]:
    if not isinstance(means, Tensor) or means.dim() < 2:
        _check_shape("means", means, [("N", 3)], _Dims(), note=" (with any leading batch dimensions)")
    assert isinstance(means, Tensor)
    return tuple(int(d) for d in means.shape[:-2])


def rasterization(
    means: Tensor,  # [..., N, 3]
    quats: Tensor | None,  # [..., N, 4] wxyz, any norm (None with covars)
    scales: Tensor | None,  # [..., N, 3] (None with covars)
    opacities: Tensor,  # [..., N]
    colors: Tensor,  # [..., (C,) N, D] or [..., (C,) N, K, 3] SH coefficients
    viewmats: Tensor,  # [..., C, 4, 4] world-to-camera
    Ks: Tensor,  # [..., C, 3, 3]
    width: int,
    height: int,
    near_plane: float = 0.01,
    far_plane: float = 1e10,
    radius_clip: float = 0.0,
    eps2d: float = 0.3,
    sh_degree: int | None = None,
    packed: bool = True,
    tile_size: int = 16,
    backgrounds: Tensor | None = None,  # [..., C, D]
    render_mode: str = "RGB",
    sparse_grad: bool = False,
    absgrad: bool = False,
    rasterize_mode: str = "classic",
    channel_chunk: int = 32,
    distributed: bool = False,
    camera_model: str = "pinhole",
    segmented: bool = False,
    covars: Tensor | None = None,  # [..., N, 3, 3]
    with_ut: bool = False,
    with_eval3d: bool = False,
    radial_coeffs: Tensor | None = None,  # [..., C, 4] (fisheye)
    tangential_coeffs: Tensor | None = None,
    thin_prism_coeffs: Tensor | None = None,
    ftheta_coeffs: object = None,
    rolling_shutter: object = RollingShutterType.GLOBAL,
    viewmats_rs: Tensor | None = None,
    *,
    backend: str = "auto",
    sh_rest: Tensor | None = None,
) -> tuple[Tensor, Tensor, dict]:
    """Rasterize N 3D Gaussians into C images, with the signature and semantics of
    ``gsplat.rasterization`` 1.5.3 (same positional order, defaults, shapes and meta keys).

    Args:
        means: Gaussian centres ``[..., N, 3]``; leading dimensions are independent batches (scenes), each
            rendered by its own cameras.
        quats: rotations as quaternions ``(w, x, y, z)`` ``[..., N, 4]``, need not be normalised.
        scales: per-axis scales (linear, not log) ``[..., N, 3]``.
        opacities: opacities ``[..., N]`` (post-sigmoid).
        colors: if ``sh_degree`` is None, features ``[..., N, D]`` or ``[..., C, N, D]``; otherwise SH
            coefficients ``[..., N, K, 3]`` or ``[..., C, N, K, 3]`` with ``K >= (sh_degree + 1)**2``.
        viewmats: world-to-camera matrices ``[..., C, 4, 4]``.
        Ks: intrinsics ``[..., C, 3, 3]``.
        width, height: image size in pixels (ints, or integral floats).
        near_plane, far_plane: depth range outside which Gaussians are culled.
        radius_clip: Gaussians whose 2D radius (pixels) is <= this in both axes are culled.
        eps2d: added to the diagonal of the 2D covariance (low-pass filter).
        sh_degree: SH degree 0..4 or None (``colors`` are then the rendered features).
        packed: keep only the visible (camera, Gaussian) pairs (``[nnz, ...]`` meta with ``batch_ids``,
            ``camera_ids`` and ``gaussian_ids``): the memory is that of the visible pairs, not ``C * N``.
            False: the ``[..., C, N, ...]`` layout.
        tile_size: tile size in pixels.
        backgrounds: ``[..., C, D]`` background per image, D = channels rendered except the depth channel
            of "RGB+D"/"RGB+ED" (a zero is appended for it); "D"/"ED" render on a zero background, as gsplat.
        render_mode: "RGB", "D" (accumulated depth), "ED" (expected depth), "RGB+D" or "RGB+ED".
        sparse_grad: with ``packed``, the gradients of means, quats, scales (or covars) are sparse COO
            tensors with a row per visible pair (gsplat's ``SparseAdam``-style optimisers consume them).
        absgrad: if True, ``meta["means2d"].absgrad`` holds the summed absolute per-pixel 2D-mean
            gradients after backward (AbsGS).
        rasterize_mode: "classic" or "antialiased" (opacities multiplied by the Mip-Splatting
            compensation factor).
        channel_chunk: accepted for gsplat's signature; every channel count renders in one pass here.
        distributed: needs an initialised default ``torch.distributed`` process group (any backend). Each
            rank passes its shard of the Gaussians and its own cameras (any number per rank) and gets the
            images of its own cameras rendered with every rank's Gaussians; gradients flow back to each
            rank's Gaussians and cameras (`gsplat_py.rendering.distributed`). No batch dimensions,
            per-camera colours or absgrad (as gsplat). ``meta`` describes this rank's images (global
            ``gaussian_ids``); ``meta["projected"]`` is the meta of this rank's Gaussians in every rank's
            cameras (radii, means2d with its gradient after backward, ``n_cameras`` of the world), what a
            densification strategy needs. Every rank must make the same call and run backward.
        camera_model: "pinhole", "ortho" or "fisheye" (OpenCV's fisheye model, equidistant without
            ``radial_coeffs``); "ftheta" raises NotImplementedError.
        segmented: accepted for gsplat's signature (a sorting strategy there; the numbers are the same).
        covars: world covariances ``[..., N, 3, 3]`` instead of ``quats`` and ``scales`` (then ignored).
        radial_coeffs: fisheye k1..k4 ``[..., C, 4]``.
        with_ut, with_eval3d, tangential_coeffs, thin_prism_coeffs, ftheta_coeffs, rolling_shutter,
            viewmats_rs: gsplat's unscented-transform and distortion options; anything but their
            defaults raises NotImplementedError naming the option.
        backend: (keyword only) "auto" (the compiled CPU or CUDA ops for the tensors' device if built,
            else the reference), "cpp" (compiled ops, an error if they are not built for that device) or
            "reference" (plain PyTorch).
        sh_rest: (keyword only) with ``sh_degree``, the SH coefficients after the first ``[..., (C,) N,
            K - 1, 3]``, ``colors`` then holding only the first ``[..., (C,) N, 1, 3]``: the same result and
            gradients as ``colors=torch.cat([colors, sh_rest], -2)``, without that copy of every
            coefficient and the split of its gradient (gsplat's trainers keep ``sh0`` and ``shN`` apart).

    Returns:
        ``(render_colors [..., C, H, W, D'], render_alphas [..., C, H, W, 1], meta)`` where ``D'`` is the
        number of rendered channels (including the depth channel for depth modes) and ``meta`` holds
        gsplat's intermediate results (batch_ids, camera_ids, gaussian_ids, radii, means2d, depths,
        conics, opacities, tile_width, tile_height, tiles_per_gauss, isect_ids, flatten_ids,
        isect_offsets, width, height, tile_size, n_batches, n_cameras) and ours (compensations, n_isects,
        render_mode, rasterize_mode, backend). ``isect_ids`` is None when images and tiles need more
        than 32 bits (gsplat cannot encode them either).
    """
    # ---- options this library does not implement ----------------------------------------------------
    _check_unimplemented(
        with_ut=with_ut,
        with_eval3d=with_eval3d,
        tangential_coeffs=tangential_coeffs,
        thin_prism_coeffs=thin_prism_coeffs,
        ftheta_coeffs=ftheta_coeffs,
        rolling_shutter=rolling_shutter,
        viewmats_rs=viewmats_rs,
    )

    # ---- scalar / mode arguments --------------------------------------------------------------
    render_mode = _check_choice("render_mode", render_mode, RENDER_MODES)
    rasterize_mode = _check_choice("rasterize_mode", rasterize_mode, RASTERIZE_MODES)
    camera_model = _check_camera_model(camera_model)
    if radial_coeffs is not None and camera_model != "fisheye":
        raise NotImplementedError(
            f"radial_coeffs with camera_model={camera_model!r}: only the fisheye model's radial "
            f"coefficients are implemented"
        )
    backend = _check_choice("backend", backend, BACKENDS)
    width = _check_int("width", width, 1, integral_float=True)
    height = _check_int("height", height, 1, integral_float=True)
    tile_size = _check_int("tile_size", tile_size, 1, MAX_TILE_SIZE)
    _check_int("channel_chunk", channel_chunk, 1)
    if sh_degree is not None:
        sh_degree = _check_int("sh_degree", sh_degree, 0, MAX_SH_DEGREE)
    near_plane = _check_real("near_plane", near_plane)
    far_plane = _check_real("far_plane", far_plane, allow_inf=True)
    radius_clip = _check_real("radius_clip", radius_clip)
    eps2d = _check_real("eps2d", eps2d)
    absgrad, packed, sparse_grad = bool(absgrad), bool(packed), bool(sparse_grad)
    if sparse_grad and not packed:
        raise ValueError("sparse_grad: sparse gradients need packed=True (a row per visible pair)")

    # ---- tensor shapes ------------------------------------------------------------------------
    batch = _batch_dims(means)
    dims = _Dims()
    dims.mins["C"] = (1, "at least one camera")
    dims.mins["D"] = (1, "at least one channel")
    _check_shape("means", means, [(*batch, "N", 3)], dims)
    if covars is not None:
        _check_shape("covars", covars, [(*batch, "N", 3, 3)], dims)
    else:
        _check_shape("quats", quats, [(*batch, "N", 4)], dims, note=" (or pass covars)")
        _check_shape("scales", scales, [(*batch, "N", 3)], dims, note=" (or pass covars)")
    _check_shape("opacities", opacities, [(*batch, "N")], dims)
    _check_shape("viewmats", viewmats, [(*batch, "C", 4, 4)], dims)
    _check_shape("Ks", Ks, [(*batch, "C", 3, 3)], dims)
    if radial_coeffs is not None:
        _check_shape("radial_coeffs", radial_coeffs, [(*batch, "C", 4)], dims, note=" (fisheye k1..k4)")
    per_camera_colors = _check_color_shapes(colors, sh_rest, backgrounds, sh_degree, render_mode, batch, dims)
    N = dims.sizes["N"][0]
    C = dims.sizes["C"][0]
    B = math.prod(batch)
    if distributed:
        if batch:
            raise ValueError(
                f"distributed: batch dimensions are not supported (means has {_fmt_shape(means.shape)})"
            )
        if per_camera_colors:
            raise ValueError("distributed: per-camera colors are not supported (pass colors [N, ...])")
        if absgrad:
            raise ValueError("distributed: absgrad is not supported (its sums stay on the rasterizing rank)")

    # ---- dtypes, devices, values --------------------------------------------------------------
    float_inputs = {
        "means": means,
        "quats": quats if covars is None else None,
        "scales": scales if covars is None else None,
        "covars": covars,
        "opacities": opacities,
        "colors": colors,
        "sh_rest": sh_rest,
        "viewmats": viewmats,
        "Ks": Ks,
        "backgrounds": backgrounds,
        "radial_coeffs": radial_coeffs,
    }
    _check_dtype_device(float_inputs)
    _check_finite(float_inputs)
    if any(x is not None and x.dtype in HALF_DTYPES for x in float_inputs.values()):
        # Half-precision inputs are computed in float32 (their gradients come back in their own dtype).
        means, opacities, colors, viewmats, Ks = (x.float() for x in (means, opacities, colors, viewmats, Ks))
        quats, scales, covars, backgrounds, radial_coeffs, sh_rest = (
            None if x is None else x.float()
            for x in (quats, scales, covars, backgrounds, radial_coeffs, sh_rest)
        )

    impl, backend_used = _select_backend(backend, means.device)
    if covars is not None:
        quats = scales = None
        rows, cols = (0, 0, 0, 1, 1, 2), (0, 1, 2, 1, 2, 2)
        covars = covars[..., rows, cols]  # [..., N, 6] upper triangles, as the ops take them
    if render_mode in ("D", "ED") and backgrounds is not None:
        backgrounds = None  # zero background, as gsplat
    world = None
    if distributed:  # project into the cameras of every rank
        world, viewmats, Ks, radial_coeffs = _distributed.gather_cameras(viewmats, Ks, radial_coeffs, N)
        C = viewmats.shape[0]

    tile_width = math.ceil(width / tile_size)
    tile_height = math.ceil(height / tile_size)
    device = means.device
    antialiased = rasterize_mode == "antialiased"
    projection_args = dict(
        eps2d=eps2d,
        near_plane=near_plane,
        far_plane=far_plane,
        radius_clip=radius_clip,
        opacities=opacities,
        calc_compensations=antialiased,
        camera_model=camera_model,
        covars=covars,
        radial_coeffs=radial_coeffs,
    )

    # ---- 1. projection; 2. colours ---------------------------------------------------------------
    batch_ids = camera_ids = gaussian_ids = image_ids = None
    if packed:
        if N > 0:
            proj = impl.project_gaussians_packed(
                means, quats, scales, viewmats, Ks, width, height, sparse_grad=sparse_grad, **projection_args
            )
            batch_ids, camera_ids, gaussian_ids, radii, means2d, depths, conics, compensations = proj
        else:
            batch_ids = camera_ids = gaussian_ids = torch.zeros((0,), dtype=torch.int64, device=device)
            radii = torch.zeros((0, 2), dtype=torch.int32, device=device)
            means2d = means.new_zeros((0, 2)).requires_grad_(means.requires_grad)
            depths = means.new_zeros((0,))
            conics = means.new_zeros((0, 3))
            compensations = means.new_zeros((0,)) if antialiased else None
        image_ids = camera_ids if B == 1 else batch_ids * C + camera_ids
        # Gathers below use index_select: its backward (index_add_) is several times faster on the CPU than
        # that of advanced indexing (index_put_ with accumulate).
        # Each entry's Gaussian among the B * N (and, for per-camera colours, its row among B * C * N).
        entry_gaussians = gaussian_ids if B == 1 else batch_ids * N + gaussian_ids
        opacities_used = opacities.reshape(-1).index_select(0, entry_gaussians)
        if antialiased:
            opacities_used = opacities_used * compensations
        color_rows = image_ids * N + gaussian_ids if per_camera_colors else entry_gaussians
        if sh_degree is None:
            colors_used = colors.reshape(-1, colors.shape[-1]).index_select(0, color_rows)
        elif N > 0:
            campos = _camera_positions(viewmats).reshape(-1, 3)  # [B * C, 3]
            dirs = means.reshape(-1, 3).index_select(0, entry_gaussians) - campos.index_select(0, image_ids)
            # Coefficients read in place (no [nnz, K, 3] gather) where every entry has its own row: per-
            # camera colours, or one camera per batch.
            in_place = per_camera_colors or C == 1
            coeffs = colors.reshape(-1, colors.shape[-2], 3)
            rest = None if sh_rest is None else sh_rest.reshape(coeffs.shape[0], sh_rest.shape[-2], 3)
            if not in_place:
                coeffs = coeffs.index_select(0, color_rows)
                rest = None if rest is None else rest.index_select(0, color_rows)
            colors_used = impl.spherical_harmonics(
                sh_degree, dirs, coeffs, coeff_rows=color_rows if in_place else None, coeffs_rest=rest
            )
            colors_used = torch.clamp_min(colors_used + 0.5, 0.0)
        else:
            colors_used = means.new_zeros((0, 3))
    else:
        if N > 0:
            radii, means2d, depths, conics, compensations = impl.project_gaussians(
                means, quats, scales, viewmats, Ks, width, height, **projection_args
            )
        else:  # nothing to project: empty intermediates (ops are not required to handle N=0)
            radii = torch.zeros((*batch, C, 0, 2), dtype=torch.int32, device=device)
            means2d = means.new_zeros((*batch, C, 0, 2)).requires_grad_(means.requires_grad)
            depths = means.new_zeros((*batch, C, 0))
            conics = means.new_zeros((*batch, C, 0, 3))
            compensations = means.new_zeros((*batch, C, 0)) if antialiased else None
        if antialiased:
            opacities_used = opacities[..., None, :] * compensations  # [..., C, N]
        else:
            opacities_used = opacities[..., None, :].expand(*batch, C, N).contiguous()  # [..., C, N]
        if sh_degree is None:
            colors_used = colors if per_camera_colors else colors[..., None, :, :].expand(*batch, C, N, -1)
        elif N > 0:
            campos = _camera_positions(viewmats)  # [..., C, 3]; viewmat gradient flows via view dirs
            dirs = means[..., None, :, :] - campos[..., :, None, :]  # [..., C, N, 3]
            # The op reads only the first (sh_degree + 1)^2 bases, so the coefficients go in unsliced: a
            # slice would cost a copy forward and a zero-filled [N, K, 3] gradient backward. With one camera,
            # a view instead of an expand keeps the backward from reducing over a size-1 dimension.
            coeffs, rest = colors, sh_rest
            if not per_camera_colors:

                def per_camera(x: Tensor) -> Tensor:
                    x = x[..., None, :, :, :]
                    return x.expand(*batch, C, *x.shape[-3:]) if C > 1 else x

                coeffs = per_camera(coeffs)
                rest = None if rest is None else per_camera(rest)
            masks = (radii > 0).all(dim=-1)  # [..., C, N]
            colors_used = impl.spherical_harmonics(
                sh_degree,
                dirs.contiguous(),
                coeffs.contiguous(),
                masks=masks,
                coeffs_rest=None if rest is None else rest.contiguous(),
            )
            colors_used = torch.clamp_min(colors_used + 0.5, 0.0)
        else:
            colors_used = means.new_zeros((*batch, C, 0, 3))

    projected = None
    if world is not None:  # send each camera's projections to the rank that owns it
        if means2d.requires_grad:
            means2d.retain_grad()  # the owner's densification statistics
        projected = {
            "radii": radii,
            "means2d": means2d,
            "gaussian_ids": gaussian_ids,
            "camera_ids": camera_ids,
            "width": width,
            "height": height,
            "n_cameras": C,
        }
        float_fields = {
            "means2d": means2d,
            "depths": depths,
            "conics": conics,
            "opacities": opacities_used,
            "colors": colors_used,
        }
        if compensations is not None:
            float_fields["compensations"] = compensations
        int_fields = {"radii": radii}
        if packed:
            int_fields.update(camera_ids=camera_ids, gaussian_ids=gaussian_ids)
        link = _zero_link((means, quats, scales, covars, opacities, colors, sh_rest, world.cameras))
        floats, ints = _distributed.exchange_projections(world, packed, float_fields, int_fields, link)
        means2d, depths, conics = floats["means2d"], floats["depths"], floats["conics"]
        opacities_used, colors_used = floats["opacities"], floats["colors"]
        compensations = floats.get("compensations")
        radii = ints["radii"]
        C, N = world.local_cameras, sum(world.gaussian_counts)
        if packed:
            camera_ids = image_ids = ints["camera_ids"]
            gaussian_ids = ints["gaussian_ids"]
            batch_ids = torch.zeros_like(camera_ids)

    if render_mode in ("RGB+D", "RGB+ED"):
        colors_used = torch.cat([colors_used, depths[..., None]], dim=-1)
        if backgrounds is not None:
            backgrounds = torch.cat([backgrounds, backgrounds.new_zeros((*batch, C, 1))], dim=-1)
    elif render_mode in ("D", "ED"):
        colors_used = depths[..., None]
    colors_used = colors_used.contiguous()
    n_channels = colors_used.shape[-1]

    # ---- 3. tile binning -------------------------------------------------------------------------
    n_entries = means2d.shape[0] if packed else N
    if n_entries > 0:
        tiles_per_gauss, isect_offsets, flatten_ids, isect_ids = impl.bin_gaussians_to_tiles(
            means2d, radii, depths, tile_size, tile_width, tile_height, image_ids=image_ids, n_images=B * C
        )
        isect_offsets = isect_offsets.reshape(*batch, C, tile_height, tile_width)
    else:
        tiles_per_gauss = torch.zeros(depths.shape, dtype=torch.int32, device=device)
        isect_offsets = torch.zeros((*batch, C, tile_height, tile_width), dtype=torch.int32, device=device)
        flatten_ids = torch.zeros((0,), dtype=torch.int32, device=device)
        isect_ids = torch.zeros((0,), dtype=torch.int64, device=device)
    n_isects = int(flatten_ids.numel())

    if means2d.requires_grad:
        means2d.retain_grad()  # densification strategies read meta["means2d"].grad, as in gsplat

    # ---- 4. rasterization ------------------------------------------------------------------------
    if n_isects > 0:
        render_colors, render_alphas = impl.rasterize_to_pixels(
            means2d,
            conics,
            colors_used,
            opacities_used,
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
        image_shape = (*batch, C, height, width)
        if backgrounds is not None:
            render_colors = backgrounds[..., None, None, :].expand(*image_shape, n_channels).contiguous()
        else:
            render_colors = means.new_zeros((*image_shape, n_channels))
        render_alphas = means.new_zeros((*image_shape, 1))
        user_inputs = (means, quats, scales, covars, opacities, colors, sh_rest, viewmats, Ks, backgrounds)
        link = _zero_link(user_inputs + (means2d, depths, conics, colors_used, opacities_used))
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
        "batch_ids": batch_ids,
        "camera_ids": camera_ids,
        "gaussian_ids": gaussian_ids,
        "radii": radii,
        "means2d": means2d,
        "depths": depths,
        "conics": conics,
        "opacities": opacities_used,
        "compensations": compensations,
        "tile_width": tile_width,
        "tile_height": tile_height,
        "tiles_per_gauss": tiles_per_gauss,
        "isect_ids": isect_ids,
        "flatten_ids": flatten_ids,
        "isect_offsets": isect_offsets,
        "n_isects": n_isects,
        "width": width,
        "height": height,
        "tile_size": tile_size,
        "n_batches": B,
        "n_cameras": C,
        "render_mode": render_mode,
        "rasterize_mode": rasterize_mode,
        "backend": backend_used,
    }
    if projected is not None:
        meta["projected"] = projected
    return render_colors, render_alphas, meta


# 2D Gaussian splatting lives in its own module, which builds on this one's checks (hence the import last).
from .pipeline_2dgs import rasterization_2dgs  # noqa: E402
