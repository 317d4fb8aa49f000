"""`trnlab profile SCRIPT_OR_KERNEL --target trn2 --out DIR [--timing-only]`.

A built-in kernel name runs that kernel (trnlab.kernels) on random inputs of its default shape.
A script runs under the nki/neuronxcc shim while every kernel run is captured (runtime.observers);
the last run is written to DIR/, and with several runs each one also to DIR/NN_<kernel>/, listed in
DIR/runs.json and DIR/index.html. DIR holds one run only (trnlab.profile.outputs.staged_dir).
"""
from __future__ import annotations

import importlib
import json
import re
import runpy
import sys
import traceback
import weakref
from pathlib import Path

from trnlab import runtime
from trnlab.profile import profile_run, run_traced
from trnlab.profile.outputs import staged_dir, write_text_atomic
from trnlab.profile.source import from_run
from trnlab.profile.summary import fmt_pct, fmt_time, print_summary, summarize

MAX_RUN_DIRS = 32     # per-run directories written for a script (the rest are listed in runs.json)


def profile_command(script_or_kernel: str, args: list[str], target: str | None = None,
                    out: str = "trnlab-out/profile", numerics: bool = True) -> int:
    from trnlab.console import make_console
    from trnlab.errors import OutputError, TargetError
    from trnlab.hw import get_chip
    from trnlab.profile.outputs import check_out
    console = make_console()
    if script_or_kernel in ("--list", "list") or "--list" in args:
        return list_kernels(console)
    try:
        get_chip(target)
        check_out(out)
    except (TargetError, OutputError) as exc:
        console.print(f"trnlab profile: {exc}", markup=False, highlight=False)
        return 2
    path = Path(script_or_kernel)
    if path.suffix == ".py" or path.is_file():
        return profile_script(path, args, target=target, out=Path(out), numerics=numerics, console=console)
    return profile_builtin(script_or_kernel, target=target, out=Path(out), numerics=numerics, console=console)


def list_kernels(console) -> int:
    from trnlab.profile import registry
    specs, errors = registry.discover()
    for name in sorted(specs):
        console.print(f"{name:24s} {specs[name].source}")
    if not specs:
        console.print("no built-in kernels with example inputs found in trnlab.kernels")
    for module, err in errors.items():
        console.print(f"[yellow]{module} failed to import: {err}[/]")
    return 0


def profile_builtin(name: str, *, target, out: Path, numerics: bool, console) -> int:
    from trnlab.profile import registry
    try:
        spec = registry.get(name)
    except KeyError as exc:
        console.print(f"[red]trnlab profile: {exc.args[0]}[/]")
        return 2
    args, kwargs = spec.inputs(seed=0)
    run = run_traced(spec.kernel, args, kwargs, target=target, numerics=numerics)
    with staged_dir(out, {"command": "profile", "kernel": name}) as tmp:
        profile_run(run, tmp, name=name, quiet=True)
    print_summary(summarize(from_run(run, name)), console)
    _print_outputs(console, out)
    return 0


def capture_script(path: Path, args: list[str], *, target, numerics: bool, console):
    """Run the script with every kernel run traced; return (profiles in run order, exit code)."""
    captured = []
    forced = {"timing": True, "trace": True}
    if not numerics:
        forced["numerics"] = False
    if target:
        forced["target"] = target
    saved_forced, saved_argv, saved_path = dict(runtime.forced), sys.argv, list(sys.path)
    observer = _collector(captured)
    runtime.forced.update(forced)
    runtime.observers.append(observer)
    sys.argv = [str(path), *args]
    sys.path.insert(0, str(path.resolve().parent))
    code = 0
    try:
        _install_compat()
        runpy.run_path(str(path), run_name="__main__")
    except SystemExit as exc:
        code = exc.code if isinstance(exc.code, int) else (0 if exc.code is None else 1)
    except Exception as exc:
        from trnlab.errors import TrnlabError
        console.print(f"[red]{path} raised:[/]")
        text = f"{type(exc).__name__}: {exc}" if isinstance(exc, TrnlabError) else traceback.format_exc()
        console.print(text, markup=False, highlight=False)
        if not numerics:
            console.print("[yellow](--timing-only: kernel outputs are not computed, so result checks in "
                          "the script fail)[/]")
        code = 1
    finally:
        runtime.observers.remove(observer)
        runtime.forced.clear()
        runtime.forced.update(saved_forced)
        sys.argv, sys.path[:] = saved_argv, saved_path
    return captured, code


def _collector(captured: list):
    """An observer storing each run's ProfileData (no arrays kept alive); runs sharing one Machine
    (machine= passed to run_kernel) are cumulative, so only the latest snapshot of it is kept."""
    slot_of: dict[int, int] = {}

    def observe(run) -> None:
        key = id(run.machine)
        if key in slot_of:
            captured[slot_of[key]] = from_run(run)
            return
        slot_of[key] = len(captured)
        captured.append(from_run(run))
        weakref.finalize(run.machine, slot_of.pop, key, None)
    return observe


def _install_compat() -> None:
    """Let `import nki` / `import neuronxcc.nki` resolve to trnlab when the shim exists."""
    try:
        compat = importlib.import_module("trnlab.compat")
    except ImportError:
        return
    install = getattr(compat, "install", None)
    if callable(install):
        install()


def profile_script(path: Path, args, *, target, out: Path, numerics: bool, console) -> int:
    if not path.is_file():
        console.print(f"[red]trnlab profile: no such script or built-in kernel: {path}[/]")
        return 2
    profiles, code = capture_script(path, args, target=target, numerics=numerics, console=console)
    if not profiles:
        console.print(f"[red]trnlab profile: {path} ran no kernel (exit code {code}); nothing to profile[/]")
        return code or 1
    if code:
        console.print(f"[yellow]{path} exited with code {code}; profiling the {len(profiles)} kernel run(s) "
                      f"it completed[/]")
    with staged_dir(out, {"command": "profile", "script": str(path), "kernels": len(profiles)}) as tmp:
        index = _write_runs(profiles, tmp)
    print_summary(summarize(profiles[-1]), console)
    if len(profiles) > 1:
        _print_runs(console, profiles, index)
    _print_outputs(console, out)
    return code if numerics else 0    # --timing-only: result checks in the script are expected to fail


def _write_runs(profiles, out: Path) -> list[dict]:
    """The last run in out/; with several, each in out/NN_<kernel>/ plus runs.json and index.html."""
    index = []
    for i, data in enumerate(profiles):
        entry = {"index": i, "kernel": data.name, "total_us": data.total_s * 1e6}
        if len(profiles) > 1 and i < MAX_RUN_DIRS:
            sub = out / f"{i:02d}_{_safe(data.name)}"
            profile_run(data, sub, quiet=True)
            entry["dir"] = sub.name
        index.append(entry)
    profile_run(profiles[-1], out, quiet=True)
    if len(profiles) > 1:
        write_text_atomic(out / "runs.json", json.dumps(index, indent=2))
        write_text_atomic(out / "index.html", index_html(index))
    return index


def index_html(index: list[dict]) -> str:
    """A page linking every captured kernel run's report."""
    from html import escape
    rows = "".join(
        f"<tr><td>{e['index']}</td><td>{escape(e['kernel'])}</td><td>{e['total_us']:.3f}</td><td>"
        + (f"<a href='{escape(e['dir'])}/report.html'>report</a> | "
           f"<a href='{escape(e['dir'])}/trace.json'>trace</a>" if "dir" in e else "not written")
        + "</td></tr>" for e in index)
    return ("<!DOCTYPE html><html><head><meta charset='utf-8'><title>trnlab profile: kernel runs</title></head>"
            f"<body><h1>{len(index)} kernel runs</h1><p>The last run is also <a href='report.html'>report.html"
            "</a>.</p><table border='1' cellpadding='4'><tr><th>#</th><th>kernel</th><th>time (us)</th>"
            f"<th>files</th></tr>{rows}</table></body></html>")


def _safe(name: str) -> str:
    return re.sub(r"[^A-Za-z0-9_.-]+", "_", name or "kernel")[:60]


def _print_runs(console, profiles, index) -> None:
    from rich.table import Table
    table = Table(title=f"{len(profiles)} kernel runs captured (summary above: the last)")
    for col in ("#", "kernel", "time", "MFU", "MBU", "dir"):
        table.add_column(col)
    for data, entry in zip(profiles, index):
        s = summarize(data)
        table.add_row(str(entry["index"]), data.name, fmt_time(s["total_s"]), fmt_pct(s["mfu"]),
                      fmt_pct(s["mbu"]), entry.get("dir", "-"))
    console.print(table)


def _print_outputs(console, out: Path) -> None:
    extra = f", {out / 'index.html'}" if (out / "index.html").is_file() else ""
    console.print(f"wrote {out / 'trace.json'} (open in https://ui.perfetto.dev), {out / 'summary.json'}, "
                  f"{out / 'report.html'}{extra}")


__all__ = ["profile_command", "capture_script", "list_kernels"]
