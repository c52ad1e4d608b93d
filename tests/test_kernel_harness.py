"""The torch-free CPU kernels built on their own with tests/kernel_harness/driver.cpp against the
extension's outputs on the same inputs: the rasterizer kernels on a case made by gsplat_py's projection
and binning (and each build's vector width checked), the fused Adam step (every row and the visible rows),
SSIM (forward and backward) and the projection (forward and backward, every lens model). Built natively
for the level the extension uses here (`kernel_case.py build --level ...` builds the others), and
cross-compiled for aarch64 (NEON) and run under qemu-user when aarch64-linux-gnu-g++ and qemu-aarch64 are
installed (Debian: g++-aarch64-linux-gnu, qemu-user), so that the ARM build is exercised on x86 machines.
Every x86 level runs through the extension in test_simd_levels.py, test_optimizer.py and test_metrics.py."""

import platform
import shutil
import sys
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
import pytest

from gsplat_py.rendering import _backend
from gsplat_py.training.optimizer import _TORCH_TAIL_MULTIPLE

sys.path.insert(0, str(Path(__file__).resolve().parent / "kernel_harness"))
import kernel_case  # noqa: E402

pytestmark = pytest.mark.skipif(not _backend.extension_available(), reason="C++ extension not built")

AARCH64_SYSROOT = Path("/usr/aarch64-linux-gnu")
TARGETS = ("native", "aarch64")
# The SSIM driver against the extension: within this many machine epsilons of each output's largest
# magnitude. ssim.cpp compiles without fma contraction and every operation but one is correctly rounded,
# so the builds agree to the bit (as measured, native and aarch64); the exception is libm's exp, which
# makes the window's weights and is not required to round correctly, so another libm may differ by an
# ulp per weight. That moves the value by ~1.2 and the gradient by ~7.5 epsilons of their largest
# magnitude (the plain-PyTorch SSIM of this case with every weight one ulp off): 64 leaves room 8 times
# that, and a real fault (a lost vector tail, a wrong tap, a border row) is far above it.
SSIM_EPSILONS = 64
# Threads the Adam and SSIM drivers run on (the extension on torch's): the results do not depend on it.
DRIVER_THREADS = 2


@pytest.fixture(scope="module")
def case(tmp_path_factory) -> Path:
    directory = tmp_path_factory.mktemp("kernel_case")
    kernel_case.make_case(directory)
    return directory


@pytest.fixture(scope="module")
def adam_case(tmp_path_factory) -> Path:
    directory = tmp_path_factory.mktemp("adam_case")
    kernel_case.make_adam_case(directory)
    return directory


@pytest.fixture(scope="module", params=kernel_case.CAMERA_MODELS)
def projection_case(request, tmp_path_factory) -> Path:
    directory = tmp_path_factory.mktemp(f"projection_case_{request.param}")
    kernel_case.make_projection_case(directory, request.param)
    return directory


@pytest.fixture(scope="module")
def ssim_case(tmp_path_factory) -> Path:
    directory = tmp_path_factory.mktemp("ssim_case")
    kernel_case.make_ssim_case(directory)
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
        return "native aarch64: the native driver is the NEON build"
    if cxx is None or qemu is None or not AARCH64_SYSROOT.is_dir():
        return "needs aarch64-linux-gnu-g++ and qemu-aarch64 (Debian: g++-aarch64-linux-gnu qemu-user)"
    return cxx, qemu


@pytest.fixture(scope="module")
def drivers(tmp_path_factory):
    """The drivers the tests need, compiled concurrently: {"native": path or a skip reason, "aarch64":
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


def driver_command(drivers: dict, target: str) -> tuple[list[str], str]:
    """The command that runs the driver built for `target` (TARGETS) and the level it was built for;
    skips the test when there is no such build here."""
    if isinstance(drivers[target], str):
        pytest.skip(drivers[target])
    if target == "native":
        return [str(drivers["native"])], best_native_level()
    return [aarch64_toolchain()[1], "-L", str(AARCH64_SYSROOT), str(drivers["aarch64"])], "neon"


def dtype_name(float64: bool) -> str:
    return "float64" if float64 else "float32"


def run_and_read(
    command: list,
    case: Path,
    results: Path,
    float64: bool,
    kernel: str = "raster",
    names: Sequence[str] = kernel_case.OUTPUTS,
    threads: int = 1,
) -> tuple[dict, dict, dict]:
    """Runs the driver's `kernel` on `case`: (its printed line, its outputs `names`, the extension's)."""
    info = kernel_case.run_driver(command, case, results, float64=float64, kernel=kernel, threads=threads)
    actual = kernel_case.read_outputs(results, float64, names=names)
    expected = kernel_case.read_outputs(case, float64, f"expected_{dtype_name(float64)}_", names)
    return info, actual, expected


def check_against_extension(case: Path, driver: list, level: str, results: Path) -> None:
    for float64 in (False, True):
        info, actual, expected = run_and_read(driver, case, results / str(float64), float64)
        assert info["level"] == level and info["lanes"] == kernel_case.LEVEL_LANES[level], info
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
    check_against_extension(case, *driver_command(drivers, "native"), tmp_path)


def test_aarch64_neon_driver_under_qemu(case, drivers, tmp_path):
    check_against_extension(case, *driver_command(drivers, "aarch64"), tmp_path)


def runs_per_precision(kernel, names, case, drivers, target, tmp_path):
    """(float64, the driver's outputs, the extension's) for float32 and float64 runs of `kernel` on
    `target`'s driver, each run's level checked."""
    command, level = driver_command(drivers, target)
    for float64 in (False, True):
        directory = tmp_path / str(float64)
        info, actual, expected = run_and_read(
            command, case, directory, float64, kernel=kernel, names=names, threads=DRIVER_THREADS
        )
        assert info["level"] == level, info
        yield float64, actual, expected


@pytest.mark.parametrize("target", TARGETS)
def test_adam_step_gives_the_extension_bits(adam_case, drivers, tmp_path, target):
    """adam.cpp's step, on every row and on the visible rows, is the extension's to the bit (adam_math.h
    rounds every operation correctly), and on every row torch's fused Adam's but for the last values of
    a tensor that torch rounds in a scalar loop of its own (gsplat_py.training.optimizer)."""
    runs = runs_per_precision("adam", kernel_case.ADAM_OUTPUTS, adam_case, drivers, target, tmp_path)
    for float64, actual, expected in runs:
        for name, e in expected.items():
            assert actual[name].tobytes() == e.tobytes(), (target, dtype_name(float64), name)
        torch_fused = kernel_case.read_outputs(
            adam_case, float64, f"torch_{dtype_name(float64)}_", kernel_case.ADAM_PLAIN_OUTPUTS
        )
        for name, e in torch_fused.items():
            body = e.size - e.size % _TORCH_TAIL_MULTIPLE
            assert actual[name][:body].tobytes() == e[:body].tobytes(), (target, dtype_name(float64), name)
        # the visible rows' step is not the plain one: the mask left rows as they were
        assert not np.array_equal(actual["plain_param0"], actual["visible_param0"])


@pytest.mark.parametrize("target", TARGETS)
def test_ssim_matches_the_extension(ssim_case, drivers, tmp_path, target):
    """ssim.cpp's value, blurred maps and gradient against the extension's (SSIM_EPSILONS says why)."""
    runs = runs_per_precision("ssim", kernel_case.SSIM_OUTPUTS, ssim_case, drivers, target, tmp_path)
    for float64, actual, expected in runs:
        for name, e in expected.items():
            tolerance = SSIM_EPSILONS * np.finfo(e.dtype).eps * np.abs(e).max()
            np.testing.assert_allclose(
                actual[name], e, rtol=0, atol=tolerance, err_msg=f"{target} {dtype_name(float64)} {name}"
            )


@pytest.mark.parametrize("target", TARGETS)
def test_projection_gives_the_extension_bits(projection_case, drivers, tmp_path, target):
    """projection.cpp's outputs and gradients (camera gradients included) are the extension's to the bit:
    it compiles without fma contraction, and its only library calls round correctly (sqrt) or are exact
    (ceil) but for log (the radius of a faint Gaussian) and, for the fisheye lens, atan."""
    runs = runs_per_precision(
        "projection", kernel_case.PROJECTION_OUTPUTS, projection_case, drivers, target, tmp_path
    )
    for float64, actual, expected in runs:
        assert (expected["radii"] > 0).any() and (expected["radii"] == 0).any(), "visible and culled pairs"
        for name, e in expected.items():
            assert actual[name].tobytes() == e.tobytes(), (target, dtype_name(float64), name)
