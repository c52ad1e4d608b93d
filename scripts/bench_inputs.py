"""Input benchmark: the initial-scale kNN and PLY reading, each against what it replaced.

    python scripts/bench_inputs.py                 # kNN at 10k, 20k, 100k, 1M points; PLY reads at 100k
    python scripts/bench_inputs.py --old-up-to 0   # without the O(P^2) kNN

- ``knn_mean_distance`` (the mean distance to the 3 nearest neighbours that sets every Gaussian's initial
  scale): the grid search against the previous O(P^2) code (float32 |a|^2 + |b|^2 - 2 a.b over every pair;
  run up to ``--old-up-to`` points, as its time grows with P^2), on uniform random points (the random
  initialisation of a model without SfM points) and on the bundled scene's SfM points.
- ``read_ply`` of a degree-3 model: memory-mapped rows against plyfile's row-by-row reading, where the
  reader spent its time before (``PlyData.read(path, mmap=False)``; run once).

Times are process CPU seconds (all threads) and wall seconds, the median of ``--repeats`` runs; the
machine's load average is printed with them. Writes ``bench_results/bench_inputs-<date>-<time>.json``.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import sys
import tempfile
import time
from datetime import datetime
from pathlib import Path

os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")  # before torch loads its OpenMP runtime

import numpy as np  # noqa: E402
import torch  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from gsplat_py.data.normalize import normalize_scene, transform_points  # noqa: E402
from gsplat_py.io.colmap import read_model  # noqa: E402
from gsplat_py.io.ply import read_ply, write_ply  # noqa: E402
from gsplat_py.model import GaussianSplats, knn_mean_distance  # noqa: E402


def old_knn_mean_distance(points: torch.Tensor, k: int = 3, chunk: int = 4096) -> torch.Tensor:
    """The O(P^2) code knn_mean_distance replaced, as it was."""
    n = points.shape[0]
    k = min(k, n - 1)
    pts = points.float()
    squared_norms = (pts * pts).sum(-1)
    out = torch.empty(n, dtype=pts.dtype)
    for start in range(0, n, chunk):
        block = pts[start : start + chunk]
        d2 = squared_norms[start : start + chunk, None] + squared_norms[None, :] - 2.0 * (block @ pts.T)
        rows = torch.arange(block.shape[0])
        d2[rows, rows + start] = float("inf")
        nearest = torch.topk(d2, k, dim=1, largest=False).values.clamp_min(0.0)
        out[start : start + chunk] = nearest.sqrt().mean(dim=1)
    return out


def timed(function, argument, repeats: int) -> dict:
    cpu, wall = [], []
    for _ in range(repeats):
        cpu_start, wall_start = time.process_time(), time.perf_counter()
        function(argument)
        cpu.append(time.process_time() - cpu_start)
        wall.append(time.perf_counter() - wall_start)
    return {"cpu_s": statistics.median(cpu), "wall_s": statistics.median(wall)}


def snowmiku_points() -> torch.Tensor:
    model = read_model(ROOT / "data" / "snowmiku" / "sparse" / "0")
    camera_to_world = np.linalg.inv(np.stack([image.world_to_camera() for image in model.images.values()]))
    normalized = transform_points(normalize_scene(camera_to_world, model.points.xyz), model.points.xyz)
    return torch.from_numpy(normalized).float()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--sizes", default="10000,20000,100000,1000000", help="kNN point counts")
    parser.add_argument("--old-up-to", type=int, default=20000, help="largest P for the O(P^2) kNN")
    parser.add_argument("--ply-gaussians", type=int, default=100_000)
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()
    print(f"load average before: {os.getloadavg()}; torch threads: {torch.get_num_threads()}")
    rows = []
    generator = torch.Generator().manual_seed(0)
    clouds = [("snowmiku SfM points", snowmiku_points())]
    clouds += [
        (f"uniform {int(n):,}", torch.rand(int(n), 3, generator=generator) * 6 - 3)
        for n in args.sizes.split(",")
    ]
    for name, points in clouds:
        row = {
            "case": f"kNN, {name}",
            "points": len(points),
            "new": timed(knn_mean_distance, points, args.repeats),
        }
        if len(points) <= args.old_up_to:
            row["old"] = timed(old_knn_mean_distance, points, args.repeats)
        rows.append(row)

    n = args.ply_gaussians
    splats = GaussianSplats(
        torch.randn(n, 3), torch.randn(n, 4), torch.randn(n, 3) - 3, torch.randn(n), torch.randn(n, 16, 3)
    )
    from plyfile import PlyData

    with tempfile.TemporaryDirectory() as folder:
        path = Path(folder) / "model.ply"
        write_ply(path, splats)
        rows.append(
            {
                "case": f"read_ply, {n:,} Gaussians, SH degree 3",
                "points": n,
                "new": timed(read_ply, path, args.repeats),
                "old": timed(lambda p: PlyData.read(str(p), mmap=False), path, 1),
            }
        )
    load = os.getloadavg()
    print(f"load average after: {load}")
    print(f"{'case':<44} {'new cpu / wall (s)':>20} {'old cpu / wall (s)':>20} {'old / new (cpu)':>16}")
    for row in rows:
        new, old = row["new"], row.get("old")
        old_text = f"{old['cpu_s']:.2f} / {old['wall_s']:.2f}" if old else "not run"
        ratio = f"{old['cpu_s'] / new['cpu_s']:.0f}x" if old else ""
        print(f"{row['case']:<44} {new['cpu_s']:>9.2f} / {new['wall_s']:<8.2f} {old_text:>20} {ratio:>16}")
    out = ROOT / "bench_results" / f"bench_inputs-{datetime.now():%Y%m%d-%H%M%S}.json"
    out.parent.mkdir(exist_ok=True)
    record = {"machine": platform.processor() or platform.machine(), "load_average": load, "rows": rows}
    out.write_text(json.dumps(record, indent=1) + "\n")
    print(f"wrote {out}")


if __name__ == "__main__":
    main()
