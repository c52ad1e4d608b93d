"""Structure from motion in process: a folder of photos -> camera poses, intrinsics and a sparse point cloud,
written as a standard COLMAP model beside the photos, through pycolmap (COLMAP's own Python bindings, the
optional ``sfm`` extra; its PyPI wheels run SIFT on the CPU).

    result = run_sfm("my_photos")       # writes my_photos/sparse/0/{cameras,images,points3D}.bin
    result.registered, result.unregistered, result.num_points, result.mean_reprojection_error

The photos are ``FOLDER/images/`` when it exists (COLMAP's layout, subfolders included), else the image
files at the top of ``FOLDER`` (other files are ignored, with a note). The steps, each with a progress bar
and a one-line report (``report``):

1. photos: each photo is decoded (PIL), turned upright by its EXIF orientation, downscaled so that its
   longer side is at most ``max_image_size`` and saved losslessly into a hidden working folder beside the
   photos. A photo that cannot be decoded stops the run, naming the file.
2. features: COLMAP's SIFT, at most ``max_features`` per photo. Photos share a camera (intrinsics) when they
   have the same size and the same EXIF make, model and focal length (``single_camera``: one camera for
   all, which needs photos of one size); an EXIF 35 mm-equivalent focal length is the focal length's prior.
3. matching: ``exhaustive`` (every pair) or ``sequential`` (each photo, in name order, with the next
   ``sequential_overlap`` ones and those 2^k further on, as COLMAP's sequential matcher with quadratic
   overlap; no loop detection, which needs a vocabulary tree file). ``auto`` is exhaustive up to
   ``exhaustive_max_images`` photos, sequential beyond.
4. mapping: COLMAP's incremental mapper; of the models it builds, the one with the most photos is kept.
   Photos it cannot pose are listed (``unregistered``: training leaves them out); fewer than 3 posed photos
   is an error.
5. the model, scaled back to the photos' upright full size (cameras and keypoints; points and poses do not
   change), is written into ``FOLDER/sparse/0`` atomically (`gsplat_py.io.atomic.atomic_directory`), with
   ``SFM_RECORD_FILE`` beside it: the options, the timings, and that the poses are those of the photos
   turned by their EXIF orientation (so the loader turns them too; a tool that reads pixels as stored, as
   COLMAP does, sees photos with a non-trivial orientation turned the other way).

A folder that already holds a model (``sparse/0/`` or ``sparse/``) is reused unless ``force``: nothing is
recomputed and the result describes that model. Nothing is written until the model is complete: an error or
Ctrl-C leaves the folder as it was (the working folder is deleted).

Speed: the defaults (measured in BENCHMARKS.md) pose ~100 photos at 1000 px in a few minutes on 2 cores;
matching dominates, and grows with the number of pairs times the features per photo squared.
"""

from __future__ import annotations

import contextlib
import dataclasses
import hashlib
import json
import math
import os
import shutil
import signal
import threading
import time
from collections import Counter
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from PIL import Image as PILImage
from PIL import ImageOps
from tqdm.auto import tqdm

from .._version import __version__
from ..errors import MissingPackageError, ParameterError
from ..io.atomic import atomic_directory, write_text_atomically
from ..io.colmap import (
    CAMERA_MODELS_BY_NAME,
    Camera,
    ColmapError,
    ColmapModel,
    Image,
    Points3D,
    read_model,
    write_model,
)
from ..io.paths import PathLike
from .colmap_dataset import (
    IMAGE_EXTENSIONS,
    SFM_RECORD_FILE,
    DatasetError,
    image_files,
    model_folder,
    photo_folder,
)
from .geometry import fit_similarity
from .undistort import SUPPORTED_MODELS

__all__ = [
    "MATCHERS",
    "camera_centre_errors",
    "SFM_CAMERA_MODELS",
    "SFM_INSTALL_HINT",
    "SfmError",
    "SfmOptions",
    "SfmResult",
    "estimate_sfm_seconds",
    "existing_model",
    "PhotoFolder",
    "require_pycolmap",
    "run_sfm",
    "scan_photos",
]

SFM_INSTALL_HINT = "pip install pycolmap"
MIN_PYCOLMAP_VERSION = (4, 2)  # the API written against (pycolmap 4.2.1); setup.py's sfm extra says the same
MATCHERS = ("auto", "exhaustive", "sequential")
SFM_CAMERA_MODELS = SUPPORTED_MODELS  # the models COLMAP estimates and the loader undistorts
MIN_REGISTERED = 3
MODEL_SUBFOLDER = Path("sparse") / "0"
WORK_FOLDER_PREFIX = ".gsplat_py_sfm-"
EXIF_ORIENTATION, EXIF_MAKE, EXIF_MODEL = 0x0112, 0x010F, 0x0110
EXIF_IFD, EXIF_FOCAL_LENGTH, EXIF_FOCAL_LENGTH_35MM = 0x8769, 0x920A, 0xA405
FULL_FRAME_DIAGONAL_MM = math.hypot(36.0, 24.0)  # the 35 mm-equivalent focal length is defined by it
NOTE_EXAMPLES = 5
MAX_READER_THREADS = 8


class SfmError(DatasetError):
    """Photos that cannot be posed (too few, unreadable, not overlapping); the message names the folder or
    the file."""


@dataclass
class SfmOptions:
    """How `run_sfm` poses the photos (the module docstring explains each step)."""

    matcher: str = "auto"  # auto | exhaustive | sequential
    camera_model: str = "OPENCV"  # one of SFM_CAMERA_MODELS
    single_camera: bool = False  # one camera for every photo (they must share one size)
    max_image_size: int = 1000  # pixels, the longer side of the images SIFT sees
    max_features: int = 4096  # SIFT features per photo
    exhaustive_max_images: int = 100  # auto: exhaustive matching up to this many photos
    sequential_overlap: int = 10  # sequential: each photo is matched with the next this many
    seed: int = 0  # COLMAP's random seed (RANSAC, mapping)
    num_threads: int = 0  # 0: every core

    def validate(self) -> None:
        """ParameterError naming the first bad option."""
        if self.matcher not in MATCHERS:
            raise ParameterError("matcher", f"expected one of {', '.join(MATCHERS)}, got {self.matcher!r}")
        if self.camera_model not in SFM_CAMERA_MODELS:
            raise ParameterError(
                "camera_model", f"expected one of {', '.join(SFM_CAMERA_MODELS)}, got {self.camera_model!r}"
            )
        minimums = {
            "max_image_size": 64,
            "max_features": 64,
            "exhaustive_max_images": 0,
            "sequential_overlap": 1,
            "num_threads": 0,
        }
        for name, minimum in minimums.items():
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value < minimum:
                raise ParameterError(name, f"expected an integer >= {minimum}, got {value!r}")

    def matcher_for(self, num_photos: int) -> str:
        """The matcher used for ``num_photos`` photos (``auto`` resolved)."""
        if self.matcher != "auto":
            return self.matcher
        return "exhaustive" if num_photos <= self.exhaustive_max_images else "sequential"

    def threads(self) -> int:
        return self.num_threads or os.cpu_count() or 1


@dataclass
class SfmResult:
    """What `run_sfm` produced (or found, when ``reused``).

    ``photos`` are the image files considered (names relative to ``image_folder``), ``registered`` the ones
    the model poses, ``unregistered`` the others; ``ignored_files`` the non-image files left out.
    ``mean_reprojection_error`` is in pixels of the full-size photos, averaged over all observations.
    ``stage_seconds`` holds the time of each step (from the record of a reused model, when it has one).
    """

    folder: Path
    model_folder: Path
    image_folder: Path
    photos: list[str]
    registered: list[str]
    unregistered: list[str]
    ignored_files: list[str]
    num_points: int
    mean_reprojection_error: float
    matcher: str | None  # None for a reused model without a record
    reused: bool
    stage_seconds: dict[str, float] = field(default_factory=dict)

    def summary(self) -> str:
        """One line: photos posed, points, reprojection error."""
        return (
            f"{len(self.registered)} of {len(self.photos)} photos posed, {self.num_points:,} points, mean "
            f"reprojection error {self.mean_reprojection_error:.2f} px"
        )


# --------------------------------------------------------------------------------------------------------
# pycolmap


def require_pycolmap() -> Any:
    """The pycolmap module; MissingPackageError naming the pip command when it is missing or too old."""
    try:
        import pycolmap
    except ImportError:
        raise MissingPackageError(
            f"structure from motion needs pycolmap, COLMAP's Python bindings (gsplat_py's sfm extra): "
            f"{SFM_INSTALL_HINT}"
        ) from None
    version = tuple(int(part) for part in pycolmap.__version__.split(".")[:2] if part.isdigit())
    if version < MIN_PYCOLMAP_VERSION:
        wanted = ".".join(map(str, MIN_PYCOLMAP_VERSION))
        raise MissingPackageError(
            f"structure from motion needs pycolmap >= {wanted}, found {pycolmap.__version__}: "
            f"{SFM_INSTALL_HINT} --upgrade"
        )
    return pycolmap


@contextlib.contextmanager
def _quiet_colmap(pycolmap: Any) -> Iterator[None]:
    """COLMAP's log (a line per photo and per step, and errors such as "Failed to create any sparse model"
    that our own messages say better) is off while we show our own progress; its failures still raise."""
    previous = pycolmap.logging.minloglevel
    pycolmap.logging.minloglevel = pycolmap.logging.FATAL
    try:
        yield
    finally:
        pycolmap.logging.minloglevel = previous


@contextlib.contextmanager
def _cancel_on_interrupt(token: Any) -> Iterator[None]:
    """Ctrl-C cancels the COLMAP call in progress through ``token`` (then KeyboardInterrupt is raised), so
    that it stops within moments instead of at the call's end. Only the main thread receives signals, and
    a SIGINT handler other than Python's own (ignored, or the caller's) is left alone."""
    if (
        threading.current_thread() is not threading.main_thread()
        or signal.getsignal(signal.SIGINT) is not signal.default_int_handler
    ):
        yield
        return
    interrupted = []

    def cancel(signum, frame):
        interrupted.append(signum)
        token.cancel()

    previous = signal.signal(signal.SIGINT, cancel)
    try:
        yield
    except InterruptedError:  # what pycolmap raises for a cancelled call
        if not interrupted:
            raise
    finally:
        signal.signal(signal.SIGINT, previous)
    if interrupted:
        raise KeyboardInterrupt


# --------------------------------------------------------------------------------------------------------
# The folder


@dataclass
class PhotoFolder:
    """A folder of photos: ``photos`` are the image files of ``image_folder`` (``folder/images/`` if it
    exists, subfolders included, else ``folder``'s top-level files), as sorted relative names;
    ``ignored_files`` the other files there."""

    folder: Path
    image_folder: Path
    photos: list[str]
    ignored_files: list[str]


def scan_photos(folder: PathLike) -> PhotoFolder:
    """The photos of ``folder`` (SfmError if it is not a folder; there may be fewer than `run_sfm` needs)."""
    folder = Path(folder)
    if not folder.is_dir():
        problem = "not a folder" if folder.exists() else "no such folder"
        raise SfmError(f"{folder}: {problem} (expected a folder of photos)")
    image_folder = photo_folder(folder)
    recursive = image_folder != folder
    photos = image_files(image_folder, recursive)
    others: list[str] = []
    for directory, subdirectories, names in os.walk(image_folder):
        subdirectories[:] = [name for name in subdirectories if recursive and not name.startswith(".")]
        relative = Path(directory).relative_to(image_folder)
        others += [
            (relative / name).as_posix()
            for name in names
            if not name.startswith(".") and Path(name).suffix.lower() not in IMAGE_EXTENSIONS
        ]
    return PhotoFolder(folder, image_folder, photos, sorted(others))


def existing_model(folder: PathLike) -> Path | None:
    """The folder of the COLMAP model ``folder`` already holds (``sparse/0/`` or ``sparse/``), or None."""
    found = model_folder(Path(folder))
    if found is None:
        return None
    has_files = any((found / f"cameras{ext}").is_file() for ext in (".bin", ".txt"))
    return found if has_files else None


def _examples(names: list[str]) -> str:
    shown = ", ".join(names[:NOTE_EXAMPLES])
    return shown + (f" (and {len(names) - NOTE_EXAMPLES} more)" if len(names) > NOTE_EXAMPLES else "")


def _plural(count: int, noun: str) -> str:
    return f"{count:,} {noun}{'' if count == 1 else 's'}"


def _duration(seconds: float) -> str:
    if seconds < 90:
        return f"{seconds:.0f} s"
    return f"{seconds / 60:.1f} min"


# --------------------------------------------------------------------------------------------------------
# The estimate


# CPU seconds measured on the 2-core machine of BENCHMARKS.md (scripts/bench_sfm.py, the bundled photos at
# 1008x756 and 252x189): SIFT per megapixel SIFT sees; matching and verification per pair, a fixed part plus
# a part growing with the square of the megapixels (the features found grow with the area); mapping per photo.
_FEATURE_CPU_SECONDS_PER_MEGAPIXEL = 0.95
_MATCH_CPU_SECONDS_PER_PAIR = 0.002
_MATCH_CPU_SECONDS_PER_PAIR_PER_MEGAPIXEL_SQUARED = 0.083
_MAPPING_CPU_SECONDS_PER_PHOTO = 0.6


def estimate_sfm_seconds(photos: PhotoFolder, options: SfmOptions | None = None) -> float:
    """A rough estimate of `run_sfm`'s time on ``photos``, from the first photo's size (read from its
    header) and CPU timings on 2 cores, shared among ``options.threads()`` cores."""
    options = options or SfmOptions()
    count = len(photos.photos)
    if count == 0:
        return 0.0
    try:
        with PILImage.open(photos.image_folder / photos.photos[0]) as image:
            width, height = image.size
    except (OSError, ValueError, SyntaxError):
        width, height = 4, 3  # unreadable: run_sfm will say so; assume 4:3 photos larger than SIFT's size
    scale = min(1.0, options.max_image_size / max(width, height))
    megapixels = width * height * scale * scale / 1e6
    pairs = len(_pairs(count, options.matcher_for(count), options.sequential_overlap))
    cpu_seconds = (
        count * megapixels * _FEATURE_CPU_SECONDS_PER_MEGAPIXEL
        + pairs
        * (_MATCH_CPU_SECONDS_PER_PAIR + _MATCH_CPU_SECONDS_PER_PAIR_PER_MEGAPIXEL_SQUARED * megapixels**2)
        + count * _MAPPING_CPU_SECONDS_PER_PHOTO
    )
    return cpu_seconds / options.threads()


# --------------------------------------------------------------------------------------------------------
# Step 1: the photos


@dataclass
class _Photo:
    name: str  # relative to the image folder
    size: tuple[int, int]  # upright, full size
    work_size: tuple[int, int]  # what SIFT sees
    camera_key: tuple  # photos with equal keys share a camera
    focal_35mm: float | None
    digest: str
    work_name: str = ""  # its file in the working folder, relative to the working image folder


def _read_photo(path: Path, name: str, max_size: int, output: Path) -> _Photo:
    """Decode ``path`` upright, save it downscaled to ``output`` (PNG); OSError/ValueError if unreadable."""
    data = path.read_bytes()
    with PILImage.open(path) as image:
        exif = image.getexif()
        orientation = exif.get(EXIF_ORIENTATION, 1)
        raw_width, raw_height = image.size
        turned = orientation in (5, 6, 7, 8)
        width, height = (raw_height, raw_width) if turned else (raw_width, raw_height)
        scale = min(1.0, max_size / max(width, height))
        work_size = (max(1, round(width * scale)), max(1, round(height * scale)))
        if scale < 1.0:
            # JPEG: decode at a reduced scale directly (never below the target size), much faster.
            raw_target = (work_size[1], work_size[0]) if turned else work_size
            image.draft("RGB", raw_target)
        pixels = ImageOps.exif_transpose(image).convert("RGB")
    if pixels.size != work_size:
        pixels = pixels.resize(work_size, PILImage.Resampling.LANCZOS)
    pixels.save(output, format="PNG", compress_level=1)
    exif_details = exif.get_ifd(EXIF_IFD)
    focal = exif_details.get(EXIF_FOCAL_LENGTH)
    focal_35mm = exif_details.get(EXIF_FOCAL_LENGTH_35MM)
    camera_key = (
        width,
        height,
        exif.get(EXIF_MAKE),
        exif.get(EXIF_MODEL),
        None if focal is None else float(focal),
    )
    return _Photo(
        name=name,
        size=(width, height),
        work_size=work_size,
        camera_key=camera_key,
        focal_35mm=float(focal_35mm) if focal_35mm else None,
        digest=hashlib.blake2b(data, digest_size=16).hexdigest(),
    )


def _read_photos(scan: PhotoFolder, work: Path, options: SfmOptions, progress: bool) -> list[_Photo]:
    staging = work / "decoded"
    staging.mkdir()
    jobs = [
        (scan.image_folder / name, name, staging / f"{index:05d}.png")
        for index, name in enumerate(scan.photos)
    ]
    failures: list[tuple[str, str]] = []

    def read(job: tuple[Path, str, Path]) -> _Photo | None:
        path, name, output = job
        try:
            return _read_photo(path, name, options.max_image_size, output)
        # PIL raises the first three for broken files, the last for one too large to decode safely
        except (OSError, ValueError, SyntaxError, PILImage.DecompressionBombError) as error:
            failures.append((name, str(error) or type(error).__name__))
            return None

    threads = min(MAX_READER_THREADS, options.threads(), len(jobs))
    with (
        ThreadPoolExecutor(max_workers=threads) as executor,
        tqdm(total=len(jobs), desc="photos", unit="photo", disable=not progress, dynamic_ncols=True) as bar,
    ):
        photos = []
        for photo in executor.map(read, jobs):
            bar.update(1)
            photos.append(photo)
    if failures:
        failures.sort()
        name, reason = failures[0]
        others = (
            f" (and {len(failures) - 1} more: {_examples([n for n, _ in failures[1:]])})"
            if len(failures) > 1
            else ""
        )
        raise SfmError(
            f"{scan.image_folder / name}: cannot read the image ({reason}){others}; remove or replace it"
        )
    read_photos = [photo for photo in photos if photo is not None]
    sizes = Counter(photo.size for photo in read_photos)
    if options.single_camera and len(sizes) > 1:
        raise ParameterError(
            "single_camera", f"needs photos of one size; these have {len(sizes)}: {_sizes(sizes)}"
        )
    # Group into cameras: one folder per camera, as COLMAP's per-folder camera mode reads them.
    keys: dict[tuple, int] = {}
    for index, photo in enumerate(read_photos):
        key = ("all",) if options.single_camera else photo.camera_key
        camera = keys.setdefault(key, len(keys) + 1)
        photo.work_name = f"camera_{camera}/{index:05d}.png"
        target = work / "images" / photo.work_name
        target.parent.mkdir(parents=True, exist_ok=True)
        os.rename(staging / f"{index:05d}.png", target)
    return read_photos


# --------------------------------------------------------------------------------------------------------
# Step 2: features


def _features(
    pycolmap: Any, work: Path, photos: list[_Photo], options: SfmOptions, progress: bool
) -> list[int]:
    """SIFT features of every photo into the working database; the number found per photo."""
    database_path = work / "database.db"
    images = work / "images"
    names = [photo.work_name for photo in photos]
    reader = pycolmap.ImageReaderOptions()
    reader.camera_model = options.camera_model
    pycolmap.Database.open(database_path).close()
    pycolmap.import_images(
        database_path, images, camera_mode=pycolmap.CameraMode.PER_FOLDER, image_names=names, options=reader
    )
    _set_focal_priors(pycolmap, database_path, photos)
    extraction = pycolmap.FeatureExtractionOptions()
    extraction.num_threads = options.threads()
    extraction.max_image_size = options.max_image_size
    extraction.sift.max_num_features = options.max_features
    chunk = 4 * options.threads()  # a call per chunk, so that the bar moves and Ctrl-C stops between calls
    with tqdm(
        total=len(names), desc="features", unit="photo", disable=not progress, dynamic_ncols=True
    ) as bar:
        for start in range(0, len(names), chunk):
            token = pycolmap.CancellationToken()
            with _cancel_on_interrupt(token):
                pycolmap.extract_features(
                    database_path,
                    images,
                    image_names=names[start : start + chunk],
                    camera_mode=pycolmap.CameraMode.PER_FOLDER,
                    reader_options=reader,
                    extraction_options=extraction,
                    device=pycolmap.Device.auto,
                    cancellation_token=token,
                )
            bar.update(len(names[start : start + chunk]))
    database = pycolmap.Database.open(database_path)
    try:
        ids = {image.name: image.image_id for image in database.read_all_images()}
        return [database.num_keypoints_for_image(ids[name]) for name in names]
    finally:
        database.close()


def _prior_focal(photo: _Photo) -> float:
    """The focal length, in pixels of the downscaled photo, of its EXIF 35 mm-equivalent focal length."""
    assert photo.focal_35mm is not None
    return photo.focal_35mm * math.hypot(*photo.work_size) / FULL_FRAME_DIAGONAL_MM


def _set_focal_priors(pycolmap: Any, database_path: Path, photos: list[_Photo]) -> None:
    """A camera whose photos state a 35 mm-equivalent focal length (EXIF) starts from it, as a prior."""
    database = pycolmap.Database.open(database_path)
    try:
        camera_ids = {image.name: image.camera_id for image in database.read_all_images()}
        done = set()
        for photo in photos:
            camera_id = camera_ids[photo.work_name]
            if photo.focal_35mm is None or camera_id in done:
                continue
            done.add(camera_id)
            camera = database.read_camera(camera_id)
            params = np.array(camera.params, dtype=np.float64)
            params[list(camera.focal_length_idxs())] = _prior_focal(photo)
            camera.params = params
            camera.has_prior_focal_length = True
            database.update_camera(camera)
    finally:
        database.close()


# --------------------------------------------------------------------------------------------------------
# Step 3: matching


def _pairs(num_photos: int, matcher: str, overlap: int) -> list[tuple[int, int]]:
    """The photo pairs (i < j, in name order) to match."""
    if matcher == "exhaustive":
        return [(i, j) for i in range(num_photos) for j in range(i + 1, num_photos)]
    steps = sorted(set(range(1, overlap + 1)) | {2**k for k in range(overlap)})
    return [(i, i + step) for i in range(num_photos) for step in steps if i + step < num_photos]


def _match(
    pycolmap: Any, work: Path, photos: list[_Photo], matcher: str, options: SfmOptions, progress: bool
) -> tuple[int, int]:
    """Match the pairs and verify them geometrically; (pairs matched, pairs with a verified geometry)."""
    database_path = work / "database.db"
    pairs = _pairs(len(photos), matcher, options.sequential_overlap)
    matching = pycolmap.FeatureMatchingOptions()
    matching.num_threads = options.threads()
    verification = pycolmap.TwoViewGeometryOptions()
    verification.ransac.random_seed = options.seed
    pairs_file = work / "pairs.txt"
    chunk = max(200, math.ceil(len(pairs) / 50))
    with tqdm(
        total=len(pairs), desc="matching", unit="pair", disable=not progress, dynamic_ncols=True
    ) as bar:
        for start in range(0, len(pairs), chunk):
            batch = pairs[start : start + chunk]
            pairs_file.write_text("".join(f"{photos[i].work_name} {photos[j].work_name}\n" for i, j in batch))
            pairing = pycolmap.ImportedPairingOptions()
            pairing.match_list_path = pairs_file
            token = pycolmap.CancellationToken()
            with _cancel_on_interrupt(token):
                pycolmap.match_image_pairs(
                    database_path,
                    matching_options=matching,
                    pairing_options=pairing,
                    verification_options=verification,
                    device=pycolmap.Device.auto,
                    cancellation_token=token,
                )
            bar.update(len(batch))
    database = pycolmap.Database.open(database_path)
    try:
        _, inliers = database.read_two_view_geometry_num_inliers()
    finally:
        database.close()
    return len(pairs), sum(1 for count in inliers if count >= verification.min_num_inliers)


# --------------------------------------------------------------------------------------------------------
# Step 4: mapping


def _map(pycolmap: Any, work: Path, photos: list[_Photo], options: SfmOptions, progress: bool) -> Any:
    """COLMAP's incremental mapping; the reconstruction with the most photos, or None if there is none."""
    mapping = pycolmap.IncrementalPipelineOptions()
    mapping.num_threads = options.threads()
    mapping.random_seed = options.seed
    mapping.min_model_size = MIN_REGISTERED
    output = work / "mapping"
    output.mkdir()
    with tqdm(
        total=len(photos), desc="mapping", unit="photo", disable=not progress, dynamic_ncols=True
    ) as bar:

        def next_image() -> None:  # called before each photo the mapper tries to add, in any model
            if bar.n < bar.total:
                bar.update(1)

        token = pycolmap.CancellationToken()
        with _cancel_on_interrupt(token):
            reconstructions = pycolmap.incremental_mapping(
                work / "database.db",
                work / "images",
                output,
                mapping,
                next_image_callback=next_image,
                cancellation_token=token,
            )
        largest = max(reconstructions.values(), key=lambda model: model.num_reg_images(), default=None)
        bar.n = largest.num_reg_images() if largest is not None else 0  # the bar ends at the photos posed
        bar.refresh()
    return largest


# --------------------------------------------------------------------------------------------------------
# Step 5: the model


def _colmap_model(reconstruction: Any, photos: list[_Photo], invalid_point_id: int) -> ColmapModel:
    """The reconstruction as a model of the full-size upright photos (names, cameras and keypoints scaled)."""
    by_work_name = {photo.work_name: photo for photo in photos}
    scales: dict[int, tuple[float, float]] = {}
    images: dict[int, Image] = {}
    for image_id in sorted(reconstruction.reg_image_ids()):
        image = reconstruction.images[image_id]
        photo = by_work_name[image.name]
        scale = (photo.size[0] / photo.work_size[0], photo.size[1] / photo.work_size[1])
        scales[image.camera_id] = scale
        pose = image.cam_from_world()
        x, y, z, w = np.asarray(pose.rotation.quat, dtype=np.float64)
        points2D = image.points2D
        xys = np.array([point.xy for point in points2D], dtype=np.float64).reshape(-1, 2) * scale
        ids = np.array([point.point3D_id for point in points2D], dtype=np.uint64).reshape(-1)
        images[image_id] = Image(
            id=image_id,
            qvec=np.array([w, x, y, z]),
            tvec=np.asarray(pose.translation, dtype=np.float64),
            camera_id=image.camera_id,
            name=photo.name,
            xys=xys,
            point3D_ids=np.where(ids == invalid_point_id, -1, ids.astype(np.int64)),
        )
    cameras = {}
    for camera_id, (scale_x, scale_y) in sorted(scales.items()):
        camera = reconstruction.cameras[camera_id]
        model = CAMERA_MODELS_BY_NAME[camera.model_name]
        params = np.array(camera.params, dtype=np.float64)
        for index, name in enumerate(model.param_names):
            if name in ("fx", "cx"):
                params[index] *= scale_x
            elif name in ("fy", "cy"):
                params[index] *= scale_y
            elif name == "f":
                params[index] *= (scale_x + scale_y) / 2
        width = round(camera.width * scale_x)
        height = round(camera.height * scale_y)
        cameras[camera_id] = Camera(id=camera_id, model=model.name, width=width, height=height, params=params)
    return ColmapModel(cameras=cameras, images=images, points=_points(reconstruction, images, scales))


def _points(
    reconstruction: Any, images: dict[int, Image], scales: dict[int, tuple[float, float]]
) -> Points3D:
    ids, xyz, rgb, errors, offsets, track_images, track_points = [], [], [], [], [0], [], []
    for point_id, point in sorted(reconstruction.points3D.items()):
        elements = point.track.elements
        image_ids = [element.image_id for element in elements]
        # The error was measured in the downscaled photos: in full-size pixels it grows by their scale.
        scale = np.mean([sum(scales[images[image_id].camera_id]) / 2 for image_id in image_ids])
        ids.append(point_id)
        xyz.append(point.xyz)
        rgb.append(point.color)
        errors.append(point.error * scale)
        track_images += image_ids
        track_points += [element.point2D_idx for element in elements]
        offsets.append(len(track_images))
    return Points3D(
        xyz=np.array(xyz, dtype=np.float64).reshape(-1, 3),
        rgb=np.array(rgb, dtype=np.uint8).reshape(-1, 3),
        error=np.array(errors, dtype=np.float64),
        ids=np.array(ids, dtype=np.int64),
        track_offsets=np.array(offsets, dtype=np.int64),
        track_image_ids=np.array(track_images, dtype=np.int32),
        track_point2D_idxs=np.array(track_points, dtype=np.int32),
    )


def mean_reprojection_error(points: Points3D) -> float:
    """The mean reprojection error over all observations (COLMAP's summary figure), in pixels."""
    lengths = np.diff(points.track_offsets)
    return float((points.error * lengths).sum() / lengths.sum()) if lengths.sum() else 0.0


# --------------------------------------------------------------------------------------------------------
# The whole run


def _process_is_running(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # someone else's process
        return True
    return True


@contextlib.contextmanager
def _work_folder(folder: Path) -> Iterator[Path]:
    """A hidden working folder beside the photos (on their file system), deleted afterwards. Working
    folders of runs that were killed (their process is gone) are deleted first."""
    for stale in folder.glob(f"{WORK_FOLDER_PREFIX}*"):
        pid = stale.name[len(WORK_FOLDER_PREFIX) :].split("-")[0]
        if pid.isdigit() and not _process_is_running(int(pid)):
            shutil.rmtree(stale, ignore_errors=True)
    work = folder / f"{WORK_FOLDER_PREFIX}{os.getpid()}-{time.time_ns()}"
    try:
        work.mkdir()
    except OSError as error:
        raise SfmError(
            f"{folder}: cannot write here ({error.strerror or error}); the model is written beside the photos"
        ) from None
    try:
        yield work
    finally:
        shutil.rmtree(work, ignore_errors=True)


def run_sfm(
    folder: PathLike,
    options: SfmOptions | None = None,
    force: bool = False,
    progress: bool = True,
    report: Callable[[str], None] | None = None,
) -> SfmResult:
    """Pose the photos of ``folder`` and write the COLMAP model to ``folder/sparse/0`` (see the module
    docstring); reuse the model already there unless ``force``. ``progress`` shows a bar per step and
    ``report`` receives a line per step."""
    options = options or SfmOptions()
    options.validate()
    say = report or (lambda line: None)
    folder = Path(folder)
    scan = scan_photos(folder)
    found = existing_model(folder)
    if found is not None and not force:
        return _reused(scan, found)
    if not scan.photos:
        raise SfmError(
            f"{scan.image_folder}: no photos found (looked for {', '.join(sorted(IMAGE_EXTENSIONS))} files)"
        )
    if len(scan.photos) < MIN_REGISTERED:
        raise SfmError(
            f"{scan.image_folder}: structure from motion needs at least {MIN_REGISTERED} photos of the scene "
            f"from different positions, found {len(scan.photos)}"
        )
    pycolmap = require_pycolmap()
    pycolmap.set_random_seed(options.seed)
    if scan.ignored_files:
        say(f"ignored (not images): {_examples(scan.ignored_files)}")
    seconds: dict[str, float] = {}
    with _work_folder(folder) as work, _quiet_colmap(pycolmap):
        with _timed(seconds, "photos"):
            photos = _read_photos(scan, work, options, progress)
        cameras = len({photo.work_name.split("/")[0] for photo in photos})
        sizes = Counter(photo.size for photo in photos)
        work_sizes = Counter(photo.work_size for photo in photos)
        say(
            f"photos: {len(photos)} read ({_sizes(sizes)}; SIFT at {_sizes(work_sizes)}), "
            f"{_plural(cameras, 'camera')} ({options.camera_model}) in {_duration(seconds['photos'])}"
        )
        with _timed(seconds, "features"):
            counts = _features(pycolmap, work, photos, options, progress)
        say(
            f"features: {int(np.median(counts)):,} per photo (median; at most {options.max_features:,}) in "
            f"{_duration(seconds['features'])}"
        )
        matcher = options.matcher_for(len(photos))
        with _timed(seconds, "matching"):
            pairs, verified = _match(pycolmap, work, photos, matcher, options, progress)
        why = ""
        if options.matcher == "auto":
            limit = options.exhaustive_max_images
            why = f", {len(photos)} photos {'<=' if matcher == 'exhaustive' else '>'} {limit}"
        say(
            f"matching: {matcher}{why}: {_plural(pairs, 'pair')}, {verified:,} with a verified geometry, in "
            f"{_duration(seconds['matching'])}"
        )
        with _timed(seconds, "mapping"):
            reconstruction = _map(pycolmap, work, photos, options, progress)
        model = _colmap_model(reconstruction, photos, pycolmap.INVALID_POINT3D_ID) if reconstruction else None
        registered = sorted(image.name for image in model.images.values()) if model else []
        if len(registered) < MIN_REGISTERED:
            raise SfmError(_too_few_posed(scan, photos, registered))
        assert model is not None
        unregistered = sorted(set(scan.photos) - set(registered))
        result = SfmResult(
            folder=folder,
            model_folder=folder / MODEL_SUBFOLDER,
            image_folder=scan.image_folder,
            photos=scan.photos,
            registered=registered,
            unregistered=unregistered,
            ignored_files=scan.ignored_files,
            num_points=len(model.points),
            mean_reprojection_error=mean_reprojection_error(model.points),
            matcher=matcher,
            reused=False,
            stage_seconds=seconds,
        )
        say(f"mapping: {result.summary()}, in {_duration(seconds['mapping'])}")
        if unregistered:
            say(f"not posed (left out of training): {_examples(unregistered)}")
        _write_model(result, model, options, pycolmap.__version__)
    return result


@contextlib.contextmanager
def _timed(seconds: dict[str, float], step: str) -> Iterator[None]:
    """Adds the block's wall time to ``seconds[step]``."""
    clock = time.perf_counter()
    yield
    seconds[step] = time.perf_counter() - clock


def camera_centre_errors(model: ColmapModel, reference: ColmapModel) -> np.ndarray:
    """How far the camera centres of ``model`` are from those of ``reference`` (images matched by file name,
    folders ignored), after the similarity that best aligns them (`fit_similarity`), relative to the scene's
    size: the largest distance of a reference centre from their mean. One value per common image."""

    def centres(of: ColmapModel) -> dict[str, np.ndarray]:
        return {Path(image.name).name: -image.rotation().T @ image.tvec for image in of.images.values()}

    ours, theirs = centres(model), centres(reference)
    names = sorted(set(ours) & set(theirs))
    source = torch.tensor(np.stack([ours[name] for name in names]))
    target = torch.tensor(np.stack([theirs[name] for name in names]))
    transform = fit_similarity(source, target)
    aligned = source @ transform[:3, :3].T + transform[:3, 3]
    size = (target - target.mean(0)).norm(dim=1).max()
    return ((aligned - target).norm(dim=1) / size).numpy()


def _sizes(sizes: Counter) -> str:
    return ", ".join(
        f"{w}x{h}" + (f" ({count})" if len(sizes) > 1 else "") for (w, h), count in sizes.most_common()
    )


def _too_few_posed(scan: PhotoFolder, photos: list[_Photo], registered: list[str]) -> str:
    message = (
        f"{scan.image_folder}: only {len(registered)} of {len(photos)} photos could be posed (at least "
        f"{MIN_REGISTERED} are needed): "
    )
    copies = len(photos) - len({photo.digest for photo in photos})
    if copies:
        return message + (
            f"{_plural(copies, 'photo')} are identical copies of others; photos need to show the scene from "
            "different positions"
        )
    return message + (
        "they may overlap too little, or be taken from one position (turning the camera in place); photos "
        "need to show the same scene from positions a step apart, each overlapping the next"
    )


def _write_model(result: SfmResult, model: ColmapModel, options: SfmOptions, pycolmap_version: str) -> None:
    record = {
        "made_by": f"gsplat_py {__version__} (structure from motion with pycolmap {pycolmap_version})",
        "exif_orientation_applied": True,
        "image_folder": result.image_folder.relative_to(result.folder).as_posix(),
        "options": dataclasses.asdict(options),
        "matcher": result.matcher,
        "photos": len(result.photos),
        "registered": len(result.registered),
        "unregistered": result.unregistered,
        "ignored_files": result.ignored_files,
        "num_points": result.num_points,
        "mean_reprojection_error": result.mean_reprojection_error,
        "stage_seconds": result.stage_seconds,
    }
    with atomic_directory(result.model_folder) as temporary:
        write_model(model, temporary)
        write_text_atomically(temporary / SFM_RECORD_FILE, json.dumps(record, indent=1) + "\n")


def _reused(scan: PhotoFolder, found: Path) -> SfmResult:
    try:
        model = read_model(found)
    except ColmapError as error:
        raise ParameterError(
            "force", f"{found}: the COLMAP model there cannot be read ({error}); {{force}} replaces it"
        ) from None
    try:
        record = json.loads((found / SFM_RECORD_FILE).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        record = {}
    registered = sorted(image.name for image in model.images.values())
    return SfmResult(
        folder=scan.folder,
        model_folder=found,
        image_folder=scan.image_folder,
        photos=scan.photos,
        registered=registered,
        unregistered=sorted(set(scan.photos) - set(registered)),
        ignored_files=scan.ignored_files,
        num_points=len(model.points),
        mean_reprojection_error=mean_reprojection_error(model.points),
        matcher=record.get("matcher"),
        reused=True,
        stage_seconds=record.get("stage_seconds", {}),
    )
