#!/usr/bin/env python
"""Time ops.bin_gaussians_to_tiles alone on a trained model's Gaussians, per thread count and image scale.

    python scripts/bench_binning.py --run RUN_DIR                  # 6 training views, scales 1 and 4
    python scripts/bench_binning.py --run RUN_DIR --package OTHER   # OTHER/gsplat_py instead (another build)

RUN_DIR is a training run (`python -m gsplat_py train` output: checkpoint.pt, config.toml). Every view is
projected once with its intrinsics (and its width and height) scaled by each --scales factor, then binned
into 16-pixel tiles one warm-up and --repeats timed times per thread count. Prints one markdown row per
(scale, threads) with the median and the fastest wall time of a call over all views (the fastest: the
calls no other process slowed down, on a busy machine), and the load average.
"""

from __future__ import annotations

import argparse
import math
import os
import statistics
import sys
import time
from pathlib import Path

os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")  # before torch loads its OpenMP runtime

ROOT = Path(__file__).resolve().parents[1]
TILE_SIZE = 16  # rasterization()'s default


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--run", type=Path, required=True, help="training run directory to resume")
    parser.add_argument("--package", type=Path, default=ROOT, help="folder holding the gsplat_py to time")
    parser.add_argument("--views", type=int, default=6, help="first training views to bin")
    parser.add_argument("--repeats", type=int, default=15, help="timed calls per view and case")
    parser.add_argument("--scales", default="1,4", help="image scale factors, comma-separated")
    parser.add_argument("--threads", default="1,2", help="thread counts, comma-separated")
    parser.add_argument("--label", default="", help="first column of every row (which build)")
    args = parser.parse_args()
    sys.path.insert(0, str(args.package.resolve()))

    import torch

    from gsplat_py.rendering import ops
    from gsplat_py.training.trainer import Trainer

    trainer = Trainer.resume(args.run, progress=False)
    params = {k: v.detach() for k, v in trainer.params.items()}
    opacities = torch.sigmoid(params["opacities"])
    scales = [int(s) for s in args.scales.split(",")]
    cases: dict[int, list] = {s: [] for s in scales}
    for view in trainer.scene.train_views[: args.views]:
        for scale in scales:
            K = view.K.clone()
            K[:2] *= scale
            width, height = view.width * scale, view.height * scale
            radii, means2d, depths, _, _ = ops.project_gaussians(
                params["means"],
                params["quats"],
                torch.exp(params["scales"]),
                view.world_to_camera[None],
                K[None],
                width,
                height,
                eps2d=0.3,
                near_plane=0.01,
                far_plane=1e10,
                radius_clip=0.0,
                opacities=opacities,
                calc_compensations=False,
                camera_model="pinhole",
            )
            grid = (math.ceil(width / TILE_SIZE), math.ceil(height / TILE_SIZE))
            cases[scale].append((f"{width}x{height}", (means2d, radii, depths, TILE_SIZE, *grid)))

    print(f"gsplat_py from {Path(ops.__file__).parents[2]}, {params['means'].shape[0]:,} Gaussians")
    print("| build | image | threads | intersections per view | median ms | fastest ms |")
    print("|---|---|---|---|---|---|")
    for threads in (int(t) for t in args.threads.split(",")):
        torch.set_num_threads(threads)
        for scale in scales:
            samples, isects = [], 0
            for _, inputs in cases[scale]:
                binned = ops.bin_gaussians_to_tiles(*inputs)  # warm-up
                for _ in range(args.repeats):
                    start = time.perf_counter()
                    ops.bin_gaussians_to_tiles(*inputs)
                    samples.append(time.perf_counter() - start)
                isects += binned.flatten_ids.numel()
            size = cases[scale][0][0]
            print(
                f"| {args.label} | {size} | {threads} | {isects // len(cases[scale]):,} |"
                f" {1000 * statistics.median(samples):.2f} | {1000 * min(samples):.2f} |"
            )
    print("load average: " + " ".join(f"{x:.2f}" for x in os.getloadavg()))


if __name__ == "__main__":
    main()
