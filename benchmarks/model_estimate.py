"""Timing-only estimate of one Llama-3-8B-shaped decoder layer (prefill, seq 2048, bf16, trn2).

Every op still issues its ISA instructions on one simulated NeuronCore; only the values are skipped
(meta tensors). Prints the wall time of the estimate (goal < 30 s) and the predicted MFU (goal >= 50%).

    python benchmarks/model_estimate.py [--seq 2048] [--target trn2]
"""
from __future__ import annotations

import argparse
import time


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--seq", type=int, default=2048)
    ap.add_argument("--target", default="trn2")
    ap.add_argument("--top", type=int, default=12)
    args = ap.parse_args()

    import torch
    from trnlab.torch.api import CompiledModel
    from trnlab.torch.models import build_layer

    t0 = time.perf_counter()
    layer = build_layer("llama-8b-layer", meta=True)
    x = torch.empty(1, args.seq, layer.cfg.hidden, device="meta")
    compiled = CompiledModel(layer, (x,), target=args.target, dtype=torch.bfloat16, numerics=False,
                             name="llama-3-8b decoder layer", trace=False)
    wall = time.perf_counter() - t0
    rep = compiled.report
    rep.print(top=args.top)
    print(f"wall seconds: {wall:.1f} (goal < 30; capture {rep.compile_s:.1f} s, simulation {rep.wall_s:.1f} s)")
    print(f"predicted latency: {rep.latency_s * 1e3:.2f} ms, {rep.instructions:,} instructions")
    print(f"predicted MFU of the layer: {rep.mfu:.1%} (goal >= 50%)")


if __name__ == "__main__":
    main()
