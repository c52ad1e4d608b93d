"""The ``gsplat-py`` command line: the only place that speaks of flags.

    gsplat-py train [--data DIR] [--data-factor N] [--steps N] [--strategy default|mcmc] [--pose-opt]
                    [--model-type 3dgs|2dgs] [--appearance] [--config FILE|PRESET] [--output DIR]
                    [--eval-every N] [--resume DIR] [--seed N] [--device auto|cpu|cuda] [--nproc N]
                    [--steps-scaler F] [--timeout S]
                    [--section.key VALUE ...]
    gsplat-py eval --model RUN [--data DIR] [--split test|train] [--no-renders] [--json] [--quiet]
    gsplat-py render --model RUN|FILE [--data DIR] [--split test|train | --path KIND | --cameras FILE]
                     [--frames N] [--width W] [--height H] [--focal-scale F] [--depth] [--alpha]
                     [--normals] [--depth-mode expected|median]
                     [--video [FILE]] [--output DIR] [--device auto|cpu|cuda] ...
    gsplat-py export --model RUN|FILE [--format ply|compressed-ply|spz|sog|splat|mesh] [--sh-degree N]
                     [--spz-version 3|4] [--sog-palette N] [--frame colmap|normalized] [--output FILE]
                     [--voxel-size V] [--mesh-resolution N] [--mesh-every N] [--sdf-trunc D] [--depth-trunc D]
    gsplat-py view --model RUN|FILE [--data DIR] [--port N] [--host ADDRESS] [--output DIR]
    gsplat-py sfm FOLDER [--matcher auto|exhaustive|sequential] [--camera-model MODEL] [--single-camera]
                  [--max-image-size N] [--max-features N] [--force] [--quiet]
    gsplat-py info

``train`` without ``--data`` trains the bundled sample scene. Options are applied in this order: the
defaults, the preset or file of ``--config`` (``--strategy mcmc`` alone selects the ``mcmc`` preset, with
its initialisation and regularisation; with ``--resume``, the run's saved config), the named flags above,
then ``--section.key VALUE`` overrides of any option (``gsplat_py/configs/default.toml`` lists them all).

``sfm`` computes the camera poses of a folder of photos (``gsplat_py.data.sfm``, through pycolmap) and writes
the COLMAP model beside them; ``train --data`` on a folder of photos without a model runs it first.

``render`` and ``export`` take a training output folder, its checkpoint.pt or a splat file (see
``gsplat_py.tools.saved_models`` for which world frame each is in, ``gsplat_py.tools.novel_views`` for what a
render writes, ``gsplat_py.tools.camera_paths`` for the paths and the camera file format,
``gsplat_py.tools.export`` for the formats). ``eval`` scores a run's checkpoint on its scene's views exactly
as ``render --split`` does. ``view`` serves a page to look at a model in the browser, and ``train --viewer``
one that follows the training run (``gsplat_py.tools.viewer``).

Exit status: 0 on success; 1 with a one-line message on stderr when the input or the run fails (an error no
check foresaw too: ``GSPLAT_PY_TRACEBACK=1`` shows its traceback); 2 for a command line that cannot be
parsed (argparse's usage errors); 130 when interrupted by Ctrl-C, 143 by SIGTERM (files already saved stay
complete, and a write under way leaves no temporary file). ``view`` (and ``train --viewer`` once training is
done) serves until Ctrl-C and then exits with 0.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import signal
import sys
import threading
import time
import warnings
from collections.abc import Iterator, Sequence
from dataclasses import replace
from pathlib import Path

from .data.sfm import MATCHERS, SFM_CAMERA_MODELS, SFM_INSTALL_HINT, SfmOptions
from .data.world_frame import FRAME_NAMES
from .errors import MissingPackageError, ParameterError
from .io.formats import format_of_name
from .io.spz import SPZ_INSTALL_HINT, SPZ_VERSION, SPZ_WRITE_VERSIONS
from .io.video import VIDEO_INSTALL_HINT, VIDEO_SUFFIX
from .model import MODEL_TYPES
from .rendering.pipeline_2dgs import DEPTH_MODES
from .tools.camera_paths import PATH_KINDS
from .tools.export import EXPORT_FORMATS
from .tools.mesh import MESH_FORMAT
from .tools.novel_views import DEFAULT_FRAMES, SPLITS
from .tools.tsdf import DEFAULT_RESOLUTION
from .tools.viewer import DEFAULT_HOST, DEFAULT_PORT, VIEWER_INSTALL_HINT
from .training.distributed import DEFAULT_TIMEOUT_S

__all__ = ["main"]

PROG = "gsplat-py"
TRACEBACK_VARIABLE = "GSPLAT_PY_TRACEBACK"  # set: an unexpected error shows its traceback

# The flag of each library parameter that errors may name (ParameterError), where the two differ.
FLAGS = {
    "batch_size": "--batch-size",
    "file_format": "--format",
    "focal_scale": "--focal-scale",
    "model_frame": "--model-frame",
    "data_factor": "--data-factor",
    "num_threads": "--threads",
    "timeout_s": "--timeout",
    "resolution": "--mesh-resolution",
    "view_step": "--mesh-every",
}


def _flag(parameter: str) -> str:
    return FLAGS.get(parameter, "--" + parameter.replace("_", "-"))


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
        "train",
        help="train Gaussians on a COLMAP scene (or a folder of photos)",
        description="Train Gaussians on a COLMAP scene (images/ or images_N/ plus sparse/0/), or on a folder "
        "of photos, whose camera poses are computed first. Any option of gsplat_py/configs/default.toml can "
        "also be set as --section.key VALUE.",
    )
    parser.add_argument(
        "--data",
        help="scene folder, or a folder of photos without a COLMAP model, which is posed first (as by "
        "`sfm`; default: the bundled sample scene)",
    )
    parser.add_argument("--data-factor", type=int, help="use images_N/ (downscale by N)")
    parser.add_argument("--steps", type=int, help="number of training steps")
    parser.add_argument("--strategy", choices=("default", "mcmc"), help="densification strategy")
    parser.add_argument(
        "--model-type",
        choices=MODEL_TYPES,
        help="3dgs (3D Gaussians, the default) or 2dgs (surfels: 2D Gaussian splatting, with its normal and "
        "distortion losses, surfel.*)",
    )
    parser.add_argument("--pose-opt", action="store_true", default=None, help="optimise the camera poses")
    parser.add_argument(
        "--appearance",
        action="store_true",
        default=None,
        help="learn a colour transform per training image (exposure, white balance), for the loss only",
    )
    parser.add_argument("--config", help="a preset name (default, mcmc, fast) or a TOML file")
    parser.add_argument("--output", help="output folder (default: outputs/<scene>-<date>-<time>)")
    parser.add_argument("--eval-every", type=int, help="evaluate every N steps (and at the end)")
    parser.add_argument("--resume", metavar="RUN", help="continue the run in this output folder")
    parser.add_argument("--seed", type=int, help="random seed")
    parser.add_argument(
        "--device",
        help="cpu, cuda, cuda:N, or auto: the GPU when gsplat_py's CUDA kernels are built "
        "(the default, train.device)",
    )
    parser.add_argument("--quiet", action="store_true", help="no progress bar")
    parser.add_argument(
        "--nproc",
        type=int,
        default=1,
        help="train on N processes on this machine, sharing the Gaussians (each renders train.batch_size "
        "views a step; under torchrun, WORLD_SIZE sets the number)",
    )
    parser.add_argument(
        "--steps-scaler",
        type=float,
        help="multiply the step counts and schedules (steps, evaluation, SH degree, refinement) by F, as "
        "gsplat's steps_scaler: 1/B for B views a step (--nproc x train.batch_size)",
    )
    parser.add_argument(
        "--timeout",
        type=float,
        default=DEFAULT_TIMEOUT_S,
        help=f"with several processes: seconds a process waits for the others before stopping the run "
        f"(default: {DEFAULT_TIMEOUT_S:g})",
    )
    parser.add_argument(
        "--viewer",
        action="store_true",
        help=f"follow the run in the browser (port --port), and keep serving when done until Ctrl-C; needs: "
        f"{VIEWER_INSTALL_HINT}",
    )
    _server_arguments(parser)
    return parser


def _server_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--port",
        type=int,
        default=DEFAULT_PORT,
        help=f"the viewer's port (default: {DEFAULT_PORT}; 0: any free one)",
    )
    parser.add_argument(
        "--host",
        default=DEFAULT_HOST,
        help=f"the address the viewer listens on (default: {DEFAULT_HOST}, this machine only; 0.0.0.0: all)",
    )


def _model_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--model",
        required=True,
        metavar="RUN|FILE",
        help="a training output folder, its checkpoint.pt, or a splat file: .ply (Inria or compressed), "
        ".spz, .sog, .splat",
    )
    parser.add_argument(
        "--model-frame",
        choices=FRAME_NAMES,
        help="the world frame of a file that does not record one (default: its run's in a run folder, "
        "else colmap, as the Inria code and most 3DGS implementations train in)",
    )
    parser.add_argument("--data", help="scene folder (default: the one the run was trained on)")
    parser.add_argument("--data-factor", type=int, help="use images_N/ (default: the run's, else 4)")


def _device_argument(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--device",
        default="auto",
        help="cpu, cuda, cuda:N, or auto: the GPU when gsplat_py's CUDA kernels are built (default)",
    )


def _eval_parser(subparsers) -> argparse.ArgumentParser:
    parser = subparsers.add_parser(
        "eval",
        help="re-score a trained run on its held-out views",
        description="Score a run's checkpoint on its scene's test (or training) views, as `render --split` "
        "scores them: prints the mean PSNR/SSIM, writes the record to RUN/eval.json and the renders to "
        "RUN/eval_renders/. To score a PLY, use `render --model PLY --data SCENE --split test`.",
    )
    parser.add_argument(
        "--model", required=True, metavar="RUN", help="a training output folder (or its checkpoint.pt)"
    )
    parser.add_argument("--data", help="scene folder (default: the one the run was trained on)")
    parser.add_argument("--split", choices=SPLITS, default="test", help="which views to score")
    parser.add_argument("--no-renders", action="store_true", help="do not save the renders")
    parser.add_argument("--json", action="store_true", help="print the whole record as JSON")
    parser.add_argument("--quiet", action="store_true", help="no progress bar")
    _device_argument(parser)
    return parser


def _background(text: str) -> tuple[float, float, float]:
    try:
        values = tuple(float(v) for v in text.split(","))
    except ValueError:
        values = ()
    if len(values) != 3 or not all(0.0 <= v <= 1.0 for v in values):
        raise argparse.ArgumentTypeError(
            f"expected R,G,B with each value in [0, 1] (e.g. 1,1,1), got {text!r}"
        )
    return (values[0], values[1], values[2])


def _render_parser(subparsers) -> argparse.ArgumentParser:
    parser = subparsers.add_parser(
        "render",
        help="render a model: test views with metrics, camera paths, video, depth",
        description="Render a trained model from a scene's views (scored against the photos: "
        "metrics.json), a camera path fitted to the training cameras, or the cameras of a JSON file. Writes "
        "PNG frames, cameras.json (replay with --cameras) and contact_sheet.png, optionally depth, alpha and "
        "an MP4.",
    )
    _model_arguments(parser)
    which = parser.add_mutually_exclusive_group()
    which.add_argument(
        "--split", choices=SPLITS, help="render the scene's test or training views (default: test)"
    )
    which.add_argument(
        "--path",
        choices=SPLITS + PATH_KINDS,
        help="the views of a split, or a path fitted to the training cameras",
    )
    which.add_argument(
        "--cameras", metavar="FILE", help="the cameras of a JSON file (format: docs/architecture.md)"
    )
    parser.add_argument("--frames", type=int, help=f"frames of a generated path (default: {DEFAULT_FRAMES})")
    parser.add_argument("--width", type=int, help="image width (alone: keeps the aspect ratio)")
    parser.add_argument("--height", type=int, help="image height (alone: keeps the aspect ratio)")
    parser.add_argument("--focal-scale", type=float, default=1.0, help="multiply the focal lengths (zoom)")
    parser.add_argument("--depth", action="store_true", help="also write depth (colour-mapped PNG and .npy)")
    parser.add_argument("--alpha", action="store_true", help="also write the opacity as a PNG")
    parser.add_argument(
        "--normals",
        action="store_true",
        help="also write the normals (2DGS models): world-space normal-map PNG and .npy",
    )
    parser.add_argument(
        "--depth-mode",
        choices=DEPTH_MODES,
        default="expected",
        help="which depth --depth writes: expected (the default) or median (2DGS models)",
    )
    parser.add_argument(
        "--video",
        metavar="FILE",
        nargs="?",
        const="",
        help=f"also encode the frames as an H.264 {VIDEO_SUFFIX} (default file: OUTPUT/<path>{VIDEO_SUFFIX}; "
        f"needs: {VIDEO_INSTALL_HINT})",
    )
    parser.add_argument("--fps", type=float, default=30.0, help="video frame rate (default: 30)")
    parser.add_argument(
        "--background",
        type=_background,
        default=(0.0, 0.0, 0.0),
        metavar="R,G,B",
        help="background colour, values in [0, 1] (default: 0,0,0 as in training)",
    )
    parser.add_argument("--batch-size", type=int, default=4, help="cameras rendered per call (default: 4)")
    _device_argument(parser)
    parser.add_argument(
        "--output",
        help="output folder (default: RUN/renders/<path> for a run or a PLY in a run folder, else "
        "<ply folder>/<ply stem>_renders/<path>)",
    )
    parser.add_argument("--overwrite", action="store_true", help="replace existing output files")
    parser.add_argument("--quiet", action="store_true", help="no progress bar")
    return parser


def _export_parser(subparsers) -> argparse.ArgumentParser:
    parser = subparsers.add_parser(
        "export",
        help="export a model as a PLY, compressed PLY, SPZ, SOG or .splat file",
        description="Write a trained model as an Inria-layout PLY, or for web viewers as a compressed PLY, "
        "SPZ, SOG or .splat file, optionally with its SH cut to a lower degree and moved into COLMAP's "
        "frame or the normalised one. Prints the file's size and how much smaller it is than the PLY.",
    )
    _model_arguments(parser)
    parser.add_argument(
        "--format",
        choices=(*EXPORT_FORMATS, MESH_FORMAT),
        help="file format (default: from --output's extension); mesh: a triangle mesh (PLY) of the surface, "
        "by TSDF fusion of the depth rendered in the training views (a 2DGS model's median depth)",
    )
    parser.add_argument("--sh-degree", type=int, help="cut the SH to this degree (default: the model's)")
    parser.add_argument(
        "--spz-version",
        type=int,
        choices=SPZ_WRITE_VERSIONS,
        default=SPZ_VERSION,
        help=f"SPZ version to write (default: {SPZ_VERSION}, zstd: needs {SPZ_INSTALL_HINT}; 3: gzip, read "
        "by older viewers)",
    )
    parser.add_argument(
        "--sog-palette",
        type=int,
        metavar="N",
        help="entries of the SOG's SH palette, up to 65536: more is closer to the model and larger "
        "(default: about one per 16 Gaussians)",
    )
    parser.add_argument(
        "--voxel-size",
        type=float,
        help="mesh: TSDF voxel size in world units (default: the surface's extent / --mesh-resolution)",
    )
    parser.add_argument(
        "--mesh-resolution",
        type=int,
        default=DEFAULT_RESOLUTION,
        help=f"mesh: voxels along the longest side of the surface without --voxel-size (default: "
        f"{DEFAULT_RESOLUTION})",
    )
    parser.add_argument(
        "--mesh-every",
        type=int,
        default=1,
        metavar="N",
        help="mesh: fuse every N-th training view (default: 1, all of them)",
    )
    parser.add_argument(
        "--sdf-trunc", type=float, help="mesh: TSDF truncation distance in world units (default: 5 voxels)"
    )
    parser.add_argument(
        "--depth-trunc",
        type=float,
        help="mesh: ignore depths beyond this distance from the camera (default: twice the cameras' extent)",
    )
    parser.add_argument(
        "--frame", choices=FRAME_NAMES, help="world frame to export in (default: the model's)"
    )
    parser.add_argument(
        "--output",
        help="output file (default: RUN/point_cloud_<frame>.<suffix>, or beside the model's file)",
    )
    parser.add_argument("--overwrite", action="store_true", help="replace an existing output file")
    _device_argument(parser)
    return parser


def _view_parser(subparsers) -> argparse.ArgumentParser:
    parser = subparsers.add_parser(
        "view",
        help="look at a model in the browser",
        description="Serve an interactive viewer of a trained model (a run folder, its checkpoint.pt, an "
        "Inria PLY or a .splat file) and print its URL; every frame is rendered by gsplat_py on this "
        f"machine. Stop with Ctrl-C. Needs: {VIEWER_INSTALL_HINT}.",
    )
    _model_arguments(parser)
    _server_arguments(parser)
    _device_argument(parser)
    parser.add_argument(
        "--output",
        help="where 'Save view' writes view_NNN.png and .json (default: RUN/views, else "
        "<model folder>/<model stem>_views)",
    )
    return parser


def _sfm_parser(subparsers) -> argparse.ArgumentParser:
    defaults = SfmOptions()
    parser = subparsers.add_parser(
        "sfm",
        help="compute the camera poses of a folder of photos (structure from motion)",
        description="Pose the photos of FOLDER (FOLDER/images/ if it exists, else the images in FOLDER) with "
        "COLMAP's structure from motion, in process through pycolmap, and write the COLMAP model to "
        f"FOLDER/sparse/0. Needs pycolmap ({SFM_INSTALL_HINT}). A folder that already holds a model is left "
        "as it is unless --force.",
    )
    parser.add_argument("folder", metavar="FOLDER", help="a folder of photos")
    parser.add_argument(
        "--matcher",
        choices=MATCHERS,
        help=f"which photo pairs to match (default: {defaults.matcher}: exhaustive up to "
        f"{defaults.exhaustive_max_images} photos, else sequential, in name order)",
    )
    parser.add_argument(
        "--camera-model",
        choices=SFM_CAMERA_MODELS,
        help=f"COLMAP camera model (default: {defaults.camera_model})",
    )
    parser.add_argument(
        "--single-camera",
        action="store_true",
        default=None,
        help="one camera (intrinsics) for all photos (default: one per size, EXIF camera and focal length)",
    )
    parser.add_argument(
        "--max-image-size",
        type=int,
        help=f"longest side of the photos SIFT sees, in pixels (default: {defaults.max_image_size})",
    )
    parser.add_argument(
        "--max-features", type=int, help=f"SIFT features per photo (default: {defaults.max_features})"
    )
    parser.add_argument("--seed", type=int, help=f"random seed (default: {defaults.seed})")
    parser.add_argument("--threads", type=int, help="CPU threads (default: every core)")
    parser.add_argument("--force", action="store_true", help="recompute the model if the folder has one")
    parser.add_argument("--quiet", action="store_true", help="no progress bars")
    return parser


def _info_parser(subparsers) -> argparse.ArgumentParser:
    return subparsers.add_parser(
        "info",
        help="how gsplat_py was built: its backends and the kernels this CPU uses",
        description="Print the version, the torch it was built against, and which compiled backends "
        "load here.",
    )


# The option each named flag of `train` sets (argparse's dest -> dotted option).
TRAIN_FLAG_OPTIONS = {
    "data": "data.path",
    "data_factor": "data.data_factor",
    "steps": "train.steps",
    "strategy": "strategy.name",
    "model_type": "model.type",
    "pose_opt": "pose_opt.enabled",
    "appearance": "appearance.enabled",
    "output": "train.output",
    "eval_every": "train.eval_every",
    "seed": "train.seed",
    "device": "train.device",
}


def _named_overrides(args: argparse.Namespace) -> dict[str, str]:
    return {
        option: str(getattr(args, dest))
        for dest, option in TRAIN_FLAG_OPTIONS.items()
        if getattr(args, dest) is not None
    }


def _run_train(args: argparse.Namespace, overrides: dict[str, str]) -> int:
    from .training.checkpoint import load_checkpoint
    from .training.config import ConfigError, apply_overrides, config_from_dict, load_config
    from .training.distributed import (
        DistributedTrainer,
        check_batched_config,
        device_for_process,
        launch,
        process_group,
        processes_from_environment,
        quiet_unless_first,
        scale_steps,
    )
    from .training.trainer import Trainer, training_device

    def preset(name: str):
        try:
            return load_config(name)
        except ConfigError as error:
            raise ConfigError(f"--config {error}") from None

    checkpoint = None
    if args.resume and args.steps_scaler is not None:
        raise ValueError("--steps-scaler: the run to resume has its steps already (set --steps)")
    if args.resume:
        if args.output and Path(args.output).resolve() != Path(args.resume).resolve():
            raise ValueError(f"--output {args.output} and --resume {args.resume} name different folders")
        checkpoint = load_checkpoint(args.resume)
        base = preset(args.config) if args.config else config_from_dict(checkpoint["config"])
    else:
        name = args.config or ("mcmc" if args.strategy == "mcmc" else None)
        base = preset(name) if name is not None else load_config()
    named = _named_overrides(args)
    config = apply_overrides(base, {**named, **overrides})
    if args.steps_scaler is not None:
        config = scale_steps(config, args.steps_scaler)
    if args.resume:
        config.train.output = args.resume
    try:
        config.validate()
    except ConfigError as error:
        flags = [_flag(dest) for dest, option in TRAIN_FLAG_OPTIONS.items() if option == error.option]
        if flags and error.option in named and error.option not in overrides:
            raise ConfigError(f"{flags[0]}: {error}") from None
        raise
    processes = processes_from_environment()
    if processes is None and args.nproc != 1:
        if args.viewer:
            raise ValueError("--viewer: not available with several processes (--nproc)")
        check_batched_config(config, args.nproc)
        device_for_process(config.train.device, args.nproc - 1)  # before any process starts
        command = [sys.executable, "-m", "gsplat_py", *args.argv]
        return launch(
            command, args.nproc, args.timeout, lambda line: print(f"{PROG}: {line}", file=sys.stderr)
        )
    if args.viewer:
        from .tools.viewer import check_port_free, require_viser

        require_viser()
        check_port_free(args.host, args.port)  # before the scene loads; the viewer checks again
    if processes is not None:
        if args.nproc not in (1, processes.world_size):
            raise ValueError(
                f"--nproc {args.nproc}: this process is one of WORLD_SIZE={processes.world_size}"
            )
        quiet_unless_first(processes)
        with process_group(processes, training_device(config.train.device), args.timeout):
            return _train_and_report(
                DistributedTrainer(config, processes, checkpoint=checkpoint, progress=not args.quiet), args
            )
    if config.train.batch_size > 1:
        trainer: Trainer = DistributedTrainer(config, None, checkpoint=checkpoint, progress=not args.quiet)
    else:
        trainer = Trainer(config, checkpoint=checkpoint, progress=not args.quiet)
    return _train_and_report(trainer, args)


def _train_and_report(trainer, args: argparse.Namespace) -> int:
    """Train (with the live viewer on --viewer) and say where the results are; the command's exit status."""
    viewer = _live_viewer(trainer, args) if args.viewer else None
    try:
        trainer.train()
    except KeyboardInterrupt as interruption:
        print(
            f"{PROG}: interrupted at step {trainer.step}; {trainer.last_checkpoint_note()}", file=sys.stderr
        )
        return _interrupted_status(interruption)
    finally:
        if viewer is not None and trainer.step < trainer.config.train.steps:
            viewer.stop()
    print(f"{PROG}: done: {trainer.output}  (metrics.json, point_cloud.ply, checkpoint.pt)")
    if viewer is not None:
        print(f"{PROG}: the viewer still shows the run at {viewer.url}; Ctrl-C to stop", flush=True)
        _serve_until_interrupted(viewer)
    return 0


def _live_viewer(trainer, args: argparse.Namespace):
    from .data.world_frame import WorldFrame
    from .model import params_to_splats
    from .tools.camera_paths import cameras_from_views
    from .tools.viewer import LiveTraining, Viewer

    scene = trainer.scene
    frame = WorldFrame.normalized(scene.transform) if trainer.config.data.normalize else WorldFrame.colmap()
    viewer = Viewer(
        params_to_splats(trainer.params),
        frame,
        cameras_from_views(scene.train_views),
        [view.image.numpy() for view in scene.train_views],
        output=trainer.output / "views",
        device=str(trainer.device),
        host=args.host,
        port=args.port,
        title=f"gsplat_py · training {trainer.output.name}",
        max_sh_degree=trainer.config.model.sh_degree,
        model_type=trainer.config.model.type,
    )
    trainer.hooks.append(LiveTraining(viewer))
    print(f"{PROG}: viewer at {viewer.url}", flush=True)
    return viewer


def _serve_until_interrupted(viewer) -> None:
    try:
        while True:
            time.sleep(3600.0)
    except KeyboardInterrupt:
        pass
    finally:
        viewer.stop()
    print(f"{PROG}: viewer stopped", file=sys.stderr)


def _run_view(args: argparse.Namespace) -> int:
    from .data import DatasetError
    from .tools.camera_paths import cameras_from_views
    from .tools.saved_models import load_model, scene_views
    from .tools.viewer import Viewer, check_port_free, require_viser

    require_viser()
    check_port_free(args.host, args.port)
    model = load_model(args.model, args.model_frame)
    cameras, photos = [], []
    if model.run is not None or args.data:
        data = Path(args.data) if args.data else None
        try:
            model, scene = scene_views(model, data, args.data_factor, need="showing the training cameras")
            cameras = cameras_from_views(scene.train_views)
            photos = [view.image.numpy() for view in scene.train_views]
        except DatasetError as error:
            if data is not None:
                raise
            warnings.warn(
                f"the run's scene cannot be loaded, so no training cameras are shown: {error}", stacklevel=1
            )
    if args.output:
        output = Path(args.output)
    elif model.run is not None:
        output = model.run / "views"
    else:
        output = model.source.parent / f"{model.source.stem}_views"
    viewer = Viewer(
        model.splats,
        model.frame,
        cameras,
        photos,
        output=output,
        device=args.device,
        host=args.host,
        port=args.port,
        title=f"gsplat_py · {model.source.name}",
        model_type=model.model_type,
    )
    print(
        f"{PROG}: viewing {model.source} ({model.splats.num_gaussians:,} Gaussians, SH degree "
        f"{model.sh_degree}) at {viewer.url}; Ctrl-C to stop",
        flush=True,
    )
    _serve_until_interrupted(viewer)
    return 0


def _run_eval(args: argparse.Namespace) -> int:
    from .io.atomic import write_text_atomically
    from .tools.novel_views import RenderOptions, render_to_folder, score_views, select_cameras
    from .tools.saved_models import load_model
    from .training.checkpoint import CHECKPOINT_FILE, load_checkpoint

    checkpoint_path = Path(args.model)
    if format_of_name(checkpoint_path) is not None:
        raise ValueError(
            f"{checkpoint_path}: eval scores a training run's checkpoint (a run folder or its "
            f"{CHECKPOINT_FILE}); "
            f"to score a splat file use: {PROG} render --model {checkpoint_path} --data SCENE --split test"
        )
    load_checkpoint(checkpoint_path)  # a one-line error unless this is a run's checkpoint
    run = checkpoint_path if checkpoint_path.is_dir() else checkpoint_path.parent
    model = load_model(checkpoint_path)
    selection = select_cameras(model, args.split, data=Path(args.data) if args.data else None)
    options = RenderOptions(device=args.device, overwrite=True, progress=not args.quiet)
    if args.no_renders:
        record: dict | None = score_views(model, selection, options)
    else:
        record = render_to_folder(model, selection, run / "eval_renders", options)
    assert record is not None, "a split's views are scored"
    write_text_atomically(run / "eval.json", json.dumps(record, indent=1) + "\n")
    if args.json:
        print(json.dumps(record, indent=1))
    else:
        print(
            f"{PROG}: {run} at step {record['step']}: {args.split} PSNR {record['psnr']:.2f} dB, SSIM "
            f"{record['ssim']:.4f} over {len(record['views'])} views (eval.json)"
        )
    return 0


def _run_render(args: argparse.Namespace) -> int:
    from .tools.novel_views import RenderOptions, default_output, render_to_folder, select_cameras
    from .tools.saved_models import load_model

    model = load_model(args.model, args.model_frame)
    selection = select_cameras(
        model,
        path=args.path or args.split or "test",
        cameras_file=Path(args.cameras) if args.cameras else None,
        data=Path(args.data) if args.data else None,
        data_factor=args.data_factor,
        frames=args.frames,
        width=args.width,
        height=args.height,
        focal_scale=args.focal_scale,
    )
    output = Path(args.output) if args.output else default_output(model, selection)
    video = None
    if args.video is not None:
        video = Path(args.video) if args.video else output / f"{selection.name}{VIDEO_SUFFIX}"
    options = RenderOptions(
        depth=args.depth,
        depth_mode=args.depth_mode,
        normals=args.normals,
        alpha=args.alpha,
        video=video,
        fps=args.fps,
        batch_size=args.batch_size,
        background=args.background,
        overwrite=args.overwrite,
        progress=not args.quiet,
        device=args.device,
    )
    record = render_to_folder(model, selection, output, options)
    summary = f"{len(selection.cameras)} frames"
    if record is not None:
        summary += (
            f"; {record['split']} PSNR {record['psnr']:.2f} dB, SSIM {record['ssim']:.4f} in metrics.json"
        )
    if video is not None:
        summary += f"; video {video}"
    print(f"{PROG}: done: {output}  ({summary})")
    return 0


def _run_export(args: argparse.Namespace) -> int:
    from .tools.export import default_export_path, export_format, export_model, splats_in_frame
    from .tools.saved_models import load_model

    if args.format == MESH_FORMAT:
        return _run_export_mesh(args)
    file_format = export_format(args.format, Path(args.output) if args.output else None)
    model = load_model(args.model, args.model_frame)
    splats, frame = splats_in_frame(
        model, args.frame, Path(args.data) if args.data else None, args.data_factor
    )
    output = Path(args.output) if args.output else default_export_path(model, file_format, frame)
    if output.exists() and not args.overwrite:
        raise ValueError(f"--output {output}: the file exists; choose another --output or pass --overwrite")
    summary = export_model(
        splats,
        frame,
        output,
        file_format,
        args.sh_degree,
        args.spz_version,
        args.sog_palette,
        model_type=model.model_type,
    )
    size = _size_text(summary.size)
    if file_format != "ply":
        size += f", {summary.ratio:.1f}x smaller than the PLY ({_size_text(summary.ply_size)})"
    print(
        f"{PROG}: done: {output}  ({splats.num_gaussians:,} Gaussians, SH degree {summary.sh_degree}, "
        f"{frame.name} frame; {size})"
    )
    if summary.assumed_frame is not None and summary.assumed_frame != frame.name:
        print(
            f"{PROG}: note: a .{file_format} file records no world frame and render takes this one to be in "
            f"the {summary.assumed_frame} frame: render it with --model-frame {frame.name}"
        )
    return 0


def _run_export_mesh(args: argparse.Namespace) -> int:
    from .data.geometry import split_similarity
    from .tools.export import frame_move
    from .tools.mesh import MeshOptions, default_mesh_path, mesh_model, write_mesh
    from .tools.saved_models import load_model, scene_views

    model = load_model(args.model, args.model_frame)
    data = Path(args.data) if args.data else None
    model, scene = scene_views(model, data, args.data_factor, need="meshing (it renders the training views)")
    change, frame = frame_move(model, args.frame, data, args.data_factor)
    output = Path(args.output) if args.output else default_mesh_path(model, frame)
    if output.exists() and not args.overwrite:
        raise ValueError(f"--output {output}: the file exists; choose another --output or pass --overwrite")
    options = MeshOptions(
        voxel_size=args.voxel_size,
        sdf_trunc=args.sdf_trunc,
        depth_trunc=args.depth_trunc,
        resolution=args.mesh_resolution,
        view_step=args.mesh_every,
        device=args.device,
    )
    mesh = mesh_model(model, scene.train_views, options)
    if change is not None:
        scale, rotation, translation = split_similarity(change)
        mesh = replace(mesh, vertices=mesh.vertices @ (scale * rotation).T + translation)
    write_mesh(output, mesh, frame, model.model_type)
    print(
        f"{PROG}: done: {output}  ({len(mesh.vertices):,} vertices, {len(mesh.faces):,} triangles from "
        f"{len(scene.train_views[:: args.mesh_every])} training views of a {model.model_type} model, "
        f"{frame.name} frame)"
    )
    return 0


def _size_text(size: int) -> str:
    return f"{size / 1e6:.1f} MB" if size >= 100_000 else f"{size / 1e3:.1f} kB"


def _run_sfm(args: argparse.Namespace) -> int:
    from tqdm.auto import tqdm

    from .data.sfm import run_sfm

    named = {
        "matcher": args.matcher,
        "camera_model": args.camera_model,
        "single_camera": args.single_camera,
        "max_image_size": args.max_image_size,
        "max_features": args.max_features,
        "seed": args.seed,
        "num_threads": args.threads,
    }
    options = SfmOptions(**{name: value for name, value in named.items() if value is not None})
    result = run_sfm(args.folder, options, force=args.force, progress=not args.quiet, report=tqdm.write)
    if result.reused:
        print(
            f"{PROG}: {result.model_folder} already holds a COLMAP model ({result.summary()}); --force "
            "recomputes it"
        )
    else:
        total = sum(result.stage_seconds.values())
        print(f"{PROG}: done: {result.model_folder}  ({result.summary()}; {total / 60:.1f} min)")
    return 0


def _run_info() -> int:
    from . import __version__
    from .rendering import _backend

    for line in [f"gsplat_py {__version__}", *_backend.build_report()]:
        print(line)
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog=PROG, description="Differentiable 3D Gaussian splatting.")
    subparsers = parser.add_subparsers(dest="command", required=True)
    train_parser = _train_parser(subparsers)
    _eval_parser(subparsers)
    _render_parser(subparsers)
    _export_parser(subparsers)
    _view_parser(subparsers)
    _sfm_parser(subparsers)
    _info_parser(subparsers)
    args, unknown = parser.parse_known_args(argv)
    args.argv = list(sys.argv[1:] if argv is None else argv)  # what `train --nproc` runs in each process
    if args.command != "train" and unknown:
        parser.error(f"unrecognized arguments: {' '.join(unknown)}")
    overrides = _split_overrides(unknown, train_parser) if args.command == "train" else {}

    warnings.formatwarning = _one_line_warning
    with _terminate_like_ctrl_c():
        return _run(args, overrides)


class _Terminated(KeyboardInterrupt):
    """SIGTERM (``kill PID``), handled as Ctrl-C is: the write under way is abandoned cleanly."""


def _interrupted_status(interruption: KeyboardInterrupt) -> int:
    return 128 + (signal.SIGTERM if isinstance(interruption, _Terminated) else signal.SIGINT)


@contextlib.contextmanager
def _terminate_like_ctrl_c() -> Iterator[None]:
    def terminate(signum, frame):
        raise _Terminated()

    if threading.current_thread() is not threading.main_thread():  # only the main thread may set handlers
        yield
        return
    previous = signal.signal(signal.SIGTERM, terminate)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous)


def _run(args: argparse.Namespace, overrides: dict[str, str]) -> int:
    """The command, with every error that reaches here printed as one line."""
    from .data import DatasetError
    from .io.colmap import ColmapError
    from .io.ply import PlyFormatError
    from .training.checkpoint import TrainingError
    from .training.config import ConfigError

    commands = {
        "train": lambda: _run_train(args, overrides),
        "eval": lambda: _run_eval(args),
        "render": lambda: _run_render(args),
        "export": lambda: _run_export(args),
        "view": lambda: _run_view(args),
        "sfm": lambda: _run_sfm(args),
        "info": _run_info,
    }
    try:
        return commands[args.command]()
    except ParameterError as error:
        print(f"{PROG}: error: {error.render(_flag)}", file=sys.stderr)
        return 1
    except OSError as error:  # a file that cannot be read or written: its path and the reason
        reason = error.strerror or str(error)
        print(
            f"{PROG}: error: {f'{error.filename}: {reason}' if error.filename else reason}", file=sys.stderr
        )
        return 1
    except (
        ConfigError,
        DatasetError,
        ColmapError,
        PlyFormatError,
        TrainingError,
        MissingPackageError,
        ValueError,
    ) as error:
        print(f"{PROG}: error: {error}", file=sys.stderr)
        return 1
    except KeyboardInterrupt as interruption:
        print(f"{PROG}: interrupted", file=sys.stderr)
        return _interrupted_status(interruption)
    except Exception as error:  # no check foresaw it (a bug?): still one line, the traceback on request
        if os.environ.get(TRACEBACK_VARIABLE):
            raise
        lines = str(error).strip().splitlines()
        print(
            f"{PROG}: error: unexpected {type(error).__name__}: {lines[0] if lines else ''} (please report "
            f"it; {TRACEBACK_VARIABLE}=1 shows where it happened)",
            file=sys.stderr,
        )
        return 1


if __name__ == "__main__":
    sys.exit(main())
