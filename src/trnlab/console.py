"""Rich consoles and formatting for trnlab's output: tables are never cut at 80 columns when output is piped,
byte amounts in one unit style."""
from __future__ import annotations

from contextlib import contextmanager

PIPE_WIDTH = 200      # rich assumes 80 columns when stdout is not a terminal


def make_console(stderr: bool = False):
    from rich.console import Console
    console = Console(stderr=stderr)
    if not console.is_terminal:
        console = Console(stderr=stderr, width=max(PIPE_WIDTH, console.width))
    return console


@contextmanager
def steps_progress(verb: str, total: int):
    """A rich progress bar on stderr when it is a terminal (nothing otherwise); yields on_step(name)."""
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn
    console = make_console(stderr=True)
    if not console.is_terminal:
        yield None
        return
    bar = Progress(TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn(),
                   console=console, transient=True)
    task = bar.add_task(verb, total=total)
    started = []

    def on_step(name: str) -> None:
        if started:
            bar.advance(task)
        started.append(name)
        bar.update(task, description=f"{verb} {name}", refresh=True)
    with bar:
        yield on_step


def fmt_bytes(n: float) -> str:
    """Byte amounts in binary units, the one style of trnlab's output (bandwidths stay in SI GB/s,
    as AWS publishes them)."""
    for unit, scale in (("GiB", 2**30), ("MiB", 2**20), ("KiB", 2**10)):
        if abs(n) >= scale:
            return f"{n / scale:.2f} {unit}"
    return f"{n:.0f} B"


@contextmanager
def natural_width(console, tables):
    """Off a terminal (piped, a file, a string) nothing limits the line length, so tables are laid out
    at their natural width instead of rich's default 80 columns; a terminal keeps its own width."""
    if console.is_terminal:
        yield
        return
    saved = console._width
    wide = console.options.update_width(10_000)
    need = max(console.measure(t, options=wide).maximum for t in tables)
    console.width = max(console.width, need)
    try:
        yield
    finally:
        console._width = saved
