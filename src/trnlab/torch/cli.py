"""`trnlab model NAME ...` and `trnlab demo`: built-in models compiled onto a simulated NeuronCore."""
from __future__ import annotations

import json
import time
from pathlib import Path


BUILTIN_HELP = ("llama-tiny, gpt2-tiny (tests/demo); llama-3-8b, llama-1b, gpt2 (real sizes); "
                "llama-8b-layer (one Llama-3-8B decoder layer on hidden states); "
                "hf-llama, hf-gpt2, hf-bert (transformers models from a tiny config)")


def model_names() -> list[str]:
    from trnlab.torch.hf import BUILDERS
    from trnlab.torch.models import CONFIGS
    return sorted(CONFIGS) + sorted(BUILDERS)


def decoder_names() -> list[str]:
    """Built-in models that --decode can step (whole decoders with a KV cache)."""
    from trnlab.torch.models import CONFIGS
    return sorted(n for n in CONFIGS if not n.endswith("-layer"))


def _build(name: str, batch: int, seq: int, numerics: bool):
    """(model, example inputs, label) for a built-in name."""
    import torch
    from trnlab.torch import hf, models
    if name in hf.BUILDERS:
        m = hf.LogitsOnly(hf.build(name))
        ids = torch.randint(0, hf.vocab(m.model), (batch, seq), generator=torch.Generator().manual_seed(1))
        return m, (ids,)
    if name not in models.CONFIGS:
        raise KeyError(f"unknown model {name!r}; built-ins: {', '.join(model_names())}")
    cfg = models.CONFIGS[name]
    if name.endswith("-layer"):
        layer = models.build_layer(name, meta=not numerics)
        x = torch.empty(batch, seq, cfg.hidden, device="meta") if not numerics else \
            torch.randn(batch, seq, cfg.hidden, generator=torch.Generator().manual_seed(1))
        return layer, (x,)
    m = models.build(name, meta=not numerics)
    ids = models.example_ids(cfg, batch, seq)
    return m, (ids.to("meta") if not numerics else ids,)


def compile_builtin(name: str, *, target=None, batch=1, seq=128, dtype="bf16", decode=0, numerics=True,
                    progress=None, tp=None, system=None, sequence_parallel=False, dp=None):
    """Compile and run a built-in model (prefill, then `decode` single-token steps); return the report.
    tp/system: tensor parallelism over tp NeuronCores of the system. dp: dp replicas (each one core, or a
    TP group), each on batch/dp sequences; decode times one replica's steps on its batch slice."""
    model, inputs = _build(name, batch, seq, numerics)
    _stage(progress, f"capturing {name} (torch.export)")
    if dp is not None:
        sharding = dict(tp=tp, system=system, sequence_parallel=sequence_parallel) \
            if tp is not None or system is not None else None
        compiled = _compile_replicas(model, inputs, target, dtype, numerics, name, progress, batch // dp * seq,
                                     dp, sharding)
        if decode:
            compiled.report.replica.decode = _decode(name, model, target, batch // dp, seq, dtype, decode,
                                                     numerics, progress, sharding)
        return compiled, compiled.report
    if tp is not None or system is not None:
        sharding = dict(tp=tp, system=system, sequence_parallel=sequence_parallel)
        compiled, report = _compile_sharded(model, inputs, target, dtype, numerics, name, progress,
                                            tokens=batch * seq, **sharding)
        if decode:
            report.decode = _decode(name, model, target, batch, seq, dtype, decode, numerics, progress, sharding)
        return compiled, report
    compiled = _compile(model, inputs, target, dtype, numerics, name, progress, tokens=batch * seq)
    report = compiled.report
    if decode:
        report.decode = _decode(name, model, target, batch, seq, dtype, decode, numerics, progress)
    return compiled, report


def _compile(model, inputs, target, dtype, numerics, name, progress, tokens, phase="prefill"):
    from trnlab.torch.api import CompiledModel
    compiled = CompiledModel(model, inputs, target=target, dtype=dtype, numerics=numerics, name=name,
                             tokens=tokens, phase=phase, run_example=False)
    n_ops = len(compiled.program.device_nodes())
    tick = _stage(progress, f"running {name} {phase} on the simulated NeuronCore", total=n_ops)
    compiled(*inputs, progress=tick)
    if numerics:
        _stage(progress, "checking against eager PyTorch (fp32)")
    return compiled


def _compile_sharded(model, inputs, target, dtype, numerics, name, progress, tokens, tp=None, system=None,
                     sequence_parallel=False, phase="prefill"):
    from trnlab.torch.shard import ShardedModel
    compiled = ShardedModel(model, inputs, tp=tp or 1, system=system, target=target, dtype=dtype,
                            numerics=numerics, name=name, tokens=tokens, run_example=False,
                            sequence_parallel=sequence_parallel, phase=phase)
    n_ops = len(compiled.programs[0].device_nodes())
    ranks = len(compiled.programs)
    tick = _stage(progress, f"running {name} {phase} on {ranks} simulated NeuronCore(s), tp={compiled.tp}",
                  total=n_ops)
    compiled.run(progress=tick)
    if numerics:
        _stage(progress, "checking against eager PyTorch (fp32)")
    return compiled, compiled.report


def _compile_replicas(model, inputs, target, dtype, numerics, name, progress, tokens, dp, sharding=None):
    """dp replicas (trnlab.torch.replicas), each a CompiledModel or, with sharding, a TP group; every
    replica runs its slice of the batch (timing-only: one slice, the replicas being the same run)."""
    from trnlab.torch.replicas import DataParallelModel
    compiled = DataParallelModel(model, inputs, dp=dp, target=target, dtype=dtype, numerics=numerics, name=name,
                                 tokens=tokens, run_example=False, **(sharding or {}))
    replica = compiled.replica
    n_ops = len((replica.programs[0] if hasattr(replica, "programs") else replica.program).device_nodes())
    runs = dp if numerics else 1
    tick = _stage(progress, f"running {name} prefill on {dp} replica(s) x tp={compiled.tp} simulated "
                            f"NeuronCore(s), one slice of the batch each", total=n_ops * runs)
    compiled(*inputs, progress=tick)
    if numerics:
        _stage(progress, "checking every replica against eager PyTorch (fp32)")
    return compiled


def _decode(name, model, target, batch, seq, dtype, steps, numerics, progress, sharding=None):
    """Time `steps` single-token decode steps against a static KV cache of seq + steps positions."""
    import torch
    from trnlab.torch import models
    if not isinstance(model, models.Decoder):
        raise ValueError(f"--decode needs a built-in decoder (llama-*, gpt2*), not {name}")
    step = models.DecodeStep(model)
    length = seq + steps
    inputs = models.decode_inputs(model.cfg, batch, length, seq) if numerics else \
        _meta_decode_inputs(model.cfg, batch, length, seq)
    if sharding:          # tensor parallel: the KV caches split by heads across the ranks
        compiled, _ = _compile_sharded(step, inputs, target, dtype, numerics, name, progress, tokens=batch,
                                       phase="decode", **sharding)
    else:
        compiled = _compile(step, inputs, target, dtype, numerics, name, progress, tokens=batch, phase="decode")
    reports = [compiled.report]
    outs = compiled.last_run.outputs
    for i in range(1, steps):
        pos = seq + i
        caches = list(outs[1:]) if numerics else list(inputs[3:])
        ids = outs[0].argmax(-1) if numerics else inputs[0]
        nxt = (ids, torch.tensor([pos]), models.decode_mask(pos, length), *caches) if numerics else inputs
        outs = compiled(*[c.float() if c.is_floating_point() else c for c in nxt])
        reports.append(compiled.report)
    first = reports[0]
    first.latency_s = sum(r.latency_s for r in reports) / len(reports)
    first.model_flops = sum(r.model_flops for r in reports) / len(reports)
    first.hw_flops = sum(r.hw_flops for r in reports) / len(reports)
    first.hw_pe_s = sum(r.hw_pe_s for r in reports) / len(reports)
    return first


def _meta_decode_inputs(cfg, batch, length, pos):
    import torch
    from trnlab.torch.models import decode_mask
    shape = (batch, cfg.kv_heads, length, cfg.head_dim)
    caches = [torch.empty(shape, device="meta") for _ in range(2 * cfg.layers)]
    return (torch.zeros(batch, 1, dtype=torch.long, device="meta"), torch.tensor([pos], device="meta"),
            decode_mask(pos, length).to("meta"), *caches)


# --- progress -------------------------------------------------------------------------------------
def _stage(progress, text, total=None):
    """Start a stage on the rich progress bar; returns a tick() callable (or None)."""
    if progress is None:
        return None
    bar, state = progress
    if state.get("task") is not None:
        bar.update(state["task"], completed=bar.tasks[-1].total or 1)
    state["task"] = bar.add_task(text, total=total or 1)
    if total is None:
        bar.update(state["task"], completed=1)
        return None
    task = state["task"]
    return lambda: bar.advance(task)


def _progress(console):
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, SpinnerColumn, TextColumn, TimeElapsedColumn
    bar = Progress(SpinnerColumn(), TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(),
                   TimeElapsedColumn(), console=console, transient=False)
    return bar, {"task": None}


OP_TID = 999          # first trace track of the model ops (engine and DMA tracks are numbered from 1)


# --- outputs --------------------------------------------------------------------------------------
def write_outputs(compiled, report, out: str | Path, console=None) -> list[Path]:
    """trace.json (Perfetto: engines, DMA queues and model-op tracks), report.html (the profiler's
    report), model.html (per-op table, cost, numerics), model.json; written into a fresh folder that
    replaces `out` whole (trnlab.profile.outputs.staged_dir). Data parallel: model.json is the whole call's
    report; the trace, report.html and model.html are one replica's (the replicas run the same instructions
    on same-shaped slices), model.html saying so."""
    from trnlab.profile import profile_run
    from trnlab.profile.outputs import staged_dir, write_text_atomic
    out = Path(out)
    run = compiled.last_run
    run = run.runs[0] if hasattr(run, "runs") else run          # tensor parallel: rank 0's run
    with staged_dir(out, {"command": "model", "model": report.model}) as tmp:
        profile_run(run, tmp, name=report.model, quiet=True)
        from trnlab.torch.report import add_kernel_lines
        add_kernel_lines(tmp / "report.html", run)            # kernel lines -> the aten op that issued them
        _add_op_track(tmp / "trace.json", run)
        write_text_atomic(tmp / "model.json", report.to_json(indent=1))
        replica = getattr(report, "replica", None)
        note = "" if replica is None else (f"{report.describe()}. This page, trace.json and report.html are one "
                                           "replica's: the replicas run the same instructions on same-shaped "
                                           "slices of the batch.")
        write_text_atomic(tmp / "model.html", model_html(replica or report, note))
    return [out / n for n in ("trace.json", "summary.json", "report.html", "model.json", "model.html")]


def _op_spans(run):
    """(name, start, end) per op from the scheduled events, in issue order."""
    events = getattr(run.machine.scheduler, "records", None) or []
    spans, i = [], 0
    for rec in run.ops:
        evs = events[i:i + rec.instructions]
        i += rec.instructions
        if evs:
            spans.append((rec, min(e.start for e in evs), max(e.end for e in evs)))
    return spans


def op_lanes(spans) -> list[int]:
    """A lane per op span so that spans sharing a lane never overlap: ops run concurrently on the
    engines, and Perfetto needs the complete events of one track to be disjoint or nested."""
    ends: list[float] = []
    lanes = []
    for _, start, end in spans:
        lane = next((i for i, e in enumerate(ends) if e <= start), len(ends))
        if lane == len(ends):
            ends.append(end)
        ends[lane] = end
        lanes.append(lane)
    return lanes


def _add_op_track(path: Path, run) -> None:
    from trnlab.profile.outputs import write_text_atomic
    trace = json.loads(path.read_text())
    spans = _op_spans(run)
    lanes = op_lanes(spans)
    events = trace["traceEvents"]
    for lane in range(max(lanes, default=-1) + 1):
        tid = OP_TID + lane
        label = "model ops (aten)" if lane == 0 else f"model ops (aten, overlap {lane})"
        events.append({"ph": "M", "pid": 1, "tid": tid, "name": "thread_name", "args": {"name": label}})
        events.append({"ph": "M", "pid": 1, "tid": tid, "name": "thread_sort_index", "args": {"sort_index": -100 + lane}})
    for (rec, start, end), lane in zip(spans, lanes):
        events.append({"ph": "X", "pid": 1, "tid": OP_TID + lane, "name": rec.op.replace("aten.", ""),
                       "ts": start * 1e6, "dur": (end - start) * 1e6, "cat": "op",
                       "args": {"node": rec.name, "args": rec.args, "out": rec.out,
                                "source": rec.source, "instructions": rec.instructions}})
    write_text_atomic(path, json.dumps(trace))


def model_html(report, note: str = "") -> str:
    import html
    from trnlab.torch.report import fmt_bytes, fmt_time, grouped_ops, summary_rows
    esc = html.escape
    rows = "".join(f"<tr><th>{esc(k)}</th><td>{esc(v)}</td></tr>" for k, v in summary_rows(report))
    ops = "".join(
        f"<tr><td>{esc(g['op'])}{' (cpu)' if g['where'] != 'device' else ''}</td><td>{esc(g['out'])}</td>"
        f"<td>{g['count']}</td><td>{fmt_time(g['time_s'])}</td>"
        f"<td>{g['time_s'] / report.latency_s:.1%}</td><td>{g['instructions']}</td>"
        f"<td>{fmt_bytes(g['dma_bytes'])}</td><td>{esc(g['source'])}</td></tr>"
        for g in grouped_ops(report))
    num = "".join(f"<tr><td>{esc(c.output)}</td><td>{c.max_abs_err:.3g}</td><td>{c.max_rel_err:.3g}</td>"
                  f"<td>{c.bound:.0e}</td><td>{'yes' if c.ok else 'NO'}</td></tr>" for c in report.numerics)
    style = ("body{font-family:sans-serif;margin:2em}table{border-collapse:collapse;margin:1em 0}"
             "td,th{border:1px solid #ccc;padding:3px 8px;text-align:left;font-size:13px}")
    return (f"<!DOCTYPE html><html><head><meta charset='utf-8'><title>trnlab model: {esc(report.model)}</title>"
            f"<style>{style}</style></head><body><h1>{esc(report.model)} on one {esc(report.target)} NeuronCore"
            f"</h1>{f'<p>{esc(note)}</p>' if note else ''}<table>{rows}</table><h2>Numerics vs eager PyTorch (fp32)</h2>"
            f"<table><tr><th>output</th><th>max abs</th><th>max rel</th><th>bound</th><th>ok</th></tr>{num}</table>"
            f"<h2>Ops by predicted time</h2><table><tr><th>op</th><th>output</th><th>n</th><th>time</th>"
            f"<th>share</th><th>instructions</th><th>DMA</th><th>model line</th></tr>{ops}</table>"
            f"<p>Instruction-level profile: <a href='report.html'>report.html</a>; Perfetto trace: "
            f"<a href='trace.json'>trace.json</a> (open in https://ui.perfetto.dev).</p></body></html>")


# --- commands -------------------------------------------------------------------------------------
def model_command(name: str, *, target=None, batch=1, seq=128, dtype="bf16", decode=0, numerics=True,
                  json_out=False, out=None, tp=None, system=None, sequence_parallel=False, dp=None) -> int:
    from trnlab.console import make_console
    from trnlab.errors import TrnlabError
    console = make_console(stderr=json_out)
    progress = None if json_out else _progress(console)
    try:
        if progress:
            progress[0].start()
        compiled, report = compile_builtin(name, target=target, batch=batch, seq=seq, dtype=dtype, decode=decode,
                                           numerics=numerics, progress=progress, tp=tp, system=system,
                                           sequence_parallel=sequence_parallel, dp=dp)
    except (TrnlabError, KeyError, ValueError) as exc:
        text = exc.args[0] if isinstance(exc, KeyError) and exc.args else exc   # str(KeyError) adds quotes
        from rich.markup import escape
        if progress:
            progress[0].stop()
        console.print(f"[red]{type(exc).__name__}[/]: {escape(str(text))}", highlight=False)
        return 1
    finally:
        if progress:
            progress[0].stop()
    if out:
        write_outputs(compiled, report, out)
    if json_out:
        print(report.to_json(indent=1))
    else:
        report.print(console)
        if out:
            one = " (trace.json, report.html, model.html: one replica's)" if dp is not None else ""
            console.print(f"wrote {out}/trace.json, report.html, model.html, model.json{one}")
    return 0 if report.numerics_ok else 2


def demo_command(target=None, out="trnlab-out/demo") -> int:
    """The tiny Llama compiled onto a simulated NeuronCore: checked, timed, priced, profiled."""
    from trnlab.console import make_console
    from trnlab.hw import get_chip
    console = make_console()
    chip = get_chip(target).name          # None: $NEURON_PLATFORM_TARGET_OVERRIDE, else trn2
    t0 = time.perf_counter()
    console.rule(f"trnlab demo: a tiny Llama (RMSNorm, RoPE, SwiGLU, grouped-query attention) on a simulated "
                 f"{chip} NeuronCore")
    progress = _progress(console)
    progress[0].start()
    try:
        compiled, report = compile_builtin("llama-tiny", target=chip, batch=1, seq=128, dtype="bf16", decode=4,
                                           numerics=True, progress=progress)
        _stage(progress, f"writing the Perfetto trace and HTML reports to {out}/")
        written = write_outputs(compiled, report, out)
    finally:
        progress[0].stop()
    report.print(console)
    ok = report.numerics_ok and (report.decode is None or report.decode.numerics_ok)
    console.print(f"outputs {'match' if ok else 'DO NOT match'} eager PyTorch within the bf16 bound; "
                  f"files: {', '.join(str(p) for p in written)}")
    console.rule("one training step of the same model: forward, backward and AdamW on the simulated chip")
    from trnlab.torch.trainer import train
    with console.status("training llama-tiny for one step"):
        trained = train("llama-tiny", target=chip, steps=1, batch=1, seq=128, dtype="bf16")
    print_training(trained, console)
    ok = ok and trained.grad_check["ok"]
    console.print(f"open {out}/model.html, or load {out}/trace.json in https://ui.perfetto.dev "
                  f"({time.perf_counter() - t0:.1f} s)")
    return 0 if ok else 2


# --- trnlab train -----------------------------------------------------------------------------------
def train_command(name: str, *, target=None, steps=10, batch=1, seq=64, dtype="bf16", checkpointing="none",
                  optimizer="adamw", lr=1e-3, json_out=False, dp=1, zero1=False, system=None,
                  bucket_bytes=None, trace=None) -> int:
    from trnlab.console import make_console
    from trnlab.errors import TrnlabError
    from trnlab.torch.trainer import train
    console = make_console(stderr=json_out)
    status = None if json_out else console.status(f"training {name} on the simulated chip")
    try:
        if status:
            status.start()
        result = train(name, target=target, steps=steps, batch=batch, seq=seq, dtype=dtype,
                       checkpointing=checkpointing, optimizer=optimizer, lr=lr,
                       progress=(lambda text: status.update(f"{name}: {text}")) if status else None,
                       dp=dp, zero1=zero1, system=system, bucket_bytes=bucket_bytes)
    except (TrnlabError, ValueError) as exc:
        from rich.markup import escape
        if status:
            status.stop()
        console.print(f"[red]{type(exc).__name__}[/]: {escape(str(exc))}", highlight=False)
        return 1
    finally:
        if status:
            status.stop()
    if trace is not None and result.parallel is not None:
        from trnlab.profile.outputs import write_text_atomic
        from trnlab.torch.data_parallel import chrome_trace
        write_text_atomic(trace, json.dumps(chrome_trace(result.parallel, name)))
    if json_out:
        from trnlab.torch.report import _finite
        print(json.dumps(_finite(result.to_dict()), indent=1, allow_nan=False))
    else:
        print_training(result, console)
        if trace is not None:
            console.print(f"per-rank trace: {trace} (open in https://ui.perfetto.dev)")
    return 0 if not result.grad_check or result.grad_check["ok"] else 2


def print_training(r, console) -> None:
    from rich.table import Table
    from trnlab.console import natural_width
    from trnlab.torch.report import fmt_time, fmt_usd
    tables = []
    if r.losses:
        losses = Table(title=f"{r.model}: loss per step on the simulated chip ({r.dtype}) vs eager PyTorch (fp32)")
        for col in ("step", "loss (trnlab)", "loss (eager)", "difference"):
            losses.add_column(col, justify="right")
        for i, (a, b) in enumerate(zip(r.losses, r.eager_losses), 1):
            losses.add_row(str(i), f"{a:.4f}", f"{b:.4f}", f"{a - b:+.4f}")
        tables.append(losses)
    ops: dict = {}
    for o in r.ops:
        key = o.op.replace("aten.", "").replace(".default", "")
        g = ops.setdefault(key, [0, 0.0, 0])
        g[0] += 1
        g[1] += o.time_s
        g[2] += o.instructions
    top = Table(title=f"{r.model} training step on one {r.target} NeuronCore - ops by predicted time "
                      "(forward and backward)")
    for col in ("op", "n", "time", "share", "instr"):
        top.add_column(col, justify="left" if col == "op" else "right")
    graph_s = r.timing.forward_s + r.timing.backward_s
    for op, (n, t, instr) in sorted(ops.items(), key=lambda kv: -kv[1][1])[:12]:
        top.add_row(op, str(n), fmt_time(t), f"{t / graph_s:.1%}" if graph_s else "", str(instr))
    tables.append(top)
    t = r.timing
    summary = Table(title="Training step", show_header=False)
    summary.add_column("", style="bold")
    summary.add_column("")
    h = r.hbm
    cores = "one NeuronCore" if r.dp == 1 else f"{r.dp} NeuronCores"
    coll = f" + exposed collectives {fmt_time(t.collectives_s)}" if r.parallel is not None else ""
    rows = [("step time", f"{fmt_time(t.step_s)} = forward {fmt_time(t.forward_s)} + backward "
                          f"{fmt_time(t.backward_s)} + {r.optimizer} {fmt_time(t.optimizer_s)}{coll} "
                          f"(batch {r.batch} x seq {r.seq}, checkpointing {r.checkpointing})"),
            ("throughput", f"{r.tokens_per_s:,.0f} tokens/s on {cores}"),
            ("MFU", f"{r.mfu:.2%} (6N + 12 x layers x hidden x seq = {r.flops_per_token / 1e6:,.1f} MFLOP/token, "
                    f"N = {r.params:,}); HFU {r.hfu:.2%} (recompute included)"),
            ("HBM", h.describe()),
            ("cost", f"{fmt_usd(r.usd_per_million_tokens)} per million training tokens "
                     f"({r.instance} ${r.usd_per_hour:.2f}/h / {r.instance_cores} NeuronCores"
                     + (f" x {r.dp} ranks)" if r.dp > 1 else ")")),
            ("instructions", f"{t.instructions:,} per step"),
            ("simulation", f"{r.wall_s:.1f} s wall ({r.mode})")]
    if r.grad_check:
        g = r.grad_check
        rows.append(("gradients", f"max error {g['max_rel_err']:.2g} of eager fp32's largest magnitude "
                                  f"({g['worst_param']}; eager PyTorch in {r.dtype}: "
                                  f"{g.get('eager_max_rel_err', 0.0):.2g}), bound {g['tolerance']:g}: "
                                  + ("[green]ok[/]" if g["ok"] else "[red]NOT ok[/]")))
    for k, v in rows:
        summary.add_row(k, v)
    tables.append(summary)
    if r.parallel is not None:
        tables.append(dp_table(r.parallel))
    with natural_width(console, tables):
        for table in tables:
            console.print(table)


def dp_table(p):
    """The data-parallel step's timeline: each rank's times and each collective's span."""
    from rich.table import Table
    from trnlab.torch.report import fmt_bytes, fmt_time
    mode = "ZeRO-1" if p.zero1 else "data parallelism"
    t = Table(title=f"{mode}: {p.dp} ranks on {p.system} - collectives {fmt_time(p.collectives_total_s)}, "
                    f"{fmt_time(p.collectives_exposed_s)} on the critical path (buckets <= {fmt_bytes(p.bucket_bytes)})")
    for col in ("rank / op", "bytes", "ready", "start", "end", "time", "detail"):
        t.add_column(col, justify="left" if col in ("rank / op", "detail") else "right")
    for row in p.ranks:
        t.add_row(f"rank {row['rank']}", "", "", "0", fmt_time(row["forward_s"] + row["backward_s"]),
                  fmt_time(row["forward_s"] + row["backward_s"]),
                  f"forward {fmt_time(row['forward_s'])} + backward {fmt_time(row['backward_s'])} (its gradient "
                  f"collectives on its timeline until {fmt_time(row['forward_s'] + row.get('sync_s', 0.0))}); optimizer "
                  f"{fmt_time(row['optimizer_s'])}; loss {row['loss']:.4f}")
    for s in p.gradient_sync + p.param_gather:
        t.add_row(s.op, fmt_bytes(s.nbytes), fmt_time(s.ready_s), fmt_time(s.start_s), fmt_time(s.end_s),
                  fmt_time(s.end_s - s.start_s), f"{s.tensors} tensors, {s.algorithm}")
    return t
