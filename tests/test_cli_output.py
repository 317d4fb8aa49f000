"""What the CLI prints: one unit style for byte amounts (KiB/MiB/GiB) and calibrate's progress on stderr."""
import io
import re

import numpy as np
from rich.console import Console
from typer.testing import CliRunner

import trnlab
from trnlab.cli import app
from trnlab.kernels.add import add


def test_profile_prints_bytes_in_binary_units(tmp_path):
    result = CliRunner().invoke(app, ["profile", "add", "--out", str(tmp_path / "p")])
    assert result.exit_code == 0, result.output
    # the built-in add moves a, b and the result: 3 x 512 x 2048 fp32 = 12 MiB exactly
    assert "12.00 MiB" in result.stdout
    assert not re.search(r"\d (kB|MB|GB)(?!/s)\b", result.stdout)


def test_benchmark_prints_bytes_in_binary_units():
    a = np.ones((256, 512), np.float32)
    text = str(trnlab.benchmark(add, target="trn2", numerics=False)(a, a))
    assert "1.50 MiB" in text                      # 3 x 256 x 512 x 4 B
    assert not re.search(r"\d (kB|MB|GB)(?!/s)\b", text)


def test_calibrate_shows_progress_on_a_terminal(monkeypatch):
    import trnlab.console
    import trnlab.bench.calibrate as cal
    stderr = io.StringIO()
    made = []

    def terminal(stderr_=False, **kw):
        made.append(stderr_)
        return Console(file=stderr if stderr_ else io.StringIO(), force_terminal=True, width=120)
    monkeypatch.setattr(trnlab.console, "make_console", lambda stderr=False: terminal(stderr))

    seen = []
    monkeypatch.setattr(cal, "predict_us", lambda point, **kw: seen.append(point.name) or point.measured_us)
    assert cal.calibrate_command(json_out=True, tolerance=1e9) == 0
    assert seen == [p.name for p in cal.POINTS if p.quick]
    shown = stderr.getvalue()
    for name in seen:
        assert f"simulating {name}" in shown


def test_calibrate_prints_no_progress_when_piped(monkeypatch, capsys):
    import trnlab.bench.calibrate as cal

    monkeypatch.setattr(cal, "predict_us", lambda point, **kw: 1000.0)
    cal.calibrate_command(json_out=True, tolerance=1e9)
    captured = capsys.readouterr()
    assert "simulating" not in captured.err and captured.out.lstrip().startswith("[")
