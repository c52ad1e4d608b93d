"""CPU training-step time per thread count, resumed from a training run's checkpoint.

    python scripts/bench_train_threads.py RUN --threads 1 2 4 8 16
    python scripts/bench_train_threads.py RUN --threads 1 2 --steps 20 --warmup 5   # smoke run

For each thread count a fresh process (OpenMP sizes its thread pool when it starts) resumes the run in folder
RUN on the CPU and times --steps training steps after --warmup untimed ones: wall clock around each
``Trainer.train_step`` (one view, forward, loss, backward, Adam, strategy), median and mean. Nothing is
saved to RUN. Use a checkpoint after the strategy's last refinement (e.g. step 7000 of the fast preset, which
stops refining at 5000) so that every timed step does the same work. Prints a markdown table and writes JSON
to bench_results/bench_train_threads-<date>-<time>.json.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import subprocess
import sys
import time
from dataclasses import replace
from datetime import datetime
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("run", type=Path, help="a training run's folder (with checkpoint.pt)")
    parser.add_argument("--threads", type=int, nargs="+", default=[1, 2], help="thread counts")
    parser.add_argument("--steps", type=int, default=60, help="timed steps per thread count")
    parser.add_argument("--warmup", type=int, default=10, help="untimed steps first")
    parser.add_argument("--output", type=Path, default=ROOT / "bench_results")
    parser.add_argument("--child", type=int, help=argparse.SUPPRESS)
    args = parser.parse_args()
    for name in ("steps", "warmup"):
        if getattr(args, name) < (1 if name == "steps" else 0):
            parser.error(f"--{name}: {getattr(args, name)} is too small")
    if min(args.threads) < 1:
        parser.error("--threads: each count must be >= 1")
    return args


def time_steps(run: Path, threads: int, steps: int, warmup: int) -> dict:
    """In this process: resume ``run`` on the CPU with ``threads`` threads and time its training steps."""
    import torch

    sys.path.insert(0, str(ROOT))
    from gsplat_py.training.checkpoint import load_checkpoint
    from gsplat_py.training.config import config_from_dict
    from gsplat_py.training.trainer import Trainer

    torch.set_num_threads(threads)
    checkpoint = load_checkpoint(run)
    config = config_from_dict(checkpoint["config"])
    total = max(config.train.steps, checkpoint["step"] + warmup + steps)
    config = replace(config, train=replace(config.train, device="cpu", threads=threads, steps=total))
    trainer = Trainer.resume(run, config, progress=False)
    times = []
    for index in range(warmup + steps):
        started = time.perf_counter()
        trainer.train_step()
        if index >= warmup:
            times.append(time.perf_counter() - started)
    view = trainer.scene.train_views[0]
    return {
        "threads": threads,
        "torch_threads": torch.get_num_threads(),
        "from_step": checkpoint["step"],
        "num_gaussians": trainer.num_gaussians,
        "image_size": [view.width, view.height],
        "median_ms": 1e3 * statistics.median(times),
        "mean_ms": 1e3 * statistics.fmean(times),
        "step_ms": [1e3 * t for t in times],
    }


def run_child(args: argparse.Namespace, threads: int) -> dict:
    environment = {**os.environ, "OMP_NUM_THREADS": str(threads)}
    environment.setdefault("OMP_WAIT_POLICY", "PASSIVE")
    command = [sys.executable, __file__, str(args.run), "--child", str(threads)]
    command += ["--steps", str(args.steps), "--warmup", str(args.warmup)]
    print(f"[bench_train_threads] {threads} thread(s)", file=sys.stderr, flush=True)
    result = subprocess.run(command, env=environment, capture_output=True, text=True)
    if result.returncode != 0:
        sys.exit(f"{threads} thread(s): the measuring process failed:\n{result.stderr[-3000:]}")
    return json.loads(result.stdout.strip().splitlines()[-1])


def main() -> None:
    args = parse_args()
    if args.child is not None:
        print(json.dumps(time_steps(args.run, args.child, args.steps, args.warmup)))
        return
    rows = [run_child(args, threads) for threads in sorted(set(args.threads))]
    first = rows[0]
    width, height = first["image_size"]
    print(
        f"\nCPU training step from {args.run} (step {first['from_step']}, "
        f"{first['num_gaussians']:,} Gaussians, {width}x{height}), "
        f"{platform.processor() or platform.machine()}, {os.cpu_count()} logical CPUs, "
        f"median of {args.steps} steps after {args.warmup}"
    )
    print(f"| threads | median step (ms) | mean step (ms) | steps/s | speed-up over {first['threads']} |")
    print("|---:|---:|---:|---:|---:|")
    for row in rows:
        print(
            f"| {row['threads']} | {row['median_ms']:.1f} | {row['mean_ms']:.1f} | "
            f"{1e3 / row['median_ms']:.1f} | {first['median_ms'] / row['median_ms']:.2f}× |"
        )
    report = {
        "run": str(args.run),
        "date": datetime.now().isoformat(timespec="seconds"),
        "cpu_count": os.cpu_count(),
        "platform": platform.platform(),
        "omp_wait_policy": os.environ.get("OMP_WAIT_POLICY", "PASSIVE (set for the children)"),
        "steps": args.steps,
        "warmup": args.warmup,
        "rows": rows,
    }
    args.output.mkdir(parents=True, exist_ok=True)
    path = args.output / f"bench_train_threads-{datetime.now().strftime('%Y%m%d-%H%M%S')}.json"
    path.write_text(json.dumps(report, indent=1) + "\n")
    print(f"\nwrote {path}")


if __name__ == "__main__":
    main()
