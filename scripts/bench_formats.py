"""Splat file formats: size, ratio to the PLY, re-render PSNR against the PLY, export and import time.

    python scripts/bench_formats.py --model outputs/RUN                 # + a 1M-Gaussian synthetic model
    python scripts/bench_formats.py --model outputs/RUN --synthetic 0   # the trained model only

For each format of `gsplat_py.io.formats` (SPZ in both versions gsplat_py writes) the model is exported with
`gsplat_py.tools.export.export_model` and read back with `gsplat_py.io.formats.read_splat_file`, each timed
(best of ``--repeats``); the read-back model and the original are rendered from the scene's test views, and
the table gives the mean PSNR between the two renders (the PLY is lossless, so its row is the reference:
infinite). ``.splat`` keeps the SH DC term only: its PSNR is against the original cut to SH degree 0 (the
loss of view-dependent colour is not the format's quantisation), and "vs degree 3" gives the full loss.

The synthetic model has ``--synthetic`` Gaussians resampled from the trained one (each a copy of a random
trained Gaussian, moved by a random offset of its own size, with its SH jittered by 5%), so its statistics
and compressibility are a real scene's; it is rendered from the same views. Writes
``bench_results/bench_formats-<date>-<time>.json``.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import platform
import sys
import tempfile
import time
from datetime import datetime
from pathlib import Path

os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")  # before torch loads its OpenMP runtime

import torch  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from gsplat_py.io.formats import FORMAT_SUFFIXES, read_splat_file  # noqa: E402
from gsplat_py.model import GaussianSplats  # noqa: E402
from gsplat_py.tools.export import export_model  # noqa: E402
from gsplat_py.tools.novel_views import render_cameras, select_cameras  # noqa: E402
from gsplat_py.tools.saved_models import load_model  # noqa: E402
from gsplat_py.training.metrics import psnr  # noqa: E402

# (row label, format, SPZ version)
ROWS = [
    ("ply", "ply", 4),
    ("compressed-ply", "compressed-ply", 4),
    ("spz v4", "spz", 4),
    ("spz v3", "spz", 3),
    ("sog", "sog", 4),
    ("splat", "splat", 4),
]


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--model", required=True, help="a training output folder (or any model file)")
    parser.add_argument("--synthetic", type=int, default=1_000_000, help="Gaussians of the synthetic model")
    parser.add_argument("--repeats", type=int, default=1, help="timings are the best of this many")
    parser.add_argument("--views", type=int, default=0, help="render only the first N test views (0: all)")
    return parser.parse_args()


def resampled(splats: GaussianSplats, count: int, seed: int = 0) -> GaussianSplats:
    """``count`` Gaussians drawn from ``splats`` with replacement, each moved by a random offset of its own
    size and with its SH jittered by 5% (module docstring)."""
    generator = torch.Generator().manual_seed(seed)
    picks = torch.randint(0, splats.num_gaussians, (count,), generator=generator)
    offsets = torch.randn(count, 3, generator=generator) * splats.scales()[picks]
    sh = splats.sh[picks] * (1.0 + 0.05 * torch.randn(count, *splats.sh.shape[1:], generator=generator))
    return GaussianSplats(
        means=splats.means[picks] + offsets,
        quats=splats.quats[picks],
        log_scales=splats.log_scales[picks],
        logit_opacities=splats.logit_opacities[picks],
        sh=sh,
    )


def renders(splats: GaussianSplats, cameras) -> list[torch.Tensor]:
    return [frame.rgb for frame in render_cameras(splats, cameras)]


def mean_psnr(images: list[torch.Tensor], references: list[torch.Tensor]) -> float:
    return sum(float(psnr(a, b)) for a, b in zip(images, references)) / len(images)


def timed(repeats: int, function, *arguments, **keywords):
    """``function(*arguments, **keywords)``'s result and its best time of ``repeats`` calls."""
    best, result = math.inf, None
    for _ in range(repeats):
        start = time.perf_counter()
        result = function(*arguments, **keywords)
        best = min(best, time.perf_counter() - start)
    return result, best


def bench_model(name: str, model, splats: GaussianSplats, cameras, folder: Path, repeats: int) -> list[dict]:
    print(f"\n{name}: {splats.num_gaussians:,} Gaussians, SH degree {splats.sh_degree}", flush=True)
    reference = renders(splats, cameras)
    reference_dc = renders(splats.with_sh_degree(0), cameras)
    rows, ply_size = [], None
    for label, file_format, spz_version in ROWS:
        output = folder / f"{name}_{label.replace(' ', '_')}{FORMAT_SUFFIXES[file_format]}"
        summary, export_s = timed(
            repeats, export_model, splats, model.frame, output, file_format, spz_version=spz_version
        )
        loaded, import_s = timed(repeats, read_splat_file, output)
        images = renders(loaded.splats, cameras)
        ply_size = summary.ply_size if file_format == "ply" else ply_size
        row = {
            "format": label,
            "size_bytes": summary.size,
            "ratio_to_ply": (ply_size or summary.ply_size) / summary.size,
            "psnr_vs_ply": mean_psnr(images, reference_dc if file_format == "splat" else reference),
            "psnr_vs_full_ply": mean_psnr(images, reference),
            "export_s": export_s,
            "import_s": import_s,
        }
        rows.append(row)
        print(
            f"| {label} | {row['size_bytes'] / 1e6:.2f} MB | {row['ratio_to_ply']:.1f}x | "
            f"{row['psnr_vs_ply']:.2f} dB | {row['psnr_vs_full_ply']:.2f} dB | {export_s:.2f} s | "
            f"{import_s:.2f} s |",
            flush=True,
        )
        output.unlink()
    return rows


def main() -> None:
    args = parse_args()
    model = load_model(args.model)
    selection = select_cameras(model, "test")
    cameras = selection.cameras[: args.views] if args.views else selection.cameras
    print(
        f"{len(cameras)} test views at {cameras[0].width}x{cameras[0].height}; load: "
        f"{os.getloadavg()[0]:.1f}; {platform.processor() or platform.machine()}, {os.cpu_count()} CPUs"
    )
    print("| format | size | vs PLY | PSNR vs PLY | vs degree-3 PLY | export | import |")
    print("|---|---|---|---|---|---|---|")
    results = {"model": str(args.model), "views": len(cameras), "load_before": os.getloadavg()[0]}
    with tempfile.TemporaryDirectory() as folder:
        results["trained"] = bench_model("trained", model, model.splats, cameras, Path(folder), args.repeats)
        if args.synthetic:
            synthetic = resampled(model.splats, args.synthetic)
            results["synthetic"] = bench_model(
                "synthetic", model, synthetic, cameras, Path(folder), args.repeats
            )
    results["load_after"] = os.getloadavg()[0]
    out = ROOT / "bench_results" / f"bench_formats-{datetime.now():%Y%m%d-%H%M%S}.json"
    out.parent.mkdir(exist_ok=True)
    out.write_text(json.dumps(results, indent=1) + "\n")
    print(f"\nwritten: {out}")


if __name__ == "__main__":
    main()
