"""Find the kernel source line that issued an instruction: the first frame outside trnlab's machinery.

Frames in trnlab/kernels and trnlab/bench/published.py count as kernel code (our kernel library and our
calibration kernels are written in the NKI front ends)."""
from __future__ import annotations

import os
import sys

import trnlab

_PKG = os.path.dirname(os.path.abspath(trnlab.__file__)) + os.sep
_KERNELS = (_PKG + "kernels" + os.sep, os.path.join(_PKG, "bench", "published.py"))
_SKIP_PREFIXES = (os.path.dirname(os.__file__) + os.sep + "contextlib",)


def _is_machinery(filename: str) -> bool:
    return filename.startswith(_PKG) and not filename.startswith(_KERNELS)


def _skipped(filename: str) -> bool:
    return _is_machinery(filename) or filename.startswith(_SKIP_PREFIXES) or filename.startswith("<frozen")


# id(code) -> (code, skipped?, {f_lasti: "file:line"}). Holding the code object keeps its id from
# being reused. The line is a function of (code, f_lasti); f_lasti is free to read, while f_lineno
# decodes the code's line table from its start on every access (hot: every instruction and tile).
_CODES: dict[int, tuple] = {}
_CODES_MAX = 4096            # exec'd/generated kernels make new code objects: keep the cache bounded


def _add_code(code) -> tuple:
    if len(_CODES) >= _CODES_MAX:
        _CODES.clear()
    info = _CODES[id(code)] = (code, _skipped(code.co_filename), {})
    return info


_skip_hint = None            # the machinery code last walked past (hot: the front end's API wrapper)


def user_location(depth: int = 2) -> str:
    """'file:line' of the innermost frame that is not trnlab machinery ('<unknown>' if none)."""
    global _skip_hint
    frame = sys._getframe(depth)
    while frame is not None:
        code = frame.f_code
        if code is _skip_hint:
            frame = frame.f_back
            continue
        code, skipped, lines = _CODES.get(id(code)) or _add_code(code)
        if not skipped:
            loc = lines.get(frame.f_lasti)
            if loc is None:
                loc = lines[frame.f_lasti] = f"{code.co_filename}:{frame.f_lineno}"
            return loc
        _skip_hint = code
        frame = frame.f_back
    return "<unknown>"


def short(loc: str) -> str:
    """basename:line for tables."""
    path, _, line = loc.rpartition(":")
    return f"{os.path.basename(path)}:{line}" if path else loc
