"""Fit the plan's model-level constants to the trainium-scale.md §2 rows (the only model-level figures any
constant may be fitted to) and print the result for docs/calibration.md ("Model-level constants (fitted to
trainium-scale.md §2 rows)").

Fitted (five constants):
- trnlab.isa.collectives.GRAPH_TUNINGS, for collectives issued inside a compiled graph (the TP collectives of
  training, prefill and decode graphs):
  - launch_s: the fixed time of one in-graph collective, every generation. Bounds [1, 10] us: the intranode
    doc's "the latency term is of 10^0 to 10^1 us magnitude" (https://github.com/aws-neuron/aws-neuron-sdk/
    blob/master/neuron-runtime/explore/intranode-collective-comm.rst).
  - trn1's NeuronLink link_efficiency: no trn1 nccom-test row moves a large message between the chips of one
    instance, so the host fit (benchmarks/fit_collectives.py) leaves it undetermined. Bounds (0.1, 1].
- ChipSpec.graph_dma_efficiency (trnlab.hw): the DMA efficiency of compiled model graphs (trnlab.hw.graph_chip),
  bounded to [the NKI-kernel fit's dma_efficiency, 1] (1 = the DMA guide's per-engine peak). Every value needs
  its own layer simulations, so it is searched on a grid (GRID) and the other four are fitted at each point.
- trnlab.plan.train.GRAPH_EXECUTION_S: runtime time per execution of a traced inference graph (a prefill, a
  decode token). Bounds [0, 5] ms.
- trnlab.plan.train.MICROBATCH_OVERHEAD_S: framework time per training microbatch (torch-xla). Bounds [0, 200] ms.
Objective: the sum over the 7 figures (TTFT and TPOT of both inference rows, seq/s of the three training
rows) of log(predicted / published)^2. The layer timings come from the plan-layer cache
(trnlab.plan.layers), so a re-run after the layer model changes costs one simulation per new layer shape and
then only the composition.

Run: PYTHONPATH=src python benchmarks/fit_plan.py [graph_dma_efficiency ...]   (default: GRID)
"""
from __future__ import annotations

import math
import sys

from scipy.optimize import minimize

from trnlab import hw
from trnlab.isa import collectives
from trnlab.plan import train
from trnlab.plan.infer import plan_inference
from trnlab.plan.train import plan_training

LAT_CSV = ("https://github.com/aws-neuron/aws-neuron-sdk/blob/master/about-neuron/benchmarks/trn1/"
           "latency_data_decoder.csv")
TRAIN_CSV = ("https://github.com/aws-neuron/aws-neuron-sdk/blob/master/about-neuron/benchmarks/trn1/"
             "training_data_decoder.csv")
# trainium-scale.md §2 (from LAT_CSV, SDK 2.18.0): trn1.32xlarge, TP32, batch 1, bf16
# (model, input, output, TTFT p50 ms, TPOT p50 ms)
INFERENCE = [("llama-2-7b", 128, 8064, 13.32, 6.70),
             ("llama-2-70b", 128, 128, 53.9, 25.18)]
# trainium-scale.md §2 training rows: (label, model, nodes, tp, pp, seq, global batch, precision, seq/s)
TRAINING = [("llama-2-7b NxD SDK 2.15", "llama-2-7b", 16, 8, 1, 4096, 1024, "mixed", 81.0),
            ("llama-2-7b NxD SDK 2.21", "llama-2-7b", 16, 8, 1, 4096, 1024, "mixed", 95.14),
            ("gpt3-175b NeMo SDK 2.13", "gpt3-175b", 32, 32, 8, 2048, 1024, "bf16-sr", 12.7)]
LAUNCH_BOUNDS_S = (1e-6, 10e-6)
EFFICIENCY_BOUNDS = (0.1, 1.0)
EXECUTION_BOUNDS_S = (0.0, 5e-3)
MICROBATCH_BOUNDS_S = (0.0, 0.2)
GRID = (0.44, 0.58, 0.72, 0.86, 1.0)          # graph_dma_efficiency values simulated (bounds [0.44, 1])


def _tunings(launch_s: float, efficiency: float) -> dict:
    return {2: collectives.GraphCollectiveTuning(launch_s=launch_s, link_efficiency=efficiency),
            3: collectives.GraphCollectiveTuning(launch_s=launch_s)}


def _set_graph_dma(efficiency: float) -> None:
    for name, chip in list(hw.PRESETS.items()):
        hw.PRESETS[name] = chip.replace(graph_dma_efficiency=max(efficiency, chip.dma_efficiency))


def evaluate(launch_s: float, efficiency: float, execution_s: float, microbatch_s: float) -> list[tuple]:
    """(label, predicted, published) of the 7 calibration figures under the given constants (and the
    graph_dma_efficiency currently in the chip presets)."""
    saved = dict(collectives.GRAPH_TUNINGS), train.GRAPH_EXECUTION_S, train.MICROBATCH_OVERHEAD_S
    collectives.GRAPH_TUNINGS.update(_tunings(launch_s, efficiency))
    train.GRAPH_EXECUTION_S, train.MICROBATCH_OVERHEAD_S = execution_s, microbatch_s
    try:
        out = []
        for model, inp, outp, ttft, tpot in INFERENCE:
            p = plan_inference(model, system="trn1.32xlarge", tp=32, batch=1, input=inp, output=outp)
            out += [(f"{model} {inp}/{outp} TTFT ms", p.ttft_s * 1e3, ttft),
                    (f"{model} {inp}/{outp} TPOT ms", p.tpot_s * 1e3, tpot)]
        for label, model, nodes, tp, pp, seq, gb, precision, published in TRAINING:
            p = plan_training(model, system="trn1.32xlarge", nodes=nodes, seq=seq, global_batch=gb, tp=tp, pp=pp,
                              zero1=True, checkpointing="selective", sequence_parallel=True, precision=precision)
            out.append((f"{label} seq/s", p.seq_per_s, published))
        return out
    finally:
        collectives.GRAPH_TUNINGS.clear()
        collectives.GRAPH_TUNINGS.update(saved[0])
        train.GRAPH_EXECUTION_S, train.MICROBATCH_OVERHEAD_S = saved[1], saved[2]


def loss(*params: float) -> float:
    return sum(math.log(pred / pub) ** 2 for _, pred, pub in evaluate(*params))


def fit_at_grid_point() -> tuple[tuple[float, float, float, float], float]:
    """Bounded search of (launch_s, link efficiency, execution_s, microbatch_s) from three starts, at the
    presets' current graph_dma_efficiency (the loss is cheap once the layer cache is warm)."""
    lo = [math.log(LAUNCH_BOUNDS_S[0]), math.log(EFFICIENCY_BOUNDS[0]), EXECUTION_BOUNDS_S[0] * 1e3,
          MICROBATCH_BOUNDS_S[0] * 1e3]
    hi = [math.log(LAUNCH_BOUNDS_S[1]), math.log(EFFICIENCY_BOUNDS[1]), EXECUTION_BOUNDS_S[1] * 1e3,
          MICROBATCH_BOUNDS_S[1] * 1e3]

    def unpack(v):
        return math.exp(v[0]), math.exp(v[1]), v[2] * 1e-3, v[3] * 1e-3

    def f(v):
        return loss(*unpack(v))

    best = None
    for start in ((lo[0], math.log(0.3), 0.0, 0.0), (math.log(3e-6), math.log(0.6), 1.0, 30.0),
                  (hi[0], hi[1], 3.0, 100.0)):
        res = minimize(f, start, method="L-BFGS-B", bounds=list(zip(lo, hi)))
        if best is None or res.fun < best.fun:
            best = res
    return unpack(best.x), best.fun


def main() -> None:
    grid = [float(v) for v in sys.argv[1:]] or list(GRID)
    current = collectives.GRAPH_TUNINGS[2]
    host_eff = collectives.TUNINGS[2].link_efficiency
    print(f"current: graph_dma_efficiency {hw.TRN1.graph_dma_efficiency:.3g}, launch_s {current.launch_s * 1e6:.3g} "
          f"us, trn1 link_efficiency {current.link_efficiency or host_eff:.3g}, GRAPH_EXECUTION_S "
          f"{train.GRAPH_EXECUTION_S * 1e3:.3g} ms, MICROBATCH_OVERHEAD_S {train.MICROBATCH_OVERHEAD_S * 1e3:.3g} ms")
    print("\n| graph_dma_efficiency | launch us | trn1 link efficiency | execution ms | microbatch ms | loss |\n"
          "|---|---|---|---|---|---|")
    results = []
    for g in grid:
        _set_graph_dma(g)
        params, value = fit_at_grid_point()
        results.append((value, g, params))
        print(f"| {g:.3g} | {params[0] * 1e6:.3g} | {params[1]:.3g} | {params[2] * 1e3:.3g} | {params[3] * 1e3:.3g} "
              f"| {value:.4f} |", flush=True)
    value, g, (launch_s, eff, execution_s, microbatch_s) = min(results)
    _set_graph_dma(g)
    print(f"\nfitted: graph_dma_efficiency = {g:.3g} (bounds {hw.TRN1.dma_efficiency:.3g}-1), GRAPH_LAUNCH_S = "
          f"{launch_s * 1e6:.3g} us (bounds 1-10 us), trn1 in-graph link_efficiency = {eff:.3g} (host fit "
          f"{host_eff:.3g}; bounds 0.1-1), GRAPH_EXECUTION_S = {execution_s * 1e3:.3g} ms (bounds 0-5 ms), "
          f"MICROBATCH_OVERHEAD_S = {microbatch_s * 1e3:.3g} ms (bounds 0-200 ms), loss {value:.4f}")
    print("\n| figure | published | predicted | error |\n|---|---|---|---|")
    for label, pred, pub in evaluate(launch_s, eff, execution_s, microbatch_s):
        print(f"| {label} | {pub:g} | {pred:.4g} | {(pred / pub - 1) * 100:+.0f}% |")
    print(f"\nsources of the published figures: {LAT_CSV}, {TRAIN_CSV} (trainium-scale.md §2)")


if __name__ == "__main__":
    main()
