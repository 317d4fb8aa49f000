"""Long runs: an instruction limit (InstructionLimitError naming the limit and the kernel line) and a
progress hook / stderr status line. No assertion here depends on wall-clock time."""
import io
import sys

import numpy as np
import pytest

import trnlab
import trnlab.nki as nki
import trnlab.nki.isa as nisa
import trnlab.nki.language as nl
from trnlab.core.progress import PROGRESS_EVERY, StatusLine, progress_hook
from trnlab.errors import InstructionLimitError, LaunchError
from trnlab.runtime import run_kernel

A = np.arange(128 * 4, dtype=np.float32).reshape(128, 4)
LINE = {}


@nki.jit
def endless(a):
    t = nl.ndarray(a.shape, dtype=a.dtype, buffer=nl.sbuf)
    nisa.dma_copy(dst=t, src=a)
    for _ in nl.affine_range(10 ** 9):
        nisa.tensor_copy(dst=t, src=t)
    return a


LINE["copy"] = endless.fn.__code__.co_firstlineno + 5


def copies(a, n):
    """1 + n + 1 instructions."""
    out = nl.ndarray(a.shape, dtype=a.dtype, buffer=nl.shared_hbm)
    t = nl.ndarray(a.shape, dtype=a.dtype, buffer=nl.sbuf)
    nisa.dma_copy(dst=t, src=a)
    for _ in nl.affine_range(n):
        nisa.tensor_copy(dst=t, src=t)
    nisa.dma_copy(dst=out, src=t)
    return out


def test_an_endless_kernel_stops_at_the_limit_with_the_kernel_line():
    with pytest.raises(InstructionLimitError) as info:
        nki.simulate(endless, max_instructions=1000)(A)
    msg = str(info.value)
    assert "max_instructions=1,000" in msg and "nisa.tensor_copy" in msg
    assert f"{__file__}:{LINE['copy']}" in msg


@pytest.mark.parametrize("limit, ok", [(7, True), (6, False), (0, False)])
def test_the_limit_counts_instructions_exactly(limit, ok):
    run = lambda: run_kernel(copies, (A,), {"n": 5}, max_instructions=limit)  # noqa: E731
    if ok:
        np.testing.assert_array_equal(run().outputs, A)
    else:
        with pytest.raises(InstructionLimitError):
            run()


def test_a_limit_not_reached_changes_nothing():
    free = run_kernel(copies, (A,), {"n": 50})
    capped = run_kernel(copies, (A,), {"n": 50}, max_instructions=52)
    assert capped.machine.scheduler.end == free.machine.scheduler.end
    assert capped.machine.stats.instructions == free.machine.stats.instructions


def test_benchmark_and_jit_options_take_the_limit():
    with pytest.raises(InstructionLimitError):
        trnlab.benchmark(endless, numerics=False, max_instructions=100)(A)
    limited = nki.jit(endless.fn, max_instructions=10)
    with pytest.raises(InstructionLimitError, match="max_instructions=10 "):
        limited(A)


@pytest.mark.parametrize("bad", [-1, 1.5, True, "100"])
def test_a_bad_limit_is_a_typed_error(bad):
    with pytest.raises(LaunchError, match="max_instructions"):
        run_kernel(copies, (A,), {"n": 1}, max_instructions=bad)


def test_the_progress_hook_sees_every_block_of_instructions():
    seen = []
    n = 3 * PROGRESS_EVERY
    run_kernel(copies, (A,), {"n": n}, timing=False,
               progress=lambda m, instr: seen.append((m.issued, instr.api)))
    assert [i for i, _ in seen] == [PROGRESS_EVERY, 2 * PROGRESS_EVERY, 3 * PROGRESS_EVERY]
    assert {api for _, api in seen} == {"nisa.tensor_copy"}


def test_the_status_line_names_the_count_and_the_kernel_line():
    from rich.console import Console
    buf = io.StringIO()
    line = StatusLine("copies", after_s=0.0, console=Console(file=buf, force_terminal=True, width=200))
    run_kernel(copies, (A,), {"n": PROGRESS_EVERY}, timing=False, progress=line)
    assert line.status is None                          # closed by the run
    out = buf.getvalue()
    assert "copies" in out and f"{PROGRESS_EVERY:,} instructions issued" in out and "test_runtime_limits.py:" in out


def test_the_status_line_is_shown_only_on_a_terminal_or_when_asked(monkeypatch):
    monkeypatch.setattr(sys, "stderr", io.StringIO())  # not a TTY
    assert progress_hook(None, "k") is None
    assert progress_hook(False, "k") is None
    assert isinstance(progress_hook(True, "k"), StatusLine)
    hook = print
    assert progress_hook(hook, "k") is hook


def test_a_forced_limit_reaches_beta1_entry_points(monkeypatch):
    # what `trnlab run --max-instructions N script.py` sets for every kernel the script launches
    import trnlab.nki_beta1 as b1
    import trnlab.nki_beta1.language as bl
    from trnlab import runtime

    @b1.jit
    def long_b1(a):
        out = bl.ndarray(a.shape, dtype=a.dtype, buffer=bl.shared_hbm)
        t = bl.load(a)
        for _ in bl.affine_range(10 ** 6):
            t = bl.add(t, 1.0)
            bl.store(out, value=t)
        return out

    monkeypatch.setitem(runtime.forced, "max_instructions", 50)
    with pytest.raises(InstructionLimitError, match="max_instructions=50 "):
        b1.simulate_kernel(long_b1, A)


def test_limit_from_the_environment_applies_to_every_run(monkeypatch):
    # `trnlab run/profile/model --max-instructions N` publishes N as TRNLAB_MAX_INSTRUCTIONS (trnlab.config)
    monkeypatch.setenv("TRNLAB_MAX_INSTRUCTIONS", "10")
    with pytest.raises(InstructionLimitError, match="max_instructions=10 "):
        nki.simulate(endless)(A)
    assert run_kernel(copies, (A, 7), {}).machine.issued == 9      # under the limit: runs to the end


def test_cli_max_instructions_stops_an_endless_script(tmp_path):
    import subprocess
    script = tmp_path / "endless.py"
    script.write_text("import numpy as np\nimport nki, nki.language as nl, nki.isa as nisa\n\n"
                      "@nki.jit\ndef k(a):\n    t = nl.ndarray(a.shape, dtype=a.dtype, buffer=nl.sbuf)\n"
                      "    nisa.dma_copy(dst=t, src=a)\n    for _ in nl.affine_range(10 ** 9):\n"
                      "        nisa.tensor_copy(dst=t, src=t)\n    return a\n\n"
                      "nki.simulate(k)(np.zeros((128, 4), np.float32))\n")
    proc = subprocess.run([sys.executable, "-m", "trnlab.cli", "run", "--max-instructions", "100", str(script)],
                          capture_output=True, text=True, timeout=300)
    assert proc.returncode != 0
    assert "InstructionLimitError" in proc.stderr and f"{script}:9" in proc.stderr, proc.stderr
