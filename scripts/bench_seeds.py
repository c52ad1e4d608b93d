"""The spread of one training recipe's test PSNR over seeds, and the held-out views that make it.

    python scripts/bench_seeds.py --config fast --seeds 42,1,2,3,4 --jobs 2
    python scripts/bench_seeds.py --config fast --seeds 42,2 --jobs 2 --set optim.opacity_reg 0.01
    python scripts/bench_seeds.py --config fast --seeds 42,1 --steps 300 --eval-steps 300   # smoke run

Runs scripts/bench_train.py once per seed (``train.seed``), each in its own process and output folder,
``--jobs`` at a time with the CPU's threads shared among them (``--threads`` each; os.cpu_count() // jobs
by default). Any other argument (``--data``, ``--config``, ``--steps``, ``--set KEY VALUE``, ...) goes to
every run. The PSNR does not depend on the machine's load, so runs may share it; it does depend on the thread
count, which changes the order of floating-point sums (a run on one thread and one on two are two draws,
as two seeds are), so a table is for one thread count.

Prints, per seed, the test PSNR, SSIM and Gaussians at the last evaluation and the held-out views that
scored more than ``--drop-db`` below their median over the seeds (a floater in front of one camera costs a
view 5-15 dB, the run's mean 0.5-1 dB); then the mean, median, lowest and highest PSNR. Writes JSON to
bench_results/bench_seeds-<date>-<time>.json, the runs' folders beside it.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
from concurrent.futures import ThreadPoolExecutor
from datetime import datetime
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
BENCH_TRAIN = ROOT / "scripts" / "bench_train.py"
sys.path.insert(0, str(ROOT))

from gsplat_py.training.checkpoint import METRICS_FILE  # noqa: E402


def parse_args() -> tuple[argparse.Namespace, list[str]]:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--seeds", default="42,1,2,3,4", help="comma-separated train.seed values")
    parser.add_argument("--jobs", type=int, default=1, help="runs at a time")
    parser.add_argument("--threads", type=int, help="threads per run (default: the CPUs / --jobs)")
    parser.add_argument(
        "--drop-db", type=float, default=1.5, help="a view this far below its median is named"
    )
    parser.add_argument("--output", type=Path, default=ROOT / "bench_results")
    args, passed_on = parser.parse_known_args()
    try:
        args.seeds = [int(seed) for seed in args.seeds.split(",")]
    except ValueError:
        parser.error(f"--seeds: expected comma-separated integers, got {args.seeds!r}")
    if len(set(args.seeds)) != len(args.seeds):
        parser.error(f"--seeds: {args.seeds} repeats a seed")
    if args.jobs < 1:
        parser.error(f"--jobs: expected at least 1, got {args.jobs}")
    if args.threads is None:
        args.threads = max(1, (os.cpu_count() or 1) // args.jobs)
    if args.threads < 1:
        parser.error(f"--threads: expected at least 1, got {args.threads}")
    for reserved in ("--output", "--set train.seed", "--set train.threads"):
        if reserved in " ".join(passed_on):
            parser.error(f"{reserved}: set by this script")
    return args, passed_on


def run_seed(seed: int, threads: int, folder: Path, passed_on: list[str]) -> dict:
    """bench_train.py for ``seed`` with its output in ``folder``; the run's last evaluation record."""
    folder.mkdir(parents=True)
    command = [sys.executable, str(BENCH_TRAIN), *passed_on, "--output", str(folder),
               "--set", "train.seed", str(seed), "--set", "train.threads", str(threads)]  # fmt: skip
    with open(folder / "bench_train.log", "w") as log:
        done = subprocess.run(command, stdout=log, stderr=subprocess.STDOUT)
    if done.returncode != 0:
        raise SystemExit(
            f"seed {seed}: bench_train.py exited with {done.returncode}; see {folder}/bench_train.log"
        )
    (metrics,) = folder.glob(f"train-run-*/{METRICS_FILE}")
    record = json.loads(metrics.read_text())[-1]
    return {"seed": seed, "run": str(metrics.parent), **record}


def views_below_median(records: list[dict], drop_db: float) -> dict[int, list[tuple[str, float]]]:
    """Per seed, the views (name, dB below the view's median over the seeds) more than ``drop_db`` below."""
    names = [view["name"] for view in records[0]["views"]]
    median = {name: statistics.median(r["views"][i]["psnr"] for r in records) for i, name in enumerate(names)}
    return {
        r["seed"]: [
            (view["name"], median[view["name"]] - view["psnr"])
            for view in r["views"]
            if view["psnr"] < median[view["name"]] - drop_db
        ]
        for r in records
    }


def main() -> None:
    args, passed_on = parse_args()
    stamp = datetime.now().strftime("%Y%m%d-%H%M%S")
    base = args.output / f"bench_seeds-{stamp}"
    with ThreadPoolExecutor(args.jobs) as pool:
        records = list(
            pool.map(lambda seed: run_seed(seed, args.threads, base / f"seed-{seed}", passed_on), args.seeds)
        )
    below = views_below_median(records, args.drop_db)
    psnrs = [r["psnr"] for r in records]
    print(
        f"\n{len(records)} seeds, {args.threads} threads each, {args.jobs} at a time; "
        f"bench_train.py {' '.join(passed_on)}"
    )
    below_header = f"views more than {args.drop_db:g} dB below their median"
    print(f"| seed | step | test PSNR (dB) | SSIM | Gaussians | {below_header} |")
    print("|---:|---:|---:|---:|---:|---|")
    for r in records:
        named = ", ".join(f"{Path(name).stem} (−{db:.1f})" for name, db in below[r["seed"]]) or "none"
        scores = f"{r['psnr']:.2f} | {r['ssim']:.4f} | {r['num_gaussians']:,}"
        print(f"| {r['seed']} | {r['step']} | {scores} | {named} |")
    summary = {
        "mean": statistics.fmean(psnrs),
        "median": statistics.median(psnrs),
        "min": min(psnrs),
        "max": max(psnrs),
    }
    print("PSNR over the seeds: " + ", ".join(f"{k} {v:.2f} dB" for k, v in summary.items()))
    report = {
        "date": stamp,
        "arguments": passed_on,
        "threads": args.threads,
        "jobs": args.jobs,
        "drop_db": args.drop_db,
        "psnr": summary,
        "runs": [
            {
                **{k: r[k] for k in ("seed", "run", "step", "psnr", "ssim", "num_gaussians")},
                "views": r["views"],
                "views_below_median": below[r["seed"]],
            }
            for r in records
        ],
    }
    path = args.output / f"bench_seeds-{stamp}.json"
    path.write_text(json.dumps(report, indent=1))
    print(f"wrote {path}")


if __name__ == "__main__":
    main()
