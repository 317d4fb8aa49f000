"""The `trnlab` command. Each subcommand is a thin shell over a library function (imported lazily).

Every argument is checked before any simulation starts: a bad one is one line on stderr naming the
option, the value and the valid values, exit code 2 (click's convention for usage errors).
"""
from __future__ import annotations

import math
import os
from contextlib import contextmanager
from typing import List, Optional

import typer

app = typer.Typer(add_completion=False, no_args_is_help=True,
                  help="trnlab: run, time and profile NKI kernels and PyTorch models on a simulated Trainium.")

TARGET_HELP = ("Chip preset: trn1|trn2|trn3 (or gen2|gen3|gen4). "
               "Default: $NEURON_PLATFORM_TARGET_OVERRIDE, else trn2.")
MAX_HELP = "Stop a kernel run after N instructions (also $TRNLAB_MAX_INSTRUCTIONS)."
DTYPES = ("bf16", "fp32", "fp16")
EXTRAS = {"torch": "torch", "transformers": "hf", "pytest": "test"}     # missing module -> trnlab extra
SCRIPT_ARGS = {"allow_extra_args": True, "ignore_unknown_options": True}


def _fail(command: str, message: str) -> None:
    typer.echo(f"trnlab {command}: {message}", err=True)
    raise typer.Exit(2)


def _check_target(command: str, target: Optional[str]) -> None:
    from trnlab.config import TARGETS
    if target is not None and target.strip().lower() not in TARGETS:
        _fail(command, f"--target {target!r} is not a chip preset; valid values: {'|'.join(TARGETS)}")


def _check_out(command: str, out: Optional[str]) -> None:
    from trnlab.errors import OutputError
    from trnlab.profile.outputs import check_out
    if out is not None:
        try:
            check_out(out)
        except OutputError as exc:
            _fail(command, str(exc))


def _check_int(command: str, option: str, value: Optional[int], low: int) -> None:
    if value is not None and value < low:
        _fail(command, f"{option} must be an integer >= {low}, got {value}")


def _missing_extra(command: str, exc: ImportError) -> None:
    """A missing optional dependency: name the extra to install instead of a traceback."""
    top = (exc.name or "").split(".")[0]
    if top not in EXTRAS:
        raise exc
    _fail(command, f"needs the '{top}' package, which is not installed: pip install 'trnlab[{EXTRAS[top]}]'")


@contextmanager
def _instruction_limit(limit: Optional[int]):
    """--max-instructions: published to every run through config.max_instructions() for this command."""
    if limit is None:
        yield
        return
    saved = os.environ.get("TRNLAB_MAX_INSTRUCTIONS")
    os.environ["TRNLAB_MAX_INSTRUCTIONS"] = str(limit)
    try:
        yield
    finally:
        if saved is None:
            os.environ.pop("TRNLAB_MAX_INSTRUCTIONS", None)
        else:
            os.environ["TRNLAB_MAX_INSTRUCTIONS"] = saved


COMPILER_HELP = ("Compiler-model switches for what-if runs, e.g. psum_zero_fold=0,multibuffer=0 or none "
                 "(trnlab.core.compiler; also $TRNLAB_COMPILER).")


@contextmanager
def _compiler(command: str, text: Optional[str]):
    """--compiler: validated, then published to every run through $TRNLAB_COMPILER for this command."""
    if text is None:
        yield
        return
    from trnlab.core.compiler import CompilerModel
    from trnlab.errors import ConfigError
    try:
        CompilerModel.parse(text)
    except ConfigError as exc:
        _fail(command, str(exc))
    saved = os.environ.get("TRNLAB_COMPILER")
    os.environ["TRNLAB_COMPILER"] = text
    try:
        yield
    finally:
        if saved is None:
            os.environ.pop("TRNLAB_COMPILER", None)
        else:
            os.environ["TRNLAB_COMPILER"] = saved


def _version(value: bool) -> None:
    if value:
        from trnlab import __version__
        typer.echo(f"trnlab {__version__}")
        raise typer.Exit(0)


@app.callback()
def _root(version: bool = typer.Option(False, "--version", callback=_version, is_eager=True,
                                       help="Print trnlab's version and exit.")):
    """Checks the environment flags (trnlab.config) once, before any command runs."""
    from trnlab import config
    from trnlab.errors import ConfigError
    try:
        config.validate()
        from trnlab.core import compiler
        compiler.current()                   # TRNLAB_COMPILER parses
    except ConfigError as exc:
        typer.echo(f"trnlab: {exc}", err=True)
        raise typer.Exit(2)


# interspersed args off: everything after the script path (even --target, --help) belongs to the script
@app.command(context_settings={**SCRIPT_ARGS, "allow_interspersed_args": False})
def run(ctx: typer.Context,
        script: str = typer.Argument(..., help="Python script written for nki or neuronxcc.nki; the arguments "
                                               "after it are the script's own"),
        target: Optional[str] = typer.Option(None, help=TARGET_HELP),
        max_instructions: Optional[int] = typer.Option(None, metavar="N", help=MAX_HELP),
        compiler: Optional[str] = typer.Option(None, metavar="SWITCHES", help=COMPILER_HELP)):
    """Run a Python script with trnlab standing in for `nki` and `neuronxcc.nki` (options before the script path)."""
    _check_target("run", target)
    _check_int("run", "--max-instructions", max_instructions, 1)
    from trnlab.compat import run_script
    with _instruction_limit(max_instructions), _compiler("run", compiler):
        raise typer.Exit(run_script(script, list(ctx.args), target=target))


@app.command(context_settings=SCRIPT_ARGS)
def pytest(ctx: typer.Context, target: Optional[str] = typer.Option(None, help=TARGET_HELP)):
    """Run a third-party pytest suite with the nki/neuronxcc shim active (arguments go to pytest)."""
    _check_target("pytest", target)
    from trnlab.compat import run_pytest
    try:
        import pytest as _pytest  # noqa: F401  (an optional extra)
    except ImportError as exc:
        _missing_extra("pytest", exc)
    raise typer.Exit(run_pytest(list(ctx.args), target=target))


@app.command(context_settings=SCRIPT_ARGS)
def profile(ctx: typer.Context,
            script_or_kernel: str = typer.Argument(..., help="a script, or a built-in kernel name (see --list)"),
            target: Optional[str] = typer.Option(None, help=TARGET_HELP),
            out: str = typer.Option("trnlab-out/profile", help="Output folder: new, empty, or a previous trnlab "
                                                               "output (replaced whole)."),
            numerics: bool = typer.Option(True, "--numerics/--timing-only",
                                          help="Compute values, or only time the instructions."),
            max_instructions: Optional[int] = typer.Option(None, metavar="N", help=MAX_HELP),
            compiler: Optional[str] = typer.Option(None, metavar="SWITCHES", help=COMPILER_HELP)):
    """Profile a kernel: Perfetto trace, summary.json, HTML report and a terminal summary."""
    listing = script_or_kernel in ("--list", "list") or "--list" in ctx.args
    _check_target("profile", target)
    if not listing:
        _check_out("profile", out)
    _check_int("profile", "--max-instructions", max_instructions, 1)
    from trnlab.profile.cli import profile_command
    with _instruction_limit(max_instructions), _compiler("profile", compiler):
        raise typer.Exit(profile_command(script_or_kernel, list(ctx.args), target=target, out=out,
                                         numerics=numerics))


@app.command()
def calibrate(json_out: bool = typer.Option(False, "--json", help="Print a JSON list instead of a table."),
              tolerance: float = typer.Option(0.15, help="Largest allowed relative error of a fitted point (a "
                                                         "number >= 0); exit code 1 above it or over a bound."),
              all_points: bool = typer.Option(False, "--all", help="Every point, including the long ones "
                                                                    "(several minutes); default: the quick set.")):
    """Compare predicted kernel latencies with published hardware measurements (roles fit/validate/bound)."""
    if not (math.isfinite(tolerance) and tolerance >= 0):
        _fail("calibrate", f"--tolerance must be a finite number >= 0, got {tolerance}")
    from trnlab.bench.calibrate import calibrate_command
    raise typer.Exit(calibrate_command(json_out=json_out, tolerance=tolerance, all_points=all_points))


def _check_positions(command: str, name: str, tokens: int) -> None:
    """A built-in decoder with learned position embeddings (GPT-2) has max_seq positions: more tokens
    would index past its table."""
    from trnlab.torch.models import CONFIGS
    cfg = CONFIGS.get(name)
    if cfg is not None and cfg.kind == "gpt2" and tokens > cfg.max_seq:
        _fail(command, f"{name} has {cfg.max_seq} learned positions; --seq (plus --decode) asks for {tokens}")


def _model_names(command: str) -> list[str]:
    try:
        from trnlab.torch.cli import model_names
        return model_names()
    except ImportError as exc:
        _missing_extra(command, exc)


@app.command()
def model(name: Optional[str] = typer.Argument(None, help="Built-in model (see --list): llama-tiny, "
                                                          "llama-8b-layer, gpt2-tiny, ..."),
          list_models: bool = typer.Option(False, "--list", help="List the built-in models and exit."),
          target: Optional[str] = typer.Option(None, help=TARGET_HELP),
          batch: int = typer.Option(1, help="Batch size (>= 1)."),
          seq: int = typer.Option(128, help="Prompt length in tokens (>= 1)."),
          dtype: str = typer.Option("bf16", help="Compute dtype: " + "|".join(DTYPES) + "."),
          decode: int = typer.Option(0, help="Also time N single-token decode steps with a KV cache (>= 0)."),
          numerics: bool = typer.Option(True, "--numerics/--timing-only",
                                        help="Compute and check values, or only time the instructions."),
          json_out: bool = typer.Option(False, "--json", help="Print the report as JSON on stdout."),
          out: Optional[str] = typer.Option(None, help="Write trace + HTML reports into this folder (new, empty, "
                                                       "or a previous trnlab output)."),
          max_instructions: Optional[int] = typer.Option(None, metavar="N", help=MAX_HELP),
          tp: Optional[int] = typer.Option(None, "--tp", metavar="N",
                                           help="Tensor parallelism over N NeuronCores (Megatron-style; prefill)."),
          system: Optional[str] = typer.Option(None, "--system",
                                               help="System the ranks run on (trnlab.hw.systems; default: the "
                                                    "target chip's instance, one rank per NeuronCore)."),
          sequence_parallel: bool = typer.Option(False, "--sequence-parallel",
                                                 help="With --tp: reduce-scatter/all-gather over the sequence "
                                                      "instead of all-reduce (Megatron sequence parallelism)."),
          dp: Optional[int] = typer.Option(None, "--dp", metavar="N",
                                           help="Data parallelism: N replicas (each one NeuronCore, or a --tp "
                                                "group), each on --batch/N sequences; N x TP ranks of --system.")):
    """Compile a built-in PyTorch model onto the simulated chip: outputs checked, time, MFU, cost."""
    if list_models:
        for n in _model_names("model"):
            typer.echo(n)
        raise typer.Exit(0)
    if name is None:
        _fail("model", "give a model name; valid values: " + ", ".join(_model_names("model")))
    _check_target("model", target)
    for option, value, low in (("--batch", batch, 1), ("--seq", seq, 1), ("--decode", decode, 0),
                               ("--max-instructions", max_instructions, 1)):
        _check_int("model", option, value, low)
    if dtype not in DTYPES:
        _fail("model", f"--dtype {dtype!r} is not supported; valid values: {'|'.join(DTYPES)}")
    names = _model_names("model")
    if name not in names:
        _fail("model", f"unknown model {name!r}; valid values: {', '.join(names)}")
    from trnlab.torch.cli import decoder_names, model_command
    if decode and name not in decoder_names():
        _fail("model", f"--decode needs a built-in decoder, not {name!r}; valid values: {', '.join(decoder_names())}")
    _check_positions("model", name, seq + decode)
    _check_out("model", out)
    _check_tp("model", name, tp, system, target, decode)
    if sequence_parallel and tp is None:
        _fail("model", "--sequence-parallel needs --tp N (N >= 2)")
    _check_replicas("model", dp, tp, system, target, batch)
    with _instruction_limit(max_instructions):
        try:
            code = model_command(name, target=target, batch=batch, seq=seq, dtype=dtype, decode=decode,
                                 numerics=numerics, json_out=json_out, out=out, tp=tp, system=system,
                                 sequence_parallel=sequence_parallel, dp=dp)
        except ImportError as exc:
            _missing_extra("model", exc)
    raise typer.Exit(code)


def _check_tp(command: str, name: str, tp: Optional[int], system: Optional[str], target: Optional[str],
              decode: int) -> None:
    """--tp / --system: an integer >= 1 within the system's ranks that splits the built-in model's heads."""
    if tp is None and system is None:
        return
    _check_int(command, "--tp", tp, 1)
    from trnlab.errors import TrnlabError
    from trnlab.torch.shard import resolve_system
    try:
        spec = resolve_system(system, target)
    except TrnlabError as exc:
        _fail(command, str(exc).replace("system=", "--system ").replace("target=", "--target "))
    if tp is not None and tp > spec.ranks:
        _fail(command, f"--tp {tp} exceeds the {spec.ranks} ranks of {spec.name}")
    from trnlab.torch.models import CONFIGS
    cfg = CONFIGS.get(name)
    if cfg is not None and tp is not None:
        if cfg.heads % tp:
            _fail(command, f"--tp {tp} does not divide the {cfg.heads} attention heads of {name}; valid values: "
                           + ", ".join(str(t) for t in range(1, cfg.heads + 1) if cfg.heads % t == 0
                                       and (cfg.kv_heads % t == 0 or t % cfg.kv_heads == 0)))
        if cfg.kv_heads % tp and tp % cfg.kv_heads:
            _fail(command, f"--tp {tp} neither divides nor is a multiple of the {cfg.kv_heads} KV heads of {name}")


def _check_replicas(command: str, dp: Optional[int], tp: Optional[int], system: Optional[str],
                    target: Optional[str], batch: int) -> None:
    """--dp: an integer >= 1 that divides --batch, with dp x tp within the system's ranks."""
    if dp is None:
        return
    _check_int(command, "--dp", dp, 1)
    if batch % dp:
        _fail(command, f"--dp {dp} does not divide --batch {batch} (each replica runs --batch/N sequences); "
                       "valid values: " + ", ".join(str(n) for n in range(1, batch + 1) if batch % n == 0))
    from trnlab.errors import TrnlabError
    from trnlab.torch.replicas import check_ranks
    from trnlab.torch.shard import resolve_system
    try:
        check_ranks(dp, tp or 1, resolve_system(system, target))
    except TrnlabError as exc:
        _fail(command, str(exc).replace("system=", "--system ").replace("target=", "--target ")
              .replace("dp=", "--dp ").replace("tp=", "--tp "))


CHECKPOINTING = ("none", "selective", "full")
OPTIMIZERS = ("adamw", "sgd")


@app.command()
def train(name: Optional[str] = typer.Argument(None, help="Built-in model (see `trnlab model --list`): llama-tiny, "
                                                          "gpt2-tiny, llama-8b-layer, hf-llama, ..."),
          target: Optional[str] = typer.Option(None, help=TARGET_HELP),
          steps: int = typer.Option(10, help="Training steps (>= 1)."),
          batch: int = typer.Option(1, help="Global batch size in sequences (>= 1; split evenly over the --dp ranks)."),
          seq: int = typer.Option(64, help="Sequence length in tokens (>= 2)."),
          dtype: str = typer.Option("bf16", help="Compute dtype: " + "|".join(DTYPES) + "."),
          checkpointing: str = typer.Option("none", help="Activation checkpointing: " + "|".join(CHECKPOINTING) + "."),
          optimizer: str = typer.Option("adamw", help="Optimizer on the chip: " + "|".join(OPTIMIZERS) + "."),
          lr: float = typer.Option(1e-3, help="Learning rate (> 0)."),
          dp: int = typer.Option(1, "--dp", metavar="N",
                                 help="Data parallelism over N NeuronCores: each rank trains batch/N sequences, "
                                      "gradients all-reduced in buckets overlapping backward."),
          zero1: bool = typer.Option(False, "--zero1", help="With --dp: ZeRO-1 (gradient reduce-scatter, optimizer "
                                                            "states sharded over the ranks, parameter all-gather)."),
          system: Optional[str] = typer.Option(None, "--system",
                                               help="System the --dp ranks run on (trnlab.hw.systems; default: the "
                                                    "target chip's instance, one rank per NeuronCore)."),
          bucket_mb: Optional[float] = typer.Option(None, "--bucket-mb", metavar="MB",
                                                    help="Gradient bucket cap in MiB (default 512, NxD's)."),
          trace: Optional[str] = typer.Option(None, "--trace", metavar="FILE",
                                              help="With --dp: write the last step as a Perfetto trace (one process "
                                                   "per rank: its ops, optimizer and collective track)."),
          json_out: bool = typer.Option(False, "--json", help="Print the result as one JSON object on stdout."),
          max_instructions: Optional[int] = typer.Option(None, metavar="N", help=MAX_HELP)):
    """Train a built-in model on the simulated chip: forward, backward and optimizer per step, the loss
    beside eager PyTorch's, step time, tokens/s, MFU, HBM breakdown. With --dp N: data parallelism over N
    simulated NeuronCores (per-rank timings, collectives on the critical path)."""
    if name is None:
        _fail("train", "give a model name; valid values: " + ", ".join(_model_names("train")))
    _check_target("train", target)
    for option, value, low in (("--steps", steps, 1), ("--batch", batch, 1), ("--seq", seq, 2),
                               ("--max-instructions", max_instructions, 1), ("--dp", dp, 1)):
        _check_int("train", option, value, low)
    bucket_bytes = _check_dp("train", dp, zero1, system, target, batch, bucket_mb)
    if trace is not None and dp < 2:
        _fail("train", f"--trace writes the data-parallel step's per-rank timeline; give --dp N with N >= 2, got --dp {dp}")
    for option, value, valid in (("--dtype", dtype, DTYPES), ("--checkpointing", checkpointing, CHECKPOINTING),
                                 ("--optimizer", optimizer, OPTIMIZERS)):
        if value not in valid:
            _fail("train", f"{option} {value!r} is not supported; valid values: {'|'.join(valid)}")
    if not (math.isfinite(lr) and lr > 0):
        _fail("train", f"--lr must be a finite number > 0, got {lr}")
    names = [n for n in _model_names("train") if not n.endswith("-layer")]
    if name not in names:
        _fail("train", f"unknown model {name!r}; valid values: {', '.join(names)} (one decoder layer: "
                       "benchmarks/train_estimate.py)")
    if name.startswith("hf-") and checkpointing != "none":
        _fail("train", f"--checkpointing {checkpointing} is for the built-in decoders, not {name}")
    _check_positions("train", name, seq)
    with _instruction_limit(max_instructions):
        try:
            from trnlab.torch.cli import train_command
            code = train_command(name, target=target, steps=steps, batch=batch, seq=seq, dtype=dtype,
                                 checkpointing=checkpointing, optimizer=optimizer, lr=lr, json_out=json_out,
                                 dp=dp, zero1=zero1, system=system, bucket_bytes=bucket_bytes, trace=trace)
        except ImportError as exc:
            _missing_extra("train", exc)
    raise typer.Exit(code)


def _check_dp(command: str, dp: int, zero1: bool, system: Optional[str], target: Optional[str], batch: int,
              bucket_mb: Optional[float]) -> Optional[int]:
    """--dp / --zero1 / --system / --bucket-mb: dp within the system's ranks and dividing the global batch;
    the bucket cap in bytes (None: the default)."""
    if zero1 and dp < 2:
        _fail(command, f"--zero1 shards the optimizer over the --dp ranks; give --dp N with N >= 2, got --dp {dp}")
    if bucket_mb is not None and not (math.isfinite(bucket_mb) and bucket_mb > 0):
        _fail(command, f"--bucket-mb must be a finite number > 0, got {bucket_mb}")
    if dp == 1 and system is None:
        return None
    from trnlab.errors import TrnlabError
    from trnlab.torch.data_parallel import check_dp
    from trnlab.torch.shard import resolve_system
    try:
        check_dp(dp, batch, resolve_system(system, target))
    except TrnlabError as exc:
        _fail(command, str(exc).replace("system=", "--system ").replace("target=", "--target ")
              .replace("dp=", "--dp ").replace("global batch of", "--batch of"))
    return None if bucket_mb is None else max(1, int(bucket_mb * (1 << 20)))


@app.command()
def demo(target: Optional[str] = typer.Option(None, help=TARGET_HELP),
         out: str = typer.Option("trnlab-out/demo", help="Output folder: new, empty, or a previous trnlab output "
                                                    "(replaced whole)."),
         max_instructions: Optional[int] = typer.Option(None, metavar="N", help=MAX_HELP)):
    """The tiny Llama compiled onto a simulated NeuronCore: checked, timed, priced, profiled."""
    _check_target("demo", target)
    _check_out("demo", out)
    _check_int("demo", "--max-instructions", max_instructions, 1)
    try:
        from trnlab.torch.cli import demo_command
    except ImportError as exc:
        _missing_extra("demo", exc)
    with _instruction_limit(max_instructions):
        raise typer.Exit(demo_command(target=target, out=out))


@app.command(context_settings={"help_option_names": ["-h", "--help"]})
def collective(op: str = typer.Argument(..., help="all-reduce|all-gather|reduce-scatter|all-to-all|all-to-allv|"
                                                  "permute|send-recv (also nccom-test's allr, allg, redsct, "
                                                  "alltoall, alltoallv)"),
               system: str = typer.Option("trn2.48xlarge", help="System preset (trnlab.hw.systems): trn1.2xlarge, "
                                          "trn1.32xlarge, trn1n.32xlarge, trn2.48xlarge, trn2.48xlarge-lnc1, "
                                          "trn2-ultraserver, trn3-ultraserver."),
               nodes: str = typer.Option("1", "--nodes", "-N", "--nnodes",
                                         help="Instances (UltraServers) joined by EFA; the ranks are spread evenly."),
               ranks: Optional[str] = typer.Option(None, "-r", "--ranks", "--nworkers",
                                                   help="Ranks (default: all of the system's)."),
               minbytes: str = typer.Option("32M", "-b", "--minbytes", help="Smallest size, e.g. 8, 1KB, 32M."),
               maxbytes: str = typer.Option("32M", "-e", "--maxbytes", help="Largest size."),
               stepbytes: Optional[str] = typer.Option(None, "-i", "--stepbytes",
                                                       help="Add this many bytes per row (default (max-min)/10)."),
               stepfactor: Optional[str] = typer.Option(None, "-f", "--stepfactor",
                                                        help="Multiply the size by this per row (instead of -i)."),
               datatype: str = typer.Option("uint8", "-d", "--datatype", help="Element type: uint8, int8, uint16, "
                                            "int16, fp16, bf16, uint32, int32, fp32 (and fp8, int64, uint64, fp64)."),
               pairs_file: Optional[str] = typer.Option(None, "--custom-src-target-pairs", metavar="JSON",
                                                        help="permute: nccom-test's pairs file (default: r -> r+1)."),
               metadata_file: Optional[str] = typer.Option(None, "--variable-size-op-metadata", metavar="JSON",
                                                           help="alltoallv: nccom-test's send counts and "
                                                                "displacements file (default: even parts)."),
               release: Optional[str] = typer.Option(None, "--release", help="Runtime release whose fixed costs "
                                                     "to use: 2.32 (default: those of the calibration rows' "
                                                     "releases, docs/calibration.md)."),
               json_out: bool = typer.Option(False, "--json", help="Print a JSON list of rows.")):
    """A simulated nccom-test: collective latency and bandwidth over a size sweep on a system preset
    (same options and defaults as AWS's nccom-test)."""
    from trnlab.bench.nccom_test import collective_command
    from trnlab.errors import CollectiveError
    try:
        code = collective_command(op, system=system, nodes=nodes, ranks=ranks, minbytes=minbytes,
                                  maxbytes=maxbytes, stepbytes=stepbytes, stepfactor=stepfactor, datatype=datatype,
                                  json_out=json_out, pairs_file=pairs_file, release=release,
                                  metadata_file=metadata_file)
    except CollectiveError as exc:
        _fail("collective", str(exc))
    raise typer.Exit(code)


@app.command()
def plan(model: str = typer.Argument(..., help="Built-in model (llama-2-7b, llama-3.1-70b, gpt3-175b, ...) or a "
                                                "Hugging Face config.json path"),
         system: str = typer.Option("trn1.32xlarge", help="System preset (see `trnlab collective --help`)."),
         nodes: int = typer.Option(1, help="Instances joined by EFA (with --search: the most to try)."),
         seq: int = typer.Option(4096, help="Training sequence length."),
         global_batch: int = typer.Option(1024, "--global-batch", help="Sequences per optimizer step."),
         tp: Optional[int] = typer.Option(None, help="Tensor-parallel degree (default 8; inference: the instance; "
                                                     "--search: every divisor of the instance unless given)."),
         pp: int = typer.Option(1, help="Pipeline-parallel degree (1F1B)."),
         interleave: int = typer.Option(1, help="Virtual pipeline stages per rank (interleaved 1F1B)."),
         dp: Optional[int] = typer.Option(None, help="Data-parallel degree (default: ranks / (TP x PP))."),
         zero1: bool = typer.Option(True, "--zero1/--no-zero1", help="ZeRO-1: shard optimizer states over DP."),
         microbatch: Optional[int] = typer.Option(None, help="Sequences per microbatch (default 1; --search "
                                                             "tries 1, 2, 4 unless given)."),
         checkpointing: Optional[str] = typer.Option(None, help="Activation checkpointing: none|selective|full "
                                                                "(default selective; --search tries selective "
                                                                "and full unless given)."),
         sequence_parallel: Optional[bool] = typer.Option(
             None, "--sequence-parallel/--no-sequence-parallel",
             help="Megatron sequence parallelism inside the TP group (default: on for training, NxD's and NeMo's "
                  "default; off for --inference, transformers-neuronx's; NxD Inference's "
                  "--sequence-parallel-enabled applies it to the prefill)."),
         context_buckets: Optional[str] = typer.Option(
             None, "--context-buckets", help="With --inference: the prefill graph's buckets, e.g. 2048,4096,8192 "
                                             "(the prompt is padded to the smallest that holds it)."),
         dtype: str = typer.Option("bf16", help="Compute dtype: " + "|".join(DTYPES) + "."),
         precision: str = typer.Option("mixed", help="Training precision: mixed (bf16 compute, fp32 master "
                                                     "weights and AdamW states; NxD) or bf16-sr (everything "
                                                     "bf16 with stochastic rounding; NeMo's BF16+SR)."),
         inference: bool = typer.Option(False, "--inference", help="Plan serving (TTFT, TPOT) instead of training."),
         batch: int = typer.Option(1, help="Inference batch size."),
         input_len: int = typer.Option(128, "--input", help="Inference prompt tokens."),
         output_len: int = typer.Option(128, "--output", help="Inference generated tokens."),
         do_search: bool = typer.Option(False, "--search", help="Search the layouts; print the Pareto front."),
         use_ray: bool = typer.Option(False, "--ray",
                                      help="With --search: evaluate on Ray (pip install 'trnlab[ray]')."),
         address: Optional[str] = typer.Option(None, help="With --ray: a Ray cluster address (default: local)."),
         workers: Optional[int] = typer.Option(None, help="With --search: parallel workers (default: CPUs)."),
         train_tokens: Optional[float] = typer.Option(None, "--train-tokens", help="Also price a run of N tokens."),
         usd_per_hour: Optional[float] = typer.Option(None, "--usd-per-hour", help="Override the instance price."),
         out: Optional[str] = typer.Option(None, help="With --search: write report.html (Pareto plot) and "
                                                       "plans.json into this folder."),
         json_out: bool = typer.Option(False, "--json", help="Print JSON.")):
    """Plan training (step time, tokens/s, MFU, HBM per core, $) or serving (TTFT, TPOT) of a whole model on a
    Trainium cluster, from simulated per-rank layer shards and the collective model."""
    from trnlab.hw.systems import SYSTEMS, get_system
    from trnlab.errors import TargetError
    try:
        get_system(system)
    except TargetError:
        _fail("plan", f"--system {system!r} is not a system preset; valid values: {', '.join(SYSTEMS)}")
    for option, value, low in (("--nodes", nodes, 1), ("--seq", seq, 1), ("--global-batch", global_batch, 1),
                               ("--tp", tp, 1), ("--pp", pp, 1), ("--interleave", interleave, 1), ("--dp", dp, 1),
                               ("--microbatch", microbatch, 1),
                               ("--batch", batch, 1), ("--input", input_len, 1), ("--output", output_len, 1),
                               ("--workers", workers, 1)):
        _check_int("plan", option, value, low)
    if checkpointing is not None and checkpointing not in ("none", "selective", "full"):
        _fail("plan", f"--checkpointing {checkpointing!r} is not supported; valid values: none|selective|full")
    if dtype not in DTYPES:
        _fail("plan", f"--dtype {dtype!r} is not supported; valid values: {'|'.join(DTYPES)}")
    if precision not in ("mixed", "bf16-sr"):
        _fail("plan", f"--precision {precision!r} is not supported; valid values: mixed|bf16-sr")
    for option, value in (("--train-tokens", train_tokens), ("--usd-per-hour", usd_per_hour)):
        if value is not None and not (math.isfinite(value) and value >= 0):
            _fail("plan", f"{option} must be a finite number >= 0, got {value}")
    if inference and do_search:
        _fail("plan", "--search plans training layouts; it does not combine with --inference")
    if inference and precision != "mixed":
        _fail("plan", f"--precision {precision} is a training precision (optimizer states, gradients); it does "
                      "not combine with --inference")
    buckets = None
    if context_buckets is not None:
        if not inference:
            _fail("plan", "--context-buckets are the prefill graph's buckets; give --inference too")
        try:
            buckets = tuple(int(b) for b in context_buckets.split(","))
        except ValueError:
            _fail("plan", f"--context-buckets must be comma-separated integers, got {context_buckets!r}")
        if not all(b >= 1 for b in buckets):
            _fail("plan", f"--context-buckets must be integers >= 1, got {context_buckets!r}")
    if sequence_parallel is None:
        sequence_parallel = not inference
    if use_ray and not do_search:
        _fail("plan", "--ray runs a --search; give --search too")
    if address is not None and not use_ray:
        _fail("plan", "--address names a Ray cluster; give --ray too")
    if out is not None and not do_search:
        _fail("plan", "--out writes the --search report; give --search too")
    _check_out("plan", out)
    try:
        from trnlab.plan.cli import plan_command
        from trnlab.plan.configs import get_model
        from trnlab.errors import OptionError
        try:
            get_model(model)
        except OptionError as exc:
            _fail("plan", str(exc))
        if use_ray:
            import ray  # noqa: F401  (the optional extra)
        try:
            code = plan_command(model, system=system, nodes=nodes, seq=seq, global_batch=global_batch, tp=tp, pp=pp,
                                dp=dp, interleave=interleave, zero1=zero1, microbatch=microbatch,
                                checkpointing=checkpointing, sequence_parallel=sequence_parallel, dtype=dtype,
                                precision=precision, inference=inference, batch=batch, input_len=input_len,
                                output_len=output_len, context_buckets=buckets,
                                do_search=do_search, use_ray=use_ray, address=address, workers=workers,
                                train_tokens=train_tokens, usd_per_hour=usd_per_hour, json_out=json_out,
                                out=out, echo=typer.echo)
        except OptionError as exc:
            _fail("plan", str(exc))
    except ImportError as exc:
        if (exc.name or "").split(".")[0] == "ray":
            _fail("plan", "--ray needs the 'ray' package, which is not installed: pip install 'trnlab[ray]'")
        _missing_extra("plan", exc)
    raise typer.Exit(code)


@app.command()
def chips():
    """List the chip presets and their key numbers."""
    from rich.table import Table

    from trnlab.console import make_console
    from trnlab.hw import PRESETS
    table = Table(title="trnlab chip presets (per NeuronCore)")
    for col in ("target", "NC gen", "SBUF/partition", "PSUM banks", "PE clock", "bf16 peak", "HBM/chip", "DMA queues"):
        table.add_column(col)
    for c in PRESETS.values():
        table.add_row(c.name, f"v{c.nc_version}", f"{c.sbuf_bytes_per_partition // 1024} KiB", str(c.psum_banks),
                      f"{c.tensor_hz / 1e9:.2f} GHz", f"{c.peak_bf16_flops / 1e12:.1f} TF",
                      f"{c.hbm_bytes / 2**30:.0f} GiB", str(c.dma_queues))
    make_console().print(table)


def main(argv: Optional[List[str]] = None) -> None:
    app(args=argv)


if __name__ == "__main__":
    main()
