"""Checking a COLMAP model before training: cameras and points that do not fit the rest.

Structure from motion on real photos often leaves a few cameras registered far from the others (a bad
loop closure, a photo matched to a repeated texture) and points triangulated from nearly parallel rays,
hundreds of units out. Left in, one such camera sets the scene's scale (and with it every learning rate
and densification threshold) wrong by orders of magnitude. `check_scene` finds, each with a robust rule
(median and median absolute deviation, so a few outliers cannot hide themselves by moving the statistics):

- cameras whose centre lies far outside the others: the distance d of each centre from the per-coordinate
  median of all centres is an outlier of the distances (`robust_threshold` with
  `CAMERA_OUTLIER_SPREADS` spreads, the spread at least the median distance: a camera is never flagged
  within 1 + `CAMERA_OUTLIER_SPREADS` times the median distance, ~5x, so a tight ring of cameras does not
  flag one a little farther out);
- images whose size disagrees with their camera: each image's scale (its pixels' focal length over the
  camera's) against the median scale of all images, with the loader's tolerance (2 pixels + 1%), as when
  one camera record is for another resolution;
- cameras that observe very few SfM points: fewer than `FEW_OBSERVATIONS_FRACTION` of the median image's
  (their pose rests on little evidence; reported, not left out);
- points far outside the cameras' region: farther from the inlier cameras' median centre than both
  `FAR_POINT_CAMERA_MULTIPLE` times the farthest inlier camera and the points' own robust threshold
  (`POINT_OUTLIER_SPREADS` spreads); the second condition keeps the distant background of a
  forward-facing capture, whose points all lie far beyond its cameras.

Fewer than `MIN_CAMERAS` cameras give no statistics, and are not checked. What to do with the findings is
the loader's (`load_colmap_scene`: outlier cameras are left out of training and evaluation, far points out
of the initialisation, unless ``keep`` says otherwise); the normalisation and the scene scale always use
the inliers only. `SceneCheck.messages` words the findings, one line each, and `SceneCheck.record` is what
the trainer writes to ``metrics.json``.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

__all__ = [
    "CAMERA_OUTLIER_SPREADS",
    "FAR_POINT_CAMERA_MULTIPLE",
    "FEW_OBSERVATIONS_FRACTION",
    "MIN_CAMERAS",
    "POINT_OUTLIER_SPREADS",
    "Finding",
    "SceneCheck",
    "check_scene",
    "robust_threshold",
]

# 1.4826 MAD estimates the standard deviation of normally distributed values.
MAD_TO_SIGMA = 1.4826
CAMERA_OUTLIER_SPREADS = 4.0
POINT_OUTLIER_SPREADS = 4.0
FAR_POINT_CAMERA_MULTIPLE = 10.0
FEW_OBSERVATIONS_FRACTION = 0.05
MIN_CAMERAS = 5
# Pixels and fraction of the image size by which an image may differ from its camera scaled like the others
# (rounding when images_N/ was made, as the loader's aspect-ratio check allows).
SIZE_TOLERANCE_PIXELS = 2.0
SIZE_TOLERANCE_RELATIVE = 0.01
MESSAGE_EXAMPLES = 8


def robust_threshold(values: np.ndarray, spreads: float, min_spread_fraction: float) -> float:
    """median + ``spreads`` x spread of ``values``, where the spread is 1.4826 x their median absolute
    deviation (a standard deviation for normal values) but at least ``min_spread_fraction`` x the median:
    values above it are outliers however the others are spread, and a few outliers move it little."""
    median = float(np.median(values))
    spread = MAD_TO_SIGMA * float(np.median(np.abs(values - median)))
    return median + spreads * max(spread, min_spread_fraction * median)


@dataclass(frozen=True)
class Finding:
    """One image that does not fit: its name and why (``detail`` in the message's words)."""

    name: str
    detail: str


@dataclass
class SceneCheck:
    """What `check_scene` found (module docstring). ``far_centres`` and ``size_mismatches`` are the outlier
    cameras, ``few_observations`` the weak ones; ``far_points`` is a bool mask over the model's points.
    ``cameras_kept`` / ``points_kept``: whether the loader kept the outliers in (the options said so)."""

    far_centres: list[Finding] = field(default_factory=list)
    size_mismatches: list[Finding] = field(default_factory=list)
    few_observations: list[Finding] = field(default_factory=list)
    far_points: np.ndarray = field(default_factory=lambda: np.zeros(0, dtype=bool))
    far_point_distance: float = float("inf")
    camera_median_distance: float = 0.0
    camera_threshold: float = float("inf")
    median_scale: float = 1.0
    median_observations: float = 0.0
    cameras_kept: bool = False
    points_kept: bool = False

    @property
    def outlier_cameras(self) -> list[Finding]:
        """The cameras left out of training and evaluation (unless ``cameras_kept``), in name order."""
        return sorted(self.far_centres + self.size_mismatches, key=lambda finding: finding.name)

    def messages(self) -> list[str]:
        """The findings, one line each (nothing for a scene without any)."""
        cameras = (
            "kept in training and evaluation (data.drop_outlier_cameras = false)"
            if self.cameras_kept
            else "left out of training and evaluation (data.drop_outlier_cameras = false keeps them)"
        )
        lines = []
        if self.far_centres:
            lines.append(
                f"{_count(self.far_centres, 'camera')} far outside the others (centre more than "
                f"{self.camera_threshold:.3g} from the cameras' median centre, where the median camera is "
                f"{self.camera_median_distance:.3g} from it): {_examples(self.far_centres)}; {cameras}"
            )
        if self.size_mismatches:
            lines.append(
                f"{_count(self.size_mismatches, 'image')} whose size disagrees with its camera (the other "
                f"images are {self.median_scale:.3g}x their camera's size): "
                f"{_examples(self.size_mismatches)}; {cameras}"
            )
        if self.few_observations:
            lines.append(
                f"{_count(self.few_observations, 'camera')} observing very few SfM points (the median image "
                f"observes {self.median_observations:.0f}), so their poses may be unreliable: "
                f"{_examples(self.few_observations)}"
            )
        far = int(self.far_points.sum())
        if far:
            what = (
                "kept in the initialisation (data.drop_far_points = false)"
                if self.points_kept
                else "left out of the initialisation (data.drop_far_points = false keeps them)"
            )
            lines.append(
                f"{far:,} of {len(self.far_points):,} SfM points lie far outside the cameras' region (more "
                f"than {self.far_point_distance:.3g} from the cameras' median centre): {what}"
            )
        return lines

    def record(self) -> dict:
        """The findings as JSON-ready values (names and reasons), for ``metrics.json``."""
        return {
            "excluded_cameras": []
            if self.cameras_kept
            else [{"name": f.name, "reason": f.detail} for f in self.outlier_cameras],
            "outlier_cameras_kept": [] if not self.cameras_kept else [f.name for f in self.outlier_cameras],
            "far_centres": [{"name": f.name, "reason": f.detail} for f in self.far_centres],
            "size_mismatches": [{"name": f.name, "reason": f.detail} for f in self.size_mismatches],
            "few_observations": [{"name": f.name, "reason": f.detail} for f in self.few_observations],
            "far_points": int(self.far_points.sum()),
            "far_points_dropped": 0 if self.points_kept else int(self.far_points.sum()),
            "points": len(self.far_points),
        }


def _count(findings: list[Finding], noun: str) -> str:
    return f"{len(findings)} {noun}{'s' if len(findings) > 1 else ''}"


def _examples(findings: list[Finding]) -> str:
    shown = ", ".join(f"{f.name} ({f.detail})" for f in findings[:MESSAGE_EXAMPLES])
    more = len(findings) - MESSAGE_EXAMPLES
    return shown + (f" and {more} more (metrics.json lists them)" if more > 0 else "")


def check_scene(
    names: list[str],
    centres: np.ndarray,
    camera_sizes: np.ndarray,
    image_scales: np.ndarray,
    observations: np.ndarray,
    points: np.ndarray,
) -> SceneCheck:
    """The findings (module docstring) for images ``names`` with camera ``centres`` [N, 3], ``camera_sizes``
    [N, 2] (width, height in pixels), ``image_scales`` [N, 2] (each image's size over its camera's, per
    axis), ``observations`` [N] (SfM points each image observes; all zero
    when the model has no tracks) and the SfM ``points`` [P, 3], all in one frame (COLMAP's)."""
    check = SceneCheck(far_points=np.zeros(len(points), dtype=bool))
    if len(names) < MIN_CAMERAS:
        return check
    median_centre = np.median(centres, axis=0)
    distances = np.linalg.norm(centres - median_centre, axis=-1)
    check.camera_median_distance = float(np.median(distances))
    check.camera_threshold = robust_threshold(distances, CAMERA_OUTLIER_SPREADS, 1.0)
    far = distances > check.camera_threshold
    check.far_centres = [
        Finding(names[i], f"{distances[i]:.3g} from the median centre") for i in np.flatnonzero(far)
    ]
    mismatch = _size_mismatches(camera_sizes, image_scales)
    check.median_scale = float(np.median(image_scales[:, 0]))
    image_sizes = np.rint(camera_sizes * image_scales).astype(np.int64)
    check.size_mismatches = [
        Finding(
            names[i],
            f"{image_sizes[i, 0]}x{image_sizes[i, 1]} for a {camera_sizes[i, 0]}x{camera_sizes[i, 1]} camera",
        )
        for i in np.flatnonzero(mismatch & ~far)
    ]
    if observations.any():
        check.median_observations = float(np.median(observations))
        few = observations < FEW_OBSERVATIONS_FRACTION * check.median_observations
        check.few_observations = [
            Finding(names[i], f"{observations[i]} points") for i in np.flatnonzero(few & ~far & ~mismatch)
        ]
    inliers = ~far & ~mismatch
    if len(points):
        inlier_centre = np.median(centres[inliers], axis=0)
        camera_reach = float(np.linalg.norm(centres[inliers] - inlier_centre, axis=-1).max())
        point_distances = np.linalg.norm(points - inlier_centre, axis=-1)
        check.far_point_distance = max(
            FAR_POINT_CAMERA_MULTIPLE * camera_reach,
            robust_threshold(point_distances, POINT_OUTLIER_SPREADS, 1.0),
        )
        if camera_reach > 0.0:
            check.far_points = point_distances > check.far_point_distance
    return check


def _size_mismatches(camera_sizes: np.ndarray, image_scales: np.ndarray) -> np.ndarray:
    """[N] bool: images whose size differs from their camera's scaled as the median image's, by more than
    the tolerance on either axis."""
    expected = camera_sizes * np.median(image_scales, axis=0)
    actual = camera_sizes * image_scales
    tolerance = SIZE_TOLERANCE_PIXELS + SIZE_TOLERANCE_RELATIVE * actual
    return (np.abs(actual - expected) > tolerance).any(axis=-1)
