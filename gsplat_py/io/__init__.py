"""File input/output for gsplat_py (Gaussian splat scenes)."""
