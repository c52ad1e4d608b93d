"""Distributed training benchmark: steps/s, peak memory and Gaussians per process, bytes exchanged per step,
and the held-out PSNR, at 1 and 2 processes (gloo on the CPU) and at the same effective batch on one.

    python scripts/bench_distributed.py                       # data/snowmiku, fast recipe, 1000 steps
    python scripts/bench_distributed.py --steps 300 --runs 1x1,2x1

Each run is ``--runs`` entry PxB: P processes (`gsplat_py.training.distributed.launch`, as ``train
--nproc``) of B views each a step, so the effective batch is P*B. The default runs are 1x1 (the one-view
trainer's recipe through DistributedTrainer), 1x2 and 2x1 (the same effective batch of 2: the learning rates
are scaled alike, so the two should reach the same PSNR). Every process measures its own training time (the
trainer's ``elapsed_s``, evaluation excluded), its peak resident memory, its Gaussians and the bytes it sends
through ``all_to_all_single`` during the training steps. Prints a table and writes the records, with the load
average, to ``bench_results/bench_distributed-<date>-<time>.json``. Four processes need more than the 2
cores this was written on: pass ``--runs 4x1`` on a larger machine.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import resource
import subprocess
import sys
import tempfile
from datetime import datetime
from pathlib import Path

os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")  # before torch loads its OpenMP runtime

import torch  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from gsplat_py.training.config import apply_overrides, load_config  # noqa: E402
from gsplat_py.training.distributed import (  # noqa: E402
    DistributedTrainer,
    launch,
    process_group,
    processes_from_environment,
)
from gsplat_py.training.trainer import training_device  # noqa: E402


def worker(args: argparse.Namespace) -> None:
    """One process of a run: train, then write this rank's measurements to ``args.worker``/rank_R.json."""
    sys.stdout = open(os.devnull, "w")  # noqa: SIM115 (the trainer's evaluation lines; the table is the parent's)
    processes = processes_from_environment()
    config = apply_overrides(
        load_config(args.config),
        {
            "data.path": args.data,
            "train.steps": str(args.steps),
            "train.eval_every": "0",
            "train.save_every": "0",
            "train.save_renders": "false",
            "train.batch_size": str(args.batch_size),
            "train.output": str(Path(args.worker) / "run"),
        },
    )
    device = training_device(config.train.device)
    with process_group(processes, device, 600.0) if processes is not None else contextlib.nullcontext():
        _train_and_record(args, config, processes)


def _train_and_record(args: argparse.Namespace, config, processes) -> None:
    sent = {"bytes": 0, "counting": False}
    if processes is not None:
        all_to_all_single = torch.distributed.all_to_all_single

        def counting(output, tensor, output_split_sizes, input_split_sizes, **options):
            if sent["counting"]:  # what leaves this process: every block but its own
                row_bytes = tensor[0].numel() * tensor.element_size() if len(tensor) else 0
                sent["bytes"] += (len(tensor) - input_split_sizes[processes.rank]) * row_bytes
            return all_to_all_single(output, tensor, output_split_sizes, input_split_sizes, **options)

        torch.distributed.all_to_all_single = counting
    trainer = DistributedTrainer(config, processes, progress=False)
    step = trainer.train_step

    def counted_step():
        sent["counting"] = True
        try:
            return step()
        finally:
            sent["counting"] = False

    trainer.train_step = counted_step  # type: ignore[method-assign]
    records = trainer.train()
    rank = processes.rank if processes is not None else 0
    result = {
        "rank": rank,
        "steps_per_s": records[-1]["steps_per_s"],
        "psnr": records[-1]["psnr"],
        "ssim": records[-1]["ssim"],
        "num_gaussians": records[-1]["num_gaussians"],
        "rank_gaussians": len(trainer.params["means"]),
        "peak_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0,
        "bytes_sent_per_step": sent["bytes"] / args.steps,
        "threads": torch.get_num_threads(),
    }
    (Path(args.worker) / f"rank_{rank}.json").write_text(json.dumps(result))


def run(args: argparse.Namespace, processes: int, batch_size: int) -> dict:
    with tempfile.TemporaryDirectory(prefix="bench_distributed-") as folder:
        command = [
            sys.executable,
            str(Path(__file__).resolve()),
            "--worker",
            folder,
            "--data",
            args.data,
            "--config",
            args.config,
            "--steps",
            str(args.steps),
            "--batch-size",
            str(batch_size),
        ]
        status = launch(command, processes) if processes > 1 else subprocess.run(command).returncode
        if status != 0:
            raise SystemExit(f"the {processes}x{batch_size} run failed with status {status}")
        ranks = [json.loads((Path(folder) / f"rank_{r}.json").read_text()) for r in range(processes)]
    return {"processes": processes, "batch_size": batch_size, "ranks": ranks}


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--data", default=str(ROOT / "data" / "snowmiku"))
    parser.add_argument("--config", default="fast")
    parser.add_argument("--steps", type=int, default=1000)
    parser.add_argument(
        "--runs", default="1x1,1x2,2x1", help="processes x views per process, comma-separated"
    )
    parser.add_argument("--batch-size", type=int, default=1, help=argparse.SUPPRESS)
    parser.add_argument("--worker", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.worker:
        worker(args)
        return
    load = os.getloadavg()
    results = []
    print(
        f"{args.steps} steps of the {args.config!r} recipe on {args.data}; load average before: {load[0]:.2f}"
    )
    header = (
        "processes x views | batch | steps/s | PSNR (dB) | Gaussians per process | peak RSS per process (MB) "
        "| sent per step and process"
    )
    print(header)
    print("-" * len(header))
    for entry in args.runs.split(","):
        processes, batch_size = (int(x) for x in entry.split("x"))
        result = run(args, processes, batch_size)
        results.append(result)
        ranks = result["ranks"]
        gaussians = " / ".join(f"{r['rank_gaussians']:,}" for r in ranks)
        memory = " / ".join(f"{r['peak_rss_mb']:.0f}" for r in ranks)
        sent = " / ".join(f"{r['bytes_sent_per_step'] / 1e6:.2f} MB" for r in ranks)
        print(
            f"{processes} x {batch_size} | {processes * batch_size} | {ranks[0]['steps_per_s']:.2f} | "
            f"{ranks[0]['psnr']:.2f} | {gaussians} | {memory} | {sent}",
            flush=True,
        )
    out = ROOT / "bench_results" / f"bench_distributed-{datetime.now():%Y%m%d-%H%M%S}.json"
    out.parent.mkdir(exist_ok=True)
    record = {
        "steps": args.steps,
        "config": args.config,
        "data": args.data,
        "cpu_count": os.cpu_count(),
        "load_before": load,
        "load_after": os.getloadavg(),
        "runs": results,
    }
    out.write_text(json.dumps(record, indent=1) + "\n")
    print(f"wrote {out}")


if __name__ == "__main__":
    main()
