"""Helpers for the kernels' example_inputs(shape_scale, dtype, seed) factories (host-side inputs only)."""
from __future__ import annotations

import numpy as np

from trnlab.core import dtypes as dt


def scaled(n: int, shape_scale: float) -> int:
    """A dimension `n` scaled by shape_scale (at least 1)."""
    return max(1, int(round(n * shape_scale)))


def randn(rng: np.random.Generator, shape, dtype, std: float = 1.0, mean: float = 0.0) -> np.ndarray:
    values = rng.standard_normal(tuple(shape)) * std + mean
    return values.astype(np.float32).astype(dt.storage(dt.canonical(dtype)))


def rope_tables(seq: int, head_dim: int, dtype, base: float = 10000.0):
    """Hugging Face rotate-half tables: cos/sin [seq, head_dim] with the two halves repeated."""
    inv_freq = 1.0 / base ** (np.arange(0, head_dim, 2, dtype=np.float64) / head_dim)
    angles = np.outer(np.arange(seq, dtype=np.float64), inv_freq)
    angles = np.concatenate([angles, angles], axis=1)
    store = dt.storage(dt.canonical(dtype))
    return np.cos(angles).astype(np.float32).astype(store), np.sin(angles).astype(np.float32).astype(store)
