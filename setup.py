"""Builds gsplat_py and its C++ extension (gsplat_py._C).

Build against the torch you already have, without build isolation, so pip never downloads another torch
(README, "Install"):

    pip install torch==2.13.0 ninja setuptools wheel     # or any torch >= 2.1 you already use
    pip install --no-build-isolation ".[test]"           # -e for development

The CUDA backend (csrc/cuda) is built too when this torch has CUDA and a CUDA toolkit (nvcc) is found;
GSPLAT_PY_CUDA=0 builds the CPU backend only (`gsplat-py info` says what was built). The wheel carries the
training presets (gsplat_py/configs) and the bundled sample scene (data/snowmiku, as gsplat_py/_bundled).
"""

import glob
import os
import platform
import runpy
import shutil
import sys
from concurrent.futures import ThreadPoolExecutor

from setuptools import find_packages, setup
from setuptools.command.build_py import build_py

try:
    import torch
    from torch.utils.cpp_extension import CUDA_HOME, BuildExtension, CppExtension, CUDAExtension
except ImportError:
    sys.exit(
        "gsplat_py builds its C++ extension against an installed PyTorch, and this build environment has "
        "none.\nIf torch is installed, pip's build isolation hid it: build with --no-build-isolation, e.g.\n"
        '    pip install --no-build-isolation ".[test]"\n'
        "Otherwise install torch first (e.g. `pip install torch==2.13.0 ninja setuptools wheel`)."
    )

HERE = os.path.dirname(os.path.abspath(__file__))
VERSION = runpy.run_path(os.path.join(HERE, "gsplat_py", "_version.py"))["__version__"]
SAMPLE_SCENE = os.path.join("data", "snowmiku")  # copied into the wheel as gsplat_py/_bundled/snowmiku
TORCH_VERSION = torch.__version__.split("+")[0]

# The kernels' limits (max SH degree, max tile size) as -D macros, from the one file that defines them;
# read without importing gsplat_py (which needs the extension this builds).
LIMITS_FILE = os.path.join(HERE, "gsplat_py", "rendering", "limits.py")
LIMIT_MACROS = runpy.run_path(LIMITS_FILE)["compile_definitions"]()
# Torch-free headers both backends include (csrc/include); each directory's own headers are found
# beside the sources that include them.
INCLUDE_DIRS = [os.path.join(HERE, "csrc", "include")]

# -fno-math-errno lets sqrt/exp calls vectorise without changing any result; -ffast-math is not used
# because it changes NaN handling and rounding (the kernels vectorise without it).
CXX_FLAGS = ["-O3", "-g0", "-std=c++20", "-fopenmp", "-fno-math-errno", "-Wall", "-Wno-unknown-pragmas"]


# The SIMD rasterizer kernels (torch-free) are compiled once per instruction-set level, each into its
# own namespace; csrc/cpu/rasterize.cpp picks the best one the CPU supports at run time. The vector width
# follows the level: 16 floats with AVX-512, 8 with AVX2, 4 with SSE2 and NEON (armv8-a's baseline).
SIMD_KERNEL_SOURCE = os.path.join("csrc", "cpu", "raster_kernels.cpp")
if platform.machine() in ("x86_64", "AMD64"):
    SIMD_LEVELS = {
        "x86_64_v4": "-march=x86-64-v4",
        "x86_64_v3": "-march=x86-64-v3",
        "baseline": "-march=x86-64",
    }
elif platform.machine() in ("aarch64", "arm64"):
    SIMD_LEVELS = {"neon": None}
else:
    SIMD_LEVELS = {"baseline": None}


class BuildWithSimdKernels(BuildExtension):
    def build_extensions(self):
        for ext in self.extensions:
            ext.extra_objects = ext.extra_objects + self._compile_simd_kernels()
        super().build_extensions()

    def _compile_simd_kernels(self):
        def compile_level(level, arch_flag):
            flags = CXX_FLAGS + ["-fPIC", "-Wno-psabi"] + ([arch_flag] if arch_flag else [])
            return self.compiler.compile(
                [SIMD_KERNEL_SOURCE],
                output_dir=os.path.join(self.build_temp, level),
                macros=[("GS_ISA", level)] + LIMIT_MACROS,
                include_dirs=INCLUDE_DIRS,
                extra_postargs=flags,
            )

        with ThreadPoolExecutor(max_workers=os.cpu_count() or 1) as pool:
            compiled = list(pool.map(lambda item: compile_level(*item), SIMD_LEVELS.items()))
        return [obj for objects in compiled for obj in objects]


NVCC_FLAGS = ["-O3", "-std=c++17", "-lineinfo"]
# viewer: `gsplat-py view` and `train --viewer` (viser serves the page; its wheel carries the built client).
VIEWER_REQUIRES = ["viser>=1.1.1,<2"]
SFM_REQUIRES = ["pycolmap>=4.2"]


def cuda_build_reason():
    """Why the CUDA backend is not built, or None when it is."""
    if os.environ.get("GSPLAT_PY_CUDA", "auto") == "0":
        return "GSPLAT_PY_CUDA=0"
    if torch.version.cuda is None:
        return f"torch {torch.__version__} has no CUDA"
    if CUDA_HOME is None or not os.path.exists(os.path.join(CUDA_HOME, "bin", "nvcc")):
        return "no CUDA toolkit (nvcc) found; set CUDA_HOME"
    return None


def extension():
    # csrc/cpu: the CPU kernels; csrc/torch: the schemas and the CPU ops' torch wrapper (cuda_ops.cpp,
    # the CUDA one, only with the CUDA backend).
    cpu_kernels = [
        src for src in glob.glob(os.path.join("csrc", "cpu", "*.cpp")) if src != SIMD_KERNEL_SOURCE
    ]
    sources = sorted(cpu_kernels) + [
        os.path.join("csrc", "torch", name) for name in ("ops.cpp", "cpu_ops.cpp")
    ]
    common = dict(
        name="gsplat_py._C",
        include_dirs=INCLUDE_DIRS,
        define_macros=LIMIT_MACROS,
        # libgomp.so.1 is the soname torch's wheel bundles too, so one OpenMP runtime is shared.
        extra_link_args=["-fopenmp"],
    )
    reason = cuda_build_reason()
    if reason is not None:
        print(f"gsplat_py: building the CPU backend only ({reason})")
        return CppExtension(sources=sources, extra_compile_args={"cxx": CXX_FLAGS}, **common)
    cuda_sources = sorted(glob.glob(os.path.join("csrc", "cuda", "*.cu"))) + [
        os.path.join("csrc", "torch", "cuda_ops.cpp")
    ]
    print(
        f"gsplat_py: building the CPU and CUDA backends (torch CUDA {torch.version.cuda}, toolkit "
        f"{CUDA_HOME})"
    )
    return CUDAExtension(
        sources=sources + cuda_sources, extra_compile_args={"cxx": CXX_FLAGS, "nvcc": NVCC_FLAGS}, **common
    )


class BuildPyWithSampleScene(build_py):
    """Also copies the bundled sample scene into the package, where gsplat_py.data.scenes finds it."""

    def run(self):
        super().run()
        if not self.editable_mode and os.path.isdir(SAMPLE_SCENE):
            target = os.path.join(self.build_lib, "gsplat_py", "_bundled", os.path.basename(SAMPLE_SCENE))
            shutil.copytree(SAMPLE_SCENE, target, dirs_exist_ok=True)


setup(
    name="gsplat_py",
    version=VERSION,
    description="Differentiable 3D Gaussian splatting with fast C++ CPU and CUDA rasterizers",
    packages=find_packages(include=["gsplat_py", "gsplat_py.*"]),
    package_data={"gsplat_py": ["configs/*.toml"]},
    python_requires=">=3.11",
    # The extension is tied to the torch it was compiled against: require exactly that one, so that
    # installing gsplat_py can never replace the user's torch.
    install_requires=[f"torch=={TORCH_VERSION}", "numpy", "pillow", "plyfile", "tqdm"],
    extras_require={
        # test: zstandard so that the SPZ version 4 tests run; hypothesis for tests/test_bad_*.py; the
        # viewer's tests drive Debian's Chromium (apt-get install chromium) through Playwright; pycolmap so
        # that the structure-from-motion tests run (a 38 MB wheel, no build).
        "test": ["pytest", "zstandard", "hypothesis", *VIEWER_REQUIRES, "playwright>=1.45", *SFM_REQUIRES],
        # video: MP4 output of `gsplat-py render --video` (PyAV bundles its own FFmpeg).
        "video": ["av>=12"],
        # spz: SPZ version 4 (zstd) export and import; version 3 (gzip) needs nothing.
        "spz": ["zstandard"],
        "viewer": VIEWER_REQUIRES,
        # sfm: `gsplat-py sfm` and training on a folder of photos (pycolmap: COLMAP's own Python bindings,
        # CPU SIFT on PyPI; 4.2 is the API gsplat_py.data.sfm is written against).
        "sfm": SFM_REQUIRES,
        # dev: the checks .ci/run runs (pinned, so formatting does not drift with new releases), and sdists.
        "dev": ["ruff==0.17.6", "mypy==2.4.1", "clang-format==19.1.7", "build"],
    },
    entry_points={"console_scripts": ["gsplat-py=gsplat_py.cli:main"]},
    ext_modules=[extension()],
    cmdclass={
        "build_ext": BuildWithSimdKernels.with_options(use_ninja=True),
        "build_py": BuildPyWithSampleScene,
    },
    zip_safe=False,
)
