#!/usr/bin/env python
"""Benchmark gsplat_py's CUDA backend side by side with gsplat (1.5.3) on the same inputs in the same process.

For each N in --sizes and each camera count in --cameras, on a synthetic scene (SH degree 3, 1920x1080), both
renderers unpacked (``packed=False``, as gsplat's simple_trainer trains), or both packed with --packed:
  * forward: one full rasterization() call, with autograd recording as in training;
  * backward: loss.backward() alone, loss = sum(render_colors * fixed random cotangent);
  * peak memory: the most allocated during one forward + backward, above what was allocated before it;
  * how far the two renders are apart: ||ours - gsplat|| / ||gsplat||.
Then a training step at N = --train-n, 1 camera: forward, L1 loss against a fixed random image, backward and
an Adam step over the raw parameters (means, quats, log-scales, opacity logits, SH coefficients). With
--profile, last: the device time of each renderer's costliest kernels per forward + backward at the largest
size and camera count (torch.profiler over PROFILE_ITERATIONS iterations).

Times are medians of --repeats CUDA-event timings after warm-up. Ratios are gsplat / ours: above 1, gsplat_py
is faster (or uses less memory). Prints markdown tables and writes JSON to bench_results/bench_cuda-<date>-
<time>.json (and to --out). gsplat is optional: without it (or with --no-gsplat) only gsplat_py runs.

    python scripts/bench_cuda.py                                      # full run (~20 s on an H100)
    python scripts/bench_cuda.py --sizes 100000 --cameras 1 --repeats 3  # smoke run
    python scripts/bench_cuda.py --device cpu --sizes 3000 --cameras 1,2 --train-n 3000 --width 192 \\
        --height 108 --repeats 2 --no-gsplat                          # the script's logic, without a GPU
"""

from __future__ import annotations

import argparse
import functools
import gc
import importlib.metadata
import json
import math
import statistics
import subprocess
import sys
import time
import traceback
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path

import torch
from torch import Tensor

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

import gsplat_py  # noqa: E402

# ---- the synthetic scene -----------------------------------------------------------------------------
# Gaussians fill the view frustum of a pinhole camera (70 degrees horizontal field of view) between
# NEAR_DEPTH and FAR_DEPTH, uniformly in volume, and a margin around it. Per-axis scales are log-normal
# around MEDIAN_SCALE (world units): about 1.6 px standard deviation at the median depth at 1920x1080. With
# the opacity-aware extent the mean 2D radius is then ~8 px, and 3M Gaussians make 9M tile intersections with
# one camera, 36M with four (the table reports both for every row).
HORIZONTAL_FOV_DEG = 70.0
NEAR_DEPTH, FAR_DEPTH = 2.0, 8.0
FRUSTUM_MARGIN = 0.1  # fraction of the image added on every side (Gaussians just outside the view)
MEDIAN_SCALE = 0.0075
SCALE_LOG_STD = 0.6
OPACITY_LOGIT_STD = 1.5  # opacities = sigmoid(N(0, 1.5^2))
SH_DEGREE = 3
SH_REST_STD = 0.05  # degree >= 1 coefficients; the degree 0 ones encode uniform random RGB
SH_C0 = 0.28209479177387814
CAMERA_ORBIT_STEP_RAD = 0.06  # the cameras of a batch turn about the scene's centre in steps of ~3.4 degrees
EPS2D = 0.3
TILE_SIZE = 16
WARMUP = 2  # untimed forward + backward passes before each timed series
TRAIN_LR = 1e-3
PROFILE_ITERATIONS = 5
PROFILE_TOP_KERNELS = 12
MIB = 2.0**20


def progress(message: str) -> None:
    print(f"[bench_cuda] {message}", file=sys.stderr, flush=True)


@dataclass
class Scene:
    means: Tensor  # [N, 3]
    quats: Tensor  # [N, 4]
    scales: Tensor  # [N, 3]
    opacities: Tensor  # [N]
    sh: Tensor  # [N, 16, 3]
    viewmats: Tensor  # [C, 4, 4]
    Ks: Tensor  # [C, 3, 3]
    width: int
    height: int

    def leaves(self) -> tuple[Tensor, ...]:
        return self.means, self.quats, self.scales, self.opacities, self.sh


def make_cameras(n_cameras: int, width: int, height: int, device: torch.device) -> tuple[Tensor, Tensor]:
    """C cameras turned about the y axis through the scene's centre, symmetrically about the +z view."""
    focal = 0.5 * width / math.tan(math.radians(HORIZONTAL_FOV_DEG) / 2)
    centre = torch.tensor([0.0, 0.0, 0.5 * (NEAR_DEPTH + FAR_DEPTH)], dtype=torch.float64)
    viewmats = torch.zeros(n_cameras, 4, 4, dtype=torch.float64)
    for c in range(n_cameras):
        angle = CAMERA_ORBIT_STEP_RAD * (c - 0.5 * (n_cameras - 1))
        cos, sin = math.cos(angle), math.sin(angle)
        rotation = torch.tensor([[cos, 0.0, sin], [0.0, 1.0, 0.0], [-sin, 0.0, cos]], dtype=torch.float64)
        viewmats[c, :3, :3] = rotation
        viewmats[c, :3, 3] = centre - rotation @ centre  # the centre stays where camera 0 sees it
        viewmats[c, 3, 3] = 1.0
    K = torch.tensor(
        [[focal, 0.0, width / 2], [0.0, focal, height / 2], [0.0, 0.0, 1.0]], dtype=torch.float64
    )
    return viewmats.float().to(device), K.expand(n_cameras, 3, 3).float().to(device)


def make_scene(n: int, n_cameras: int, width: int, height: int, seed: int, device: torch.device) -> Scene:
    """n random Gaussians (generated on `device`, deterministic for a seed) seen by n_cameras cameras."""
    g = torch.Generator(device=device).manual_seed(seed)

    def uniform(*shape):
        return torch.rand(*shape, generator=g, device=device)

    def normal(*shape):
        return torch.randn(*shape, generator=g, device=device)

    viewmats, Ks = make_cameras(n_cameras, width, height, device)
    focal = float(Ks[0, 0, 0])
    # Uniform in the frustum's volume: depth density grows as z^2, the pixel position is uniform.
    z = (NEAR_DEPTH**3 + uniform(n) * (FAR_DEPTH**3 - NEAR_DEPTH**3)) ** (1.0 / 3.0)
    px = (uniform(n) * (1 + 2 * FRUSTUM_MARGIN) - FRUSTUM_MARGIN) * width
    py = (uniform(n) * (1 + 2 * FRUSTUM_MARGIN) - FRUSTUM_MARGIN) * height
    means = torch.stack([(px - width / 2) / focal * z, (py - height / 2) / focal * z, z], dim=-1)
    quats = normal(n, 4)  # normalised by the projection: uniformly random rotations
    scales = MEDIAN_SCALE * torch.exp(SCALE_LOG_STD * normal(n, 3))
    opacities = torch.sigmoid(OPACITY_LOGIT_STD * normal(n))
    sh = SH_REST_STD * normal(n, (SH_DEGREE + 1) ** 2, 3)
    sh[:, 0] = (uniform(n, 3) - 0.5) / SH_C0  # rendering adds 0.5 to the SH value
    scene = Scene(means, quats, scales, opacities, sh, viewmats, Ks, width, height)
    for t in scene.leaves():
        t.requires_grad_(True)
    return scene


# ---- the two renderers ---------------------------------------------------------------------------------
Render = Callable[..., tuple[Tensor, dict]]  # (means, quats, scales, opacities, sh, scene) -> (colors, meta)


def renderer(rasterization: Callable, packed: bool, **options) -> Render:
    """A Render through ``rasterization``: gsplat_py's (a drop-in, so the same call) or gsplat's."""

    def render(means, quats, scales, opacities, sh, scene: Scene):
        colors, _, meta = rasterization(
            means=means,
            quats=quats,
            scales=scales,
            opacities=opacities,
            colors=sh,
            viewmats=scene.viewmats,
            Ks=scene.Ks,
            width=scene.width,
            height=scene.height,
            eps2d=EPS2D,
            sh_degree=SH_DEGREE,
            packed=packed,
            tile_size=TILE_SIZE,
            render_mode="RGB",
            rasterize_mode="classic",
            **options,
        )
        return colors, meta

    return render


def load_gsplat(wanted: bool, packed: bool) -> tuple[Render | None, str | None, str]:
    """(gsplat's renderer or None, its version or None, a note for the report)."""
    if not wanted:
        return None, None, "gsplat not run (--no-gsplat)"
    try:
        import gsplat
        from gsplat import rasterization as gsplat_rasterization
    except Exception as error:  # noqa: BLE001 (not installed, or broken in any way)
        note = f"gsplat could not be imported ({type(error).__name__}: {error}); running gsplat_py alone"
        progress(note)
        return None, None, note
    try:
        version = importlib.metadata.version("gsplat")
    except importlib.metadata.PackageNotFoundError:  # imported from a source tree
        version = getattr(gsplat, "__version__", "unknown")
    progress(
        f"gsplat {version}: its first call may compile its CUDA code (minutes) if it was installed from "
        "source"
    )
    return renderer(gsplat_rasterization, packed), version, f"gsplat {version}"


# ---- timing and memory ---------------------------------------------------------------------------------


class Clock:
    """Elapsed milliseconds of fn(): CUDA events on the GPU (waiting for the GPU work fn queued), wall time on
    the CPU. Peak memory is only measured on the GPU."""

    def __init__(self, device: torch.device):
        self.cuda = device.type == "cuda"

    def synchronize(self) -> None:
        if self.cuda:
            torch.cuda.synchronize()

    def time_ms(self, fn: Callable[[], object]) -> float:
        if self.cuda:
            start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
            start.record()
            fn()
            end.record()
            end.synchronize()
            return start.elapsed_time(end)
        begin = time.perf_counter()
        fn()
        return (time.perf_counter() - begin) * 1e3

    def peak_mib(self, fn: Callable[[], object]) -> float | None:
        """Most memory allocated while fn() runs, above what was allocated before (None on the CPU)."""
        if not self.cuda:
            fn()
            return None
        torch.cuda.synchronize()
        torch.cuda.reset_peak_memory_stats()
        before = torch.cuda.memory_allocated()
        fn()
        torch.cuda.synchronize()
        return (torch.cuda.max_memory_allocated() - before) / MIB


def clear_grads(tensors) -> None:
    for t in tensors:
        t.grad = None


def measure_render(render: Render, scene: Scene, cotangent: Tensor, repeats: int, clock: Clock) -> dict:
    """Forward and backward times (medians, ms), peak memory of forward + backward, and the render."""
    leaves = scene.leaves()

    def forward():
        return render(*leaves, scene)

    forward_backward = functools.partial(render_forward_backward, render, scene, cotangent)
    for _ in range(WARMUP):
        forward_backward()
    clear_grads(leaves)
    clock.synchronize()
    forward_ms = [clock.time_ms(forward) for _ in range(repeats)]
    backward_ms = []
    for _ in range(repeats):
        clear_grads(leaves)
        colors, _ = forward()
        loss = (colors * cotangent).sum()
        clock.synchronize()  # the forward's kernels must not be timed with the backward
        backward_ms.append(clock.time_ms(loss.backward))
        del colors, loss
    clear_grads(leaves)
    peak_mib = clock.peak_mib(forward_backward)
    clear_grads(leaves)
    with torch.no_grad():
        colors, meta = forward()
    result = {
        "forward_ms": statistics.median(forward_ms),
        "backward_ms": statistics.median(backward_ms),
        "peak_mib": peak_mib,
        "forward_samples_ms": forward_ms,
        "backward_samples_ms": backward_ms,
    }
    if "n_isects" in meta:  # gsplat_py's meta; gsplat's differs
        visible = (meta["radii"] > 0).all(dim=-1)
        result["n_isects"] = int(meta["n_isects"])
        result["mean_radius_px"] = float(meta["radii"][visible].float().mean()) if visible.any() else 0.0
    return {**result, "image": colors}


def measure_training_step(render: Render, scene: Scene, target: Tensor, repeats: int, clock: Clock) -> dict:
    """Median time (ms) and peak memory of forward + L1 loss + backward + Adam step over raw parameters."""
    with torch.no_grad():
        params = [
            scene.means.detach().clone(),
            scene.quats.detach().clone(),
            torch.log(scene.scales.detach()),
            torch.logit(scene.opacities.detach()),
            scene.sh.detach().clone(),
        ]
    for p in params:
        p.requires_grad_(True)
    optimizer = torch.optim.Adam(params, lr=TRAIN_LR, fused=True)
    means, quats, log_scales, opacity_logits, sh = params

    def step():
        optimizer.zero_grad(set_to_none=True)
        colors, _ = render(means, quats, torch.exp(log_scales), torch.sigmoid(opacity_logits), sh, scene)
        (colors - target).abs().mean().backward()
        optimizer.step()

    for _ in range(WARMUP):  # the first step also allocates Adam's moments
        step()
    clock.synchronize()
    step_ms = [clock.time_ms(step) for _ in range(repeats)]
    # Without the last step's gradients, the peak counts everything a step allocates beyond the parameters
    # and Adam's moments (its gradients included).
    optimizer.zero_grad(set_to_none=True)
    peak_mib = clock.peak_mib(step)
    return {"step_ms": statistics.median(step_ms), "step_samples_ms": step_ms, "peak_mib": peak_mib}


def free_memory(device: torch.device) -> None:
    gc.collect()
    if device.type == "cuda":
        torch.cuda.empty_cache()


def is_out_of_memory(error: Exception) -> bool:
    # Allocations through PyTorch raise OutOfMemoryError; a failed cudaMalloc inside an extension a
    # RuntimeError.
    return isinstance(error, torch.cuda.OutOfMemoryError) or (
        isinstance(error, RuntimeError) and "out of memory" in str(error)
    )


def run_guarded(label: str, measure: Callable[[], dict]) -> dict:
    """measure(), or {"error": "OOM"} / {"error": "<exception>"} when it fails: the benchmark goes on."""
    progress(label)
    try:
        return measure()
    except Exception as error:  # noqa: BLE001 (one failing configuration must not lose the others)
        if is_out_of_memory(error):
            progress(f"{label}: out of memory")
            failure = "OOM"
        else:
            traceback.print_exc()
            failure = f"{type(error).__name__}: {error}"
    return {"error": failure}  # the caller frees the failed measurement's memory


# ---- the measurements ----------------------------------------------------------------------------------


def relative_difference(ours: Tensor, theirs: Tensor) -> float:
    return float((ours.double() - theirs.double()).norm() / theirs.double().norm().clamp_min(1e-30))


def measure_config(
    args, n: int, n_cameras: int, renderers: dict[str, Render], device: torch.device, clock: Clock
) -> dict:
    """One table row: every renderer on one scene of n Gaussians and n_cameras cameras. Drops gsplat from
    `renderers` when it fails for a reason other than memory (the other sizes would fail the same way)."""
    row = {"n": n, "cameras": n_cameras, "results": {}}
    try:
        scene = make_scene(n, n_cameras, args.width, args.height, args.seed, device)
        g = torch.Generator(device=device).manual_seed(args.seed + 1)
        cotangent = torch.randn(n_cameras, args.height, args.width, 3, generator=g, device=device)
    except Exception as error:
        if not is_out_of_memory(error):
            raise
        progress(f"N={n:,}, C={n_cameras}: out of memory generating the scene")
        return {**row, "results": {name: {"error": "OOM"} for name in renderers}}
    images = {}
    for name, render in list(renderers.items()):
        result = run_guarded(
            f"N={n:,}, C={n_cameras}: {name}",
            functools.partial(measure_render, render, scene, cotangent, args.repeats, clock),
        )
        free_memory(device)  # each renderer starts from the same allocator state
        if "image" in result:
            images[name] = result.pop("image").cpu()  # off the GPU: the next renderer gets its memory
        elif name == "gsplat" and result["error"] != "OOM":
            progress(f"gsplat failed ({result['error']}); running gsplat_py alone from here")
            del renderers["gsplat"]
        row["results"][name] = result
    if len(images) == 2:
        row["relative_difference"] = relative_difference(images["gsplat_py"], images["gsplat"])
    return row


def profile_kernels(args, renderers: dict[str, Render], device: torch.device) -> dict:
    """Device time (ms per forward + backward) of each renderer's costliest kernels and of all its kernels,
    at the largest --sizes and --cameras (on the CPU, for checking the script: each op's own CPU time)."""
    from torch.profiler import ProfilerActivity, profile

    on_gpu = device.type == "cuda"
    n, n_cameras = max(args.sizes), max(args.cameras)
    scene = make_scene(n, n_cameras, args.width, args.height, args.seed, device)
    g = torch.Generator(device=device).manual_seed(args.seed + 1)
    cotangent = torch.randn(n_cameras, args.height, args.width, 3, generator=g, device=device)
    report = {"n": n, "cameras": n_cameras, "iterations": PROFILE_ITERATIONS, "renderers": {}}
    for name, render in renderers.items():
        progress(f"profiling {name}: N={n:,}, C={n_cameras}")
        forward_backward = functools.partial(render_forward_backward, render, scene, cotangent)
        for _ in range(WARMUP):
            forward_backward()
        Clock(device).synchronize()
        with profile(activities=[ProfilerActivity.CUDA if on_gpu else ProfilerActivity.CPU]) as profiler:
            for _ in range(PROFILE_ITERATIONS):
                forward_backward()
            Clock(device).synchronize()
        kernels = sorted(
            (
                (event.key, (event.device_time_total if on_gpu else event.self_cpu_time_total) / 1e3)
                for event in profiler.key_averages()
            ),
            key=lambda kernel: -kernel[1],
        )
        kernels = [(key, total / PROFILE_ITERATIONS) for key, total in kernels if total > 0]
        report["renderers"][name] = {
            "total_ms": sum(ms for _, ms in kernels),
            "kernels": [{"name": key, "ms": ms} for key, ms in kernels],
        }
        clear_grads(scene.leaves())
        free_memory(device)
    return report


def render_forward_backward(render: Render, scene: Scene, cotangent: Tensor) -> None:
    leaves = scene.leaves()
    clear_grads(leaves)
    colors, _ = render(*leaves, scene)
    (colors * cotangent).sum().backward()


def render_profile(profile: dict) -> str:
    out = [
        f"### Device time per forward + backward, N={profile['n']:,}, C={profile['cameras']} "
        f"(torch.profiler, {profile['iterations']} iterations)",
    ]
    for name, result in profile["renderers"].items():
        out += ["", f"{name}: all kernels {result['total_ms']:.2f} ms", "", "| kernel | ms |", "|---|---|"]
        for kernel in result["kernels"][:PROFILE_TOP_KERNELS]:
            out.append(f"| {kernel['name'][:90]} | {kernel['ms']:.3f} |")
    return "\n".join(out)


def measure_training(args, renderers: dict[str, Render], device: torch.device, clock: Clock) -> dict:
    entry = {"n": args.train_n, "cameras": 1, "results": {}}
    scene = make_scene(args.train_n, 1, args.width, args.height, args.seed, device)
    target = torch.rand(
        1,
        args.height,
        args.width,
        3,
        generator=torch.Generator(device=device).manual_seed(args.seed + 2),
        device=device,
    )
    for name, render in renderers.items():
        entry["results"][name] = run_guarded(
            f"training step, N={args.train_n:,}: {name}",
            functools.partial(measure_training_step, render, scene, target, args.repeats, clock),
        )
        free_memory(device)
    return entry


# ---- report --------------------------------------------------------------------------------------------


def fmt(value: float | None, digits: int = 1) -> str:
    return "—" if value is None else f"{value:,.{digits}f}"


def cell(result: dict | None, key: str, digits: int = 1) -> str:
    if result is None:
        return "—"
    if "error" in result:
        return "OOM" if result["error"] == "OOM" else "error"
    return fmt(result.get(key), digits)


def ratio(results: dict, key: str) -> str:
    """gsplat / gsplat_py of one measurement (above 1: gsplat_py is faster or smaller)."""
    ours, theirs = results.get("gsplat_py", {}), results.get("gsplat", {})
    if ours.get(key) is None or theirs.get(key) is None or ours[key] <= 0:
        return "—"
    return f"{theirs[key] / ours[key]:.2f}×"


def table(header: list[str], rows: list[list[str]]) -> str:
    lines = ["| " + " | ".join(header) + " |", "|" + "|".join("---" for _ in header) + "|"]
    return "\n".join(lines + ["| " + " | ".join(row) + " |" for row in rows])


def render_report(report: dict) -> str:
    machine, settings = report["machine"], report["settings"]
    out = [
        "## gsplat_py CUDA benchmark",
        "",
        f"- device: {machine['device']}; torch {machine['torch']} (CUDA {machine['cuda']}); "
        f"git {machine['git_commit']}{' (uncommitted changes)' if machine['git_dirty'] else ''}; "
        f"{report['gsplat_note']}",
        f"- scene: {settings['width']}×{settings['height']}, SH degree {SH_DEGREE}, tile {TILE_SIZE}, eps2d "
        f"{EPS2D}, {'packed' if settings.get('packed') else 'unpacked'}, "
        f"seed {settings['seed']}; medians of {settings['repeats']} repeats after {WARMUP} warm-ups (CUDA "
        "events)",
        "- ratio = gsplat / gsplat_py (above 1: gsplat_py is faster, or needs less memory); "
        "rel. diff = ‖ours − gsplat‖ / ‖gsplat‖ of the rendered images",
        "",
    ]
    rows = []
    for row in report["configs"]:
        r = row["results"]
        ours = r.get("gsplat_py")
        rows.append(
            [
                f"{row['n']:,}",
                str(row["cameras"]),
                cell(ours, "n_isects", 0),
                cell(ours, "mean_radius_px"),
                cell(ours, "forward_ms", 2),
                cell(r.get("gsplat"), "forward_ms", 2),
                ratio(r, "forward_ms"),
                cell(ours, "backward_ms", 2),
                cell(r.get("gsplat"), "backward_ms", 2),
                ratio(r, "backward_ms"),
                cell(ours, "peak_mib", 0),
                cell(r.get("gsplat"), "peak_mib", 0),
                ratio(r, "peak_mib"),
                f"{row['relative_difference']:.1e}" if "relative_difference" in row else "—",
            ]
        )
    out.append(
        table(
            [
                "N",
                "cameras",
                "intersections",
                "mean radius (px)",
                "fwd ours (ms)",
                "fwd gsplat (ms)",
                "fwd ratio",
                "bwd ours (ms)",
                "bwd gsplat (ms)",
                "bwd ratio",
                "peak ours (MiB)",
                "peak gsplat (MiB)",
                "memory ratio",
                "rel. diff",
            ],
            rows,
        )
    )
    training = report["training"]
    r = training["results"]
    out += ["", f"### Training step (N={training['n']:,}, 1 camera: forward, L1, backward, Adam)", ""]
    out.append(
        table(
            [
                "step ours (ms)",
                "step gsplat (ms)",
                "ratio",
                "peak ours (MiB)",
                "peak gsplat (MiB)",
                "memory ratio",
            ],
            [
                [
                    cell(r.get("gsplat_py"), "step_ms", 2),
                    cell(r.get("gsplat"), "step_ms", 2),
                    ratio(r, "step_ms"),
                    cell(r.get("gsplat_py"), "peak_mib", 0),
                    cell(r.get("gsplat"), "peak_mib", 0),
                    ratio(r, "peak_mib"),
                ]
            ],
        )
    )
    errors = [
        (f"N={row['n']:,}, C={row['cameras']}", name, res["error"])
        for row in report["configs"] + [training]
        for name, res in row["results"].items()
        if "error" in res and res["error"] != "OOM"
    ]
    if errors:
        out += ["", "Errors:"] + [f"- {where}, {name}: {error}" for where, name, error in errors]
    return "\n".join(out)


# ---- entry point ---------------------------------------------------------------------------------------


def git_state() -> tuple[str, bool]:
    """(commit, whether tracked files have uncommitted changes); ("unknown", False) outside a checkout."""
    try:
        commit = subprocess.run(
            ["git", "rev-parse", "HEAD"], cwd=ROOT, capture_output=True, text=True, check=True
        ).stdout.strip()
        status = subprocess.run(
            ["git", "status", "--porcelain", "--untracked-files=no"],
            cwd=ROOT,
            capture_output=True,
            text=True,
            check=True,
        ).stdout
        return commit, bool(status.strip())
    except (OSError, subprocess.CalledProcessError):
        return "unknown", False


def machine_info(device: torch.device) -> dict:
    commit, dirty = git_state()
    return {
        "device": torch.cuda.get_device_name(device) if device.type == "cuda" else "cpu",
        "torch": torch.__version__,
        "cuda": torch.version.cuda,
        "git_commit": commit,
        "git_dirty": dirty,
    }


def int_list(text: str) -> list[int]:
    values = [int(v) for v in text.split(",") if v.strip()]
    if not values or min(values) < 1:
        raise argparse.ArgumentTypeError(
            f"expected a comma-separated list of positive integers, got {text!r}"
        )
    return values


def positive_int(text: str) -> int:
    value = int(text)
    if value < 1:
        raise argparse.ArgumentTypeError(f"expected a positive integer, got {text!r}")
    return value


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument(
        "--sizes",
        type=int_list,
        default=[100_000, 1_000_000, 3_000_000],
        help="comma-separated numbers of Gaussians (default: 100000,1000000,3000000)",
    )
    parser.add_argument(
        "--cameras",
        type=int_list,
        default=[1, 4],
        help="comma-separated numbers of cameras per call (default: 1,4)",
    )
    parser.add_argument(
        "--repeats", type=positive_int, default=10, help="timed repeats per measurement (default: 10)"
    )
    parser.add_argument("--width", type=positive_int, default=1920)
    parser.add_argument("--height", type=positive_int, default=1080)
    parser.add_argument(
        "--train-n",
        type=positive_int,
        default=1_000_000,
        help="number of Gaussians of the training-step benchmark (default: 1000000)",
    )
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--no-gsplat", action="store_true", help="run gsplat_py alone")
    parser.add_argument(
        "--packed",
        action="store_true",
        help="both renderers in packed mode (default: both unpacked, as gsplat's simple_trainer trains)",
    )
    parser.add_argument("--out", type=Path, help="also write the JSON here")
    parser.add_argument("--profile", action="store_true", help="also profile the kernels (see above)")
    parser.add_argument(
        "--device",
        default="cuda",
        choices=("cuda", "cpu"),
        help="cpu: check the script itself on a machine without a GPU (slow; use tiny sizes)",
    )
    return parser.parse_args()


def main() -> None:
    args = parse_args()
    device = torch.device(args.device)
    if device.type == "cuda":
        from gsplat_py.rendering._backend import cuda_backend_available

        if not cuda_backend_available():
            sys.exit("bench_cuda: no GPU, or gsplat_py._C was built without its CUDA kernels")
    clock = Clock(device)
    renderers: dict[str, Render] = {
        "gsplat_py": renderer(gsplat_py.rasterization, args.packed, backend="cpp")
    }
    gsplat_render, gsplat_version, gsplat_note = load_gsplat(not args.no_gsplat, args.packed)
    if gsplat_render is not None:
        renderers["gsplat"] = gsplat_render

    report = {
        "timestamp": datetime.now().isoformat(timespec="seconds"),
        "machine": machine_info(device),
        "gsplat_version": gsplat_version,
        "gsplat_note": gsplat_note,
        "settings": {
            "sizes": args.sizes,
            "cameras": args.cameras,
            "repeats": args.repeats,
            "warmup": WARMUP,
            "width": args.width,
            "height": args.height,
            "train_n": args.train_n,
            "packed": args.packed,
            "seed": args.seed,
            "sh_degree": SH_DEGREE,
            "tile_size": TILE_SIZE,
            "eps2d": EPS2D,
            "horizontal_fov_deg": HORIZONTAL_FOV_DEG,
            "depth_range": [NEAR_DEPTH, FAR_DEPTH],
            "median_scale": MEDIAN_SCALE,
            "scale_log_std": SCALE_LOG_STD,
            "opacity_logit_std": OPACITY_LOGIT_STD,
        },
    }
    report["configs"] = []
    for n in args.sizes:
        for n_cameras in args.cameras:
            report["configs"].append(measure_config(args, n, n_cameras, renderers, device, clock))
            free_memory(device)  # the scene is gone with measure_config's frame
    report["training"] = measure_training(args, renderers, device, clock)
    free_memory(device)
    if "gsplat" not in renderers and gsplat_render is not None:
        report["gsplat_note"] += " (failed part-way: see the errors)"

    if args.profile:
        report["profile"] = profile_kernels(args, renderers, device)

    print(render_report(report))
    if "profile" in report:
        print("\n" + render_profile(report["profile"]))
    text = json.dumps(report, indent=2) + "\n"
    paths = [ROOT / "bench_results" / f"bench_cuda-{datetime.now():%Y%m%d-%H%M%S}.json"]
    if args.out is not None:
        paths.append(args.out)
    for path in paths:
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text)
        print(f"\nJSON written to {path}")


if __name__ == "__main__":
    main()
