"""`trnlab plan`: the command's body (the option checks live in trnlab.cli)."""
from __future__ import annotations

import json
import sys

from trnlab.errors import OptionError, TrnlabError


def _gb(nbytes: float) -> str:
    return f"{nbytes / 2**30:.2f} GiB"


def plan_command(model: str, *, system: str, nodes: int, seq: int, global_batch: int, tp, pp: int, dp, zero1: bool,
                 interleave: int, microbatch, checkpointing, sequence_parallel: bool, dtype: str,
                 precision: str = "mixed",
                 inference: bool, batch: int, input_len: int,
                 output_len: int, do_search: bool, use_ray: bool, address, workers, train_tokens,
                 usd_per_hour, json_out: bool, out=None, echo=print, context_buckets=None) -> int:
    """0 on success; 1 when nothing fits (the reason on stderr); OptionError for a bad layout."""
    from trnlab.hw.systems import get_system
    try:
        if inference:
            from trnlab.plan.infer import plan_inference
            plan = plan_inference(model, system=system, tp=tp or get_system(system).ranks_per_instance, batch=batch,
                                  input=input_len, output=output_len, dtype=dtype, usd_per_hour=usd_per_hour,
                                  sequence_parallel=sequence_parallel, context_buckets=context_buckets)
            echo(json.dumps(plan.to_dict(), indent=1) if json_out else _inference_text(plan))
            return 0
        if do_search:
            from trnlab.plan.search import search
            result = search(model, system=system, nodes=nodes, seq=seq, global_batch=global_batch, dtype=dtype,
                            tp_choices=(tp,) if tp else None, microbatches=(microbatch,) if microbatch else (1, 2, 4),
                            checkpointing=(checkpointing,) if checkpointing else ("selective", "full"),
                            use_ray=use_ray, address=address, workers=workers)
            echo(json.dumps(result, indent=1) if json_out else _search_text(result))
            if out:
                from trnlab.plan.report import write_search_report
                where = write_search_report(result, out, f"trnlab plan --search: {model} on up to {nodes} x {system}")
                print(f"trnlab plan: report in {where}/report.html", file=sys.stderr)
            return 0
        from trnlab.plan.train import plan_training
        plan = plan_training(model, system=system, nodes=nodes, seq=seq, global_batch=global_batch, tp=tp or 8,
                             pp=pp, dp=dp, microbatch=microbatch or 1, zero1=zero1,
                             checkpointing=checkpointing or "selective",
                             sequence_parallel=sequence_parallel, interleave=interleave, dtype=dtype,
                             precision=precision, usd_per_hour=usd_per_hour)
    except OptionError:
        raise                           # a bad option: trnlab.cli prints it, exit 2
    except TrnlabError as exc:          # nothing fits, or the chip model cannot run a layer shape
        print(f"trnlab plan: {type(exc).__name__}: {exc}", file=sys.stderr)
        return 1
    out = plan.to_dict()
    if train_tokens:
        out["train_tokens"] = train_tokens
        out["usd_for_train_tokens"] = plan.usd_for_tokens(train_tokens)
        out["days_for_train_tokens"] = train_tokens / plan.tokens_per_s / 86400
    echo(json.dumps(out, indent=1) if json_out else _training_text(plan, out))
    if not plan.fits:
        print(f"trnlab plan: does not fit: {_gb(plan.hbm_per_core_bytes)} per core > {_gb(plan.hbm_capacity_bytes)} "
              "of HBM", file=sys.stderr)
        return 1
    return 0


def _training_text(plan, out) -> str:
    lay = plan.layout
    memory = ", ".join(f"{k.removesuffix('_bytes')} {_gb(v)}" for k, v in plan.memory.items())
    inter = f" (interleave {lay.interleave})" if lay.interleave > 1 else ""
    lines = [f"{plan.model} on {plan.nodes} x {plan.system}: TP {lay.tp} PP {lay.pp}{inter} DP {lay.dp}, "
             f"ZeRO-1 {'on' if lay.zero1 else 'off'}, microbatch {lay.microbatch} x {plan.microbatches}, "
             f"seq {plan.seq}, global batch {plan.global_batch}, checkpointing {lay.checkpointing}, "
             f"sequence parallel {'on' if lay.sequence_parallel and lay.tp > 1 else 'off'}, precision {lay.precision}",
             f"  step {plan.step_s:.3f} s   {plan.seq_per_s:.2f} seq/s   {plan.tokens_per_s:,.0f} tokens/s   "
             f"MFU {plan.mfu * 100:.1f}% (AWS's formula)",
             f"  HBM per core {_gb(plan.hbm_per_core_bytes)} of {_gb(plan.hbm_capacity_bytes)}"
             f" ({memory})",
             f"  ${plan.usd_per_1m_tokens:.3f} per million tokens at ${plan.usd_per_hour:.2f}/h per instance x "
             f"{plan.instances} ({plan.price_source})"]
    if "usd_for_train_tokens" in out:
        lines.append(f"  {out['train_tokens']:.3g} tokens: ${out['usd_for_train_tokens']:,.0f}, "
                     f"{out['days_for_train_tokens']:.1f} days")
    lines.append("  breakdown per step:")
    from trnlab.plan.train import TOTALS
    lines += [f"    {k.removesuffix('_s'):24s} {v:10.4f} s" for k, v in plan.breakdown.items() if k not in TOTALS]
    lines.append(f"    (DP gradient reduction {plan.breakdown['dp_reduce_total_s']:.4f} s in all, overlapped with the "
                 "last microbatch's backward; TP collectives "
                 f"{plan.breakdown.get('tp_collectives_total_s', 0.0):.4f} s in all, the backward ones overlapped "
                 "with weight-gradient matmuls)")
    return "\n".join(lines)


def _inference_text(plan) -> str:
    return "\n".join([
        f"{plan.model} on {plan.system}: TP {plan.tp}, batch {plan.batch}, input {plan.input} (prefill "
        f"{plan.breakdown['prefill_tokens']} positions, sequence parallel "
        f"{'on' if plan.breakdown['sequence_parallel'] else 'off'}), output {plan.output}",
        f"  TTFT {plan.ttft_s * 1e3:.2f} ms   TPOT {plan.tpot_s * 1e3:.2f} ms   {plan.tokens_per_s:,.1f} tokens/s",
        f"  HBM per core {_gb(plan.hbm_per_core_bytes)} of {_gb(plan.hbm_capacity_bytes)}",
        f"  ${plan.usd_per_1m_tokens:.3f} per million generated tokens at ${plan.usd_per_hour:.2f}/h for the TP "
        f"ranks' share of the instance ({plan.price_source})"])


def _search_text(result) -> str:
    plans = result["plans"]
    lines = [f"{result['evaluated']} layouts evaluated ({result['rejected']} rejected before simulation, "
             f"{len(result['errors'])} failed); * = Pareto front (time vs $)",
             f"  {'':1s} {'nodes':>5s} {'TP':>3s} {'PP':>3s} {'DP':>4s} {'mb':>3s} {'ckpt':>9s} {'step s':>9s} "
             f"{'tokens/s':>10s} {'MFU':>6s} {'HBM/core':>10s} {'$/M tok':>8s}"]
    for r in plans:
        lines.append(f"  {'*' if r.get('pareto') else ' '} {r['nodes']:5d} {r['tp']:3d} {r['pp']:3d} {r['dp']:4d} "
                     f"{r['microbatch']:3d} {r['checkpointing']:>9s} {r['step_s']:9.3f} {r['tokens_per_s']:10,.0f} "
                     f"{r['mfu'] * 100:5.1f}% {_gb(r['hbm_per_core_bytes']):>10s} {r['usd_per_1m_tokens']:8.3f}"
                     + ("" if r["fits"] else "  (does not fit)"))
    if plans:
        lines.append(f"  price: {plans[0]['price_source']}")
    return "\n".join(lines)


__all__ = ["plan_command", "OptionError"]
