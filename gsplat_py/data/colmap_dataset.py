"""Load a COLMAP scene folder as training and test views, following gsplat's and Inria's conventions.

    scene = load_colmap_scene("data/snowmiku", data_factor=4)
    view = scene.train_views[0]     # view.image uint8 [H, W, 3], view.K, view.world_to_camera
    scene.points, scene.point_colors, scene.scene_scale

The folder holds ``sparse/0/`` (or ``sparse/``) with a COLMAP model (.bin or .txt) and ``images/`` with
the images it registered (names relative to it); ``images_N/`` may hold them downscaled N times. A folder
without ``images/`` holds its photos itself, beside ``sparse/`` (as `gsplat_py.data.sfm` leaves a folder of
photos); only its top-level files are images then.

- Images: ``data_factor=1`` reads ``images/``. ``data_factor=N`` reads ``images_N/`` when it exists (a file
  with the registered name, or else the same name with another image extension, e.g. ``.png`` for
  ``.jpg``); otherwise it downscales ``images/`` (PIL Lanczos, to round(w / N) x round(h / N)) and caches
  the result. Images are RGB uint8 (grayscale expanded, alpha dropped). The intrinsics are scaled per axis
  by (image width / camera width, image height / camera height), whatever the folder. Pixels are read as
  stored, as COLMAP reads them, except for a model that `gsplat_py.data.sfm` made: its record
  (``SFM_RECORD_FILE`` beside the model) says it posed the photos with their EXIF orientation applied, and
  the loader applies it too.
- Cameras: SIMPLE_PINHOLE and PINHOLE are used as they are. OPENCV_FISHEYE images are kept as they are
  too (no crop): their views render with the rasterizer's fisheye model (``camera_model="fisheye"`` and
  the camera's k1..k4 as ``radial_coeffs``). SIMPLE_RADIAL, RADIAL, OPENCV and FULL_OPENCV images are
  undistorted (after downscaling) to a pinhole camera with the same focal lengths, cropped so that every
  pixel comes from inside the source (see `gsplat_py.cameras`), and cached. K always matches ``image``
  exactly, in COLMAP's (and the rasterizer's) pixel convention: the image's top-left corner at (0, 0),
  pixel centres at (i + 0.5, j + 0.5).
- Split: images sorted by name; with ``test_every = k > 0`` those at index % k == 0 are test views, the
  rest training views; ``test_every <= 0`` makes every view a training view.
- Scene check (`gsplat_py.data.scene_check`): cameras far outside the others and images whose size
  disagrees with their camera are outliers, left out of both splits (``drop_outlier_cameras``); SfM points
  far outside the cameras' region are left out of ``points`` (``drop_far_points``). The split is made
  before, over all registered images, so the other images keep their split.
- Normalisation (``normalize=True``): `gsplat_py.data.normalize`, computed from the inlier cameras and
  points only; ``transform`` maps COLMAP's world to the normalised one, and ``scene_scale`` is 1.1 times
  the largest distance of an inlier camera centre from their mean, in the normalised world. gsplat and
  Inria take the same "extent" over all cameras, so that one camera registered 1e6 units away sets it
  (and every learning rate and size threshold scaled by it) 1e5 times too large; without outliers the
  two are equal.

Cache: ``cache_dir``, else ``<root>/.gsplat_py_cache/`` if it can be written, else
``~/.cache/gsplat_py/<hash of the absolute root>``. Each entry is a lossless PNG, one per image, that
carries its key (a hash of the source file's path, size and modification time, the factor and the camera
parameters) and the pinhole intrinsics of its pixels; an entry whose key no longer matches is rebuilt.
Entries are written to a temporary file and renamed, so an interrupted load never leaves a broken one.

Every problem with the folder raises `DatasetError`, whose one-line message names the file or folder.
"""

from __future__ import annotations

import hashlib
import json
import os
import tempfile
import threading
import warnings
from collections import Counter
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
from PIL import Image as PILImage
from PIL import ImageOps
from PIL.PngImagePlugin import PngInfo
from torch import Tensor

from ..io.atomic import atomic_open
from ..io.colmap import ColmapError, ColmapModel, read_model
from ..io.colmap import Image as ColmapImage
from ..io.paths import PathLike
from .geometry import camera_extent, rigid_inverse
from .normalize import normalize_scene, transform_camera_to_world, transform_points
from .scene_check import SceneCheck, check_scene
from .undistort import FISHEYE_MODELS, SUPPORTED_MODELS, Intrinsics, Undistortion, plan_undistortion

__all__ = [
    "DatasetError",
    "IMAGE_EXTENSIONS",
    "SFM_RECORD_FILE",
    "SceneData",
    "View",
    "image_files",
    "load_colmap_scene",
    "model_folder",
    "photo_folder",
    "user_cache_folder",
]


IMAGE_EXTENSIONS = frozenset((".jpg", ".jpeg", ".png", ".bmp", ".tif", ".tiff", ".webp"))
IMAGES_FOLDER = "images"
# Written by gsplat_py.data.sfm beside the model files; the loader reads its "exif_orientation_applied".
SFM_RECORD_FILE = "gsplat_py_sfm.json"
CACHE_FOLDER_NAME = ".gsplat_py_cache"
# Bump when the cached pixels would change for the same inputs (resampling, undistortion algorithm).
CACHE_VERSION = 1
CACHE_KEY_FIELD = "gsplat_py.key"
CACHE_INTRINSICS_FIELD = "gsplat_py.intrinsics"
MAX_LOADER_THREADS = 8
# Downscaling each axis on its own (round(w / N), round(h / N)) changes the aspect ratio by at most about a
# pixel; more than this means the image does not show the camera's full frame (e.g. it was rotated).
ASPECT_TOLERANCE_PIXELS = 2.0
ASPECT_TOLERANCE_RELATIVE = 0.01
WARNING_EXAMPLES = 3


class DatasetError(ValueError):
    """A scene folder that cannot be loaded; the one-line message names the file or folder and the problem."""


@dataclass(eq=False)
class View:
    """One registered image, ready to train on or to evaluate against.

    ``index`` is its position among all registered images sorted by name, ``name`` its COLMAP name (its
    path relative to the images folder). ``image`` is uint8 [H, W, 3] RGB, undistorted and cropped (or a
    fisheye image as it is); ``K`` (float32 [3, 3]) the intrinsics of exactly these pixels;
    ``world_to_camera`` (float32 [4, 4]) maps the normalised world to the OpenCV camera frame (x right, y
    down, z forward). ``camera_model`` is rasterization's ("pinhole" or "fisheye"), ``radial_coeffs``
    (float32 [4], fisheye k1..k4, else None) its distortion.
    """

    index: int
    name: str
    image: Tensor = field(repr=False)
    K: Tensor = field(repr=False)
    world_to_camera: Tensor = field(repr=False)
    camera_model: str = "pinhole"
    radial_coeffs: Tensor | None = field(default=None, repr=False)

    @property
    def width(self) -> int:
        return self.image.shape[1]

    @property
    def height(self) -> int:
        return self.image.shape[0]

    def camera_to_world(self) -> Tensor:
        """The inverse of ``world_to_camera`` (float32 [4, 4])."""
        return rigid_inverse(self.world_to_camera)


@dataclass(eq=False)
class SceneData:
    """A loaded scene (see the module docstring for the conventions).

    ``points`` (float32 [P, 3]) are the SfM points in the normalised world and ``point_colors`` (float32
    [P, 3]) their colours in [0, 1]; ``transform`` (float64 [4, 4]) is the similarity x_normalised =
    transform @ x_colmap (the identity without normalisation); ``scene_scale`` the scene's extent;
    ``check`` what `gsplat_py.data.scene_check` found in the model (empty for a scene built in memory).
    """

    root: Path
    train_views: list[View]
    test_views: list[View]
    points: Tensor
    point_colors: Tensor
    transform: Tensor
    scene_scale: float
    data_factor: int
    check: SceneCheck = field(default_factory=SceneCheck)


def load_colmap_scene(
    root: PathLike,
    data_factor: int = 1,
    test_every: int = 8,
    normalize: bool = True,
    cache_dir: PathLike | None = None,
    drop_outlier_cameras: bool = True,
    drop_far_points: bool = True,
) -> SceneData:
    """Load the COLMAP scene in the folder ``root`` (conventions in the module docstring).

    ``data_factor`` downscales the images (images_N/ or a cached downscale of images/); ``test_every``
    holds out every k-th image (sorted by name) for testing, none if <= 0; ``normalize`` normalises the
    world frame as gsplat does; ``cache_dir`` overrides where downscaled and undistorted images are cached.
    ``drop_outlier_cameras`` leaves the cameras `gsplat_py.data.scene_check` finds out of both splits,
    ``drop_far_points`` the far points out of ``points``; the result's ``check`` says what it found.
    """
    if isinstance(data_factor, bool) or not isinstance(data_factor, int) or data_factor < 1:
        raise ValueError(f"data_factor must be a positive integer, got {data_factor!r}")
    root = Path(root)
    if not root.is_dir():
        problem = "not a folder" if root.exists() else "no such folder"
        raise DatasetError(f"{root}: {problem} (expected a COLMAP scene: sparse/ and images/)")
    models = model_folder(root)
    if models is None:
        raise DatasetError(
            f"{root / 'sparse'}: no such folder (expected the COLMAP model in sparse/0/ or sparse/; a folder "
            "of photos needs its camera poses computed first, by structure from motion)"
        )
    model = _read_model(models)
    registered = sorted(model.images.values(), key=lambda image: image.name)
    if not registered:
        raise DatasetError(f"{models}: the COLMAP model has no registered images")
    cameras = _camera_intrinsics(models, model, {image.camera_id for image in registered})

    names = [image.name for image in registered]
    image_folder, downscale = _image_folder(root, data_factor, names)
    paths = _locate_images(
        image_folder,
        names,
        models,
        stem_fallback=data_factor > 1 and not downscale,
        recursive=image_folder != root,
    )
    orient = _exif_orientation_applied(models)
    needs_cache = (
        downscale or orient or any(_needs_undistortion(cameras[image.camera_id]) for image in registered)
    )
    cache = _ImageCache(_cache_folder(root, cache_dir) / f"factor_{data_factor}") if needs_cache else None
    images_per_camera = Counter(image.camera_id for image in registered)
    loader = _ImageLoader(cameras, data_factor if downscale else 1, cache, images_per_camera, orient)
    jobs = [(image.name, path, image.camera_id) for image, path in zip(registered, paths)]
    executor = ThreadPoolExecutor(max_workers=min(MAX_LOADER_THREADS, os.cpu_count() or 1, len(jobs)))
    try:
        loaded = list(executor.map(lambda job: loader.load(*job), jobs))
    finally:
        # On an error (or Ctrl-C) skip the images not started yet; the ones being written finish atomically.
        executor.shutdown(cancel_futures=True)

    world_to_camera = np.stack([image.world_to_camera() for image in registered])
    camera_to_world = rigid_inverse(torch.from_numpy(world_to_camera)).numpy()
    check = _check_scene(registered, cameras, loaded, camera_to_world[:, :3, 3], model.points.xyz)
    check.cameras_kept, check.points_kept = not drop_outlier_cameras, not drop_far_points
    outliers = {finding.name for finding in check.outlier_cameras}
    inliers = np.array([name not in outliers for name in names], dtype=bool)
    near = ~check.far_points
    # The frame and the scale come from the inliers, whatever is kept: one outlier cannot change them.
    transform = normalize_scene(camera_to_world[inliers], model.points.xyz[near]) if normalize else np.eye(4)
    camera_to_world = transform_camera_to_world(transform, camera_to_world)
    kept_points = near if drop_far_points else np.ones(len(near), dtype=bool)
    points = transform_points(transform, model.points.xyz[kept_points])
    world_to_camera = rigid_inverse(torch.from_numpy(camera_to_world)).numpy()
    centres = camera_to_world[inliers, :3, 3]
    scene_scale = camera_extent(torch.from_numpy(centres))

    views = [
        View(
            index=index,
            name=image.name,
            image=pixels,
            K=intrinsics.K().to(torch.float32),
            world_to_camera=torch.from_numpy(world_to_camera[index]).to(torch.float32),
            **_lens(intrinsics),
        )
        for index, (image, (pixels, intrinsics)) in enumerate(zip(registered, loaded))
    ]
    # The split is over all registered images, so that leaving a camera out does not move the others.
    is_test = [test_every > 0 and view.index % test_every == 0 for view in views]
    used = [view for view, inlier in zip(views, inliers) if inlier or not drop_outlier_cameras]
    return SceneData(
        root=root,
        train_views=[view for view in used if not is_test[view.index]],
        test_views=[view for view in used if is_test[view.index]],
        points=torch.from_numpy(points).to(torch.float32),
        point_colors=torch.from_numpy(model.points.rgb[kept_points]).to(torch.float32) / 255.0,
        transform=torch.from_numpy(transform),
        scene_scale=scene_scale,
        data_factor=data_factor,
        check=check,
    )


def _check_scene(
    registered: list[ColmapImage],
    cameras: dict[int, Intrinsics],
    loaded: list[tuple[Tensor, Intrinsics]],
    centres: np.ndarray,
    points: np.ndarray,
) -> SceneCheck:
    """`check_scene` of the registered images (in COLMAP's frame); an image's scale is the focal length of
    its loaded pixels over its camera's (downscaling scales it, undistortion keeps it)."""
    camera_of = [cameras[image.camera_id] for image in registered]
    return check_scene(
        names=[image.name for image in registered],
        centres=centres,
        camera_sizes=np.array([(camera.width, camera.height) for camera in camera_of], dtype=np.int64),
        image_scales=np.array(
            [(pixels.fx / camera.fx, pixels.fy / camera.fy) for (_, pixels), camera in zip(loaded, camera_of)]
        ),
        observations=np.array([int((image.point3D_ids >= 0).sum()) for image in registered], dtype=np.int64),
        points=points,
    )


# --------------------------------------------------------------------------------------------------------
# The model


def _needs_undistortion(camera: Intrinsics) -> bool:
    """Whether the images of ``camera`` are undistorted to a pinhole camera (fisheye ones are kept)."""
    return not camera.is_pinhole and camera.model not in FISHEYE_MODELS


def _lens(intrinsics: Intrinsics) -> dict:
    """The View fields of the lens the pixels of ``intrinsics`` were taken with."""
    if intrinsics.model in FISHEYE_MODELS:
        return {
            "camera_model": "fisheye",
            "radial_coeffs": torch.tensor(intrinsics.distortion, dtype=torch.float32),
        }
    return {}


def model_folder(root: Path) -> Path | None:
    """The folder of the scene's COLMAP model: ``sparse/0/``, else ``sparse/``; None if neither exists."""
    for folder in (root / "sparse" / "0", root / "sparse"):
        if folder.is_dir():
            return folder
    return None


def _exif_orientation_applied(model_folder: Path) -> bool:
    """Whether the model's pixel coordinates are those of its photos turned by their EXIF orientation."""
    try:
        record = json.loads((model_folder / SFM_RECORD_FILE).read_text(encoding="utf-8"))
    except FileNotFoundError:
        return False
    except (OSError, ValueError) as error:
        raise DatasetError(
            f"{model_folder / SFM_RECORD_FILE}: not a readable JSON record ({error})"
        ) from None
    applied = record.get("exif_orientation_applied", False) if isinstance(record, dict) else None
    if not isinstance(applied, bool):
        raise DatasetError(
            f"{model_folder / SFM_RECORD_FILE}: exif_orientation_applied: expected true or false"
        )
    return applied


def _read_model(folder: Path) -> ColmapModel:
    try:
        return read_model(folder)
    except ColmapError as error:
        raise DatasetError(f"{folder}: {error}") from None


def _cameras_file(model_folder: Path) -> Path:
    """The cameras file `read_model` reads: the binary one when the whole binary model is there."""
    binary = all((model_folder / f"{name}.bin").is_file() for name in ("cameras", "images", "points3D"))
    return model_folder / ("cameras.bin" if binary else "cameras.txt")


def _camera_intrinsics(model_folder: Path, model: ColmapModel, camera_ids: set[int]) -> dict[int, Intrinsics]:
    """The intrinsics of the cameras in ``camera_ids``; DatasetError for a model we cannot undistort."""
    cameras = {}
    for camera_id in sorted(camera_ids):
        camera = model.cameras[camera_id]
        if camera.model not in SUPPORTED_MODELS:
            raise DatasetError(
                f"{_cameras_file(model_folder)}: camera {camera_id} has the unsupported model {camera.model} "
                f"(supported: {', '.join(SUPPORTED_MODELS)})"
            )
        cameras[camera_id] = Intrinsics.from_colmap(camera)
    return cameras


# --------------------------------------------------------------------------------------------------------
# Finding the images


def photo_folder(root: Path) -> Path:
    """The folder of a scene's full-size photos: ``images/`` if it is a folder, else the scene folder."""
    images = root / IMAGES_FOLDER
    return images if images.is_dir() else root


def _image_folder(root: Path, data_factor: int, names: list[str]) -> tuple[Path, bool]:
    """(folder, whether its images still need downscaling by data_factor) for the registered ``names``."""
    if data_factor > 1:
        downscaled = root / f"images_{data_factor}"
        if downscaled.is_dir():
            return downscaled, False
    folder = photo_folder(root)
    if folder == root and not any((root / name).is_file() for name in names):
        missing = f"neither images_{data_factor}/ nor images/ is" if data_factor > 1 else "images/ is not"
        raise DatasetError(
            f"{root}: {missing} a folder, and the folder itself holds none of the {len(names)} images the "
            "COLMAP model registers (expected images)"
        )
    return folder, data_factor > 1


def image_files(folder: Path, recursive: bool = True) -> list[str]:
    """The image files in ``folder`` (and its subfolders if ``recursive``) as sorted relative POSIX paths;
    hidden files and folders are left out."""
    files: list[str] = []
    for directory, subdirectories, names in os.walk(folder):
        subdirectories[:] = [name for name in subdirectories if recursive and not name.startswith(".")]
        relative = Path(directory).relative_to(folder)
        files.extend(
            (relative / name).as_posix()
            for name in names
            if not name.startswith(".") and Path(name).suffix.lower() in IMAGE_EXTENSIONS
        )
    return sorted(files)


def _locate_images(
    folder: Path, names: list[str], model_folder: Path, stem_fallback: bool, recursive: bool
) -> list[Path]:
    """The file of each registered image; DatasetError if any is missing, one warning for unregistered files.

    With ``stem_fallback`` (images_N/), a registered name may also match a file with the same path but
    another image extension, as when the downscaled copies are PNGs of JPEGs. ``recursive``: whether image
    files in subfolders count as the scene's (not for photos kept in the scene folder itself).
    """
    on_disk = image_files(folder, recursive)
    by_stem: dict[str, list[str]] = {}
    for file in on_disk:
        by_stem.setdefault(os.path.splitext(file)[0], []).append(file)
    used, missing = [], []
    for name in names:
        candidates = [name] if (folder / name).is_file() else []
        if not candidates and stem_fallback:
            candidates = by_stem.get(os.path.splitext(name)[0], [])
        if len(candidates) == 1:
            used.append(candidates[0])
        else:
            missing.append(name)
    if missing:
        others = f" ({len(missing) - 1} more registered images are missing)" if len(missing) > 1 else ""
        raise DatasetError(
            f"{folder / missing[0]}: no such file (registered in the COLMAP model in {model_folder}){others}"
        )
    unregistered = sorted(set(on_disk) - set(used))
    if unregistered:
        examples = ", ".join(unregistered[:WARNING_EXAMPLES])
        if len(unregistered) > WARNING_EXAMPLES:
            examples += ", ..."
        warnings.warn(
            f"{folder}: skipping {len(unregistered)} image file{'s' if len(unregistered) > 1 else ''} that "
            "the "
            f"COLMAP model does not register: {examples}",
            stacklevel=3,
        )
    return [folder / file for file in used]


# --------------------------------------------------------------------------------------------------------
# Loading (and caching) the images


def _cache_folder(root: Path, cache_dir: PathLike | None) -> Path:
    if cache_dir is not None:
        folder = Path(cache_dir)
        if not _is_writable_folder(folder):
            raise DatasetError(f"{folder}: cannot create or write the cache folder")
        return folder
    preferred = root / CACHE_FOLDER_NAME
    if _is_writable_folder(preferred):
        return preferred
    fallback = user_cache_folder(root)
    if not _is_writable_folder(fallback):
        raise DatasetError(f"{fallback}: cannot create or write the cache folder (nor {preferred})")
    return fallback


def user_cache_folder(root: Path) -> Path:
    """The cache folder of the scene ``root`` in the user's cache (used when ``root`` is not writable)."""
    root_hash = hashlib.sha256(str(root.resolve()).encode("utf-8")).hexdigest()[:16]
    return Path.home() / ".cache" / "gsplat_py" / root_hash


def _is_writable_folder(folder: Path) -> bool:
    try:
        folder.mkdir(parents=True, exist_ok=True)
        with tempfile.TemporaryFile(dir=folder):
            return True
    except OSError:
        return False


class _ImageCache:
    """PNG files under ``folder``, one per image name, each carrying its key and pinhole intrinsics."""

    def __init__(self, folder: Path):
        self.folder = folder

    def path(self, name: str) -> Path:
        relative = Path(f"{name}.png")
        if relative.is_absolute() or ".." in relative.parts:
            # A name that would point outside the cache folder (COLMAP does not forbid it) gets a flat,
            # hashed file name instead: the cache never writes anywhere but under its folder.
            return self.folder / "_outside_names" / f"{hashlib.sha1(name.encode()).hexdigest()}.png"
        return self.folder / relative

    def get(self, name: str, key: str) -> tuple[Tensor, Intrinsics] | None:
        """The cached (image, intrinsics) of ``name`` if its key is ``key``, else None."""
        try:
            with PILImage.open(self.path(name)) as png:
                if png.info.get(CACHE_KEY_FIELD) != key:
                    return None
                fx, fy, cx, cy = json.loads(png.info[CACHE_INTRINSICS_FIELD])
                pixels = _to_tensor(png.convert("RGB"))
        except Exception:  # absent, or damaged (PIL raises many types): rebuilt like a stale entry
            return None
        height, width = pixels.shape[:2]
        return pixels, Intrinsics("PINHOLE", width, height, fx, fy, cx, cy)

    def put(self, name: str, key: str, pixels: Tensor, intrinsics: Intrinsics) -> None:
        info = PngInfo()
        info.add_text(CACHE_KEY_FIELD, key)
        pinhole = [intrinsics.fx, intrinsics.fy, intrinsics.cx, intrinsics.cy]
        info.add_text(CACHE_INTRINSICS_FIELD, json.dumps(pinhole))
        path = self.path(name)
        path.parent.mkdir(parents=True, exist_ok=True)
        with atomic_open(path) as file:
            # Level 1: the cache is about load time; PNG stays lossless at every level.
            PILImage.fromarray(pixels.numpy()).save(file, format="PNG", pnginfo=info, compress_level=1)


class _UndistortionPlans:
    """The undistortion of each camera, computed once, shared by its images, dropped after its last one."""

    def __init__(self, images_per_camera: Counter):
        self._remaining = dict(images_per_camera)
        self._locks = {camera_id: threading.Lock() for camera_id in images_per_camera}
        self._plans: dict[int, Undistortion] = {}

    def get(self, camera_id: int, camera: Intrinsics) -> Undistortion:
        with self._locks[camera_id]:
            plan = self._plans.get(camera_id)
            if plan is None or plan.source != camera:  # a different image size gives a different plan
                plan = self._plans[camera_id] = plan_undistortion(camera)
            return plan

    def release(self, camera_id: int) -> None:
        with self._locks[camera_id]:
            self._remaining[camera_id] -= 1
            if self._remaining[camera_id] == 0:
                self._plans.pop(camera_id, None)


class _ImageLoader:
    """Decodes, downscales and undistorts one image at a time (thread-safe), through the cache."""

    def __init__(
        self,
        cameras: dict[int, Intrinsics],
        downscale: int,
        cache: _ImageCache | None,
        images_per_camera: Counter,
        orient: bool,
    ):
        """``cache`` may be None only if no image needs downscaling, undistorting or turning upright
        (``orient``: apply the EXIF orientation)."""
        self.cameras = cameras
        self.downscale = downscale
        self.cache = cache
        self.plans = _UndistortionPlans(images_per_camera)
        self.orient = orient

    def load(self, name: str, path: Path, camera_id: int) -> tuple[Tensor, Intrinsics]:
        """(uint8 [H, W, 3], pinhole intrinsics of those pixels) of the registered image ``name``."""
        try:
            return self._load(name, path, camera_id)
        finally:
            self.plans.release(camera_id)

    def _load(self, name: str, path: Path, camera_id: int) -> tuple[Tensor, Intrinsics]:
        if self.downscale == 1 and not _needs_undistortion(self.cameras[camera_id]) and not self.orient:
            pixels = _to_tensor(_decode(path, orient=False))  # used as it is: nothing to cache
            return pixels, self._camera_for(path, camera_id, pixels)
        key = self._cache_key(path, self.cameras[camera_id])
        assert self.cache is not None, (
            "a cache is given whenever an image is downscaled, undistorted or turned"
        )
        cached = self.cache.get(name, key)
        if cached is not None:
            pixels, intrinsics = cached
            if not _needs_undistortion(self.cameras[camera_id]):  # the cache stores pinhole intrinsics only
                intrinsics = self._camera_for(path, camera_id, pixels)
            return pixels, intrinsics
        image = _decode(path, self.orient)
        if self.downscale > 1:
            size = (max(1, round(image.width / self.downscale)), max(1, round(image.height / self.downscale)))
            image = image.resize(size, PILImage.Resampling.LANCZOS)
        pixels = _to_tensor(image)
        intrinsics = self._camera_for(path, camera_id, pixels)
        if _needs_undistortion(intrinsics):
            plan = self.plans.get(camera_id, intrinsics)
            pixels, intrinsics = plan.apply(pixels), plan.target
        self.cache.put(name, key, pixels, intrinsics)
        return pixels, intrinsics

    def _camera_for(self, path: Path, camera_id: int, pixels: Tensor) -> Intrinsics:
        """The camera resized to the image, after checking that the image shows the camera's whole frame."""
        camera = self.cameras[camera_id]
        height, width = pixels.shape[:2]
        expected_height = camera.height * width / camera.width
        if abs(height - expected_height) > ASPECT_TOLERANCE_PIXELS + ASPECT_TOLERANCE_RELATIVE * height:
            raise DatasetError(
                f"{path}: the image is {width}x{height} (after any downscaling) but camera {camera_id} is "
                f"{camera.width}x{camera.height}: the aspect ratios differ (rotated, or from another scene?)"
            )
        return camera.resized(width, height)

    def _cache_key(self, path: Path, camera: Intrinsics) -> str:
        stat = path.stat()
        source = {
            "version": CACHE_VERSION,
            "path": str(path.resolve()),
            "size": stat.st_size,
            "mtime_ns": stat.st_mtime_ns,
            "downscale": self.downscale,
            "undistorted": _needs_undistortion(camera),  # fisheye images were undistorted before
            "camera": [
                camera.model,
                camera.width,
                camera.height,
                camera.fx,
                camera.fy,
                camera.cx,
                camera.cy,
                *camera.distortion,
            ],
        }
        if self.orient:  # only then, so that the keys of existing caches stay valid
            source["exif_orientation_applied"] = True
        return hashlib.sha256(json.dumps(source, sort_keys=True).encode("utf-8")).hexdigest()


def _decode(path: Path, orient: bool) -> PILImage.Image:
    """The image at ``path`` as RGB (grayscale expanded, alpha dropped, palettes applied), turned by its
    EXIF orientation if ``orient``.

    DatasetError for a file that is not a complete image, and for one whose header claims more pixels than
    PIL decodes safely (``PIL.Image.MAX_IMAGE_PIXELS`` times 2, ~179 Mpixels: its decompression-bomb
    limit), before decoding it."""
    try:
        with PILImage.open(path) as image:
            return (ImageOps.exif_transpose(image) if orient else image).convert("RGB")
    except PILImage.DecompressionBombError as error:
        raise DatasetError(f"{path}: the image is too large to decode ({error})") from None
    except Exception as error:  # a damaged file raises OSError, SyntaxError, EOFError, zlib.error, ...
        message = str(error).splitlines()[0] if str(error) else type(error).__name__
        raise DatasetError(f"{path}: cannot read the image ({message})") from None


def _to_tensor(image: PILImage.Image) -> Tensor:
    return torch.from_numpy(np.array(image, dtype=np.uint8))
