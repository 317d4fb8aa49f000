"""Small layout helpers shared by the kernels (HBM views only; no computation)."""
from __future__ import annotations

PMAX = 128          # partitions per tile (nl.tile_size.pmax)


def ceil_div(a: int, b: int) -> int:
    return -(-a // b)


def tiles(n: int, size: int = PMAX):
    """(start, length) of each tile of `size` covering range(n); the last tile may be partial."""
    for start in range(0, n, size):
        yield start, min(size, n - start)


def as_rows(t):
    """An HBM tensor viewed as [rows, last_dim] (leading dims flattened; 1-D becomes [1, n])."""
    if t.ndim == 1:
        return t.reshape(1, t.shape[0])
    rows = 1
    for d in t.shape[:-1]:
        rows *= d
    return t.reshape(rows, t.shape[-1])
