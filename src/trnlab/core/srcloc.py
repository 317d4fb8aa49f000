"""Find the kernel source line that issued an instruction: the first frame outside trnlab's machinery.

Frames in trnlab/kernels count as kernel code (our kernel library is written in the NKI front end)."""
from __future__ import annotations

import os
import sys

import trnlab

_PKG = os.path.dirname(os.path.abspath(trnlab.__file__)) + os.sep
_KERNELS = _PKG + "kernels" + os.sep
_SKIP_PREFIXES = (os.path.dirname(os.__file__) + os.sep + "contextlib",)


def _is_machinery(filename: str) -> bool:
    return filename.startswith(_PKG) and not filename.startswith(_KERNELS)


def user_location(depth: int = 2) -> str:
    """'file:line' of the innermost frame that is not trnlab machinery ('<unknown>' if none)."""
    frame = sys._getframe(depth)
    while frame is not None:
        name = frame.f_code.co_filename
        if not (_is_machinery(name) or name.startswith(_SKIP_PREFIXES) or name.startswith("<frozen")):
            return f"{name}:{frame.f_lineno}"
        frame = frame.f_back
    return "<unknown>"


def short(loc: str) -> str:
    """basename:line for tables."""
    path, _, line = loc.rpartition(":")
    return f"{os.path.basename(path)}:{line}" if path else loc
