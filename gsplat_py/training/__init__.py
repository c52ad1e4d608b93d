"""Training utilities: image-quality metrics and losses."""
