"""Fit the plan's model-level constants to the trainium-scale.md §2 rows (the only model-level figures any
constant may be fitted to) and print the result for docs/calibration.md ("Model-level constants (fitted to
trainium-scale.md §2 rows)").

Fitted, both in trnlab.isa.collectives (GRAPH_TUNINGS), both for collectives issued inside a compiled graph
(the TP collectives of training, prefill and decode graphs):
- launch_s: the fixed time of one in-graph collective, every generation. Bounds [1, 10] us: the intranode
  doc's "the latency term is of 10^0 to 10^1 us magnitude" (https://github.com/aws-neuron/aws-neuron-sdk/
  blob/master/neuron-runtime/explore/intranode-collective-comm.rst).
- trn1's NeuronLink link_efficiency: no trn1 nccom-test row moves a large message between the chips of one
  instance, so the host fit (benchmarks/fit_collectives.py) leaves it undetermined. Bounds (0.1, 1].
Objective: the sum over the 7 figures (TTFT and TPOT of both inference rows, seq/s of the three training
rows) of log(predicted / published)^2. The layer timings come from the plan-layer cache
(trnlab.plan.layers), so a re-run after the layer model changes costs one simulation per new layer shape and
then only the composition.

Run: PYTHONPATH=src python benchmarks/fit_plan.py
"""
from __future__ import annotations

import math

from scipy.optimize import minimize

from trnlab.isa import collectives
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


def _tunings(launch_s: float, efficiency: float) -> dict:
    return {2: collectives.GraphCollectiveTuning(launch_s=launch_s, link_efficiency=efficiency),
            3: collectives.GraphCollectiveTuning(launch_s=launch_s)}


def evaluate(launch_s: float, efficiency: float) -> list[tuple]:
    """(label, predicted, published) of the 7 calibration figures under the given constants."""
    saved = dict(collectives.GRAPH_TUNINGS)
    collectives.GRAPH_TUNINGS.update(_tunings(launch_s, efficiency))
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
        collectives.GRAPH_TUNINGS.update(saved)


def loss(launch_s: float, efficiency: float) -> float:
    return sum(math.log(pred / pub) ** 2 for _, pred, pub in evaluate(launch_s, efficiency))


def fit() -> tuple[float, float]:
    """Bounded search in log space from three starts (the loss is cheap once the layer cache is warm)."""
    lo = [math.log(LAUNCH_BOUNDS_S[0]), math.log(EFFICIENCY_BOUNDS[0])]
    hi = [math.log(LAUNCH_BOUNDS_S[1]), math.log(EFFICIENCY_BOUNDS[1])]

    def f(v):
        return loss(math.exp(v[0]), math.exp(v[1]))

    best = None
    for start in ((lo[0], math.log(0.3)), (math.log(3e-6), math.log(0.6)), (hi[0], hi[1])):
        res = minimize(f, start, method="L-BFGS-B", bounds=list(zip(lo, hi)))
        if best is None or res.fun < best.fun:
            best = res
    return math.exp(best.x[0]), math.exp(best.x[1])


def main() -> None:
    current = collectives.GRAPH_TUNINGS[2]
    host_eff = collectives.TUNINGS[2].link_efficiency
    print(f"current: launch_s {current.launch_s * 1e6:.3g} us, trn1 link_efficiency "
          f"{current.link_efficiency or host_eff:.3g}, loss {loss(current.launch_s, current.link_efficiency or host_eff):.4f}")
    launch_s, eff = fit()
    print(f"\nfitted: GRAPH_LAUNCH_S = {launch_s * 1e6:.3g} us (bounds 1-10 us), trn1 in-graph link_efficiency = "
          f"{eff:.3g} (host fit {host_eff:.3g}; bounds 0.1-1), loss {loss(launch_s, eff):.4f}")
    print("\n| figure | published | predicted | error |\n|---|---|---|---|")
    for label, pred, pub in evaluate(launch_s, eff):
        print(f"| {label} | {pub:g} | {pred:.4g} | {(pred / pub - 1) * 100:+.0f}% |")
    print(f"\nsources of the published figures: {LAT_CSV}, {TRAIN_CSV} (trainium-scale.md §2)")


if __name__ == "__main__":
    main()
