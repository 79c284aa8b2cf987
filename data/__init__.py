"""Filelists, datasets, transforms and episode samplers."""
import utils  # noqa: F401  (first: its warning filters apply before Paddle is imported)
