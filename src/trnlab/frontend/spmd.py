"""SPMD grid queries shared by both NKI front ends (the running program's launch grid)."""
from __future__ import annotations

import numpy as np

from trnlab.core.machine import current


def num_programs(axes=None) -> int:
    """Programs in the launch grid: all of them, along one axis, or along several."""
    grid = current().num_programs
    if axes is None:
        return int(np.prod(grid))
    if isinstance(axes, int):
        return int(grid[axes]) if axes < len(grid) else 1
    return int(np.prod([grid[a] for a in axes]))


def program_ndim() -> int:
    return len(current().num_programs)
