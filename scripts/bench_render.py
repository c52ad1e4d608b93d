#!/usr/bin/env python
"""Benchmark gsplat_py.rasterization on a synthetic scene: the C++ CPU backend against the PyTorch reference.

For each N in --sizes and each backend: forward and forward+backward time of one 800x600 render (medians
of repeats after one warm-up). For the C++ backend also: where the forward time goes (the ops timed one
by one), the rasterizer's pixel-Gaussian evaluation rate, thread scaling (1 thread, torch's default and
--threads) and, with --compare-wait-policy, OMP_WAIT_POLICY=PASSIVE vs unset on an idle and on a busy machine.
Prints markdown tables (for BENCHMARKS.md) with the performance targets, and writes every number to JSON.

    python scripts/bench_render.py                         # full benchmark (several minutes)
    python scripts/bench_render.py --quick                 # smoke run: N=10k, C++ only, 2 repeats
    python scripts/bench_render.py --compare-wait-policy   # adds the OMP_WAIT_POLICY comparison
    python scripts/bench_render.py --simd-levels           # only: the rasterize op per SIMD build (below)
    python scripts/bench_render.py --packed                # only: packed vs unpacked (below)
    python scripts/bench_render.py --2dgs                  # only: rasterization_2dgs beside rasterization

--simd-levels times the rasterize op alone (forward and backward) and the whole C++ fwd+bwd for every SIMD
build of the rasterizer this CPU runs (GSPLAT_PY_SIMD forces each, ATEN_CPU_CAPABILITY gives torch's own
kernels the same level, as on a CPU without the better ones), at --sizes (default 10k and 100k) with 1
thread and torch's default, in --rounds fresh processes per level (interleaved), and reports medians.

--packed compares rasterization(packed=True) with packed=False at --sizes (default 100k and 1M) with 1 and 8
cameras (the 8 yawed -40..40 degrees about the first, so each sees part of the scene): the fwd+bwd time
(median) and the peak memory one fwd+bwd adds to the process (its peak resident set size, measured in a
fresh process per case: load-independent, unlike the times).
"""

from __future__ import annotations

import argparse
import datetime
import importlib.util
import json
import math
import os
import platform
import statistics
import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import torch
from torch import Tensor

import gsplat_py
from gsplat_py.rendering import ops

REPO_ROOT = Path(__file__).resolve().parent.parent
DEFAULT_OUTPUT = REPO_ROOT / "bench_results" / "bench_render.json"

# ---- the synthetic scene: one pinhole camera at the origin looking down +z (viewmat = identity) ----------
WIDTH, HEIGHT = 800, 600
FOCAL = 700.0  # fx = fy; the principal point is the image centre
NEAR_DEPTH, FAR_DEPTH = 2.0, 6.0
# Median per-axis scale (world units) at N=100k: about 1.7 px standard deviation on screen at the median
# depth. Scales shrink as N^(-1/3) so that the fraction of the volume the Gaussians fill stays constant.
SCALE_AT_100K = 0.01
SCALE_LOG_STD = 0.5  # log-normal spread, drawn independently per axis (anisotropic Gaussians)
TILE_SIZE = 16  # rasterization()'s default
SH_C0 = 0.28209479177387814  # degree-0 SH basis constant

# ---- the targets (all at N=100k) ---------------------------------------------------------------------
TARGET_N = 100_000
TARGET_SPEEDUP_VS_REFERENCE = 50.0  # C++ vs reference, forward+backward
TARGET_EVALS_PER_S_PER_CORE = 0.5e9  # forward rasterize step
TARGET_BACKWARD_OVER_FORWARD = 3.0  # at most
TARGET_THREAD_SPEEDUP = 1.7  # 2 threads vs 1, forward+backward

FOOTNOTES = (
    "Times are medians of the given number of repeats after one warm-up; backward ≈ (fwd+bwd) − forward. "
    "The backward pass gets fixed random cotangents for render_colors and render_alphas and computes the "
    "gradients of means, quats, scales, opacities and colors.",
    "Pixel–Gaussian pairs: every (tile, Gaussian) intersection counted with all of the tile's pixels "
    f"({TILE_SIZE}×{TILE_SIZE}, fewer at the image border). This is an upper bound: pixels that stop early "
    "(transmittance below 1e-4) are still counted. Rate per core = pairs / rasterize-step time / threads.",
)


# --------------------------------------------------------------------------------------------------------
# Scene and timing
# --------------------------------------------------------------------------------------------------------


@dataclass
class Scene:
    means: Tensor  # [N,3]
    quats: Tensor  # [N,4]
    scales: Tensor  # [N,3]
    opacities: Tensor  # [N]
    colors: Tensor  # [N,3], or SH coefficients [N,K,3]
    viewmats: Tensor  # [1,4,4]
    Ks: Tensor  # [1,3,3]
    sh_degree: int | None
    packed: bool = False  # the layout of the benchmark's renders (the layouts' comparison: --packed)
    surfels: bool = False  # render as 2D Gaussians (rasterization_2dgs; the comparison: --2dgs)

    @property
    def n(self) -> int:
        return self.means.shape[0]

    def trainable(self) -> tuple[Tensor, ...]:
        return self.means, self.quats, self.scales, self.opacities, self.colors

    def project(self):
        """The compiled projection op on this scene's Gaussians and camera (the first op of a render)."""
        return ops.project_gaussians(
            self.means,
            self.quats,
            self.scales,
            self.viewmats,
            self.Ks,
            WIDTH,
            HEIGHT,
            opacities=self.opacities,
        )

    def render(self, backend: str):
        """(render_colors, render_alphas, meta) of rasterization, or of rasterization_2dgs with surfels."""
        rasterize = gsplat_py.rasterization_2dgs if self.surfels else gsplat_py.rasterization
        outputs = rasterize(
            self.means,
            self.quats,
            self.scales,
            self.opacities,
            self.colors,
            self.viewmats,
            self.Ks,
            WIDTH,
            HEIGHT,
            sh_degree=self.sh_degree,
            packed=self.packed,
            tile_size=TILE_SIZE,
            backend=backend,
        )
        return outputs[0], outputs[1], outputs[-1]


def median_scale(n: int) -> float:
    return SCALE_AT_100K * (n / 100_000) ** (-1.0 / 3.0)


def make_scene(n: int, sh_degree: int | None, seed: int) -> Scene:
    """n random Gaussians filling the camera's frustum between NEAR_DEPTH and FAR_DEPTH."""
    g = torch.Generator().manual_seed(seed)
    # Uniform in the frustum's volume: depth density grows as z², pixel position uniform over the image.
    u = torch.rand(n, generator=g)
    z = (NEAR_DEPTH**3 + u * (FAR_DEPTH**3 - NEAR_DEPTH**3)) ** (1.0 / 3.0)
    px = torch.rand(n, generator=g) * WIDTH
    py = torch.rand(n, generator=g) * HEIGHT
    means = torch.stack([(px - WIDTH / 2) / FOCAL * z, (py - HEIGHT / 2) / FOCAL * z, z], dim=-1)
    scales = median_scale(n) * torch.exp(SCALE_LOG_STD * torch.randn(n, 3, generator=g))
    quats = torch.randn(n, 4, generator=g)  # normalised by the projection: uniformly random rotations
    opacities = 0.05 + 0.9 * torch.rand(n, generator=g)
    rgb = torch.rand(n, 3, generator=g)
    if sh_degree is None:
        colors = rgb
    else:
        colors = 0.1 * torch.randn(n, (sh_degree + 1) ** 2, 3, generator=g)
        colors[:, 0] = (rgb - 0.5) / SH_C0  # rendering adds 0.5 to the SH value
    viewmats = torch.eye(4)[None]
    Ks = torch.tensor([[FOCAL, 0.0, WIDTH / 2], [0.0, FOCAL, HEIGHT / 2], [0.0, 0.0, 1.0]])[None]
    for t in (means, quats, scales, opacities, colors):
        t.requires_grad_(True)
    return Scene(means, quats, scales, opacities, colors, viewmats, Ks, sh_degree)


def make_cotangents(seed: int) -> tuple[Tensor, Tensor]:
    """Fixed random weights w [1,H,W,3], w2 [1,H,W,1] of loss = sum(render_colors*w + render_alphas*w2)."""
    g = torch.Generator().manual_seed(seed + 1)
    return torch.randn(1, HEIGHT, WIDTH, 3, generator=g), torch.randn(1, HEIGHT, WIDTH, 1, generator=g)


def time_median(fn: Callable, repeats: int, cpu_samples: list | None = None):
    """Call fn once as warm-up, then `repeats` timed times. Returns (median s, samples s, warm-up's result);
    appends the process CPU time of each call (all threads) to cpu_samples if given."""
    result = fn()
    samples = []
    for _ in range(repeats):
        start, cpu_start = time.perf_counter(), time.process_time()
        fn()
        samples.append(time.perf_counter() - start)
        if cpu_samples is not None:
            cpu_samples.append(time.process_time() - cpu_start)
    return statistics.median(samples), samples, result


def time_forward(scene: Scene, backend: str, repeats: int) -> dict:
    median, samples, (_, _, meta) = time_median(lambda: scene.render(backend), repeats)
    return {"forward_s": median, "forward_samples_s": samples, "n_isects": meta["n_isects"]}


def time_forward_backward(
    scene: Scene, backend: str, repeats: int, cotangents: tuple[Tensor, Tensor]
) -> dict:
    def step():
        for t in scene.trainable():
            t.grad = None
        render_colors, render_alphas, _ = scene.render(backend)
        # The gradients of loss = sum(render_colors*w + render_alphas*w2), without timing the loss itself.
        torch.autograd.backward((render_colors, render_alphas), cotangents)

    median, samples, _ = time_median(step, repeats)
    return {"fwd_bwd_s": median, "fwd_bwd_samples_s": samples}


def time_render(scene: Scene, backend: str, repeats: int, cotangents: tuple[Tensor, Tensor]) -> dict:
    result = {
        **time_forward(scene, backend, repeats),
        **time_forward_backward(scene, backend, repeats, cotangents),
    }
    result["backward_s"] = result["fwd_bwd_s"] - result["forward_s"]
    result["backward_over_forward"] = result["backward_s"] / result["forward_s"]
    return result


def pixel_gaussian_pairs(isect_offsets: Tensor, n_isects: int) -> int:
    """Sum over intersections of the pixel count of the intersection's tile (upper bound of evaluations)."""
    C, TH, TW = isect_offsets.shape
    starts = isect_offsets.reshape(-1).long()
    ends = torch.cat([starts[1:], torch.tensor([n_isects])])
    per_tile = (ends - starts).reshape(C, TH, TW)
    tile_w = (WIDTH - TILE_SIZE * torch.arange(TW)).clamp(max=TILE_SIZE)
    tile_h = (HEIGHT - TILE_SIZE * torch.arange(TH)).clamp(max=TILE_SIZE)
    return int((per_tile * tile_h[:, None] * tile_w[None, :]).sum())


def time_forward_steps(scene: Scene, repeats: int) -> dict:
    """Time the C++ ops that make up the forward pass one by one, composed as in rendering.py."""
    n = scene.n
    tile_width, tile_height = math.ceil(WIDTH / TILE_SIZE), math.ceil(HEIGHT / TILE_SIZE)
    steps = {}

    steps["projection_s"], steps["projection_samples_s"], projected = time_median(scene.project, repeats)
    radii, means2d, depths, conics, _ = projected

    if scene.sh_degree is None:
        colors = scene.colors[None]
        steps["sh_s"] = None
    else:
        n_bases = (scene.sh_degree + 1) ** 2

        def shade():
            campos = torch.inverse(scene.viewmats)[:, :3, 3]
            dirs = scene.means[None] - campos[:, None]
            coeffs = scene.colors[None, :, :n_bases]
            masks = (radii > 0).all(dim=-1)
            return torch.clamp_min(
                ops.spherical_harmonics(scene.sh_degree, dirs, coeffs, masks=masks) + 0.5, 0.0
            )

        steps["sh_s"], steps["sh_samples_s"], colors = time_median(shade, repeats)
    opacities = scene.opacities[None].expand(1, n).contiguous()

    def bin_to_tiles():
        return ops.bin_gaussians_to_tiles(means2d, radii, depths, TILE_SIZE, tile_width, tile_height)

    steps["binning_s"], steps["binning_samples_s"], binned = time_median(bin_to_tiles, repeats)
    isect_offsets, flatten_ids = binned.isect_offsets, binned.flatten_ids

    def rasterize():
        return ops.rasterize_to_pixels(
            means2d, conics, colors, opacities, WIDTH, HEIGHT, TILE_SIZE, isect_offsets, flatten_ids
        )

    steps["rasterize_s"], steps["rasterize_samples_s"], _ = time_median(rasterize, repeats)

    steps["steps_total_s"] = sum(
        steps[k] or 0.0 for k in ("projection_s", "sh_s", "binning_s", "rasterize_s")
    )
    steps["n_isects"] = flatten_ids.numel()
    steps["pixel_gaussian_pairs"] = pixel_gaussian_pairs(isect_offsets, flatten_ids.numel())
    steps["threads"] = torch.get_num_threads()
    steps["evals_per_s_per_core"] = steps["pixel_gaussian_pairs"] / steps["rasterize_s"] / steps["threads"]
    return steps


# --------------------------------------------------------------------------------------------------------
# The measurements
# --------------------------------------------------------------------------------------------------------


def progress(message: str) -> None:
    print(f"[bench] {message}", file=sys.stderr, flush=True)


def reference_skip_reason(args: argparse.Namespace, n: int) -> str | None:
    if args.quick:
        return "skipped (--quick)"
    if n > args.reference_max_n:
        return "skipped (memory)"
    return None


def measure_sizes(args: argparse.Namespace, cotangents: tuple[Tensor, Tensor]) -> list[dict]:
    results = []
    for n in args.sizes:
        scene = make_scene(n, args.sh_degree, args.seed)
        entry = {"n": n, "median_scale": median_scale(n), "backends": {}}
        progress(f"N={n}: cpp render")
        entry["backends"]["cpp"] = time_render(scene, "cpp", args.repeats, cotangents)
        progress(f"N={n}: cpp forward steps")
        entry["cpp_forward_steps"] = time_forward_steps(scene, args.repeats)
        skip = reference_skip_reason(args, n)
        if skip is None:
            progress(f"N={n}: reference render")
            entry["backends"]["reference"] = time_render(
                scene, "reference", args.reference_repeats, cotangents
            )
            entry["cpp_speedup_fwd_bwd"] = (
                entry["backends"]["reference"]["fwd_bwd_s"] / entry["backends"]["cpp"]["fwd_bwd_s"]
            )
        else:
            entry["backends"]["reference"] = {"skipped": skip}
        results.append(entry)
    return results


def measure_thread_scaling(
    args: argparse.Namespace, cotangents: tuple[Tensor, Tensor], default_threads: int
) -> dict:
    scene = make_scene(args.scaling_n, args.sh_degree, args.seed)
    rows = []
    for threads in sorted({1, default_threads, *(args.threads or ())}):
        progress(f"thread scaling: N={args.scaling_n}, {threads} thread(s)")
        torch.set_num_threads(threads)
        try:
            rows.append(
                {
                    "threads": threads,
                    **time_render(scene, "cpp", args.repeats, cotangents),
                    "forward_steps": time_forward_steps(scene, args.repeats),
                }
            )
        finally:
            torch.set_num_threads(default_threads)
    one, most = rows[0], rows[-1]
    return {
        "n": args.scaling_n,
        "rows": rows,
        "speedup_forward": one["forward_s"] / most["forward_s"],
        "speedup_fwd_bwd": one["fwd_bwd_s"] / most["fwd_bwd_s"],
        "speedup_rasterize": one["forward_steps"]["rasterize_s"] / most["forward_steps"]["rasterize_s"],
    }


# --------------------------------------------------------------------------------------------------------
# Per SIMD build (--simd-levels)
# --------------------------------------------------------------------------------------------------------

SIMD_LEVEL_ORDER = ["x86-64-v4", "x86-64-v3", "baseline"]  # best first
SIMD_LEVEL_LANES = {"x86-64-v4": 16, "x86-64-v3": 8, "baseline": 4, "neon": 4}
SIMD_LEVEL_NAMES = {"x86-64-v4": "AVX-512", "x86-64-v3": "AVX2", "baseline": "SSE2", "neon": "NEON"}
TORCH_CAPABILITY = {"x86-64-v4": "avx512", "x86-64-v3": "avx2", "baseline": "default"}


def simd_levels() -> list[str]:
    """The SIMD builds of the rasterizer this CPU runs, best first."""
    best = ops.simd_level()
    return SIMD_LEVEL_ORDER[SIMD_LEVEL_ORDER.index(best) :] if best in SIMD_LEVEL_ORDER else [best]


def time_rasterize_op(scene: Scene, repeats: int, cotangents: tuple[Tensor, Tensor]) -> dict:
    """The rasterize op alone, forward and backward, on the scene's projected and binned Gaussians."""
    tile_width, tile_height = math.ceil(WIDTH / TILE_SIZE), math.ceil(HEIGHT / TILE_SIZE)
    with torch.no_grad():
        radii, means2d, depths, conics, _ = scene.project()
        binned = ops.bin_gaussians_to_tiles(means2d, radii, depths, TILE_SIZE, tile_width, tile_height)
        offsets, ids = binned.isect_offsets, binned.flatten_ids
    n = scene.n
    args = (
        means2d.contiguous(),
        conics.contiguous(),
        scene.colors.detach()[None].contiguous(),
        scene.opacities.detach()[None].expand(1, n).contiguous(),
        None,
        WIDTH,
        HEIGHT,
        TILE_SIZE,
        offsets,
        ids,
    )
    forward_cpu, backward_cpu = [], []
    forward_s, _, (_, _, transmittance, last_ids) = time_median(
        lambda: torch.ops.gsplat_py.rasterize_forward(*args), repeats, forward_cpu
    )
    v_colors, v_alphas = cotangents
    backward_s, _, _ = time_median(
        lambda: torch.ops.gsplat_py.rasterize_backward(
            *args, transmittance, last_ids, v_colors, v_alphas[..., 0].contiguous(), False
        ),
        repeats,
        backward_cpu,
    )
    return {
        "rasterize_forward_s": forward_s,
        "rasterize_backward_s": backward_s,
        "rasterize_forward_cpu_s": statistics.median(forward_cpu),
        "rasterize_backward_cpu_s": statistics.median(backward_cpu),
        "n_isects": ids.numel(),
        "pixel_gaussian_pairs": pixel_gaussian_pairs(offsets, ids.numel()),
    }


def run_simd_level_child(args: argparse.Namespace) -> None:
    """Hidden mode: the rasterize op and C++ fwd+bwd at each size and thread count, as one JSON line."""
    default_threads = torch.get_num_threads()
    cotangents = make_cotangents(args.seed)
    rows = []
    for n in args.sizes:
        scene = make_scene(n, args.sh_degree, args.seed)
        for threads in sorted({1, default_threads, *(args.threads or ())}):
            torch.set_num_threads(threads)
            rows.append(
                {
                    "n": n,
                    "threads": threads,
                    **time_rasterize_op(scene, args.repeats, cotangents),
                    **time_forward_backward(scene, "cpp", args.repeats, cotangents),
                }
            )
    print(
        json.dumps(
            {
                "level": ops.simd_level(),
                "torch_capability": torch.backends.cpu.get_cpu_capability(),
                "rows": rows,
            }
        )
    )


def measure_simd_levels(args: argparse.Namespace) -> dict:
    """Every SIMD level in fresh processes, --rounds times interleaved; per-row medians over the rounds."""
    command = [
        sys.executable,
        str(Path(__file__).resolve()),
        "--simd-level-child",
        "--repeats",
        str(args.repeats),
        "--seed",
        str(args.seed),
        "--sizes",
        *map(str, args.sizes),
    ]
    if args.sh_degree is not None:
        command += ["--sh-degree", str(args.sh_degree)]
    levels = simd_levels()
    runs = {level: [] for level in levels}
    for round_index in range(args.rounds):
        for level in levels[round_index % len(levels) :] + levels[: round_index % len(levels)]:
            progress(f"SIMD levels: round {round_index + 1}/{args.rounds}, GSPLAT_PY_SIMD={level}")
            env = dict(os.environ, GSPLAT_PY_SIMD=level)
            if level in TORCH_CAPABILITY:
                env["ATEN_CPU_CAPABILITY"] = TORCH_CAPABILITY[level]
            child = subprocess.run(command, env=env, capture_output=True, text=True)
            if child.returncode != 0:
                raise RuntimeError(
                    f"SIMD level measurement failed (exit {child.returncode}):\n{child.stderr}"
                )
            measured = json.loads(child.stdout.strip().splitlines()[-1])
            if measured["level"] != level:
                raise RuntimeError(f"asked for SIMD level {level}, the extension ran {measured['level']}")
            runs[level].append(measured)
    timed = (
        "rasterize_forward_s",
        "rasterize_backward_s",
        "rasterize_forward_cpu_s",
        "rasterize_backward_cpu_s",
        "fwd_bwd_s",
    )
    results = []
    for level in levels:
        for i, row in enumerate(runs[level][0]["rows"]):
            merged = {k: v for k, v in row.items() if k not in timed and not k.endswith("_samples_s")}
            for key in timed:
                merged[key + "_rounds"] = [run["rows"][i][key] for run in runs[level]]
                merged[key] = statistics.median(merged[key + "_rounds"])
            results.append(
                {
                    "level": level,
                    "lanes": SIMD_LEVEL_LANES.get(level),
                    "torch_capability": runs[level][0]["torch_capability"],
                    **merged,
                }
            )
    return {"rounds": args.rounds, "rows": results}


def render_simd_report(report: dict) -> str:
    simd = report["simd_levels"]
    out = header_lines(report, "## gsplat_py rasterizer per SIMD build") + [
        f"- load average at the end {' / '.join(f'{x:.2f}' for x in report['load_average_at_end'])}; "
        "medians of "
        f"{report['settings']['repeats']} repeats in each of {simd['rounds']} processes per level, then the "
        "median "
        "over the processes; torch's own kernels at the level's capability (column torch)",
        "",
    ]
    rows = []
    for r in simd["rows"]:
        pairs, raster = r["pixel_gaussian_pairs"], r["rasterize_forward_s"] + r["rasterize_backward_s"]
        rows.append(
            [
                f"{r['level']} {SIMD_LEVEL_NAMES.get(r['level'], '')} ({r['lanes']})",
                r["torch_capability"],
                f"{r['n']:,}",
                str(r["threads"]),
                fmt_ms(r["rasterize_forward_s"]),
                fmt_ms(r["rasterize_backward_s"]),
                f"{fmt_ms(r['rasterize_forward_cpu_s'])} / {fmt_ms(r['rasterize_backward_cpu_s'])}",
                f"{r['rasterize_forward_s'] / pairs * 1e9:.2f}",
                f"{r['rasterize_backward_s'] / pairs * 1e9:.2f}",
                f"{raster / r['n_isects'] * 1e9:.0f}",
                fmt_ms(r["fwd_bwd_s"]),
            ]
        )
    out.append(
        table(
            [
                "SIMD build (lanes)",
                "torch",
                "N",
                "threads",
                "rasterize fwd (ms)",
                "rasterize bwd (ms)",
                "CPU time fwd / bwd (ms)³",
                "fwd ns/pair¹",
                "bwd ns/pair¹",
                "fwd+bwd ns/isect²",
                "C++ fwd+bwd (ms)",
            ],
            rows,
        )
    )
    by_key = {(r["level"], r["n"], r["threads"]): r for r in simd["rows"]}
    ratios = []
    for (level, n, threads), r in by_key.items():
        lower = SIMD_LEVEL_ORDER[SIMD_LEVEL_ORDER.index(level) + 1 :] if level in SIMD_LEVEL_ORDER else []
        for other in [lv for lv in lower if (lv, n, threads) in by_key][:1]:  # the next lower level
            o = by_key[(other, n, threads)]
            ratios.append(
                [f"{level} / {other}", f"{n:,}", str(threads)]
                + [
                    f"{o[key] / r[key]:.2f}×"
                    for key in ("rasterize_forward_s", "rasterize_backward_s", "fwd_bwd_s")
                ]
            )
    if ratios:
        out += [
            "",
            "Speed-up of each build over the next lower one (time of the lower / time of the higher):",
            "",
            table(["builds", "N", "threads", "rasterize fwd", "rasterize bwd", "C++ fwd+bwd"], ratios),
        ]
    out += [
        "",
        "1. " + FOOTNOTES[1],
        "2. Rasterize forward + backward time per (tile, Gaussian) intersection, from all threads together.",
        "3. Process CPU time (all threads) of the rasterize op: on a busy machine closer to the time on an "
        "idle "
        "one than wall-clock time is.",
    ]
    return "\n".join(out)


def run_wait_policy_child(args: argparse.Namespace) -> None:
    """Hidden mode: one C++ fwd+bwd measurement at --scaling-n, printed as one JSON line."""
    scene = make_scene(args.scaling_n, args.sh_degree, args.seed)
    result = time_forward_backward(scene, "cpp", args.repeats, make_cotangents(args.seed))
    result["omp_wait_policy_seen"] = os.environ.get("OMP_WAIT_POLICY")
    print(json.dumps(result))


def compare_wait_policy(args: argparse.Namespace) -> list[dict]:
    """C++ fwd+bwd at --scaling-n in fresh processes (OMP_WAIT_POLICY is read when OpenMP starts),
    with OMP_WAIT_POLICY=PASSIVE and unset, each on the idle machine and next to a busy-loop process."""
    command = [
        sys.executable,
        str(Path(__file__).resolve()),
        "--wait-policy-child",
        "--scaling-n",
        str(args.scaling_n),
        "--repeats",
        str(args.repeats),
        "--seed",
        str(args.seed),
    ]
    if args.sh_degree is not None:
        command += ["--sh-degree", str(args.sh_degree)]
    results = []
    for policy in ("PASSIVE", None):
        env = {k: v for k, v in os.environ.items() if k != "OMP_WAIT_POLICY"}
        if policy is not None:
            env["OMP_WAIT_POLICY"] = policy
        for busy in (False, True):
            progress(
                f"wait policy: OMP_WAIT_POLICY={policy or 'unset'}, {'busy competitor' if busy else 'idle'}"
            )
            competitor = subprocess.Popen([sys.executable, "-c", "while True: pass"]) if busy else None
            try:
                child = subprocess.run(command, env=env, capture_output=True, text=True)
            finally:
                if competitor is not None:
                    competitor.kill()
                    competitor.wait()
            if child.returncode != 0:
                raise RuntimeError(
                    f"wait-policy measurement failed (exit {child.returncode}):\n{child.stderr}"
                )
            measured = json.loads(child.stdout.strip().splitlines()[-1])
            results.append({"omp_wait_policy": policy or "unset", "busy_competitor": busy, **measured})
    return results


def evaluate_targets(sizes: list[dict], scaling: dict, default_threads: int) -> list[dict]:
    """Pass/fail of the targets at N = --scaling-n (they are stated for N=100k)."""
    n = scaling["n"]
    most = scaling["rows"][-1]
    targets = []

    def add(name: str, measured: float | None, text: str, passed: bool | None, why_not: str = "") -> None:
        targets.append(
            {
                "target": name,
                "n": n,
                "measured": measured,
                "measured_text": text if measured is not None else "—",
                "result": ("PASS" if passed else "FAIL") if measured is not None else f"n/a ({why_not})",
            }
        )

    at_n = next((s for s in sizes if s["n"] == n), None)
    speedup = at_n.get("cpp_speedup_fwd_bwd") if at_n is not None else None
    add(
        f"C++ ≥ {TARGET_SPEEDUP_VS_REFERENCE:g}× faster than the reference (fwd+bwd)",
        speedup,
        f"{speedup:.1f}×" if speedup else "",
        speedup is not None and speedup >= TARGET_SPEEDUP_VS_REFERENCE,
        f"reference not measured at N={n}",
    )
    rate = most["forward_steps"]["evals_per_s_per_core"]
    add(
        f"forward ≥ {TARGET_EVALS_PER_S_PER_CORE / 1e9:g} G pixel–Gaussian evaluations/s/core",
        rate,
        f"{rate / 1e9:.2f} G/s/core ({most['threads']} threads)",
        rate >= TARGET_EVALS_PER_S_PER_CORE,
    )
    # Forward and fwd+bwd are separate medians: a non-positive difference means the timings are noise.
    ratio = most["backward_over_forward"] if most["backward_s"] > 0 else None
    add(
        f"backward ≤ {TARGET_BACKWARD_OVER_FORWARD:g}× forward time",
        ratio,
        f"{ratio:.2f}×" if ratio else "",
        ratio is not None and ratio <= TARGET_BACKWARD_OVER_FORWARD,
        "fwd+bwd ≤ forward: noisy timings",
    )
    thread_speedup = scaling["speedup_fwd_bwd"] if default_threads >= 2 else None
    add(
        f"{default_threads} threads ≥ {TARGET_THREAD_SPEEDUP:g}× faster than 1 (fwd+bwd)",
        thread_speedup,
        f"{thread_speedup:.2f}×" if thread_speedup else "",
        thread_speedup is not None and thread_speedup >= TARGET_THREAD_SPEEDUP,
        "only 1 thread available",
    )
    return targets


# --------------------------------------------------------------------------------------------------------
# Report
# --------------------------------------------------------------------------------------------------------


def fmt_ms(seconds: float | None) -> str:
    if seconds is None:
        return "—"
    ms = seconds * 1e3
    return f"{ms:.0f}" if ms >= 100 else f"{ms:.1f}" if ms >= 10 else f"{ms:.2f}"


def table(header: list[str], rows: list[list[str]]) -> str:
    lines = ["| " + " | ".join(header) + " |", "|" + "|".join("---" for _ in header) + "|"]
    lines += ["| " + " | ".join(row) + " |" for row in rows]
    return "\n".join(lines)


def header_lines(report: dict, title: str) -> list[str]:
    """The title, and the machine, build, load and scene lines."""
    settings, machine = report["settings"], report["machine"]
    return [
        title,
        "",
        f"- machine: {machine['cpu_model']}, {machine['logical_cpus']} logical CPUs, {machine['platform']}",
        f"- torch {machine['torch_version']} ({machine['cpu_capability']}), {machine['torch_threads']} "
        f"threads; git commit {machine['git_commit'] or 'unknown'}; "
        f"extension built {machine['extension_built'] or 'unknown'}",
        f"- OMP_WAIT_POLICY: {report['omp_wait_policy'] or 'unset'}; load average at start "
        f"{' / '.join(f'{x:.2f}' for x in machine['load_average_at_start'])} (1/5/15 min: other work skews "
        "timings)",
        f"- scene: {WIDTH}×{HEIGHT} pinhole, f={FOCAL:g}, depth {NEAR_DEPTH:g}..{FAR_DEPTH:g}, "
        f"median scale {SCALE_AT_100K:g}·(N/100k)^(-1/3), "
        f"{'RGB colours' if settings['sh_degree'] is None else 'SH degree ' + str(settings['sh_degree'])}, "
        f"tile {TILE_SIZE}, seed {settings['seed']}; repeats: {settings['repeats']} (C++), "
        f"{settings['reference_repeats']} (reference)",
    ]


def render_report(report: dict) -> str:
    out = header_lines(report, "## gsplat_py render benchmark") + [
        "",
        "### Forward and backward (default threads)",
        "",
    ]
    rows = []
    for size in report["sizes"]:
        for backend, r in size["backends"].items():
            if "skipped" in r:
                rows.append([f"{size['n']:,}", backend, "—", r["skipped"], "—", "—", "—", "—"])
                continue
            speedup = size.get("cpp_speedup_fwd_bwd") if backend == "cpp" else None
            rows.append(
                [
                    f"{size['n']:,}",
                    backend,
                    f"{r['n_isects']:,}",
                    fmt_ms(r["forward_s"]),
                    fmt_ms(r["fwd_bwd_s"]),
                    fmt_ms(r["backward_s"]),
                    f"{r['backward_over_forward']:.2f}",
                    f"{speedup:.1f}×" if speedup is not None else "—",
                ]
            )
    out.append(
        table(
            [
                "N",
                "backend",
                "intersections",
                "forward (ms)",
                "fwd+bwd (ms)",
                "backward ≈ (ms)¹",
                "bwd/fwd",
                "C++ speed-up (fwd+bwd)",
            ],
            rows,
        )
    )

    out += ["", "### Where the C++ forward time goes (ops timed one by one)", ""]
    rows = []
    for size in report["sizes"]:
        s = size["cpp_forward_steps"]
        rows.append(
            [
                f"{size['n']:,}",
                fmt_ms(s["projection_s"]),
                fmt_ms(s["sh_s"]),
                fmt_ms(s["binning_s"]),
                fmt_ms(s["rasterize_s"]),
                fmt_ms(s["steps_total_s"]),
                fmt_ms(size["backends"]["cpp"]["forward_s"]),
                f"{s['pixel_gaussian_pairs'] / 1e6:.1f} M",
                f"{s['evals_per_s_per_core'] / 1e9:.2f}",
            ]
        )
    out.append(
        table(
            [
                "N",
                "projection (ms)",
                "SH (ms)",
                "binning (ms)",
                "rasterize (ms)",
                "sum of ops (ms)",
                "rasterization() (ms)",
                "pixel–Gaussian pairs²",
                "G evals/s/core²",
            ],
            rows,
        )
    )

    scaling = report["thread_scaling"]
    out += ["", f"### Thread scaling, C++, N={scaling['n']:,}", ""]
    rows = [
        [
            str(r["threads"]),
            fmt_ms(r["forward_s"]),
            fmt_ms(r["fwd_bwd_s"]),
            fmt_ms(r["forward_steps"]["rasterize_s"]),
            f"{r['forward_steps']['evals_per_s_per_core'] / 1e9:.2f}",
        ]
        for r in scaling["rows"]
    ]
    rows.append(
        [
            f"speed-up {scaling['rows'][-1]['threads']}T/1T",
            f"{scaling['speedup_forward']:.2f}×",
            f"{scaling['speedup_fwd_bwd']:.2f}×",
            f"{scaling['speedup_rasterize']:.2f}×",
            "",
        ]
    )
    out.append(table(["threads", "forward (ms)", "fwd+bwd (ms)", "rasterize (ms)", "G evals/s/core²"], rows))

    if report["wait_policy"] is not None:
        out += ["", f"### OMP_WAIT_POLICY, C++ fwd+bwd (ms), N={scaling['n']:,}, fresh process each", ""]
        rows = []
        for policy in ("PASSIVE", "unset"):
            cells = {
                r["busy_competitor"]: fmt_ms(r["fwd_bwd_s"])
                for r in report["wait_policy"]
                if r["omp_wait_policy"] == policy
            }
            rows.append([policy, cells[False], cells[True]])
        out.append(table(["OMP_WAIT_POLICY", "idle machine", "with a busy-loop process"], rows))

    n_targets = report["targets"][0]["n"]
    out += ["", f"### Targets (at N={n_targets:,})", ""]
    out += [
        "The speed-up comes from the first table, the other numbers from the thread-scaling runs "
        "(default threads).",
        "",
    ]
    if n_targets != TARGET_N:
        out += [
            f"Note: the targets are stated for N={TARGET_N:,}; these numbers are for N={n_targets:,}.",
            "",
        ]
    out.append(
        table(
            ["target", "measured", "result"],
            [[t["target"], t["measured_text"], t["result"]] for t in report["targets"]],
        )
    )
    out += [""] + [f"{i}. {note}" for i, note in enumerate(FOOTNOTES, start=1)]
    return "\n".join(out)


# --------------------------------------------------------------------------------------------------------
# Entry point
# --------------------------------------------------------------------------------------------------------


def machine_info() -> dict:
    cpu_model = platform.processor() or None
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu_model = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    try:
        git_commit = subprocess.run(
            ["git", "rev-parse", "--short", "HEAD"], cwd=REPO_ROOT, capture_output=True, text=True, check=True
        ).stdout.strip()
    except (OSError, subprocess.CalledProcessError):
        git_commit = None
    spec = importlib.util.find_spec("gsplat_py._C")
    extension_built = (
        datetime.datetime.fromtimestamp(os.path.getmtime(spec.origin)).isoformat(timespec="seconds")
        if spec is not None and spec.origin
        else None
    )
    return {
        "platform": platform.platform(),
        "python": platform.python_version(),
        "cpu_model": cpu_model,
        "logical_cpus": os.cpu_count(),
        "torch_version": torch.__version__,
        "torch_threads": torch.get_num_threads(),
        "cpu_capability": torch.backends.cpu.get_cpu_capability(),
        "git_commit": git_commit,
        "extension_built": extension_built,
        "load_average_at_start": os.getloadavg(),
    }


PACKED_CAMERAS = (1, 8)
PACKED_YAW_DEGREES = 40.0  # the 8 cameras' yaws span -40..40 degrees


def yawed_viewmats(n_cameras: int) -> Tensor:
    """[C, 4, 4] world-to-camera matrices at the origin, yawed about y (one camera: the identity)."""
    if n_cameras == 1:
        return torch.eye(4)[None]
    yaws = torch.deg2rad(torch.linspace(-PACKED_YAW_DEGREES, PACKED_YAW_DEGREES, n_cameras))
    viewmats = torch.eye(4).repeat(n_cameras, 1, 1)
    viewmats[:, 0, 0], viewmats[:, 0, 2] = torch.cos(yaws), -torch.sin(yaws)
    viewmats[:, 2, 0], viewmats[:, 2, 2] = torch.sin(yaws), torch.cos(yaws)
    return viewmats


def peak_rss_bytes() -> int:
    import resource

    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024  # Linux reports KiB


def current_rss_bytes() -> int:
    with open("/proc/self/statm") as statm:
        return int(statm.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")


def run_packed_child(args: argparse.Namespace) -> None:
    """One case of --packed in this fresh process: print its JSON."""
    n, n_cameras, packed = args.sizes[0], args.packed_cameras, args.packed_layout == "packed"
    base = make_scene(n, args.sh_degree, args.seed)
    viewmats = yawed_viewmats(n_cameras)
    scene = Scene(*base.trainable(), viewmats, base.Ks.expand(n_cameras, 3, 3).contiguous(), args.sh_degree)
    scene.packed = packed
    g = torch.Generator().manual_seed(args.seed + 1)
    cotangents = (
        torch.randn(n_cameras, HEIGHT, WIDTH, 3, generator=g),
        torch.randn(n_cameras, HEIGHT, WIDTH, 1, generator=g),
    )
    before = current_rss_bytes()
    timing = time_forward_backward(scene, "cpp", args.repeats, cotangents)
    peak = peak_rss_bytes()
    _, _, meta = scene.render("cpp")
    pairs = meta["means2d"].shape[0] if packed else int((meta["radii"] > 0).all(-1).sum())
    print(
        json.dumps(
            {
                "n": n,
                "n_cameras": n_cameras,
                "packed": packed,
                "fwd_bwd_s": timing["fwd_bwd_s"],
                "peak_added_bytes": peak - before,
                "visible_pairs": pairs,
                "n_isects": meta["n_isects"],
            }
        )
    )


def measure_packed(args: argparse.Namespace) -> list[dict]:
    results = []
    for n in args.sizes:
        for n_cameras in PACKED_CAMERAS:
            for layout in ("unpacked", "packed"):
                progress(f"packed comparison: N={n}, C={n_cameras}, {layout}")
                command = [sys.executable, __file__, "--packed-child", "--sizes", str(n), "--repeats"]
                command += [str(args.repeats), "--seed", str(args.seed)]
                command += ["--packed-cameras", str(n_cameras), "--packed-layout", layout]
                if args.sh_degree is not None:
                    command += ["--sh-degree", str(args.sh_degree)]
                output = subprocess.run(command, check=True, capture_output=True, text=True).stdout
                results.append(json.loads(output.strip().splitlines()[-1]))
    return results


def render_packed_report(report: dict) -> str:
    lines = header_lines(report, "packed vs unpacked rasterization (C++ CPU backend, fwd+bwd)")
    rows = []
    cases = report["packed"]
    for unpacked, packed in zip(cases[::2], cases[1::2]):
        rows.append(
            [
                f"{unpacked['n']:,}",
                str(unpacked["n_cameras"]),
                f"{packed['visible_pairs']:,} / {unpacked['n'] * unpacked['n_cameras']:,}",
                fmt_ms(unpacked["fwd_bwd_s"]),
                fmt_ms(packed["fwd_bwd_s"]),
                f"{packed['fwd_bwd_s'] / unpacked['fwd_bwd_s']:.2f}",
                f"{unpacked['peak_added_bytes'] / 2**20:.0f}",
                f"{packed['peak_added_bytes'] / 2**20:.0f}",
                f"{packed['peak_added_bytes'] / unpacked['peak_added_bytes']:.2f}",
            ]
        )
    header = ["N", "C", "visible pairs", "unpacked", "packed", "time ratio", "unpacked MiB", "packed MiB"]
    lines.append(table(header + ["memory ratio"], rows))
    lines.append("")
    lines.append(
        "Times: medians of fwd+bwd; memory: the peak resident set size one fwd+bwd adds to a fresh process."
    )
    return "\n".join(lines)


def measure_2dgs(args: argparse.Namespace, cotangents: tuple[Tensor, Tensor]) -> list[dict]:
    """Forward and fwd+bwd of the same scene rendered as 3D Gaussians and as surfels, C++ backend."""
    results = []
    for n in args.sizes:
        scene = make_scene(n, args.sh_degree, args.seed)
        for surfels in (False, True):
            progress(f"2DGS comparison: N={n}, {'2DGS' if surfels else '3DGS'}")
            scene.surfels = surfels
            results.append(
                {"n": n, "surfels": surfels, **time_render(scene, "cpp", args.repeats, cotangents)}
            )
    return results


def render_2dgs_report(report: dict) -> str:
    lines = header_lines(report, "2DGS (rasterization_2dgs) beside 3DGS (rasterization), C++ CPU backend")
    rows = []
    cases = report["2dgs"]
    for gaussians, surfels in zip(cases[::2], cases[1::2]):
        rows.append(
            [
                f"{gaussians['n']:,}",
                f"{gaussians['n_isects']:,} / {surfels['n_isects']:,}",
                fmt_ms(gaussians["forward_s"]),
                fmt_ms(surfels["forward_s"]),
                f"{surfels['forward_s'] / gaussians['forward_s']:.1f}",
                fmt_ms(gaussians["fwd_bwd_s"]),
                fmt_ms(surfels["fwd_bwd_s"]),
                f"{surfels['fwd_bwd_s'] / gaussians['fwd_bwd_s']:.1f}",
            ]
        )
    header = [
        "N",
        "intersections 3DGS / 2DGS",
        "3DGS fwd",
        "2DGS fwd",
        "ratio",
        "3DGS fwd+bwd",
        "2DGS fwd+bwd",
    ]
    lines.append(table(header + ["ratio"], rows))
    lines.append("")
    lines.append(
        "The same Gaussians (the third scale unused by 2DGS), RGB mode, medians of repeats after a warm-up; "
        "2DGS also renders normals, distortion and median depth in every call."
    )
    return "\n".join(lines)


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        description=__doc__.split("\n\n")[0], formatter_class=argparse.ArgumentDefaultsHelpFormatter
    )
    parser.add_argument(
        "--sizes", type=int, nargs="+", default=[10_000, 100_000, 1_000_000], help="numbers of Gaussians N"
    )
    parser.add_argument("--repeats", type=int, default=5, help="timed repeats per C++ measurement (median)")
    parser.add_argument(
        "--reference-repeats", type=int, default=3, help="timed repeats per reference measurement (median)"
    )
    parser.add_argument(
        "--reference-max-n",
        type=int,
        default=100_000,
        help="largest N run on the reference backend (it needs a lot of memory)",
    )
    parser.add_argument(
        "--scaling-n",
        type=int,
        default=TARGET_N,
        help="N for the thread scaling, the wait-policy comparison and the targets",
    )
    parser.add_argument(
        "--threads",
        type=int,
        nargs="+",
        help="thread counts of the thread-scaling table (always with 1 and torch's default)",
    )
    parser.add_argument(
        "--sh-degree",
        type=int,
        choices=range(5),
        default=None,
        help="use SH coefficients of this degree instead of RGB colours",
    )
    parser.add_argument("--seed", type=int, default=0, help="seed of the synthetic scene")
    parser.add_argument(
        "--compare-wait-policy",
        action="store_true",
        help="also time C++ fwd+bwd at --scaling-n with OMP_WAIT_POLICY=PASSIVE and unset, "
        "each idle and next to a busy-loop process (4 subprocesses)",
    )
    parser.add_argument(
        "--quick",
        action="store_true",
        help="smoke run: N=10000 only (also for thread scaling), 2 repeats, no reference",
    )
    parser.add_argument("--output", type=Path, default=DEFAULT_OUTPUT, help="JSON file to write")
    parser.add_argument(
        "--simd-levels",
        action="store_true",
        help="only time the rasterize op and C++ fwd+bwd per SIMD build (see above)",
    )
    parser.add_argument("--rounds", type=int, default=3, help="processes per SIMD level with --simd-levels")
    parser.add_argument(
        "--packed", action="store_true", help="only compare packed and unpacked rasterization (see above)"
    )
    parser.add_argument(
        "--2dgs",
        dest="surfels",
        action="store_true",
        help="only compare rasterization_2dgs with rasterization on the same scene (C++ backend)",
    )
    parser.add_argument("--packed-child", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--packed-cameras", type=int, default=1, help=argparse.SUPPRESS)
    parser.add_argument(
        "--packed-layout", choices=("packed", "unpacked"), default="packed", help=argparse.SUPPRESS
    )
    parser.add_argument("--wait-policy-child", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--simd-level-child", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if (args.simd_levels or args.simd_level_child) and "--sizes" not in sys.argv:
        args.sizes = [10_000, 100_000]
    if args.surfels and "--sizes" not in sys.argv:
        args.sizes = [10_000, 100_000]
    if args.packed and "--sizes" not in sys.argv:
        args.sizes = [100_000, 1_000_000]
    if args.quick:
        args.sizes, args.scaling_n, args.repeats = [10_000], 10_000, 2
    for name in ("sizes", "repeats", "reference_repeats", "scaling_n", "rounds"):
        values = getattr(args, name)
        if min(values if isinstance(values, list) else [values]) < 1:
            parser.error(f"--{name.replace('_', '-')} must be >= 1")
    return args


def write_report(report: dict, render: Callable[[dict], str], args: argparse.Namespace, name: str) -> None:
    """Print a special mode's table and write its JSON (to `name` beside the default output, unless
    --output says where)."""
    report["load_average_at_end"] = os.getloadavg()
    print(render(report))
    output = args.output.with_name(name) if args.output == DEFAULT_OUTPUT else args.output
    output.parent.mkdir(parents=True, exist_ok=True)
    output.write_text(json.dumps(report, indent=2) + "\n")
    print(f"\nJSON written to {output}")


def main() -> None:
    args = parse_args()
    if args.wait_policy_child:
        run_wait_policy_child(args)
        return
    if args.simd_level_child:
        run_simd_level_child(args)
        return
    if args.packed_child:
        run_packed_child(args)
        return

    default_threads = torch.get_num_threads()
    report = {
        "timestamp": datetime.datetime.now().isoformat(timespec="seconds"),
        "machine": machine_info(),
        "omp_wait_policy": os.environ.get("OMP_WAIT_POLICY"),
        "settings": {
            **{
                k: (str(v) if isinstance(v, Path) else v)
                for k, v in vars(args).items()
                if k not in ("wait_policy_child", "simd_level_child")
            },
            "width": WIDTH,
            "height": HEIGHT,
            "focal": FOCAL,
            "depth_range": [NEAR_DEPTH, FAR_DEPTH],
            "scale_at_100k": SCALE_AT_100K,
            "scale_log_std": SCALE_LOG_STD,
            "tile_size": TILE_SIZE,
        },
    }
    progress(f"OMP_WAIT_POLICY={report['omp_wait_policy'] or 'unset'}, {default_threads} threads")
    if args.simd_levels:
        report["simd_levels"] = measure_simd_levels(args)
        write_report(report, render_simd_report, args, "bench_simd_levels.json")
        return
    if args.packed:
        report["packed"] = measure_packed(args)
        write_report(report, render_packed_report, args, "bench_packed.json")
        return
    cotangents = make_cotangents(args.seed)
    if args.surfels:
        report["2dgs"] = measure_2dgs(args, cotangents)
        write_report(report, render_2dgs_report, args, "bench_2dgs.json")
        return
    report["sizes"] = measure_sizes(args, cotangents)
    report["thread_scaling"] = measure_thread_scaling(args, cotangents, default_threads)
    report["wait_policy"] = compare_wait_policy(args) if args.compare_wait_policy else None
    report["targets"] = evaluate_targets(report["sizes"], report["thread_scaling"], default_threads)

    print(render_report(report))
    args.output.parent.mkdir(parents=True, exist_ok=True)
    args.output.write_text(json.dumps(report, indent=2) + "\n")
    print(f"\nJSON written to {args.output}")


if __name__ == "__main__":
    main()
