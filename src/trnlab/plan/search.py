"""Search over training layouts: enumerate the valid ones (divisibility, topology: TP inside an instance,
static memory: weights + gradients + optimizer must fit before any simulation), evaluate each (independent
tasks: a local process pool by default, Ray with ray=True), rank them and mark the Pareto front of
(step time per token, dollars per million tokens).

Evaluation runs in two rounds so every distinct layer shape is simulated once even across workers: round 1
simulates the distinct (TP, microbatch, checkpointing) shards in parallel and returns their cache entries;
round 2 composes every layout from those entries (cheap), seeded into each worker's memory cache.
"""
from __future__ import annotations

import os
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass, replace

from trnlab.errors import HbmCapacityError
from trnlab.hw.systems import cluster, get_system
from trnlab.plan import layers
from trnlab.plan.configs import get_model
from trnlab.plan.train import ADAMW_STATE, BF16, FP32, Layout, layout_problems, plan_training


@dataclass(frozen=True)
class Candidate:
    nodes: int
    layout: Layout


def _divisors(n: int) -> list[int]:
    return [d for d in range(1, n + 1) if n % d == 0]


def static_bytes(spec, tp: int, pp: int, dp: int, zero1: bool, microbatches: int) -> int:
    """Weights, gradients and optimizer states per core (activations need the simulation)."""
    shard = layers.shard(spec, tp)
    p = spec.layers // pp * shard.layer_params() + shard.vocab * spec.hidden * (1 if pp > 1 else 2)
    grads = p * BF16 + (p * FP32 if microbatches > 1 else 0)
    return p * BF16 + grads + p * (ADAMW_STATE + FP32) // (dp if zero1 else 1)


def enumerate_layouts(model, *, system="trn1.32xlarge", nodes: int = 1, seq: int = 4096, global_batch: int = 1024,
                      microbatches=(1, 2, 4), checkpointing=("selective", "full"), zero1=(True,),
                      node_counts=None, tp_choices=None) -> tuple[list[Candidate], dict]:
    """(valid candidates, {"rejected": count, "smallest_static_bytes": ...}). node_counts defaults to the
    powers of two up to `nodes` and `nodes` itself (fewer nodes: cheaper, slower: the Pareto front)."""
    spec, base = get_model(model), get_system(system)
    counts = node_counts or sorted({n for n in (2 ** k for k in range(0, 20)) if n <= nodes} | {nodes})
    out, rejected, smallest = [], 0, None
    for n in counts:
        sysspec = cluster(base, n)
        for tp in tp_choices or _divisors(sysspec.ranks_per_instance):
            for pp in _divisors(spec.layers):
                if sysspec.ranks % (tp * pp):
                    continue
                dp = sysspec.ranks // (tp * pp)
                for mb in microbatches:
                    for ck in checkpointing:
                        for z in zero1:
                            lay = Layout(tp, pp, dp, mb, z, ck)
                            if layout_problems(spec, sysspec, seq, global_batch, lay):
                                rejected += 1
                                continue
                            need = static_bytes(spec, tp, pp, dp, z, global_batch // (dp * mb))
                            smallest = need if smallest is None else min(smallest, need)
                            if need > sysspec.hbm_bytes_per_rank:
                                rejected += 1
                                continue
                            out.append(Candidate(n, lay))
    return out, {"rejected": rejected, "smallest_static_bytes": smallest}


# --- evaluation -----------------------------------------------------------------------------------------
def _simulate_shape(args) -> dict:
    """Round 1: simulate one distinct shard shape; return the cache entries it produced."""
    model, system, nodes, seq, global_batch, lay, dtype = args
    before = set(layers._memory)
    try:
        plan_training(model, system=system, nodes=nodes, seq=seq, global_batch=global_batch, tp=lay.tp, pp=lay.pp,
                      dp=lay.dp, microbatch=lay.microbatch, zero1=lay.zero1, checkpointing=lay.checkpointing,
                      sequence_parallel=lay.sequence_parallel, dtype=dtype)
    except Exception:   # the composition round reports the error for each layout
        pass
    return {k: v for k, v in layers._memory.items() if k not in before}


def _evaluate(args) -> dict:
    """Round 2: one layout's plan as a dict (or its error)."""
    model, system, cand, seq, global_batch, dtype, seed = args
    layers._memory.update(seed)
    lay = cand.layout
    try:
        plan = plan_training(model, system=system, nodes=cand.nodes, seq=seq, global_batch=global_batch, tp=lay.tp,
                             pp=lay.pp, dp=lay.dp, microbatch=lay.microbatch, zero1=lay.zero1,
                             checkpointing=lay.checkpointing, sequence_parallel=lay.sequence_parallel,
                             dtype=dtype)
    except Exception as exc:       # a simulation that fails is one bad layout, not a failed search
        return {"nodes": cand.nodes, "error": f"{type(exc).__name__}: {exc}".splitlines()[0]}
    out = plan.to_dict()
    out.pop("simulated", None)
    return out


def _map(fn, tasks, *, use_ray: bool, address: str | None, workers: int | None):
    if not tasks:
        return []
    if use_ray:
        import ray
        if not ray.is_initialized():
            ray.init(address=address, ignore_reinit_error=True, log_to_driver=False,
                     **({} if address else {"num_cpus": workers or os.cpu_count()}))
        remote = ray.remote(fn)
        return ray.get([remote.remote(t) for t in tasks])
    workers = workers or os.cpu_count() or 1
    if workers == 1 or len(tasks) == 1:
        return [fn(t) for t in tasks]
    with ProcessPoolExecutor(max_workers=min(workers, len(tasks))) as pool:
        return list(pool.map(fn, tasks))


def search(model, *, system="trn1.32xlarge", nodes: int = 1, seq: int = 4096, global_batch: int = 1024,
           microbatches=(1, 2, 4), checkpointing=("selective", "full"), zero1=(True,), node_counts=None,
           tp_choices=None, dtype: str = "bf16", use_ray: bool = False, address: str | None = None,
           workers: int | None = None,
           limit: int | None = None) -> dict:
    """{"plans": [...] best first (fitting plans by tokens/s, then the rest), "pareto": [indices],
    "evaluated": n, "rejected": n}. HbmCapacityError when no layout fits, naming the smallest memory per
    core a layout would need."""
    spec = get_model(model)
    cands, info = enumerate_layouts(spec, system=system, nodes=nodes, seq=seq, global_batch=global_batch,
                                    microbatches=microbatches, checkpointing=checkpointing, zero1=zero1,
                                    node_counts=node_counts, tp_choices=tp_choices)
    capacity = get_system(system).hbm_bytes_per_rank
    if not cands:
        _no_fit(spec, system, nodes, info["smallest_static_bytes"], capacity)
    cands = cands[:limit] if limit else cands
    shapes = {}
    for c in cands:
        shapes.setdefault((c.layout.tp, c.layout.microbatch, c.layout.checkpointing, c.layout.sequence_parallel), c)
    model_arg = spec
    seeds = {}
    for entries in _map(_simulate_shape, [(model_arg, system, c.nodes, seq, global_batch, c.layout, dtype)
                                          for c in shapes.values()], use_ray=use_ray, address=address,
                        workers=workers):
        seeds.update(entries)
    rows = _map(_evaluate, [(model_arg, system, c, seq, global_batch, dtype, seeds) for c in cands],
                use_ray=use_ray, address=address, workers=workers)
    good = [r for r in rows if "error" not in r]
    if not good:
        from trnlab.errors import SimulationError
        raise SimulationError(f"{spec.name}: every one of the {len(rows)} layouts failed to simulate; the first: "
                              f"{rows[0]['error']}")
    fitting = [r for r in good if r["fits"]]
    if not fitting:
        smallest = min((r["hbm_per_core_bytes"] for r in good), default=info["smallest_static_bytes"])
        _no_fit(spec, system, nodes, smallest, capacity)
    ranked = sorted(fitting, key=lambda r: (-r["tokens_per_s"], r["usd_per_1m_tokens"]))
    ranked += sorted((r for r in good if not r["fits"]), key=lambda r: -r["tokens_per_s"])
    front = pareto(ranked)
    for i, r in enumerate(ranked):
        r["pareto"] = i in front
    return {"plans": ranked, "pareto": front, "evaluated": len(rows), "rejected": info["rejected"],
            "errors": [r for r in rows if "error" in r]}


def pareto(rows: list[dict]) -> list[int]:
    """Indices of the fitting plans no other fitting plan beats on both seconds per token and $ per token."""
    pts = [(1.0 / r["tokens_per_s"], r["usd_per_1m_tokens"]) for r in rows]
    front = []
    for i, (t, c) in enumerate(pts):
        if not rows[i].get("fits", True):
            continue
        dominated = any((t2 <= t and c2 <= c and (t2 < t or c2 < c)) for j, (t2, c2) in enumerate(pts)
                        if j != i and rows[j].get("fits", True))
        if not dominated:
            front.append(i)
    return front


def _no_fit(spec, system, nodes, smallest, capacity):
    need = "no valid layout at all" if smallest is None else f"the smallest layout needs {smallest} B per core"
    raise HbmCapacityError(f"{spec.name} fits no layout on up to {nodes} x {get_system(system).name}: {need}, "
                           f"more than the {capacity} B of HBM per core", required=smallest or 0, limit=capacity)


def with_nodes(cand: Candidate, nodes: int) -> Candidate:
    return replace(cand, nodes=nodes)
