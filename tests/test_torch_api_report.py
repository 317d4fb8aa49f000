"""The model report (trnlab.torch.report): prices with significant digits, tables at their natural
width when not printed to a terminal, kernel lines mapped to the aten op that issued them."""
import io
import re

import pytest

torch = pytest.importorskip("torch")

import trnlab.torch as tt  # noqa: E402
from trnlab.torch.report import fmt_usd, kernel_line_ops, summary_rows  # noqa: E402


class Block(torch.nn.Module):
    def __init__(self):
        super().__init__()
        self.up = torch.nn.Linear(64, 128)
        self.down = torch.nn.Linear(128, 64)

    def forward(self, x):
        h = torch.relu(self.up(x))
        return self.down(h)


@pytest.fixture(scope="module")
def compiled():
    torch.manual_seed(0)
    return tt.compile(Block(), (torch.randn(8, 64),), dtype=torch.float32)


@pytest.mark.parametrize("usd, text", [(1.2704e-05, "$1.27e-05"), (0.000869, "$0.000869"), (0.1234, "$0.123"),
                                       (12.345, "$12.3"), (1234.5, "$1,234")])
def test_fmt_usd_keeps_three_significant_digits(usd, text):
    assert fmt_usd(usd) == text


def test_cost_row_never_prints_zero_dollars(compiled):
    rep = compiled.report
    cost = dict(summary_rows(rep))["cost"]
    assert "$0.0000 " not in cost and rep.usd_per_million_tokens > 0
    shown = float(re.match(r"\$([0-9.e+-]+) per million", cost).group(1))
    assert shown == pytest.approx(rep.usd_per_million_tokens, rel=5e-3)    # 3 significant digits


def test_piped_tables_are_not_cut_at_80_columns(compiled):
    from rich.console import Console
    buf = io.StringIO()
    console = Console(file=buf, width=80)                 # what rich uses when stdout is not a terminal
    assert not console.is_terminal
    compiled.report.print(console)
    text = buf.getvalue()
    rep = compiled.report
    assert rep.price_source in text                       # one line, not folded into the 80-column box
    for o in rep.ops:
        assert o.op.replace("aten.", "").replace(".default", "") in text
    assert console.width == 80                            # the caller's console is left as it was


def test_kernel_lines_map_to_the_aten_ops_that_issued_them(compiled):
    import os
    run = compiled.last_run
    rows = kernel_line_ops(run)
    per_op = {}
    for r in rows:
        key = (r["op"], r["model_line"])
        per_op[key] = per_op.get(key, 0) + r["instructions"]
    expected = {}
    for o in run.ops:                                     # the executor's own per-op instruction counts
        key = (o.op.replace("aten.", ""), "{}:{}".format(os.path.basename(o.source.split(":")[0]),
                                                         o.source.split(":")[1].split()[0]))
        expected[key] = expected.get(key, 0) + o.instructions
    assert per_op == expected
    assert {r["model_line"] for r in rows if r["op"] == "relu.default"} == {"test_torch_api_report.py:21"}
    assert all(r["kernel_line"].startswith("elementwise.py:") for r in rows if r["op"] == "relu.default")
    assert not any(r["kernel_line"].startswith("elementwise.py:") for r in rows if r["op"] == "linear.default")


def test_report_html_has_the_kernel_line_section(compiled, tmp_path):
    from trnlab.torch.cli import write_outputs
    write_outputs(compiled, compiled.report, tmp_path)
    html = (tmp_path / "report.html").read_text(encoding="utf-8")
    assert "Kernel lines by the model op that issued them" in html and "linear" in html
    assert html.rstrip().endswith("</html>")


def test_report_json_is_strict_json_when_an_error_is_infinite():
    import dataclasses
    import json
    import math

    import torch

    import trnlab.torch as tt
    report = tt.compile(torch.nn.Linear(4, 4), (torch.randn(2, 4),)).report
    check = report.numerics[0]
    report.numerics = [dataclasses.replace(check, max_abs_err=math.inf, max_rel_err=math.nan)]

    def refuse(constant):
        raise ValueError(f"non-standard JSON constant {constant}")
    data = json.loads(report.to_json(), parse_constant=refuse)
    assert "inf" in json.dumps(data) and "nan" in json.dumps(data)


def test_report_text_closes_its_sink():
    """str(report) renders through printed_text: the devnull sink it records to is closed (an open file left to
    the garbage collector warns ResourceWarning, an error under -W error)."""
    import gc
    import warnings

    from trnlab.torch.report import printed_text
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always", ResourceWarning)
        text = printed_text(lambda console: console.print("hello"))
        gc.collect()
    assert text.strip() == "hello"
    assert not [w for w in caught if issubclass(w.category, ResourceWarning)]


def test_data_parallel_report_text_and_json(compiled):
    """A DataParallelReport renders one replica's tables plus its own line, and writes strict JSON."""
    import json
    dp = tt.compile(Block(), (torch.randn(4, 64),), dp=2, target="trn1", numerics=False)
    text = str(dp.report)
    assert "Data parallelism: 2 replicas x TP 1 = 2 ranks" in text and "(the tables above are one replica's)" in text
    assert json.loads(dp.report.to_json())["dp"] == 2
