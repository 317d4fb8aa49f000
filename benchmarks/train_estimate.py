"""One training step (forward, backward, AdamW) of one Llama-3-8B-shaped decoder layer, seq 4096, bf16,
on one trn2 NeuronCore, timing-only: predicted step time, MFU and HFU, and the wall time it took
(goal: under 60 s on a 2-core machine).

Usage: python benchmarks/train_estimate.py [--target trn2] [--seq 4096] [--checkpointing none|selective|full]
"""
from __future__ import annotations

import argparse
import time

from trnlab.torch.report import fmt_time
from trnlab.torch.trainer import layer_step


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--target", default="trn2")
    ap.add_argument("--seq", type=int, default=4096)
    ap.add_argument("--checkpointing", default="none", choices=("none", "selective", "full"))
    args = ap.parse_args()
    t0 = time.perf_counter()
    r = layer_step("llama-8b-layer", target=args.target, seq=args.seq, checkpointing=args.checkpointing)
    wall = time.perf_counter() - t0
    t = r.timing
    print(f"Llama-3-8B decoder layer, seq {r.seq}, {r.dtype}, one {r.target} NeuronCore, checkpointing "
          f"{r.checkpointing} (timing-only)")
    print(f"  step      {fmt_time(t.step_s)} = forward {fmt_time(t.forward_s)} + backward {fmt_time(t.backward_s)}"
          f" + AdamW {fmt_time(t.optimizer_s)}")
    print(f"  MFU       {r.mfu:.1%} (6N + 12 x hidden x seq per token, N = {r.params:,})")
    print(f"  HFU       {r.hfu:.1%} (Tensor-engine work incl. recompute)")
    print(f"  tokens/s  {r.tokens_per_s:,.0f}")
    print(f"  HBM       {r.hbm.describe()}")
    print(f"  simulated {t.instructions:,} instructions in {wall:.1f} s wall "
          f"({t.instructions / wall:,.0f} instructions/s)")


if __name__ == "__main__":
    main()
