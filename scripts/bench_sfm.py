"""Structure-from-motion benchmark: time per step, photos posed, accuracy against the bundled COLMAP model,
and the whole photos -> trained scene path against training on the bundled model.

    python scripts/bench_sfm.py                              # both parts (the training part takes long)
    python scripts/bench_sfm.py --skip-training --sizes 1008,640 --matcher exhaustive
    python scripts/bench_sfm.py --photos my_photos --reference my_colmap/sparse/0 --skip-training

Part 1 poses the photos (``--photos``: by default the bundled scene's full-size 1008x756 originals in
../shared/data/snowmiku/images when present, else its 252x189 images_4) once per ``--sizes`` entry (SfM's
max_image_size), plus the bundled images_4 as the tests pose them, each in a fresh folder of links to the
photos. Per step it reports wall time and the process's CPU time (the figure that is comparable on a loaded
machine: on an idle machine wall time is about CPU time / cores), photos posed, points, mean reprojection
error, and the camera centres' distance to the bundled model's after a similarity alignment (relative to the
scene size: the largest distance of a reference centre from their mean).

Part 2 trains ``--config`` (fast) for ``--steps`` on a folder holding only photos (images/ = ``--photos``,
images_4/ = the bundled 252x189 copies, so that both runs train on identical pixels) -- the trainer poses it
first, as `gsplat-py train --data PHOTOS` does -- and on the bundled scene, and reports both test PSNRs.
Everything goes to ``bench_results/bench_sfm-<date>-<time>.json``.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import sys
import tempfile
import time
from datetime import datetime
from pathlib import Path

os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")  # before torch loads its OpenMP runtime

import numpy as np  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from gsplat_py.data.sfm import SfmOptions, camera_centre_errors, run_sfm  # noqa: E402
from gsplat_py.io.colmap import ColmapModel, read_model  # noqa: E402
from gsplat_py.training.config import apply_overrides, load_config  # noqa: E402
from gsplat_py.training.trainer import Trainer  # noqa: E402

BUNDLED = ROOT / "data" / "snowmiku"
FULL_SIZE = ROOT.parent / "shared" / "data" / "snowmiku" / "images"
STEPS = ("photos", "features", "matching", "mapping")


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    default_photos = FULL_SIZE if FULL_SIZE.is_dir() else BUNDLED / "images_4"
    parser.add_argument("--photos", default=str(default_photos), help="a folder of photos")
    parser.add_argument("--reference", default=str(BUNDLED / "sparse" / "0"), help="a COLMAP model of them")
    parser.add_argument("--sizes", default="1008,640", help="SfM max_image_size values to run")
    parser.add_argument("--matcher", default="auto", help="SfM matcher (auto, exhaustive, sequential)")
    parser.add_argument("--config", default="fast", help="training preset of part 2")
    parser.add_argument("--steps", type=int, default=7000, help="training steps of part 2")
    parser.add_argument("--skip-training", action="store_true", help="part 1 only")
    parser.add_argument("--output", default=str(ROOT / "bench_results"))
    return parser.parse_args()


def cpu_seconds() -> float:
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


def link_photos(source: Path, folder: Path) -> None:
    folder.mkdir(parents=True)
    for photo in sorted(source.iterdir()):
        if photo.is_file():
            (folder / photo.name).symlink_to(photo.resolve())


def pose(photos: Path, work: Path, label: str, options: SfmOptions, reference: ColmapModel) -> dict:
    folder = work / label
    link_photos(photos, folder)
    marks = [(time.perf_counter(), cpu_seconds())]

    def report(line: str) -> None:
        if line.split(":")[0] in STEPS:
            marks.append((time.perf_counter(), cpu_seconds()))
        print(f"  {line}", flush=True)

    result = run_sfm(folder, options, progress=False, report=report)
    cpu = {step: marks[i + 1][1] - marks[i][1] for i, step in enumerate(STEPS)}
    errors = camera_centre_errors(read_model(result.model_folder), reference)
    row = {
        "label": label,
        "options": vars(options),
        "matcher": result.matcher,
        "wall_s": result.stage_seconds,
        "cpu_s": cpu,
        "posed": len(result.registered),
        "photos": len(result.photos),
        "points": result.num_points,
        "reprojection_error_px": result.mean_reprojection_error,
        "centre_error_median": float(np.median(errors)),
        "centre_error_max": float(errors.max()),
    }
    print(
        f"{label}: {row['posed']}/{row['photos']} posed, wall {sum(result.stage_seconds.values()):.0f} s, "
        f"cpu {sum(cpu.values()):.0f} s, centre error median {row['centre_error_median']:.3%}",
        flush=True,
    )
    return row


def train(data: Path, config_name: str, steps: int, output: Path) -> dict:
    overrides = {
        "data.path": str(data),
        "train.steps": str(steps),
        "train.eval_every": "0",
        "train.eval_steps": str(steps),
        "train.save_every": "0",
        "train.save_renders": "false",
        "train.output": str(output),
    }
    config = apply_overrides(load_config(config_name), overrides)
    started = time.perf_counter()
    trainer = Trainer(config, progress=sys.stderr.isatty())
    setup_s = time.perf_counter() - started
    record = trainer.train()[-1]
    return {
        "data": str(data),
        "setup_s": setup_s,  # scene loading, and SfM for a folder of photos
        "psnr": record["psnr"],
        "ssim": record["ssim"],
        "num_gaussians": record["num_gaussians"],
        "train_s": record["elapsed_s"],
        "views": sorted(view["name"] for view in record["views"]),
    }


def main() -> None:
    args = parse_args()
    stamp = datetime.now().strftime("%Y%m%d-%H%M%S")
    photos = Path(args.photos)
    reference = read_model(args.reference)
    results: dict = {"load_before": os.getloadavg(), "cores": os.cpu_count(), "sfm": [], "training": {}}
    with tempfile.TemporaryDirectory(prefix="bench_sfm-") as temporary:
        work = Path(temporary)
        runs = [(photos, f"{photos.name} at <= {size} px", int(size)) for size in args.sizes.split(",")]
        runs.append((BUNDLED / "images_4", "bundled images_4 (252x189, as the tests)", 1000))
        for index, (source, label, size) in enumerate(runs):
            print(f"{label}:", flush=True)
            options = SfmOptions(matcher=args.matcher, max_image_size=size)
            results["sfm"].append(pose(source, work / f"run{index}", label, options, reference))
        if not args.skip_training:
            scene = work / "photos_scene"
            link_photos(photos, scene / "images")
            link_photos(BUNDLED / "images_4", scene / "images_4")
            for name, data in (("photos", scene), ("bundled", BUNDLED)):
                print(f"training on {name} ({data}):", flush=True)
                results["training"][name] = train(data, args.config, args.steps, work / f"train_{name}")
    results["load_after"] = os.getloadavg()

    load = f"load average before {results['load_before']}, after {results['load_after']}"
    print(f"\n{load}, {os.cpu_count()} cores")
    print(
        "| photos | matcher | posed | points | reproj. error | centre error median / max | "
        + " | ".join(f"{s} wall / cpu (s)" for s in STEPS)
        + " | total wall / cpu (s) |"
    )
    print("|---|---|---:|---:|---:|---:|" + "---:|" * (len(STEPS) + 1))
    for row in results["sfm"]:
        cells = [f"{row['wall_s'][s]:.0f} / {row['cpu_s'][s]:.0f}" for s in STEPS]
        total = f"{sum(row['wall_s'].values()):.0f} / {sum(row['cpu_s'].values()):.0f}"
        print(
            f"| {row['label']} | {row['matcher']} | {row['posed']}/{row['photos']} | {row['points']:,} | "
            f"{row['reprojection_error_px']:.2f} px | {row['centre_error_median']:.3%} / "
            f"{row['centre_error_max']:.3%} | " + " | ".join(cells) + f" | {total} |"
        )
    if results["training"]:
        header = f"{args.config}, {args.steps} steps: test PSNR | SSIM | Gaussians | setup (s) | train (s)"
        print(f"\n| scene | {header} |")
        print("|---|---:|---:|---:|---:|---:|")
        for name, row in results["training"].items():
            print(
                f"| {name} | {row['psnr']:.2f} dB | {row['ssim']:.4f} | {row['num_gaussians']:,} | "
                f"{row['setup_s']:.0f} | {row['train_s']:.0f} |"
            )
        if len({tuple(row["views"]) for row in results["training"].values()}) > 1:
            print("note: the two runs held out different views (SfM did not pose every photo)")
    out = Path(args.output)
    out.mkdir(parents=True, exist_ok=True)
    path = out / f"bench_sfm-{stamp}.json"
    path.write_text(json.dumps(results, indent=1) + "\n")
    print(f"\nwrote {path}")


if __name__ == "__main__":
    main()
