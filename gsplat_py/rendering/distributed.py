"""Distributed rasterization (``rasterization(..., distributed=True)``): gsplat 1.5.3's scheme from "On
Scaling Up 3D Gaussian Splatting Training" (Zhao et al. 2024), on any torch.distributed backend (gloo, NCCL).

Each rank holds a shard of the Gaussians and its own cameras. The cameras of every rank are gathered
(`gather_cameras`), each rank projects its shard into all of them, and the projected 2D Gaussians are sent to
the rank that owns each camera (`exchange_projections`), which rasterizes its own images with everyone's
Gaussians. Both transfers are autograd functions whose backward is the reverse transfer, so the gradients
come back to the rank that owns each Gaussian and each camera.

Every transfer is one ``all_to_all_single`` of one buffer: gloo (CPU) and NCCL (CUDA) both implement it with
uneven splits (torch 2.13), which neither does for ``all_gather`` (equal sizes only), and the gradient of
``torch.distributed.nn.functional.all_gather`` is a ``reduce_scatter`` that gloo lacks. A gather is the
all-to-all of a rank's rows sent to every rank.

Like any collective, the calls must match on every rank: every rank calls ``rasterization`` with the same
options (and the same tensors requiring grad), and every rank calls ``backward``.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import torch
from torch import Tensor

__all__ = [
    "World",
    "all_gather_counts",
    "all_gather_rows",
    "exchange",
    "exchange_counts",
    "gather_cameras",
    "exchange_projections",
    "world_of_default_group",
]


def world_of_default_group() -> tuple[int, int]:
    """(rank, world size) of the default process group; ValueError naming ``distributed`` without one."""
    if not torch.distributed.is_available() or not torch.distributed.is_initialized():
        raise ValueError(
            "distributed: expected an initialised default torch.distributed process group "
            "(torch.distributed.init_process_group, any backend), found none"
        )
    return torch.distributed.get_rank(), torch.distributed.get_world_size()


class _AllToAll(torch.autograd.Function):
    """Rows ``[sum(send_counts), ...]`` -> ``[sum(recv_counts), ...]``: the i-th block of ``send_counts[i]``
    rows goes to rank i, the block from rank j arrives in j's order. Backward sends the gradients back."""

    @staticmethod
    def forward(ctx, rows: Tensor, send_counts: list[int], recv_counts: list[int]) -> Tensor:
        ctx.counts = (send_counts, recv_counts)
        return _all_to_all(rows, send_counts, recv_counts)

    @staticmethod
    def backward(ctx, grad: Tensor) -> tuple[Tensor, None, None]:
        send_counts, recv_counts = ctx.counts
        return _all_to_all(grad, recv_counts, send_counts), None, None


def _all_to_all(rows: Tensor, send_counts: list[int], recv_counts: list[int]) -> Tensor:
    rows = rows.contiguous()
    out = rows.new_empty((sum(recv_counts), *rows.shape[1:]))
    torch.distributed.all_to_all_single(
        out, rows, output_split_sizes=recv_counts, input_split_sizes=send_counts
    )
    return out


def exchange(rows: Tensor, send_counts: Sequence[int], recv_counts: Sequence[int]) -> Tensor:
    """Differentiable all-to-all of ``rows`` (see `_AllToAll`); ``recv_counts[j]`` must be what rank j sends
    here."""
    return _AllToAll.apply(rows, list(send_counts), list(recv_counts))


def all_gather_counts(count: int, world_size: int, device: torch.device) -> list[int]:
    """``count`` of every rank, in rank order."""
    return exchange_counts([count] * world_size, device)


def exchange_counts(send: Sequence[int], device: torch.device) -> list[int]:
    """What each rank sends to this one, from what this rank sends to each (``send[j]`` to rank j)."""
    counts = torch.tensor(send, dtype=torch.int64, device=device)
    ones = [1] * len(send)
    return [int(c) for c in _all_to_all(counts, ones, ones).tolist()]


def all_gather_rows(rows: Tensor, counts: Sequence[int]) -> Tensor:
    """The rows of every rank concatenated in rank order (``counts[j]`` rows from rank j), differentiable: the
    gradient of each rank's rows is the sum of the gradients its copies received on every rank."""
    world_size = len(counts)
    return exchange(rows.repeat(world_size, *([1] * (rows.dim() - 1))), [rows.shape[0]] * world_size, counts)


@dataclass(frozen=True)
class World:
    """Who holds what in one distributed rasterization call."""

    rank: int
    camera_counts: list[int]  # cameras of each rank
    gaussian_counts: list[int]  # Gaussians of each rank
    cameras: Tensor  # the gathered camera rows (the exchange's ``link`` ties them in)

    @property
    def size(self) -> int:
        return len(self.camera_counts)

    @property
    def local_cameras(self) -> int:
        return self.camera_counts[self.rank]

    @property
    def first_gaussian(self) -> int:
        return sum(self.gaussian_counts[: self.rank])


def gather_cameras(
    viewmats: Tensor, Ks: Tensor, radial_coeffs: Tensor | None, n_gaussians: int
) -> tuple[World, Tensor, Tensor, Tensor | None]:
    """Every rank's cameras, in rank order: ``(world, viewmats [C_all, 4, 4], Ks [C_all, 3, 3], radial
    coefficients [C_all, 4] or None)``; one transfer for the counts, one for the cameras."""
    rank, world_size = world_of_default_group()
    device = viewmats.device
    counts = all_gather_counts(viewmats.shape[0], world_size, device)
    gaussian_counts = all_gather_counts(n_gaussians, world_size, device)
    parts = [viewmats.reshape(-1, 16), Ks.reshape(-1, 9)]
    if radial_coeffs is not None:
        parts.append(radial_coeffs)
    cameras = all_gather_rows(torch.cat(parts, dim=1), counts)
    world = World(rank, counts, gaussian_counts, cameras)
    all_viewmats = cameras[:, :16].reshape(-1, 4, 4)
    all_Ks = cameras[:, 16:25].reshape(-1, 3, 3)
    all_radial = cameras[:, 25:] if radial_coeffs is not None else None
    return world, all_viewmats, all_Ks, all_radial


def exchange_projections(
    world: World,
    packed: bool,
    float_fields: dict[str, Tensor],
    int_fields: dict[str, Tensor],
    link: Tensor | None,
) -> tuple[dict[str, Tensor], dict[str, Tensor]]:
    """Send each camera's projected Gaussians to the rank that owns the camera.

    ``float_fields`` (differentiable) and ``int_fields`` hold this rank's Gaussians projected into every
    rank's cameras: dense, ``[C_all, N_local, ...]``; packed, ``[nnz, ...]`` in (camera, Gaussian) order with
    ``int_fields["camera_ids"]`` (into C_all) and ``int_fields["gaussian_ids"]`` (into N_local). Returned: the
    same fields for this rank's cameras and every rank's Gaussians: dense ``[C_local, N_all, ...]`` (the
    Gaussians in rank order), packed ``[nnz', ...]`` in (local camera, global Gaussian) order, the order a
    single process rendering all the Gaussians would produce, with local camera ids and global Gaussian ids.

    ``link`` (a zero, or None) is added to what is sent: it ties the exchange to the inputs and to the
    gathered cameras (`World.cameras`), whose transfer backward every rank must run, even where a shard has no
    Gaussians and projects nothing that depends on them.
    """
    names = list(float_fields)
    widths = [_row_width(t, packed) for t in float_fields.values()]
    if packed:
        camera_ids = int_fields["camera_ids"]
        camera_bounds = torch.tensor(world.camera_counts, device=camera_ids.device).cumsum(0)
        destination = torch.bucketize(camera_ids, camera_bounds, right=True)
        send = torch.bincount(destination, minlength=world.size).tolist()
        recv = exchange_counts(send, camera_ids.device)
        ints = dict(int_fields)
        ints["camera_ids"] = camera_ids - _first_of(world.camera_counts, camera_ids)[destination]
        ints["gaussian_ids"] = int_fields["gaussian_ids"] + world.first_gaussian
        float_rows = torch.cat(
            [t.reshape(t.shape[0], w) for t, w in zip(float_fields.values(), widths)], dim=1
        )
        received_floats = exchange(float_rows if link is None else float_rows + link, send, recv)
        received_ints = {name: _all_to_all(t, send, recv) for name, t in ints.items()}
        # Entries arrive grouped by sender; a stable sort by camera restores (camera, global Gaussian) order.
        order = torch.sort(received_ints["camera_ids"], stable=True).indices
        received_floats = received_floats.index_select(0, order)
        received_ints = {name: t.index_select(0, order) for name, t in received_ints.items()}
        shapes = {name: t.shape[1:] for name, t in float_fields.items()}
        floats = {
            name: part.reshape(-1, *shapes[name])
            for name, part in zip(names, received_floats.split(widths, dim=1))
        }
        return floats, received_ints

    n_local = world.gaussian_counts[world.rank]
    send = [c * n_local for c in world.camera_counts]
    recv = [world.local_cameras * n for n in world.gaussian_counts]
    rows = sum(send)
    float_rows = torch.cat([t.reshape(rows, w) for t, w in zip(float_fields.values(), widths)], dim=1)
    received_floats = exchange(float_rows if link is None else float_rows + link, send, recv)
    received_ints = {
        name: _all_to_all(t.reshape(rows, _row_width(t, packed)), send, recv)
        for name, t in int_fields.items()
    }
    floats = {
        name: _to_camera_major(part, world, float_fields[name].shape[2:])
        for name, part in zip(names, received_floats.split(widths, dim=1))
    }
    ints = {name: _to_camera_major(t, world, int_fields[name].shape[2:]) for name, t in received_ints.items()}
    return floats, ints


def _row_width(t: Tensor, packed: bool) -> int:
    """Elements per row of a field: its size past the row dimension (packed) or dimensions (dense)."""
    return int(torch.Size(t.shape[1 if packed else 2 :]).numel())


def _first_of(counts: Sequence[int], like: Tensor) -> Tensor:
    """The index of each rank's first element, as a tensor on ``like``'s device and dtype."""
    return torch.tensor([sum(counts[:i]) for i in range(len(counts))], dtype=like.dtype, device=like.device)


def _to_camera_major(rows: Tensor, world: World, tail: Sequence[int]) -> Tensor:
    """Rows received from every rank (rank j's block: ``[C_local, N_j]`` flattened) -> ``[C_local, N_all,
    *tail]``."""
    blocks = rows.split([world.local_cameras * n for n in world.gaussian_counts], dim=0)
    return torch.cat(
        [b.reshape(world.local_cameras, n, *tail) for b, n in zip(blocks, world.gaussian_counts)], dim=1
    )
