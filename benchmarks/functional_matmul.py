"""Functional speed: the step-4 (fully blocked) matmul kernel at 2048^3 bf16 with numerics on the
simulator, against the bare numpy loop over the same 128x128x512 tiles (bf16 tiles converted to
fp32, fp32 accumulation). Prints both times and the ratio (goal: simulator <= 2x numpy).

Usage: python benchmarks/functional_matmul.py [size]
"""
from __future__ import annotations

import sys
import time

import ml_dtypes
import numpy as np


def numpy_tiles(lhsT, rhs, tm=128, tk=128, tn=512):
    """The same tile loop without a simulator: per 128x512 output tile, accumulate 128x128x512 products."""
    K, M = lhsT.shape
    N = rhs.shape[1]
    out = np.empty((M, N), np.float32)
    for m in range(0, M, tm):
        for n in range(0, N, tn):
            acc = np.zeros((tm, tn), np.float32)
            for k in range(0, K, tk):
                a = lhsT[k:k + tk, m:m + tm].astype(np.float32)
                b = rhs[k:k + tk, n:n + tn].astype(np.float32)
                acc += a.T @ b
            out[m:m + tm, n:n + tn] = acc
    return out


def interleaved_best(fns, repeat=5):
    """Min wall time of each function, runs interleaved so background load hits both alike."""
    best, results = [float("inf")] * len(fns), [None] * len(fns)
    for _ in range(repeat):
        for i, fn in enumerate(fns):
            t = time.perf_counter()
            results[i] = fn()
            best[i] = min(best[i], time.perf_counter() - t)
    return best, results


def main() -> None:
    from trnlab.kernels.matmul import matmul_blocked
    size = int(sys.argv[1]) if len(sys.argv) > 1 else 2048
    rng = np.random.default_rng(0)
    lhsT = rng.standard_normal((size, size), dtype=np.float32).astype(ml_dtypes.bfloat16)
    rhs = rng.standard_normal((size, size), dtype=np.float32).astype(ml_dtypes.bfloat16)
    (t_np, t_sim), (ref, out) = interleaved_best([lambda: numpy_tiles(lhsT, rhs),
                                                  lambda: matmul_blocked(lhsT, rhs, out_dtype=np.float32)])
    err = float(np.abs(out - ref).max() / np.abs(ref).max())
    print(f"step-4 kernel {size}^3 bf16 -> fp32, numerics on: simulator {t_sim:.3f} s, numpy tile loop "
          f"{t_np:.3f} s, ratio {t_sim / t_np:.2f}x (goal <= 2x); max rel. difference {err:.1e}")


if __name__ == "__main__":
    main()
