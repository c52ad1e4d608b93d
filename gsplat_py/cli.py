"""The ``gsplat-py`` command line.

    gsplat-py train [--data DIR] [--data-factor N] [--steps N] [--strategy default|mcmc] [--pose-opt]
                    [--config FILE|PRESET] [--output DIR] [--eval-every N] [--resume DIR] [--seed N]
                    [--section.key VALUE ...]
    gsplat-py eval --model RUN [--data DIR]

``train`` without ``--data`` trains the bundled sample scene. Options are applied in this order: the
defaults, the preset or file of ``--config`` (``--strategy mcmc`` alone selects the ``mcmc`` preset, with
its initialisation and regularisation; with ``--resume``, the run's saved config), the named flags above,
then ``--section.key VALUE`` overrides of any option (``configs/default.toml`` lists them all).

Exit status: 0 on success; 1 with a one-line message on stderr when the input or the run fails; 2 for a
command line that cannot be parsed; 130 when interrupted (files already saved stay complete).
"""

from __future__ import annotations

import argparse
import json
import sys
import warnings
from pathlib import Path
from typing import Optional, Sequence

__all__ = ["main"]

PROG = "gsplat-py"


def _one_line_warning(message, category, filename, lineno, line=None) -> str:
    return f"{PROG}: warning: {message}\n"


def _split_overrides(tokens: list[str], parser: argparse.ArgumentParser) -> dict[str, str]:
    """``--section.key VALUE`` / ``--section.key=VALUE`` pairs; anything else is a usage error."""
    overrides: dict[str, str] = {}
    i = 0
    while i < len(tokens):
        token = tokens[i]
        if not token.startswith("--") or "." not in token.split("=", 1)[0]:
            parser.error(f"unrecognized argument: {token}")
        if "=" in token:
            key, value = token[2:].split("=", 1)
            i += 1
        else:
            if i + 1 >= len(tokens):
                parser.error(f"{token} expects a value")
            key, value = token[2:], tokens[i + 1]
            i += 2
        overrides[key] = value
    return overrides


def _train_parser(subparsers) -> argparse.ArgumentParser:
    parser = subparsers.add_parser(
        "train", help="train Gaussians on a COLMAP scene",
        description="Train Gaussians on a COLMAP scene (images/ or images_N/ plus sparse/0/). Any option "
        "of configs/default.toml can also be set as --section.key VALUE.",
    )
    parser.add_argument("--data", help="scene folder (default: the bundled sample scene)")
    parser.add_argument("--data-factor", type=int, help="use images_N/ (downscale by N)")
    parser.add_argument("--steps", type=int, help="number of training steps")
    parser.add_argument("--strategy", choices=("default", "mcmc"), help="densification strategy")
    parser.add_argument("--pose-opt", action="store_true", default=None, help="optimise the camera poses")
    parser.add_argument("--config", help="a preset name (default, mcmc, fast) or a TOML file")
    parser.add_argument("--output", help="output folder (default: outputs/<scene>-<date>-<time>)")
    parser.add_argument("--eval-every", type=int, help="evaluate every N steps (and at the end)")
    parser.add_argument("--resume", metavar="RUN", help="continue the run in this output folder")
    parser.add_argument("--seed", type=int, help="random seed")
    parser.add_argument("--quiet", action="store_true", help="no progress bar")
    return parser


def _eval_parser(subparsers) -> argparse.ArgumentParser:
    parser = subparsers.add_parser(
        "eval", help="evaluate a trained run on its held-out views",
        description="Render the held-out views of a run's scene from its checkpoint, print the metrics "
        "record and write it to RUN/eval.json.",
    )
    parser.add_argument("--model", required=True, metavar="RUN", help="a training output folder (or its checkpoint.pt)")
    parser.add_argument("--data", help="scene folder (default: the one the run was trained on)")
    parser.add_argument("--split", choices=("test", "train"), default="test", help="which views to score")
    parser.add_argument("--no-renders", action="store_true", help="do not save the renders")
    return parser


def _named_overrides(args: argparse.Namespace) -> dict[str, str]:
    named = {
        "data.path": args.data,
        "data.data_factor": args.data_factor,
        "train.steps": args.steps,
        "strategy.name": args.strategy,
        "pose_opt.enabled": args.pose_opt,
        "train.output": args.output,
        "train.eval_every": args.eval_every,
        "train.seed": args.seed,
    }
    return {key: str(value) for key, value in named.items() if value is not None}


def _run_train(args: argparse.Namespace, overrides: dict[str, str]) -> int:
    from .training.config import apply_overrides, config_from_dict, load_config
    from .training.trainer import Trainer, load_checkpoint

    checkpoint = None
    if args.resume:
        if args.output and Path(args.output).resolve() != Path(args.resume).resolve():
            raise ValueError(f"--output {args.output} and --resume {args.resume} name different folders")
        checkpoint = load_checkpoint(args.resume)
        base = load_config(args.config) if args.config else config_from_dict(checkpoint["config"])
    else:
        preset = args.config or ("mcmc" if args.strategy == "mcmc" else None)
        base = load_config(preset)
    config = apply_overrides(base, {**_named_overrides(args), **overrides})
    if args.resume:
        config.train.output = args.resume
    trainer = Trainer(config, checkpoint=checkpoint, progress=not args.quiet)
    try:
        trainer.train()
    except KeyboardInterrupt:
        print(f"{PROG}: interrupted at step {trainer.step}; {trainer.last_checkpoint_note()}", file=sys.stderr)
        return 130
    print(f"{PROG}: done: {trainer.output}  (metrics.json, point_cloud.ply, checkpoint.pt)")
    return 0


def _run_eval(args: argparse.Namespace) -> int:
    from .data import load_colmap_scene
    from .io.atomic import write_text_atomically
    from .training.config import config_from_dict
    from .training.evaluation import evaluate_views, load_lpips
    from .training.trainer import BUNDLED_SCENE, load_checkpoint

    import torch

    checkpoint = load_checkpoint(args.model)
    run = Path(args.model) if Path(args.model).is_dir() else Path(args.model).parent
    config = config_from_dict(checkpoint["config"])
    data = config.data
    scene = load_colmap_scene(
        args.data or data.path or BUNDLED_SCENE, data_factor=data.data_factor, test_every=data.test_every,
        normalize=data.normalize, cache_dir=data.cache_dir,
    )
    if not torch.allclose(checkpoint["transform"].double(), scene.transform.double(), atol=1e-6):
        warnings.warn("the scene's normalisation differs from the run's: is this the data it was trained on?")
    views = scene.test_views if args.split == "test" else scene.train_views
    if not views:
        raise ValueError(f"{scene.root}: no {args.split} views (data.test_every={data.test_every})")
    params = {name: value for name, value in checkpoint["params"].items()}
    step = int(checkpoint["step"])
    sh_degree = min(step // config.model.sh_degree_interval, config.model.sh_degree)
    render_dir = None if args.no_renders else run / "eval_renders"
    result = evaluate_views(params, views, sh_degree, render_dir, load_lpips())
    elapsed = float(checkpoint["elapsed_s"])
    record = {
        "step": step,
        "split": args.split,
        **{k: v for k, v in result.items() if k != "views"},
        "num_gaussians": int(params["means"].shape[0]),
        "elapsed_s": round(elapsed, 3),
        "steps_per_s": round(step / elapsed, 3) if elapsed > 0 else None,
        "views": result["views"],
    }
    write_text_atomically(run / "eval.json", json.dumps(record, indent=1) + "\n")
    print(json.dumps(record, indent=1))
    return 0


def main(argv: Optional[Sequence[str]] = None) -> int:
    parser = argparse.ArgumentParser(prog=PROG, description="Differentiable 3D Gaussian splatting.")
    subparsers = parser.add_subparsers(dest="command", required=True)
    train_parser = _train_parser(subparsers)
    _eval_parser(subparsers)
    args, unknown = parser.parse_known_args(argv)
    if args.command != "train" and unknown:
        parser.error(f"unrecognized arguments: {' '.join(unknown)}")
    overrides = _split_overrides(unknown, train_parser) if args.command == "train" else {}

    warnings.formatwarning = _one_line_warning
    from .data import DatasetError
    from .io.colmap import ColmapError
    from .io.ply import PlyFormatError
    from .training.config import ConfigError
    from .training.trainer import TrainingError

    try:
        if args.command == "train":
            return _run_train(args, overrides)
        return _run_eval(args)
    except (ConfigError, DatasetError, ColmapError, PlyFormatError, TrainingError, ValueError, OSError) as error:
        print(f"{PROG}: error: {error}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print(f"{PROG}: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
