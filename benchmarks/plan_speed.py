"""Planner speed (issue 12; a benchmark, not a timed test).

1. One training plan of Llama-3.1-70B on 32 trn1.32xlarge (AWS's layout TP32 PP8 DP4, global batch 1024) at
   seq 4096 with a cold layer cache. Goal: < 60 s wall. (AWS's row is seq 8192; there trnlab's flash-attention
   backward kernel exceeds trn1's SBUF for this shard, see docs/validation.md.)
2. A search over >= 50 layouts of Llama-3.1-8B on up to 32 trn1.32xlarge nodes (seq 4096, global batch 1024,
   TP 8/16/32, microbatch 1, selective or full checkpointing), cold cache, in the local process pool and
   then on a local Ray instance (its own cold cache). Goal: < 5 min; prints the Ray / pool ratio.

Run: PYTHONPATH=src python benchmarks/plan_speed.py [--skip-ray] [--workers N]
"""
from __future__ import annotations

import argparse
import os
import tempfile
import time


def _cold(tag: str) -> str:
    from trnlab.plan import layers
    path = tempfile.mkdtemp(prefix=f"trnlab-plan-{tag}-")
    os.environ["TRNLAB_PLAN_CACHE"] = path
    layers.clear_memory_cache()
    return path


def one_plan() -> float:
    from trnlab.plan.train import plan_training
    _cold("70b")
    t0 = time.perf_counter()
    p = plan_training("llama-3.1-70b", system="trn1.32xlarge", nodes=32, seq=4096, global_batch=1024, tp=32, pp=8)
    wall = time.perf_counter() - t0
    print(f"Llama-3.1-70B, 32 x trn1.32xlarge, TP32 PP8 DP4 seq 4096: {p.seq_per_s:.2f} seq/s, "
          f"MFU {p.mfu * 100:.1f}%, {p.hbm_per_core_bytes / 2**30:.1f} GiB/core -- {wall:.1f} s wall (cold cache, "
          f"goal < 60 s)")
    return wall


def a_search(use_ray: bool, workers: int | None) -> tuple[float, int]:
    from trnlab.plan.search import search
    _cold("ray" if use_ray else "pool")
    t0 = time.perf_counter()
    result = search("llama-3.1-8b", system="trn1.32xlarge", nodes=32, seq=4096, global_batch=1024,
                    microbatches=(1,), checkpointing=("selective", "full"), tp_choices=(8, 16, 32),
                    use_ray=use_ray, workers=workers)
    wall = time.perf_counter() - t0
    best = result["plans"][0]
    print(f"search ({'Ray, local' if use_ray else 'process pool'}): {result['evaluated']} layouts evaluated, "
          f"{len(result['pareto'])} on the Pareto front, best {best['nodes']} nodes TP{best['tp']} PP{best['pp']} "
          f"DP{best['dp']} {best['checkpointing']}: {best['tokens_per_s']:,.0f} tokens/s -- {wall:.1f} s wall "
          "(cold cache, goal < 300 s)")
    return wall, result["evaluated"]


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--skip-ray", action="store_true")
    parser.add_argument("--skip-plan", action="store_true")
    parser.add_argument("--workers", type=int, default=None)
    args = parser.parse_args()
    if not args.skip_plan:
        one_plan()
    pool, n = a_search(False, args.workers)
    if not args.skip_ray:
        ray_wall, _ = a_search(True, args.workers)
        print(f"Ray / process pool wall-time ratio: {ray_wall / pool:.2f} ({n} layouts)")


if __name__ == "__main__":
    main()
