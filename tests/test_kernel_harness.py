"""The torch-free rasterizer kernels built on their own with tests/kernel_harness/driver.cpp, run on a case
made by gsplat_py's projection and binning, against the extension's outputs (and each build's vector width
checked): natively for the level the extension uses here (`kernel_case.py build --level ...` builds the
others), and cross-compiled for aarch64 (NEON) and run under qemu-user when aarch64-linux-gnu-g++ and
qemu-aarch64 are installed (Debian: g++-aarch64-linux-gnu, qemu-user), so that the ARM build is exercised
on x86 machines. Every x86 level runs through the extension in test_simd_levels.py."""

import platform
import shutil
import sys
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
import pytest

from gsplat_py.rendering import _backend

sys.path.insert(0, str(Path(__file__).resolve().parent / "kernel_harness"))
import kernel_case  # noqa: E402

pytestmark = pytest.mark.skipif(not _backend.extension_available(), reason="C++ extension not built")

AARCH64_SYSROOT = Path("/usr/aarch64-linux-gnu")


@pytest.fixture(scope="module")
def case(tmp_path_factory) -> Path:
    directory = tmp_path_factory.mktemp("kernel_case")
    kernel_case.make_case(directory)
    return directory


def best_native_level() -> str:
    """The kernel build the extension uses on this machine, as a namespace."""
    import torch.ops  # noqa: F401  (the extension registers torch.ops.gsplat_py)

    from gsplat_py.rendering import ops

    return ops.simd_level().replace("-", "_")


def aarch64_toolchain():
    """(cross compiler, qemu) or a reason to skip."""
    cxx, qemu = shutil.which("aarch64-linux-gnu-g++"), shutil.which("qemu-aarch64")
    if platform.machine() in ("aarch64", "arm64"):
        return "native aarch64: test_native_driver runs the NEON build"
    if cxx is None or qemu is None or not AARCH64_SYSROOT.is_dir():
        return "needs aarch64-linux-gnu-g++ and qemu-aarch64 (Debian: g++-aarch64-linux-gnu qemu-user)"
    return cxx, qemu


@pytest.fixture(scope="module")
def drivers(tmp_path_factory):
    """The drivers both tests need, compiled concurrently: {"native": path or a skip reason, "aarch64":
    ...}."""
    directory = tmp_path_factory.mktemp("kernel_drivers")
    cxx = shutil.which("g++") or shutil.which("c++")
    level = best_native_level()
    x86 = platform.machine() in ("x86_64", "AMD64")
    jobs = {"native": (cxx, level, None if x86 else []) if cxx else "no C++ compiler"}
    toolchain = aarch64_toolchain()
    jobs["aarch64"] = (toolchain[0], "neon", None) if isinstance(toolchain, tuple) else toolchain
    with ThreadPoolExecutor(max_workers=2) as pool:
        futures = {
            name: pool.submit(kernel_case.build_driver, directory / name, job[1], job[0], job[2])
            for name, job in jobs.items()
            if isinstance(job, tuple)
        }
        return {name: futures[name].result() if name in futures else job for name, job in jobs.items()}


def check_against_extension(case: Path, driver: list, results: Path, level: str) -> None:
    for float64 in (False, True):
        info = kernel_case.run_driver(driver, case, results / str(float64), float64=float64)
        assert info["level"] == level and info["lanes"] == kernel_case.LEVEL_LANES[level], info
        actual = kernel_case.read_outputs(results / str(float64), float64)
        expected = kernel_case.read_outputs(case, float64, f"expected_{'float64' if float64 else 'float32'}_")
        for name, e in expected.items():
            a = actual[name]
            assert a.shape == e.shape, (level, name)
            if float64:  # the same arithmetic up to FMA contraction and the order of lane sums
                np.testing.assert_allclose(a, e, rtol=1e-9, atol=1e-9, err_msg=f"{level} {name}")
                continue
            # float32: a pixel may also flip at the 1/255 threshold: compare in the bulk, bound the worst case
            close = np.isclose(a, e, rtol=1e-4, atol=1e-5)
            assert close.mean() > 0.999, (level, name, close.mean())
            worst = np.abs(a.astype(np.float64) - e).max() if e.size else 0.0
            scale = np.abs(e.astype(np.float64)).max() if e.size else 0.0
            assert name == "last_ids" or worst < 1e-1 * (1 + scale), (level, name, worst)


def test_native_driver(case, drivers, tmp_path):
    if isinstance(drivers["native"], str):
        pytest.skip(drivers["native"])
    check_against_extension(case, [str(drivers["native"])], tmp_path, best_native_level())


def test_aarch64_neon_driver_under_qemu(case, drivers, tmp_path):
    if isinstance(drivers["aarch64"], str):
        pytest.skip(drivers["aarch64"])
    qemu = aarch64_toolchain()[1]
    check_against_extension(
        case, [qemu, "-L", str(AARCH64_SYSROOT), str(drivers["aarch64"])], tmp_path, "neon"
    )
