"""The `trnlab` command. Each subcommand is a thin shell over a library function (imported lazily)."""
from __future__ import annotations

from typing import List, Optional

import typer

app = typer.Typer(add_completion=False, no_args_is_help=True,
                  help="trnlab: run, time and profile NKI kernels and PyTorch models on a simulated Trainium.")

TARGET_HELP = "Chip preset: trn1|trn2|trn3 (or gen2|gen3|gen4). Default: $NEURON_PLATFORM_TARGET_OVERRIDE or trn2."


@app.command(context_settings={"allow_extra_args": True, "ignore_unknown_options": True})
def run(ctx: typer.Context, script: str = typer.Argument(..., help="Python script written for nki or neuronxcc.nki"),
        target: Optional[str] = typer.Option(None, help=TARGET_HELP)):
    """Run a Python script with trnlab standing in for `nki` and `neuronxcc.nki`."""
    from trnlab.compat import run_script
    raise typer.Exit(run_script(script, list(ctx.args), target=target))


@app.command(context_settings={"allow_extra_args": True, "ignore_unknown_options": True})
def pytest(ctx: typer.Context, target: Optional[str] = typer.Option(None, help=TARGET_HELP)):
    """Run a third-party pytest suite with the nki/neuronxcc shim active."""
    from trnlab.compat import run_pytest
    raise typer.Exit(run_pytest(list(ctx.args), target=target))


@app.command(context_settings={"allow_extra_args": True, "ignore_unknown_options": True})
def profile(ctx: typer.Context,
            script_or_kernel: str = typer.Argument(..., help="a script, or a built-in kernel name (see --list)"),
            target: Optional[str] = typer.Option(None, help=TARGET_HELP),
            out: str = typer.Option("trnlab-out/profile", help="output directory"),
            numerics: bool = typer.Option(True, "--numerics/--timing-only", help="compute values or only time")):
    """Profile a kernel: Perfetto trace, summary.json, HTML report and a terminal summary."""
    from trnlab.profile.cli import profile_command
    raise typer.Exit(profile_command(script_or_kernel, list(ctx.args), target=target, out=out, numerics=numerics))


@app.command()
def calibrate(json_out: bool = typer.Option(False, "--json", help="print a JSON list instead of a table"),
              tolerance: float = typer.Option(0.15, help="largest allowed relative error")):
    """Compare predicted kernel latencies with published hardware measurements."""
    from trnlab.bench.calibrate import calibrate_command
    raise typer.Exit(calibrate_command(json_out=json_out, tolerance=tolerance))


@app.command()
def model(name: str = typer.Argument(..., help="built-in model: llama-tiny, llama-8b-layer, gpt2-tiny, ..."),
          target: str = typer.Option("trn2", help=TARGET_HELP),
          batch: int = typer.Option(1), seq: int = typer.Option(128),
          dtype: str = typer.Option("bf16", help="bf16|fp32"),
          decode: int = typer.Option(0, help="also time N single-token decode steps with a KV cache"),
          numerics: bool = typer.Option(True, "--numerics/--timing-only"),
          json_out: bool = typer.Option(False, "--json"),
          out: Optional[str] = typer.Option(None, help="write trace + HTML report here")):
    """Compile a built-in PyTorch model onto the simulated chip: outputs checked, time, MFU, cost."""
    from trnlab.torch.cli import model_command
    raise typer.Exit(model_command(name, target=target, batch=batch, seq=seq, dtype=dtype, decode=decode,
                                   numerics=numerics, json_out=json_out, out=out))


@app.command()
def demo(target: str = typer.Option("trn2", help=TARGET_HELP),
         out: str = typer.Option("trnlab-out", help="output directory")):
    """The tiny Llama compiled onto a simulated NeuronCore: checked, timed, priced, profiled."""
    from trnlab.torch.cli import demo_command
    raise typer.Exit(demo_command(target=target, out=out))


@app.command()
def chips():
    """List the chip presets and their key numbers."""
    from rich.console import Console
    from rich.table import Table
    from trnlab.hw import PRESETS
    table = Table(title="trnlab chip presets (per NeuronCore)")
    for col in ("target", "NC gen", "SBUF/partition", "PSUM banks", "PE clock", "bf16 peak", "HBM/chip", "DMA queues"):
        table.add_column(col)
    for c in PRESETS.values():
        table.add_row(c.name, f"v{c.nc_version}", f"{c.sbuf_bytes_per_partition // 1024} KiB", str(c.psum_banks),
                      f"{c.tensor_hz / 1e9:.2f} GHz", f"{c.peak_bf16_flops / 1e12:.1f} TF",
                      f"{c.hbm_bytes / 2**30:.0f} GiB", str(c.dma_queues))
    Console().print(table)


def main(argv: Optional[List[str]] = None) -> None:
    app(args=argv)


if __name__ == "__main__":
    main()
