"""Compare two splat files Gaussian by Gaussian (same order), as gsplat_py reads them; used by
scripts/check_formats.sh to compare our decoding of a file with another tool's.

    python scripts/compare_splats.py A B [--flip-axes] [--quat-tolerance T] [--label TEXT]

Prints one Markdown table row: the label, the Gaussian counts, SH degrees and the largest absolute difference
of each attribute (positions, log-scales, opacities, SH DC, higher SH, unit quaternions up to sign); exits 1
when the counts or degrees differ or a difference exceeds float32 rounding (relative 1e-5, absolute 1e-6;
quaternions ``--quat-tolerance``). ``--flip-axes`` turns B half a turn about x first (RUB <-> RDF): for an SPZ
that the other tool converted without the axis change the SPZ specification prescribes. Infinite opacity
logits in a PLY B (splat-transform writes alpha 1 as +inf) are clamped as gsplat_py's readers clamp.
"""

from __future__ import annotations

import argparse
import math
import sys
from dataclasses import replace
from pathlib import Path

import numpy as np
import torch
from plyfile import PlyData

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from gsplat_py.io.compressed_ply import is_compressed_ply  # noqa: E402
from gsplat_py.io.formats import read_splat_file  # noqa: E402
from gsplat_py.io.packing import OPACITY_EPS  # noqa: E402
from gsplat_py.io.spz import AXIS_SIGNS, RUB, flip_axes  # noqa: E402
from gsplat_py.model import GaussianSplats  # noqa: E402

FLOAT32_RTOL, FLOAT32_ATOL = 1e-5, 1e-6


def flipped(splats: GaussianSplats) -> GaussianSplats:
    """``splats`` turned half a turn about x, (x, y, z) -> (x, -y, -z): from RUB to RDF and back."""
    means, quats, rest = flip_axes(
        splats.means.double().numpy(),
        splats.quats.double().numpy(),
        splats.sh[:, 1:].double().numpy(),
        AXIS_SIGNS[RUB],
    )
    sh = torch.cat([splats.sh[:, :1], torch.from_numpy(rest).float()], dim=1)
    turned = {"means": torch.from_numpy(means).float(), "quats": torch.from_numpy(quats).float()}
    return replace(splats, sh=sh, **turned)


def with_finite_opacities(path: Path) -> Path:
    """``path``, or for a PLY with infinite opacity logits (splat-transform writes alpha 1 as +inf) a copy
    beside it whose logits are clamped as gsplat_py's readers clamp decoded opacities."""
    if path.suffix != ".ply" or is_compressed_ply(path):
        return path
    ply = PlyData.read(str(path))
    opacity = ply["vertex"].data["opacity"]
    if np.isfinite(opacity).all():
        return path
    infinite = int((~np.isfinite(opacity)).sum())
    limit = math.log((1 - OPACITY_EPS) / OPACITY_EPS)
    ply["vertex"].data["opacity"] = np.clip(opacity, -limit, limit)
    copy = path.with_name(path.stem + ".finite.ply")
    ply.write(str(copy))
    print(f"({path.name}: {infinite} infinite opacity logits clamped)", file=sys.stderr)
    return copy


def differences(a: GaussianSplats, b: GaussianSplats) -> dict[str, tuple[float, bool]]:
    """The largest difference of each attribute, and whether it is within float32 rounding."""
    unit_a = torch.nn.functional.normalize(a.quats.double(), dim=1)
    unit_b = torch.nn.functional.normalize(b.quats.double(), dim=1)
    unit_b = unit_b * torch.sign((unit_a * unit_b).sum(1, keepdim=True))
    pairs = {
        "positions": (a.means, b.means),
        "log-scales": (a.log_scales, b.log_scales),
        "opacities": (a.opacities(), b.opacities()),
        "SH DC": (a.sh[:, 0], b.sh[:, 0]),
        "higher SH": (a.sh[:, 1:], b.sh[:, 1:]),
        "rotations": (unit_a, unit_b),
    }
    result = {}
    for name, (x, y) in pairs.items():
        x, y = x.double(), y.double()
        largest = float((x - y).abs().max()) if x.numel() else 0.0
        result[name] = (largest, bool(torch.allclose(x, y, rtol=FLOAT32_RTOL, atol=FLOAT32_ATOL)))
    return result


def main() -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("a")
    parser.add_argument("b")
    parser.add_argument("--flip-axes", action="store_true", help="turn B half a turn about x first")
    parser.add_argument("--quat-tolerance", type=float, help="the largest allowed rotation difference")
    parser.add_argument("--label", help="the row's label (default: A's file name)")
    args = parser.parse_args()
    a = read_splat_file(args.a).splats
    b = read_splat_file(with_finite_opacities(Path(args.b))).splats
    if args.flip_axes:
        b = flipped(b)
    label = args.label or Path(args.a).name
    if (a.num_gaussians, a.sh_degree) != (b.num_gaussians, b.sh_degree):
        print(
            f"| {label} | {a.num_gaussians} vs {b.num_gaussians} Gaussians, SH degree {a.sh_degree} vs "
            f"{b.sh_degree} | | | | | | | FAIL |"
        )
        return 1
    found = differences(a, b)
    if args.quat_tolerance is not None:
        found["rotations"] = (found["rotations"][0], found["rotations"][0] <= args.quat_tolerance)
    ok = all(within for _, within in found.values())
    cells = " | ".join(f"{largest:.2g}" for largest, _ in found.values())
    print(f"| {label} | {a.num_gaussians:,}, degree {a.sh_degree} | {cells} | {'ok' if ok else 'FAIL'} |")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
