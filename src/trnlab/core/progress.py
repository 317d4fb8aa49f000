"""Signs of life for long kernel runs: a status line on stderr once a run has taken a few seconds.

A Machine calls its progress hook every PROGRESS_EVERY instructions with (machine, instruction); the
wall clock is read only here, for display, never by the simulation or the timing model."""
from __future__ import annotations

import sys
import threading
import time

PROGRESS_EVERY = 4096        # instructions between calls of a machine's progress hook
AFTER_S = 3.0                # wall-clock seconds before the status line appears


class StatusLine:
    """A rich status line: the kernel's name, instructions issued so far and the kernel line issuing."""

    def __init__(self, name: str, *, after_s: float = AFTER_S, console=None):
        self.name = name or "kernel"
        self.after_s = after_s
        self.console = console
        self.start = time.monotonic()
        self.status = None
        self._lock = threading.Lock()        # LNC programs share one line

    def __call__(self, machine, instr) -> None:
        with self._lock:
            if self.status is None:
                if time.monotonic() - self.start < self.after_s:
                    return
                from rich.console import Console
                console = self.console or Console(stderr=True)
                self.status = console.status("")
                self.status.start()
            self.status.update(self.text(machine, instr))

    def text(self, machine, instr) -> str:
        from trnlab.core.srcloc import short
        return (f"trnlab: {self.name}: {machine.issued:,} instructions issued, now {instr.api} at "
                f"{short(instr.loc)}")

    def close(self) -> None:
        with self._lock:
            if self.status is not None:
                self.status.stop()
                self.status = None


def progress_hook(progress, name: str):
    """run_kernel's progress= argument as a machine hook: None shows a StatusLine when stderr is a
    terminal, True always, False never; a callable(machine, instr) is used as given."""
    if callable(progress):
        return progress
    if progress is None:
        progress = sys.stderr.isatty()
    return StatusLine(name) if progress else None
