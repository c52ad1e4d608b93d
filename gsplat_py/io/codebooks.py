"""Codebooks for lossy formats: a scalar codebook (1D k-means) and a palette of vectors (k-means).

- :func:`scalar_codebook`: at most ``size`` float32 values such that every input maps to its nearest entry:
  Lloyd's algorithm in one dimension on a histogram of the values, each bin weighted by its count^0.5 x
  width^0.5 (the squared error weighted by density^-0.5), from the weighted quantiles. A cluster is a run of
  bins between two midpoints, so an iteration costs O(size log bins) with prefix sums.
- :func:`vector_palette`: ``size`` centroids of N vectors and each vector's label, by two-level
  (hierarchical) k-means: about sqrt(size) coarse clusters of all the vectors, then each coarse cluster
  split into a share of the ``size`` centroids proportional to its population. Flat k-means would compare
  every vector with every centroid (1M x 65,536 x 45 multiply-adds an iteration, minutes on a CPU); the two
  levels compare each with about 2 sqrt(size) centroids, at the cost of labels that are nearest within
  their coarse cluster only. Deterministic for a given ``seed``.
"""

from __future__ import annotations

import math

import numpy as np
import torch
from torch import Tensor

__all__ = ["scalar_codebook", "nearest_entries", "vector_palette"]

SCALAR_ITERATIONS = 100  # 1D Lloyd iterations (each is cheap); they stop earlier once nothing moves
HISTOGRAM_BINS = 4096  # equal-count bins, and as many equal-width ones, of the scalar codebook's histogram
# The scalar codebook minimises the squared error weighted by density^(DENSITY_EXPONENT - 1): below 1, sparse
# tails (the largest Gaussians, the brightest colours) get entries too. 0.5 is PlayCanvas's choice; on the
# bundled scene's model it renders log-scales at 59.1 dB against the PLY where plain k-means (1) gives 53.7.
DENSITY_EXPONENT = 0.5
_DISTANCE_BLOCK = 1 << 24  # distances computed per block of rows: at most this many floats at a time


def nearest_entries(codebook: np.ndarray, values: np.ndarray) -> np.ndarray:
    """For each value, the index of the nearest entry of the ascending ``codebook`` (ties: the lower)."""
    entries = codebook.astype(np.float64)
    return np.searchsorted((entries[1:] + entries[:-1]) / 2.0, values, side="left")


def scalar_codebook(values: np.ndarray, size: int = 256) -> tuple[np.ndarray, np.ndarray]:
    """An ascending float32 codebook of at most ``size`` entries for ``values`` (any shape, finite), and the
    index of each value's nearest entry (same shape). Fewer distinct values than ``size`` are kept exactly
    (module docstring)."""
    flat = values.reshape(-1).astype(np.float64)
    ordered = np.sort(flat)
    distinct = np.unique(ordered)
    if len(distinct) <= size:
        codebook = distinct.astype(np.float32)
    else:
        means, weights = _weighted_histogram(ordered)
        codebook = np.unique(_weighted_lloyd(means, weights, size).astype(np.float32))
    return codebook, nearest_entries(codebook, flat).reshape(values.shape)


def _weighted_histogram(ordered: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """The sorted values as weighted points: the mean of each non-empty bin and its weight c^a w^(1 - a)
    (c values in a bin of width w; a = DENSITY_EXPONENT). Bins are the union of equal-count and equal-width
    ones, so that dense regions and sparse tails are both resolved."""
    count = len(ordered)
    quantile_edges = ordered[np.linspace(0, count - 1, HISTOGRAM_BINS + 1).round().astype(np.int64)]
    uniform_edges = np.linspace(ordered[0], ordered[-1], HISTOGRAM_BINS + 1)
    edges = np.unique(np.concatenate([quantile_edges, uniform_edges]))
    which = np.clip(np.searchsorted(edges, ordered, side="right") - 1, 0, len(edges) - 2)
    counts = np.bincount(which, minlength=len(edges) - 1).astype(np.float64)
    sums = np.bincount(which, weights=ordered, minlength=len(edges) - 1)
    occupied = counts > 0
    widths = np.diff(edges)[occupied]
    weights = counts[occupied] ** DENSITY_EXPONENT * widths ** (1.0 - DENSITY_EXPONENT)
    return sums[occupied] / counts[occupied], weights


def _weighted_lloyd(points: np.ndarray, weights: np.ndarray, size: int) -> np.ndarray:
    """Weighted 1D k-means of ascending ``points``, from their weighted quantiles: a cluster is a run of
    points between two midpoints, its centre the weighted mean (prefix sums: O(size log N) an iteration)."""
    cumulative = np.cumsum(weights)
    starts = np.searchsorted(cumulative, (np.arange(size) + 0.5) / size * cumulative[-1])
    centres = np.unique(points[np.minimum(starts, len(points) - 1)])
    weight_prefix = np.concatenate([[0.0], cumulative])
    moment_prefix = np.concatenate([[0.0], np.cumsum(weights * points)])
    for _ in range(SCALAR_ITERATIONS):
        bounds = np.searchsorted(points, (centres[1:] + centres[:-1]) / 2.0, side="right")
        first = np.concatenate([[0], bounds])
        last = np.concatenate([bounds, [len(points)]])
        mass = weight_prefix[last] - weight_prefix[first]
        moved = (moment_prefix[last] - moment_prefix[first]) / np.where(mass > 0, mass, 1.0)
        updated = np.sort(np.where(mass > 0, moved, centres))
        if np.array_equal(updated, centres):
            break
        centres = updated
    return centres


def _nearest_centroids(points: Tensor, centroids: Tensor) -> Tensor:
    squared_norms = (centroids * centroids).sum(dim=1)
    rows = max(1, _DISTANCE_BLOCK // max(1, centroids.shape[0]))
    labels = torch.empty(points.shape[0], dtype=torch.int64)
    for start in range(0, points.shape[0], rows):
        block = points[start : start + rows]
        # |x - c|^2 = |x|^2 - 2 x.c + |c|^2, and |x|^2 does not change which c is nearest
        labels[start : start + rows] = torch.argmin(squared_norms[None, :] - 2.0 * (block @ centroids.T), 1)
    return labels


def _distinct_rows(points: Tensor, generator: torch.Generator) -> Tensor:
    """The rows of ``points`` with repeats removed (compared through a random projection: fast, and two
    different rows agree on it with probability 0 in practice)."""
    projection = torch.randn(points.shape[1], generator=generator, dtype=torch.float64)
    _, first = np.unique((points.double() @ projection).numpy(), return_index=True)
    return points[torch.from_numpy(np.sort(first))]


def _kmeans(points: Tensor, count: int, iterations: int, generator: torch.Generator) -> tuple[Tensor, Tensor]:
    """Lloyd's k-means from ``count`` random distinct points; an emptied cluster keeps its centroid. With
    ``count`` or fewer distinct points, the distinct points themselves (exact)."""
    distinct = _distinct_rows(points, generator)
    if count >= distinct.shape[0]:
        return distinct, _nearest_centroids(points, distinct)
    centroids = distinct[torch.randperm(distinct.shape[0], generator=generator)[:count]].clone()
    for _ in range(iterations):
        labels = _nearest_centroids(points, centroids)
        sums = torch.zeros_like(centroids).index_add_(0, labels, points)
        members = torch.bincount(labels, minlength=count)
        centroids = torch.where(members[:, None] > 0, sums / members.clamp_min(1)[:, None], centroids)
    return centroids, _nearest_centroids(points, centroids)


def _apportion(populations: np.ndarray, total: int) -> np.ndarray:
    """``total`` centroids shared over clusters of ``populations`` (all > 0, total <= their sum): one each,
    the rest in proportion to population - 1 (largest remainders), never more than a cluster's
    population."""
    spare = populations - 1
    if spare.sum() == 0:
        return np.ones_like(populations)
    share = spare * (total - len(populations)) / spare.sum()
    quotas = np.floor(share).astype(np.int64)
    leftover = total - len(populations) - int(quotas.sum())
    quotas[np.argsort(-(share - quotas), kind="stable")[:leftover]] += 1
    return 1 + quotas


def vector_palette(
    points: np.ndarray, size: int, iterations: int = 10, seed: int = 0
) -> tuple[np.ndarray, np.ndarray]:
    """At most ``size`` float32 centroids [M, D] for ``points`` [N, D] and each point's label [N] (int64, the
    index of its centroid), by two-level k-means (module docstring). With at most ``size`` distinct points,
    the distinct points are the centroids (exact)."""
    data = torch.from_numpy(np.ascontiguousarray(points, dtype=np.float32))
    count = data.shape[0]
    generator = torch.Generator().manual_seed(seed)
    distinct = _distinct_rows(data, generator)
    if distinct.shape[0] <= size:
        return distinct.numpy(), _nearest_centroids(data, distinct).numpy()
    coarse = max(1, round(math.sqrt(size)))
    _, coarse_labels = _kmeans(data, coarse, iterations, generator)
    populations = torch.bincount(coarse_labels, minlength=coarse).numpy()
    occupied = np.flatnonzero(populations)
    quotas = _apportion(populations[occupied], size)
    order = torch.argsort(coarse_labels, stable=True)
    groups = torch.split(order, populations[occupied].tolist())
    centroids, labels, offset = [], torch.empty(count, dtype=torch.int64), 0
    for members, quota in zip(groups, quotas.tolist()):
        group_centroids, group_labels = _kmeans(data[members], quota, iterations, generator)
        centroids.append(group_centroids)
        labels[members] = group_labels + offset
        offset += group_centroids.shape[0]
    return torch.cat(centroids).numpy(), labels.numpy()
