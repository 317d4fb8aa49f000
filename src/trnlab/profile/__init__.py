"""Profiles of simulated kernel runs: Perfetto trace, summary numbers, HTML report.

    run = trnlab.run_kernel(kernel, args, {}, trace=True)
    trnlab.profile.profile_run(run, "out/")     # out/trace.json, out/summary.json, out/report.html
    trnlab.profile.profile_kernel(kernel, (a, b), out="out/", target="trn2")   # run traced + profile
"""
from __future__ import annotations

import json
from pathlib import Path

from trnlab.profile.outputs import write_text_atomic
from trnlab.profile.report import report_html, write_report
from trnlab.profile.source import ProfileData, from_run
from trnlab.profile.summary import print_summary, summarize, write_summary
from trnlab.profile.trace import chrome_trace, write_trace


def profile_run(run, out_dir, *, name: str | None = None, console=None, quiet: bool = False) -> dict:
    """Write trace.json, summary.json and report.html for one run into out_dir; return the summary."""
    data = from_run(run, name)
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    summary = summarize(data)
    # each file through a temporary file and os.replace: an interrupted run never leaves a partial file
    write_trace(data, out / "trace.json")
    write_text_atomic(out / "summary.json", json.dumps(summary, indent=2))
    write_text_atomic(out / "report.html", report_html(data, summary, trace_file="trace.json"))
    if not quiet:
        print_summary(summary, console)
    return summary


def run_traced(kernel, args: tuple, kwargs: dict | None = None, *, target=None, numerics: bool = True):
    """Run an @nki.jit Kernel or a plain kernel function with trace=True; return the KernelRun."""
    from trnlab.frontend.kernel import Kernel
    from trnlab.runtime import run_kernel
    kwargs = kwargs or {}
    if isinstance(kernel, Kernel):
        return kernel.run(args, kwargs, target=target, numerics=numerics, trace=True)
    return run_kernel(kernel, args, kwargs, target=target, numerics=numerics, trace=True)


def profile_kernel(kernel, args: tuple, kwargs: dict | None = None, *, out, target=None,
                   numerics: bool = True, name: str | None = None, console=None, quiet: bool = False) -> dict:
    """Run the kernel traced and write its profile into `out`; return the summary."""
    run = run_traced(kernel, args, kwargs, target=target, numerics=numerics)
    return profile_run(run, out, name=name, console=console, quiet=quiet)


__all__ = ["run_traced", "profile_kernel", "ProfileData", "from_run", "chrome_trace", "write_trace", "summarize", "write_summary",
           "print_summary", "report_html", "write_report", "profile_run"]
