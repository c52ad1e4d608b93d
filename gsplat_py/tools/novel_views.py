"""Rendering a saved model from any cameras: a scene's views (scored against their photos), generated paths,
camera files; PNG frames, depth, alpha, a contact sheet and an MP4 video.

    model = load_model("outputs/run")                                    # gsplat_py.saved_models
    selection = select_cameras(model, "ellipse", frames=120)             # cameras in the model's frame
    record = render_to_folder(model, selection, Path("out"), RenderOptions(depth=True, video=Path("a.mp4")))

Cameras and model must be in one world frame (`gsplat_py.frames`). A scene's views are loaded in the frame
the model is in (COLMAP's, or the normalised one) and moved into the model's exact frame when its recorded
normalisation differs from the scene's (a warning: is it the same data?). A camera file that declares its
frame is moved into the model's; one that does not is taken to be in the model's frame.

An output folder holds ``images/<name>.png`` (the renders), ``depth/<name>.png`` (Turbo colour map, near
red; black where alpha < 0.5) and ``depth/<name>.npy`` (float32 [H, W] expected z-depth along the optical
axis, in the model's world units; 0 where nothing was hit) with ``depth``, ``alpha/<name>.png`` (8-bit
opacity) with ``alpha``, ``normals/<name>.png`` and ``.npy`` (a 2DGS model's world-space unit normals,
float32 [H, W, 3], 0 where nothing was hit; the PNG maps each axis from -1..1 to 0..255) with ``normals``,
``contact_sheet.png`` (up to 16 frames, evenly spaced), ``cameras.json`` (the
cameras used, in `gsplat_py.camera_paths`'s format: ``--cameras`` replays them) and, when the cameras are a
scene's views, ``metrics.json``: the evaluation record of training (`gsplat_py.training.evaluation`) with
``model`` added. A view's ``<name>`` is its image name without extension (``/`` replaced by ``__``).
"""

from __future__ import annotations

import json
import math
import os
import warnings
from collections.abc import Iterator, Sequence
from contextlib import ExitStack
from dataclasses import dataclass, replace
from pathlib import Path

import numpy as np
import torch
from torch import Tensor
from tqdm.auto import tqdm

from ..data import View
from ..data.world_frame import WorldFrame
from ..errors import ParameterError
from ..io.atomic import atomic_open, write_text_atomically
from ..io.images import DEPTH_MIN_ALPHA, DEPTH_PERCENTILES, colorize_depth, contact_sheet, write_png
from ..io.video import VIDEO_SUFFIX, VideoWriter, require_video_encoder
from ..model import GaussianSplats, rasterize_model
from ..rendering import resolve_device
from ..rendering.pipeline_2dgs import DEPTH_MODES
from ..training.checkpoint import METRICS_FILE
from ..training.evaluation import (
    evaluation_record,
    float_to_uint8,
    load_lpips,
    score_render,
    summarize_scores,
)
from .camera_paths import (
    PATH_KINDS,
    Camera,
    cameras_from_views,
    generate_path,
    read_cameras_json,
    resize_cameras,
    write_cameras_json,
)
from .frames import frame_change, transform_cameras
from .saved_models import SavedModel, scene_normalization, scene_views

__all__ = [
    "SPLITS",
    "RenderedFrame",
    "CameraSelection",
    "RenderOptions",
    "render_cameras",
    "check_render_memory",
    "depth_colour_range",
    "depth_image",
    "check_surfel_outputs",
    "normal_image",
    "select_cameras",
    "default_output",
    "render_to_folder",
    "score_views",
    "output_stem",
]

SPLITS = ("test", "train")
DEFAULT_FRAMES = 120
MAX_FRAMES = 100_000  # a generated path's frames (55 minutes at 30 fps); each is a camera in memory
CONTACT_SHEET_FRAMES = 16
# Memory one camera's pixel takes while its batch renders: the rendered channels and alpha, what the
# backward would need (final transmittance, last index), the expected-depth division's copy and the frame's
# clamped copy (~60 bytes with depth). A batch is refused when it needs more than half the free memory.
RENDER_BYTES_PER_PIXEL = 64


@dataclass
class RenderedFrame:
    """One camera's render: ``rgb`` float32 [H, W, 3] in [0, 1], ``alpha`` [H, W], ``depth`` [H, W] or
    None, ``normals`` (a 2DGS model's world-space unit normals [H, W, 3], 0 where nothing was hit) or
    None."""

    camera: Camera
    rgb: Tensor
    alpha: Tensor
    depth: Tensor | None
    normals: Tensor | None = None


def _batches(cameras: Sequence[Camera], batch_size: int) -> Iterator[list[Camera]]:
    """Runs of consecutive cameras of one image size (one rasterization call each), at most batch_size
    long."""
    batch: list[Camera] = []
    for camera in cameras:
        if batch and (
            len(batch) == batch_size or (camera.width, camera.height) != (batch[0].width, batch[0].height)
        ):
            yield batch
            batch = []
        batch.append(camera)
    if batch:
        yield batch


def depth_colour_range(
    splats: GaussianSplats, cameras: Sequence[Camera], max_points: int = 100_000
) -> tuple[float, float] | None:
    """One (near, far) for the colour-mapped depth of all ``cameras``, so that a depth video does not
    flicker: the 1st-99th percentiles of the camera-space depths of the opaque Gaussians' centres (a
    sample of at most ``max_points``) that are in front of a camera and inside its image. None when no
    such Gaussian exists (each frame then uses its own range)."""
    means = splats.means[splats.opacities() >= DEPTH_MIN_ALPHA].double()
    means = means[:: max(1, math.ceil(means.shape[0] / max_points))]
    visible_depths = []
    for camera in cameras:
        points = means @ camera.world_to_camera[:3, :3].T + camera.world_to_camera[:3, 3]
        z = points[:, 2]
        in_front = z > 1e-6
        u = camera.K[0, 0] * points[:, 0] / z + camera.K[0, 2]
        v = camera.K[1, 1] * points[:, 1] / z + camera.K[1, 2]
        visible_depths.append(z[in_front & (u >= 0) & (u < camera.width) & (v >= 0) & (v < camera.height)])
    depths = torch.cat(visible_depths) if visible_depths else torch.zeros(0)
    if depths.numel() == 0:
        return None
    near, far = np.percentile(depths.numpy(), DEPTH_PERCENTILES)
    return float(near), float(far)


def render_cameras(
    splats: GaussianSplats,
    cameras: Sequence[Camera],
    batch_size: int = 4,
    background: Sequence[float] = (0.0, 0.0, 0.0),
    depth: bool = False,
    device: torch.device | None = None,
    model_type: str = "3dgs",
    depth_mode: str = "expected",
    normals: bool = False,
) -> Iterator[RenderedFrame]:
    """Render ``splats`` (Gaussians of ``model_type``, at their SH degree) from each camera, in order, on
    ``device``; cameras of one size render ``batch_size`` at a time in one rasterizer call. ``depth_mode``
    "median" (2DGS only) gives the median depth instead of the expected one; ``normals`` (2DGS only) the
    normals."""
    if batch_size < 1:
        raise ValueError(f"batch_size must be a positive integer, got {batch_size}")
    check_surfel_outputs(model_type, depth_mode, normals)
    device = device if device is not None else torch.device("cpu")
    means, quats = splats.means.float().to(device), splats.quats.float().to(device)
    scales, opacities = splats.scales().float().to(device), splats.opacities().float().to(device)
    sh = splats.sh.float().to(device)
    for batch in _batches(cameras, batch_size):
        viewmats = torch.stack([camera.world_to_camera for camera in batch]).float().to(device)
        Ks = torch.stack([camera.K for camera in batch]).float().to(device)
        backgrounds = torch.tensor([list(background)] * len(batch), dtype=torch.float32, device=device)
        with torch.no_grad():
            colors, alphas, meta = rasterize_model(
                model_type,
                means,
                quats,
                scales,
                opacities,
                sh,
                viewmats,
                Ks,
                batch[0].width,
                batch[0].height,
                sh_degree=splats.sh_degree,
                backgrounds=backgrounds,
                render_mode="RGB+ED" if depth else "RGB",
            )
        depths = None
        if depth:
            depths = meta["render_median"][..., 0] if depth_mode == "median" else colors[..., 3]
        for index, camera in enumerate(batch):
            yield RenderedFrame(
                camera,
                colors[index, ..., :3].clamp(0.0, 1.0),
                alphas[index, ..., 0],
                depths[index] if depths is not None else None,
                torch.nn.functional.normalize(meta["render_normals"][index], dim=-1) if normals else None,
            )


def check_surfel_outputs(model_type: str, depth_mode: str, normals: bool) -> None:
    """ParameterError naming ``depth_mode`` or ``normals`` when the model cannot give them (median depth
    and normals come from a 2DGS model's surfels)."""
    if depth_mode not in DEPTH_MODES:
        raise ParameterError("depth_mode", f"expected one of {', '.join(DEPTH_MODES)}, got {depth_mode!r}")
    for parameter, asked in (("depth_mode", depth_mode == "median"), ("normals", normals)):
        if asked and model_type != "2dgs":
            raise ParameterError(
                parameter,
                f'needs a 2DGS model (trained with model.type = "2dgs"); this one is {model_type}',
            )


def normal_image(frame: RenderedFrame) -> np.ndarray:
    """The normal map of a frame rendered with normals (``normals/<name>.png``): uint8 [H, W, 3], each
    world axis from -1 to 1 as 0..255 (the usual normal-map colours), black where alpha < 0.5."""
    assert frame.normals is not None, "rendered with normals"
    colours = float_to_uint8(frame.normals * 0.5 + 0.5)
    colours[frame.alpha.cpu().numpy() < DEPTH_MIN_ALPHA] = 0
    return colours


def depth_image(frame: RenderedFrame, depth_range: tuple[float, float] | None) -> np.ndarray:
    """The colour-mapped depth of a frame rendered with depth (``depth/<name>.png``): uint8 [H, W, 3]."""
    assert frame.depth is not None, "rendered with depth"
    depth = frame.depth.cpu().numpy().astype(np.float32)
    return colorize_depth(depth, frame.alpha.cpu().numpy(), depth_range)


# --------------------------------------------------------------------------------------------------------
# Which cameras


@dataclass(frozen=True)
class CameraSelection:
    """Cameras in the model's world ``frame``, named ``name`` (for the default output folder); ``views`` are
    the scene views they are (same order) when the renders can be scored against their photos."""

    name: str
    cameras: list[Camera]
    frame: WorldFrame
    views: list[View] | None = None
    split: str | None = None


def _with_normalization(frame: WorldFrame, normalization: Tensor) -> WorldFrame:
    """``frame``, with ``normalization`` as its similarity when it does not know its own."""
    return WorldFrame.normalized(normalization) if frame.from_colmap is None else frame


def _check_positive(parameter: str, value: float | None) -> None:
    if value is not None and not (math.isfinite(value) and value > 0):
        raise ParameterError(parameter, f"{{{parameter}}} must be positive and finite, got {value}")


def _check_float32(cameras: Sequence[Camera]) -> None:
    """ParameterError when scaling made an intrinsic too large for the float32 the renderer works in."""
    for camera in cameras:
        if not bool(torch.isfinite(camera.K.float()).all()):
            raise ParameterError(
                "focal_scale",
                f"camera {camera.name!r}: the scaled focal length {float(camera.K[0, 0]):.3g} overflows "
                "float32; choose a smaller {focal_scale}",
            )


def select_cameras(
    model: SavedModel,
    path: str = "test",
    cameras_file: Path | None = None,
    data: Path | None = None,
    data_factor: int | None = None,
    frames: int | None = None,
    width: int | None = None,
    height: int | None = None,
    focal_scale: float = 1.0,
) -> CameraSelection:
    """The cameras to render ``model`` from: a camera file, a split of the scene (``path`` "test" or
    "train") or a generated path (``path`` in PATH_KINDS, fitted to the training views, ``frames`` long,
    default DEFAULT_FRAMES). ``width``, ``height`` and ``focal_scale`` change any of them; a split keeps its
    photos for scoring only while its cameras are unchanged. ParameterError for a bad argument."""
    for parameter, value in (
        ("focal_scale", focal_scale),
        ("width", width),
        ("height", height),
        ("frames", frames),
    ):
        _check_positive(parameter, value)
    if frames is not None and frames > MAX_FRAMES:
        raise ParameterError("frames", f"{{frames}} {frames}: at most {MAX_FRAMES:,} frames")
    if (cameras_file is not None or path in SPLITS) and frames is not None:
        raise ParameterError(
            "frames", "{frames} applies to generated paths ({path} ellipse, spiral or interpolate)"
        )
    resized = width is not None or height is not None or focal_scale != 1.0

    if cameras_file is not None:
        camera_file = read_cameras_json(cameras_file)
        cameras = camera_file.cameras
        model_frame = model.frame
        if camera_file.frame is not None:
            file_frame = camera_file.frame
            unknown = file_frame.from_colmap is None or model_frame.from_colmap is None
            if file_frame.name != model_frame.name and unknown:
                # the normalised one of the two frames is the scene's normalisation
                need = f"moving the cameras of {cameras_file} into its frame"
                normalization = scene_normalization(model, data, data_factor, need)
                file_frame = _with_normalization(file_frame, normalization)
                model_frame = _with_normalization(model_frame, normalization)
            change = frame_change(file_frame, model_frame, str(cameras_file))
            if change is not None:
                moved = transform_cameras(torch.stack([camera.world_to_camera for camera in cameras]), change)
                cameras = [replace(camera, world_to_camera=matrix) for camera, matrix in zip(cameras, moved)]
        resized_cameras = resize_cameras(cameras, width, height, focal_scale)
        _check_float32(resized_cameras)
        return CameraSelection(Path(cameras_file).stem, resized_cameras, model_frame)

    if path not in SPLITS + PATH_KINDS:
        raise ParameterError("path", f"expected one of {', '.join(SPLITS + PATH_KINDS)}, got {path!r}")
    need = f"rendering the {path} views" if path in SPLITS else f"{{path}} {path}"
    model, scene = scene_views(model, data, data_factor, need=need)
    if path in SPLITS:
        views = scene.test_views if path == "test" else scene.train_views
        if not views:
            raise ValueError(f"{scene.root}: the scene has no {path} views")
        if any(view.camera_model != "pinhole" for view in views):
            raise ValueError(
                f"{scene.root}: its {path} views are fisheye (OPENCV_FISHEYE) and render renders pinhole "
                "cameras; score them with eval"
            )
        cameras = resize_cameras(cameras_from_views(views), width, height, focal_scale)
        _check_float32(cameras)
        if resized:
            warnings.warn(
                "a new width, height or focal scale changes the views' cameras: no metrics (the photos do "
                "not match)",
                stacklevel=2,
            )
            return CameraSelection(path, cameras, model.frame)
        return CameraSelection(path, cameras, model.frame, views, path)
    if not scene.train_views:
        raise ValueError(f"{scene.root}: no training views to fit the {path} path to")
    training = cameras_from_views(scene.train_views)
    path_cameras = generate_path(path, training, frames or DEFAULT_FRAMES, width, height, focal_scale)
    _check_float32(path_cameras)
    return CameraSelection(path, path_cameras, model.frame)


# --------------------------------------------------------------------------------------------------------
# Writing the renders


@dataclass(frozen=True)
class RenderOptions:
    depth: bool = False  # depth/<name>.png and .npy
    depth_mode: str = "expected"  # or "median" (2DGS models): which depth depth/ holds
    normals: bool = False  # normals/<name>.png and .npy (2DGS models)
    alpha: bool = False  # alpha/<name>.png
    video: Path | None = None  # an H.264 .mp4 of the frames, in order
    fps: float = 30.0
    batch_size: int = 4  # cameras per rasterization call
    background: tuple[float, float, float] = (0.0, 0.0, 0.0)
    overwrite: bool = False  # replace files in an output folder / a video file that exist
    progress: bool = True
    device: str = (
        "auto"  # "cpu", "cuda", "cuda:N", or "auto": the GPU when gsplat_py's CUDA kernels are built
    )


def default_output(model: SavedModel, selection: CameraSelection) -> Path:
    """RUN/renders/<name> for a model from a training run, else <ply folder>/<ply stem>_renders/<name>."""
    if model.run is not None:
        return model.run / "renders" / selection.name
    return model.source.parent / f"{model.source.stem}_renders" / selection.name


def output_stem(name: str) -> str:
    """The file name (without extension) of a camera's outputs: its name without extension, ``/`` ->
    ``__``."""
    return Path(name.replace("/", "__").replace("\\", "__")).stem or "_"


def _free_memory(device: torch.device) -> int | None:
    """Bytes that can still be allocated on ``device`` (None when the system does not say): on the CPU the
    kernel's estimate of available memory, or what is left of a container's (cgroup v2) limit if less."""
    if device.type == "cuda":
        return int(torch.cuda.mem_get_info(device)[0])
    free = None
    try:
        with open("/proc/meminfo") as meminfo:
            for line in meminfo:
                if line.startswith("MemAvailable:"):
                    free = int(line.split()[1]) * 1024
    except (OSError, ValueError):
        try:
            free = os.sysconf("SC_AVPHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")
        except (ValueError, OSError, AttributeError):
            pass
    try:
        cgroup = Path("/sys/fs/cgroup")
        left = int((cgroup / "memory.max").read_text()) - int((cgroup / "memory.current").read_text())
        free = left if free is None else min(free, left)
    except (OSError, ValueError):  # no cgroup v2, or no limit ("max")
        pass
    return free


def check_render_memory(cameras: Sequence[Camera], batch_size: int, device: torch.device) -> None:
    """ParameterError, before anything is allocated, when a batch of the largest cameras would take more
    than half the memory free on ``device`` (`RENDER_BYTES_PER_PIXEL`)."""
    largest = max(cameras, key=lambda camera: camera.width * camera.height)
    needed = largest.width * largest.height * min(batch_size, len(cameras)) * RENDER_BYTES_PER_PIXEL
    free = _free_memory(device)
    if free is not None and needed > free // 2:
        raise ParameterError(
            "batch_size",
            f"rendering {min(batch_size, len(cameras))} {largest.width}x{largest.height} frames at a time "
            f"needs about {needed / 2**30:,.1f} GiB, more than half of the {free / 2**30:,.1f} GiB free on "
            f"{device}: choose a smaller {{width}} or {{height}}, or a {{batch_size}} of 1",
        )


def _check_outputs(output: Path, cameras: Sequence[Camera], options: RenderOptions) -> list[str]:
    if not cameras:
        raise ValueError("no cameras to render")
    if output.exists() and not output.is_dir():
        raise ParameterError("output", f"{{output}} {output}: exists and is not a folder")
    if output.is_dir() and any(output.iterdir()) and not options.overwrite:
        raise ParameterError(
            "output",
            f"{{output}} {output}: the folder already holds files; choose another {{output}} or pass "
            f"{{overwrite}}",
        )
    stems = [output_stem(camera.name) for camera in cameras]
    seen: dict[str, str] = {}
    for camera, stem in zip(cameras, stems):
        if stem in seen:
            raise ValueError(
                f"cameras {seen[stem]!r} and {camera.name!r} would write the same file {stem}.png"
            )
        seen[stem] = camera.name
    if options.batch_size < 1:
        raise ParameterError(
            "batch_size", f"{{batch_size}} must be a positive integer, got {options.batch_size}"
        )
    if len(options.background) != 3 or not all(0.0 <= v <= 1.0 for v in options.background):
        raise ParameterError("background", f"expected three values in [0, 1], got {list(options.background)}")
    if options.video is not None:
        if options.video.suffix.lower() != VIDEO_SUFFIX:
            raise ParameterError(
                "video",
                f"{{video}} {options.video}: expected a {VIDEO_SUFFIX} file name (the video is H.264 in MP4)",
            )
        require_video_encoder()
        if options.video.exists() and not options.overwrite:
            raise ParameterError(
                "video",
                f"{{video}} {options.video}: the file exists; choose another name or pass {{overwrite}}",
            )
        sizes = {(camera.width, camera.height) for camera in cameras}
        if len(sizes) > 1:
            raise ParameterError(
                "video",
                f"the frames have {len(sizes)} different sizes; a video needs one (set {{width}} or "
                f"{{height}})",
            )
        _check_positive("fps", options.fps)
    return stems


def render_to_folder(
    model: SavedModel, selection: CameraSelection, output: Path, options: RenderOptions | None = None
) -> dict | None:
    """Render ``selection`` into ``output`` (module docstring); returns the metrics record when the cameras
    are scene views (also written to metrics.json), else None. Everything is checked before rendering."""
    options = options if options is not None else RenderOptions()
    device = resolve_device(options.device)
    cameras = selection.cameras
    stems = _check_outputs(output, cameras, options)
    check_surfel_outputs(model.model_type, options.depth_mode, options.normals)
    check_render_memory(cameras, options.batch_size, device)
    folders = {"images": output / "images"}
    if options.depth:
        folders["depth"] = output / "depth"
    if options.normals:
        folders["normals"] = output / "normals"
    if options.alpha:
        folders["alpha"] = output / "alpha"
    for folder in folders.values():
        folder.mkdir(parents=True, exist_ok=True)
    write_cameras_json(output / "cameras.json", cameras, selection.frame)

    sheet_count = min(CONTACT_SHEET_FRAMES, len(cameras))
    sheet_indices = set(np.linspace(0, len(cameras) - 1, sheet_count).round().astype(int).tolist())
    thumbnails = []
    lpips = load_lpips() if selection.views is not None else None
    scores = []
    depth_range = depth_colour_range(model.splats, cameras) if options.depth else None
    frames = render_cameras(
        model.splats,
        cameras,
        options.batch_size,
        options.background,
        options.depth,
        device,
        model.model_type,
        options.depth_mode,
        options.normals,
    )
    with ExitStack() as stack:
        video = None
        if options.video is not None:
            options.video.parent.mkdir(parents=True, exist_ok=True)
            video = stack.enter_context(VideoWriter(options.video, options.fps))
        bar = stack.enter_context(
            tqdm(total=len(cameras), unit="frame", dynamic_ncols=True, disable=not options.progress)
        )
        for index, frame in enumerate(frames):
            rgb = float_to_uint8(frame.rgb)
            stem = stems[index]
            write_png(folders["images"] / f"{stem}.png", rgb)
            if frame.depth is not None:
                with atomic_open(folders["depth"] / f"{stem}.npy") as file:
                    np.save(file, frame.depth.cpu().numpy().astype(np.float32))
                write_png(folders["depth"] / f"{stem}.png", depth_image(frame, depth_range))
            if frame.normals is not None:
                with atomic_open(folders["normals"] / f"{stem}.npy") as file:
                    np.save(file, frame.normals.cpu().numpy().astype(np.float32))
                write_png(folders["normals"] / f"{stem}.png", normal_image(frame))
            if options.alpha:
                write_png(folders["alpha"] / f"{stem}.png", float_to_uint8(frame.alpha))
            if video is not None:
                video.add(rgb)
            if index in sheet_indices:
                thumbnails.append(rgb)
            if selection.views is not None:
                scores.append(score_render(frame.rgb, selection.views[index], lpips))
            bar.update(1)
    write_png(output / "contact_sheet.png", contact_sheet(thumbnails))
    if selection.views is None:
        return None
    record = _metrics_record(model, selection, scores, lpips is not None)
    write_text_atomically(output / METRICS_FILE, json.dumps(record, indent=1) + "\n")
    return record


def score_views(model: SavedModel, selection: CameraSelection, options: RenderOptions | None = None) -> dict:
    """The metrics record of ``model`` rendered from ``selection``'s scene views (the record
    :func:`render_to_folder` writes, value for value), writing no file."""
    options = options if options is not None else RenderOptions()
    if selection.views is None:
        raise ValueError(
            f"the {selection.name} cameras are not scene views: there are no photos to score against"
        )
    lpips = load_lpips()
    device = resolve_device(options.device)
    check_render_memory(selection.cameras, options.batch_size, device)
    frames = render_cameras(
        model.splats,
        selection.cameras,
        options.batch_size,
        options.background,
        False,
        device,
        model.model_type,
    )
    with tqdm(
        total=len(selection.cameras), unit="view", dynamic_ncols=True, disable=not options.progress
    ) as bar:
        scores = []
        for frame, view in zip(frames, selection.views):
            scores.append(score_render(frame.rgb, view, lpips))
            bar.update(1)
    return _metrics_record(model, selection, scores, lpips is not None)


def _metrics_record(
    model: SavedModel, selection: CameraSelection, scores: list[dict], with_lpips: bool
) -> dict:
    assert selection.split is not None, "scene views come with their split"
    result = summarize_scores(scores, with_lpips)
    return {
        "model": str(model.source),
        **evaluation_record(result, selection.split, model.splats.num_gaussians, model.step, model.elapsed_s),
    }
