"""Keep numpy's BLAS single-threaded while simulating.

The simulator issues many small matmuls (<= 128x128x512); OpenBLAS's thread pool makes each one
~50x slower on a busy 2-core machine. We ask the loaded OpenBLAS for one thread at run time
(ctypes; no new dependency). Nothing happens if the library is not found."""
from __future__ import annotations

import ctypes

_done = []


def single_thread_blas() -> bool:
    if _done:
        return _done[0]
    ok = False
    try:
        import numpy  # noqa: F401  (loads the BLAS)
        with open("/proc/self/maps") as f:
            paths = sorted({line.split()[-1] for line in f if "openblas" in line.lower() and ".so" in line})
        for path in paths:
            lib = ctypes.CDLL(path)
            for name in ("scipy_openblas_set_num_threads64_", "scipy_openblas_set_num_threads",
                         "openblas_set_num_threads64_", "openblas_set_num_threads"):
                if hasattr(lib, name):
                    getattr(lib, name)(1)
                    ok = True
                    break
    except OSError:
        ok = False
    _done.append(ok)
    return ok
