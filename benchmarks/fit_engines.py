"""Fit the engine constants of the timing model to the role-fit calibration points; re-runnable.

    PYTHONPATH=src python benchmarks/fit_engines.py            # fit, print the result and the check
    PYTHONPATH=src python benchmarks/fit_engines.py --quick    # coarser grid, no full-size check

What is fitted (both in the trn2 preset of src/trnlab/hw/__init__.py; trn1 and trn3 keep the documented
values, ISA 2N and no launch time, as none of their calibration points constrains them):
- vector_two_input_cycles: Vector cycles per element when two tensor operands stream in (ISA: 2);
- kernel_launch_s: fixed time a measured latency includes beyond the engines' and queues' work.
To what: the four rmsnorm_quant Target Latencies (trn2, LNC=2; bench.calibrate POINTS, role fit).
The trn1 matmul-tutorial points (role fit for the two DMA constants, docs/calibration.md) do not
constrain these two: none of the tutorial's Vector instructions has two streamed tensor inputs, and
the launch time is < 1% of their milliseconds; they are printed with the result. Validation points
(fused Mamba) are never read here.

Constraint: the nki-samples perf bounds (role bound, docs/calibration.md) are device latencies too, so
the launch time may not push a kernel over its bound. The tightest: adaptive_avg_pool2d [1,512,7,7] -> 1
fp32, p99 <= 14.7 us (nki-samples@8370e11 test/unit/test_adaptive_avg_pool2d.py), whose simulated
kernel time on trn2 is 4.3 us: kernel_launch_s <= 10.4 us (--max-launch-us).

Method: the kernel processes one [128, H] row tile after another, so its simulated time is linear in
the number of row tiles per core once the pipeline is full: each S=32K point is extrapolated from runs
at S=2K and S=4K (checked against the full-size run at the end). For each vector_two_input_cycles on a
grid, kernel_launch_s (>= 0) minimising the sum of squared relative errors has a closed form; the
pair with the smallest sum wins.
"""
from __future__ import annotations

import argparse
import sys

from trnlab.bench.calibrate import POINTS, predict_us
from trnlab.hw import PRESETS


def _sim_us(point, chip, s):
    """Simulated kernel time (without launch overhead) at sequence length s."""
    return predict_us(point, shape=(s, point.shape[1]), chip=chip) - chip.kernel_launch_s * 1e6


def simulate_fit_points(f: float) -> list[tuple]:
    """[(point, simulated us without launch time)] for the rmsnorm_quant fit points at cycles f."""
    out = []
    cache = {}
    for p in (p for p in POINTS if p.role == "fit" and p.family == "rmsnorm_quant"):
        chip = PRESETS[p.target].replace(vector_two_input_cycles=f, kernel_launch_s=0.0)
        h = p.shape[1]
        for s in (2048, 4096):
            if (h, s) not in cache:
                cache[(h, s)] = _sim_us(p, chip, s)
        t2, t4 = cache[(h, 2048)], cache[(h, 4096)]
        out.append((p, t2 + (t4 - t2) * (p.shape[0] - 2048) / 2048))
    return out


MAX_LAUNCH_US = 10.4     # from the tightest nki-samples bound (module docstring)


def best_launch(sims, max_launch_us: float = MAX_LAUNCH_US) -> tuple[float, float]:
    """kernel_launch_s (us, 0 <= c <= max_launch_us) minimising sum(((sim + c) / m - 1)^2), and that sum
    (the sum is a parabola in c, so the constrained minimum is the clamped unconstrained one)."""
    num = sum((m - t) / m ** 2 for t, m in ((t, p.measured_us) for p, t in sims))
    den = sum(1.0 / p.measured_us ** 2 for p, _ in sims)
    c = min(max(0.0, num / den), max_launch_us)
    return c, sum(((t + c) / p.measured_us - 1) ** 2 for p, t in sims)


def fit(grid, max_launch_us: float = MAX_LAUNCH_US) -> tuple[float, float, list]:
    best = None
    for f in grid:
        sims = simulate_fit_points(f)
        c, sse = best_launch(sims, max_launch_us)
        errs = ", ".join(f"{(t + c) / p.measured_us - 1:+.1%}" for p, t in sims)
        print(f"  vector_two_input_cycles {f:.3f}: kernel_launch {c:6.1f} us, rms error "
              f"{(sse / len(sims)) ** 0.5:.2%} ({errs})", flush=True)
        if best is None or sse < best[3]:
            best = (f, c, sims, sse)
    return best[0], best[1], best[2]


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--quick", action="store_true", help="coarse grid, skip the full-size check")
    ap.add_argument("--max-launch-us", type=float, default=MAX_LAUNCH_US,
                    help="upper limit of kernel_launch_s from the nki-samples bounds (default %(default)s)")
    args = ap.parse_args(argv)
    grid = [1.0, 1.5, 2.0, 2.5] if args.quick else [1.0 + 0.125 * i for i in range(13)]
    print("fitting vector_two_input_cycles and kernel_launch_s to the rmsnorm_quant points (trn2, LNC=2)")
    f, c, sims = fit(grid, args.max_launch_us)
    print(f"\nRESULT vector_two_input_cycles = {f:.3f} cycles/element, kernel_launch_s = {c:.1f} us")
    for p, t in sims:
        print(f"  {p.name:28s} predicted {t + c:9.1f} us (extrapolated)  measured {p.measured_us:9.1f}  "
              f"error {(t + c) / p.measured_us - 1:+.1%}")
    if not args.quick:
        print("check at full size with the fitted constants:")
        for p in (p for p in POINTS if p.role == "fit"):
            chip = PRESETS[p.target].replace(vector_two_input_cycles=f, kernel_launch_s=c * 1e-6)
            us = predict_us(p, chip=chip)
            print(f"  {p.name:28s} {p.target} predicted {us:10.1f} us  measured {p.measured_us:10.1f}  "
                  f"error {us / p.measured_us - 1:+.1%}", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
