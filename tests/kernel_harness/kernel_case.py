#!/usr/bin/env python
"""Cases for the standalone kernel driver (driver.cpp): write one, build the driver for an ISA level, run it.

A case is a directory of raw little-endian arrays (float32, int32) and a meta.txt of sizes, for one
kernel: for the rasterize kernels (raster), their inputs, produced by gsplat_py's own projection and
binning on a random scene, and the cotangents of the backward pass; for the fused Adam step (adam), the
state and gradients of a few parameter tensors, their hyperparameters and a visible-rows mask; for SSIM
(ssim), two batches of images and a cotangent; for the projection (projection), a scene's Gaussians and
cameras and the cotangents of the backward pass. With them the outputs of the extension on the same inputs
(``expected_*``, float32 and float64; for adam also torch's own fused Adam's, ``torch_*``) for
comparison. The driver needs no torch, so it also runs where torch does not: cross-compiled for aarch64
and run under qemu (tests/test_kernel_harness.py).

    python tests/kernel_harness/kernel_case.py make DIR [--kernel raster|adam|ssim|projection]
        [--scene test|bench] [--n N] [--camera-model pinhole|ortho|fisheye] [--no-expected]
    python tests/kernel_harness/kernel_case.py build OUT --level x86_64_v3 [--cxx g++] [--flag=...]
    OUT DIR [--kernel K] [--threads T] [--repeat R] [--double] [--out RESULTS]      # run the driver

The bench scene is scripts/bench_render.py's (800x600, RGB); its kernel times give per-ISA rates without
torch in the way (e.g. under ``valgrind --tool=callgrind`` for instruction counts).
"""

from __future__ import annotations

import argparse
import importlib.util
import runpy
import shutil
import subprocess
import sys
from collections.abc import Sequence
from pathlib import Path

import numpy as np

HARNESS = Path(__file__).resolve().parent
REPO_ROOT = HARNESS.parent.parent
KERNEL_SOURCE = REPO_ROOT / "csrc" / "cpu" / "raster_kernels.cpp"
# Kernels that hold a build of each x86-64 level (cpu_common.h) and run the one simd_level() names:
# compiled as setup.py compiles them, without a level's flags (which would keep GCC from inlining a
# lower level's body).
DISPATCHED_SOURCES = tuple(
    REPO_ROOT / "csrc" / "cpu" / name for name in ("adam.cpp", "ssim.cpp", "projection.cpp")
)
INCLUDE_DIRS = (REPO_ROOT / "csrc" / "include", REPO_ROOT / "csrc" / "cpu")
LIMITS_FILE = REPO_ROOT / "gsplat_py" / "rendering" / "limits.py"
# The flags setup.py compiles the kernels with, less the ISA flag (passed separately).
CXX_FLAGS = (
    "-O3",
    "-std=c++20",
    "-fopenmp",
    "-fno-math-errno",
    "-Wall",
    "-Wno-unknown-pragmas",
    "-Wno-psabi",
)

# The compiler flag of each level (namespace) as setup.py builds it, and the float lanes of its vectors.
LEVEL_FLAGS = {
    "x86_64_v4": ["-march=x86-64-v4"],
    "x86_64_v3": ["-march=x86-64-v3"],
    "baseline": ["-march=x86-64"],
    "neon": [],
}
LEVEL_LANES = {"x86_64_v4": 16, "x86_64_v3": 8, "baseline": 4, "neon": 4}

# The outputs the driver writes: (name, dtype of the float32 run; the float64 run writes float64).
OUTPUTS = (
    "render_colors",
    "render_alphas",
    "transmittance",
    "last_ids",
    "v_means2d",
    "v_means2d_abs",
    "v_conics",
    "v_colors",
    "v_opacities",
    "v_backgrounds",
)

# The Adam case: one tensor of each row size a Gaussian has (means, quats, opacities, the higher SH
# bands), with a row count that is no multiple of any vector's lanes and spans several of adam.cpp's
# work items and visible-row blocks; per tensor (row size, lr, beta1, beta2, eps, step): a first step,
# later ones, and a beta1 under 0.5 (adam_math.h's other form of the lerp).
ADAM_ROWS = 5003
ADAM_TENSORS = (
    (3, 1.6e-4, 0.9, 0.999, 1e-15, 1.0),
    (4, 1e-3, 0.9, 0.999, 1e-15, 7.0),
    (1, 5e-2, 0.4, 0.99, 1e-8, 250.0),
    (45, 1.25e-4, 0.9, 0.999, 1e-15, 31.0),
)
ADAM_VISIBLE_FRACTION = 0.6
# The state an Adam step updates, as the driver writes it: <plain|visible>_<field><tensor>.
ADAM_STATE = ("param", "exp_avg", "exp_avg_sq")
ADAM_PLAIN_OUTPUTS = tuple(f"plain_{field}{i}" for i in range(len(ADAM_TENSORS)) for field in ADAM_STATE)
ADAM_OUTPUTS = ADAM_PLAIN_OUTPUTS + tuple(
    name.replace("plain_", "visible_", 1) for name in ADAM_PLAIN_OUTPUTS
)

# The SSIM case's images [B, H, W, C]: taller and wider than the 11x11 window, rows of no vector's
# multiple of lanes.
SSIM_SHAPE = (2, 23, 37, 3)
SSIM_OUTPUTS = ("result", "maps", "v_img1")
PROJECTION_OUTPUTS = (
    "radii",
    "means2d",
    "depths",
    "conics",
    "compensations",
    "v_means",
    "v_quats",
    "v_scales",
    "v_viewmats",
    "v_Ks",
)
INT32_OUTPUTS = ("last_ids", "radii")
CAMERA_MODELS = ("pinhole", "ortho", "fisheye")  # their ids in the kernels (gsplat_math.h's CameraModel)


def _load_module(name: str, path: Path):
    spec = importlib.util.spec_from_file_location(name, path)
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module  # dataclasses look their module up there
    spec.loader.exec_module(module)
    return module


def _scene(kind: str, n: int | None, seed: int):
    """(means, quats, scales, opacities, colors [N, D], viewmats, Ks, width, height, backgrounds or None)."""
    import torch

    if kind == "bench":
        bench = _load_module("bench_render", REPO_ROOT / "scripts" / "bench_render.py")
        s = bench.make_scene(n or 100_000, None, seed)
        return (
            *(t.detach() for t in (s.means, s.quats, s.scales, s.opacities, s.colors)),
            s.viewmats,
            s.Ks,
            bench.WIDTH,
            bench.HEIGHT,
            None,
        )
    sys.path.insert(0, str(REPO_ROOT / "tests"))
    from conftest import make_scene

    s = make_scene(
        n=n or 400,
        n_cameras=2,
        width=45,
        height=37,
        dtype=torch.float32,
        seed=seed,
        channels=5,
        backgrounds=True,
    )
    return (
        s["means"],
        s["quats"],
        s["scales"],
        s["opacities"],
        s["colors"],
        s["viewmats"],
        s["Ks"],
        s["width"],
        s["height"],
        s["backgrounds"],
    )


def make_case(
    directory: Path,
    kind: str = "test",
    n: int | None = None,
    seed: int = 0,
    tile_size: int = 16,
    expected: bool = True,
) -> None:
    """Writes a case: kernel inputs, cotangents and (unless expected=False) the extension's outputs."""
    import torch

    _import_extension()
    from gsplat_py.rendering import ops

    means, quats, scales, opacities, colors, viewmats, Ks, width, height, backgrounds = _scene(kind, n, seed)
    C, N, D = viewmats.shape[0], means.shape[0], colors.shape[-1]
    tile_width, tile_height = -(-width // tile_size), -(-height // tile_size)
    with torch.no_grad():
        radii, means2d, depths, conics, _ = ops.project_gaussians(
            means, quats, scales, viewmats, Ks, width, height, opacities=opacities
        )
        _, isect_offsets, flatten_ids, _ = ops.bin_gaussians_to_tiles(
            means2d, radii, depths, tile_size, tile_width, tile_height
        )
    inputs = {
        "means2d": means2d,
        "conics": conics,
        "colors": colors[None].expand(C, N, D),
        "opacities": opacities[None].expand(C, N),
        "isect_offsets": isect_offsets,
        "flatten_ids": flatten_ids,
    }
    if backgrounds is not None:
        inputs["backgrounds"] = backgrounds
    g = torch.Generator().manual_seed(seed + 1)
    inputs["v_colors"] = torch.randn(C, height, width, D, generator=g)
    inputs["v_alphas"] = torch.randn(C, height, width, generator=g)
    directory.mkdir(parents=True, exist_ok=True)
    for name, t in inputs.items():
        _write(directory / f"{name}.bin", t)
    meta = dict(
        cameras=C,
        gaussians=N,
        isects=flatten_ids.numel(),
        channels=D,
        width=width,
        height=height,
        tile_size=tile_size,
        tile_width=tile_width,
        tile_height=tile_height,
        backgrounds=int(backgrounds is not None),
    )
    (directory / "meta.txt").write_text("".join(f"{k} {v}\n" for k, v in meta.items()))
    if not expected:
        return
    for dtype, suffix in ((torch.float32, "float32"), (torch.float64, "float64")):

        def cast(name, dtype=dtype):
            t = inputs.get(name)
            return None if t is None else t.to(dtype).contiguous()

        args = [cast(k) for k in ("means2d", "conics", "colors", "opacities", "backgrounds")]
        fwd = torch.ops.gsplat_py.rasterize_forward(
            *args, width, height, tile_size, isect_offsets, flatten_ids
        )
        render_colors, render_alphas, transmittance, last_ids = fwd
        bwd = torch.ops.gsplat_py.rasterize_backward(
            *args,
            width,
            height,
            tile_size,
            isect_offsets,
            flatten_ids,
            transmittance,
            last_ids,
            cast("v_colors"),
            cast("v_alphas"),
            True,
        )
        outputs = [render_colors, render_alphas, transmittance, last_ids, *bwd]
        for name, t in zip(OUTPUTS, outputs):
            _write(directory / f"expected_{suffix}_{name}.bin", t)


def _import_extension() -> None:
    """Registers torch.ops.gsplat_py, from this checkout's gsplat_py."""
    if str(REPO_ROOT) not in sys.path:
        sys.path.insert(0, str(REPO_ROOT))
    from gsplat_py.rendering import _backend

    _backend.require_extension()


def make_adam_case(directory: Path, seed: int = 0, expected: bool = True) -> None:
    """Writes an Adam case (ADAM_TENSORS): each tensor's param, grad, exp_avg and exp_avg_sq (zero before
    a first step), hyperparameters.bin, the visible rows; and (unless expected=False) the state after one
    step of the extension's adam_step, on every row (plain) and on the visible rows, and after torch's
    fused Adam (plain)."""
    import torch

    _import_extension()
    g = torch.Generator().manual_seed(seed)
    inputs = {}
    for i, (row_size, *_, step) in enumerate(ADAM_TENSORS):
        shape = (ADAM_ROWS, row_size)
        inputs[f"param{i}"] = torch.randn(shape, generator=g)
        inputs[f"grad{i}"] = torch.randn(shape, generator=g) * 10.0**-i
        if step == 1:  # as torch.optim.Adam initialises the moments
            inputs[f"exp_avg{i}"], inputs[f"exp_avg_sq{i}"] = torch.zeros(shape), torch.zeros(shape)
        else:
            inputs[f"exp_avg{i}"] = torch.randn(shape, generator=g) * 0.1
            inputs[f"exp_avg_sq{i}"] = torch.rand(shape, generator=g) ** 2 * 0.01
    visible = torch.rand(ADAM_ROWS, generator=g) < ADAM_VISIBLE_FRACTION
    directory.mkdir(parents=True, exist_ok=True)
    for name, t in inputs.items():
        _write(directory / f"{name}.bin", t)
    _write(directory / "visible.bin", visible)
    hyperparameters = np.array([tensor[1:] for tensor in ADAM_TENSORS], dtype=np.float64)
    hyperparameters.tofile(directory / "hyperparameters.bin")
    meta = {"tensors": len(ADAM_TENSORS), "rows": ADAM_ROWS}
    meta.update({f"row_size{i}": tensor[0] for i, tensor in enumerate(ADAM_TENSORS)})
    (directory / "meta.txt").write_text("".join(f"{k} {v}\n" for k, v in meta.items()))
    if not expected:
        return
    count = len(ADAM_TENSORS)
    for dtype, suffix in ((torch.float32, "float32"), (torch.float64, "float64")):

        def state(field: str, dtype=dtype) -> list:
            return [inputs[f"{field}{i}"].to(dtype, copy=True) for i in range(count)]

        for path, mask in (("plain", None), ("visible", visible)):
            params, exp_avgs, exp_avg_sqs = (state(field) for field in ADAM_STATE)
            torch.ops.gsplat_py.adam_step(
                params, state("grad"), exp_avgs, exp_avg_sqs, *zip(*(t[1:] for t in ADAM_TENSORS)), mask
            )
            for field, tensors in zip(ADAM_STATE, (params, exp_avgs, exp_avg_sqs)):
                for i, t in enumerate(tensors):
                    _write(directory / f"expected_{suffix}_{path}_{field}{i}.bin", t)
        for i, (_, lr, beta1, beta2, eps, step) in enumerate(ADAM_TENSORS):
            param = inputs[f"param{i}"].to(dtype, copy=True)
            param.grad = inputs[f"grad{i}"].to(dtype)
            adam = torch.optim.Adam([param], lr=lr, betas=(beta1, beta2), eps=eps, fused=True)
            adam.state[param] = {  # the case's state before this step (Adam counts the step itself)
                "step": torch.tensor(step - 1, dtype=torch.float32),
                "exp_avg": inputs[f"exp_avg{i}"].to(dtype, copy=True),
                "exp_avg_sq": inputs[f"exp_avg_sq{i}"].to(dtype, copy=True),
            }
            adam.step()
            after = adam.state[param]
            for field, t in zip(ADAM_STATE, (param, after["exp_avg"], after["exp_avg_sq"])):
                _write(directory / f"torch_{suffix}_plain_{field}{i}.bin", t)


def make_ssim_case(directory: Path, seed: int = 0, expected: bool = True) -> None:
    """Writes an SSIM case (SSIM_SHAPE): img1, a noisy img2 of it, a cotangent per image; and (unless
    expected=False) the extension's SSIM forward (result, maps) and backward (v_img1) on them."""
    import torch

    _import_extension()
    g = torch.Generator().manual_seed(seed)
    img1 = torch.rand(SSIM_SHAPE, generator=g)
    inputs = {
        "img1": img1,
        "img2": (img1 + 0.2 * torch.randn(SSIM_SHAPE, generator=g)).clamp(0, 1),
        "v_result": torch.randn(SSIM_SHAPE[0], generator=g),
    }
    directory.mkdir(parents=True, exist_ok=True)
    for name, t in inputs.items():
        _write(directory / f"{name}.bin", t)
    meta = dict(zip(("batch", "height", "width", "channels"), SSIM_SHAPE))
    (directory / "meta.txt").write_text("".join(f"{k} {v}\n" for k, v in meta.items()))
    if not expected:
        return
    for dtype, suffix in ((torch.float32, "float32"), (torch.float64, "float64")):
        img1, img2, v_result = (inputs[name].to(dtype) for name in ("img1", "img2", "v_result"))
        result, maps = torch.ops.gsplat_py.ssim_forward(img1, img2, True)
        v_img1 = torch.ops.gsplat_py.ssim_backward(img1, img2, maps, v_result)
        for name, t in zip(SSIM_OUTPUTS, (result, maps, v_img1)):
            _write(directory / f"expected_{suffix}_{name}.bin", t)


def make_projection_case(
    directory: Path, camera_model: str = "pinhole", seed: int = 0, expected: bool = True
):
    """Writes a projection case: a test scene's Gaussians (70: whole blocks of the vectorised kernels and a
    tail) and 3 cameras, cotangents of the outputs; and (unless expected=False) the extension's outputs and
    gradients (PROJECTION_OUTPUTS) on them, with compensations computed, as the driver runs them."""
    import torch

    _import_extension()
    from gsplat_py.rendering import ops

    sys.path.insert(0, str(REPO_ROOT / "tests"))
    from conftest import make_scene

    s = make_scene(
        n=70, n_cameras=3, width=45, height=37, dtype=torch.float32, seed=seed, camera_model=camera_model
    )
    g = torch.Generator().manual_seed(seed)
    C, N = 3, 70
    inputs = {name: s[name] for name in ("means", "quats", "scales", "opacities", "viewmats", "Ks")}
    cotangents = {
        "v_means2d": torch.randn(C, N, 2, generator=g),
        "v_depths": torch.randn(C, N, generator=g),
        "v_conics": torch.randn(C, N, 3, generator=g),
        "v_compensations": torch.randn(C, N, generator=g),
    }
    directory.mkdir(parents=True, exist_ok=True)
    for name, t in {**inputs, **cotangents}.items():
        _write(directory / f"{name}.bin", t)
    meta = dict(
        cameras=C,
        gaussians=N,
        width=s["width"],
        height=s["height"],
        camera_model=CAMERA_MODELS.index(camera_model),
        calc_compensations=1,
    )
    (directory / "meta.txt").write_text("".join(f"{k} {v}\n" for k, v in meta.items()))
    if not expected:
        return
    for dtype, suffix in ((torch.float32, "float32"), (torch.float64, "float64")):
        x = {name: t.to(dtype) for name, t in inputs.items()}
        leaves = [
            x[name].clone().requires_grad_(True) for name in ("means", "quats", "scales", "viewmats", "Ks")
        ]
        radii, *values = ops.project_gaussians(
            *leaves[:3],
            leaves[3],
            leaves[4],
            s["width"],
            s["height"],
            opacities=x["opacities"],
            calc_compensations=True,
            camera_model=camera_model,
        )
        torch.autograd.backward(values, [t.to(dtype) for t in cotangents.values()])
        outputs = [radii, *values, *(leaf.grad for leaf in leaves)]
        for name, t in zip(PROJECTION_OUTPUTS, outputs, strict=True):
            _write(directory / f"expected_{suffix}_{name}.bin", t)


def _write(path: Path, t) -> None:
    t.detach().contiguous().numpy().tofile(path)


def read_outputs(directory: Path, float64: bool, prefix: str = "", names: Sequence[str] = OUTPUTS) -> dict:
    """The outputs `names` (the rasterizer's unless given) in a driver's results directory (prefix "") or
    a case's expected ones ("expected_<dtype>_", for adam also "torch_<dtype>_")."""
    dtype = np.float64 if float64 else np.float32
    return {
        name: np.fromfile(
            directory / f"{prefix}{name}.bin", dtype=np.int32 if name in INT32_OUTPUTS else dtype
        )
        for name in names
    }


def build_driver(output: Path, level: str, cxx: str = "g++", flags: Sequence[str] | None = None) -> Path:
    """Compiles driver.cpp and the rasterizer kernels for one ISA level (namespace `level`; flags:
    LEVEL_FLAGS[level] unless given), with DISPATCHED_SOURCES, into `output`."""
    output.parent.mkdir(parents=True, exist_ok=True)
    flags = LEVEL_FLAGS[level] if flags is None else flags
    common = [
        *CXX_FLAGS,
        *(f"-D{name}={value}" for name, value in runpy.run_path(str(LIMITS_FILE))["compile_definitions"]()),
        *(f"-I{d}" for d in INCLUDE_DIRS),
    ]
    objects = [output.parent / f"{output.name}_{source.stem}.o" for source in DISPATCHED_SOURCES]
    for source, target in zip(DISPATCHED_SOURCES, objects):
        subprocess.run([cxx, *common, "-c", str(source), "-o", str(target)], check=True)
    command = [
        cxx,
        *common,
        *flags,
        f"-DGS_ISA={level}",
        str(HARNESS / "driver.cpp"),
        str(KERNEL_SOURCE),
        *(str(target) for target in objects),
        "-o",
        str(output),
    ]
    subprocess.run(command, check=True)
    return output


def run_driver(
    driver: Sequence[str],
    case: Path,
    results: Path | None = None,
    float64: bool = False,
    kernel: str = "raster",
    threads: int = 1,
    repeat: int = 1,
    timeout: float = 600,
) -> dict:
    """Runs the driver (a command: the binary, or e.g. qemu-aarch64 -L ... binary); returns its printed
    line."""
    command = [*driver, str(case), "--kernel", kernel, "--threads", str(threads), "--repeat", str(repeat)]
    if float64:
        command.append("--double")
    if results is not None:
        results.mkdir(parents=True, exist_ok=True)
        command += ["--out", str(results)]
    line = subprocess.run(command, check=True, capture_output=True, text=True, timeout=timeout).stdout.split()
    return {key: (value if key == "level" else float(value)) for key, value in zip(line[::2], line[1::2])}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    sub = parser.add_subparsers(dest="command", required=True)
    make = sub.add_parser("make", help="write a case")
    make.add_argument("directory", type=Path)
    make.add_argument("--kernel", choices=("raster", "adam", "ssim", "projection"), default="raster")
    make.add_argument("--scene", choices=("test", "bench"), default="test", help="raster only")
    make.add_argument("--n", type=int, default=None, help="raster only")
    make.add_argument("--camera-model", choices=CAMERA_MODELS, default="pinhole", help="projection only")
    make.add_argument("--seed", type=int, default=0)
    make.add_argument("--no-expected", action="store_true", help="skip the extension's outputs")
    build = sub.add_parser("build", help="build the driver for one level")
    build.add_argument("output", type=Path)
    build.add_argument("--level", required=True, help="namespace: x86_64_v4, x86_64_v3, baseline, neon")
    build.add_argument("--cxx", default=shutil.which("g++") or "c++")
    build.add_argument(
        "--flag",
        action="append",
        default=None,
        help="compiler flag instead of the level's own (repeat for several), e.g. --flag=-march=x86-64-v3",
    )
    args = parser.parse_args()
    if args.command == "make" and args.kernel == "adam":
        make_adam_case(args.directory, args.seed, expected=not args.no_expected)
    elif args.command == "make" and args.kernel == "ssim":
        make_ssim_case(args.directory, args.seed, expected=not args.no_expected)
    elif args.command == "make" and args.kernel == "projection":
        make_projection_case(args.directory, args.camera_model, args.seed, expected=not args.no_expected)
    elif args.command == "make":
        make_case(args.directory, args.scene, args.n, args.seed, expected=not args.no_expected)
    else:
        build_driver(args.output, args.level, args.cxx, args.flag)


if __name__ == "__main__":
    main()
