"""Limits the compiled kernels are built around: the one place they are defined.

setup.py passes them to the C++ and CUDA compilers as macros (see ``compile_definitions``), so the kernels'
fixed-size arrays, their boundary checks and the Python argument checks all agree.
"""

MAX_SH_DEGREE = 4  # spherical-harmonics degree (gsplat's): (MAX_SH_DEGREE + 1) ** 2 bases per colour channel
MAX_TILE_SIZE = 64  # tile side in pixels: the CPU kernels keep a tile's 4x4 pixel blocks in fixed-size arrays


def compile_definitions() -> list[tuple[str, str]]:
    """The macros that carry these limits into the C++ and CUDA sources."""
    return [("GSPLAT_PY_MAX_SH_DEGREE", str(MAX_SH_DEGREE)), ("GSPLAT_PY_MAX_TILE_SIZE", str(MAX_TILE_SIZE))]
