"""Rich consoles for the command line: tables are never cut at 80 columns when output is piped."""
from __future__ import annotations

PIPE_WIDTH = 200      # rich assumes 80 columns when stdout is not a terminal


def make_console(stderr: bool = False):
    from rich.console import Console
    console = Console(stderr=stderr)
    if not console.is_terminal:
        console = Console(stderr=stderr, width=max(PIPE_WIDTH, console.width))
    return console
