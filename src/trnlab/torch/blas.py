"""Keep numpy's BLAS single-threaded while simulating, and only while simulating.

The simulator issues many small matmuls (<= 128x128x512); OpenBLAS's thread pool makes each one
~50x slower on a busy 2-core machine. `blas_threads(1)` asks the loaded OpenBLAS for one thread
(ctypes; no new dependency) for the duration of a run and restores the previous count afterwards,
so the host program's own numpy work keeps its threads. Nested and concurrent runs share one
setting: the count is restored when the last of them ends. Nothing happens if no OpenBLAS is loaded."""
from __future__ import annotations

import ctypes
import threading
from contextlib import contextmanager

_SUFFIXES = ("64_", "")
_PREFIXES = ("scipy_openblas", "openblas")
_lock = threading.Lock()
_state = {"depth": 0, "saved": []}      # saved: (setter, previous count) per library


def _libraries() -> list:
    """(get, set) function pairs of every OpenBLAS loaded in this process."""
    import numpy  # noqa: F401  (loads the BLAS)
    try:
        with open("/proc/self/maps") as f:
            paths = sorted({line.split()[-1] for line in f if "openblas" in line.lower() and ".so" in line})
    except OSError:
        return []
    pairs = []
    for path in paths:
        try:
            lib = ctypes.CDLL(path)
        except OSError:
            continue
        for prefix in _PREFIXES:
            for suffix in _SUFFIXES:
                get, put = f"{prefix}_get_num_threads{suffix}", f"{prefix}_set_num_threads{suffix}"
                if hasattr(lib, get) and hasattr(lib, put):
                    pairs.append((getattr(lib, get), getattr(lib, put)))
                    break
            else:
                continue
            break
    return pairs


@contextmanager
def blas_threads(n: int = 1):
    """Run the body with OpenBLAS limited to n threads; the previous counts come back on exit."""
    with _lock:
        if _state["depth"] == 0:
            _state["saved"] = [(put, get()) for get, put in _libraries()]
            for put, _ in _state["saved"]:
                put(n)
        _state["depth"] += 1
    try:
        yield
    finally:
        with _lock:
            _state["depth"] -= 1
            if _state["depth"] == 0:
                for put, previous in _state["saved"]:
                    put(previous)
                _state["saved"] = []


def thread_counts() -> list[int]:
    """Current thread count of each loaded OpenBLAS (tests, diagnostics)."""
    return [get() for get, _ in _libraries()]
