"""`trnlab model NAME --dp N`: data-parallel replicas on the command line (issue 11)."""
import json

import pytest

torch = pytest.importorskip("torch")

from typer.testing import CliRunner  # noqa: E402

from trnlab.cli import app  # noqa: E402


def invoke(*args):
    return CliRunner().invoke(app, list(args))


def run_json(*args) -> dict:
    result = invoke("model", "llama-tiny", "--seq", "16", "--json", *args)
    assert result.exit_code == 0, result.output
    return json.loads(result.stdout)


def test_dp_reports_two_replicas_at_twice_one_replicas_throughput():
    one = run_json("--batch", "1", "--decode", "1")
    d = run_json("--dp", "2", "--batch", "2", "--decode", "1")
    assert (d["dp"], d["tp"], d["ranks"]) == (2, 1, 2)
    assert d["numerics_ok"] and [len(c) for c in d["numerics_per_replica"]] == [1, 1]   # each slice vs eager
    assert d["tokens"] == 32 and d["collectives_us"] == 0
    assert d["latency_s"] == pytest.approx(one["latency_s"])                # a replica runs --batch 1
    assert d["tokens_per_s"] == pytest.approx(2 * one["tokens_per_s"])
    assert d["rank_latency_us"] == pytest.approx([one["latency_s"] * 1e6] * 2)
    assert d["decode"]["tokens_per_s"] == pytest.approx(2 * one["decode"]["tokens_per_s"])
    assert d["decode"]["dp"] == 2


def test_dp_outputs_are_eager_pytorchs_on_the_whole_batch():
    from trnlab.torch.cli import _build, compile_builtin
    compiled, report = compile_builtin("llama-tiny", batch=2, seq=16, dtype="fp32", dp=2)
    _, (ids,) = _build("llama-tiny", 2, 16, True)
    assert not torch.equal(ids[0], ids[1])                                  # the replicas see different rows
    y = compiled(ids)
    y = y[0] if isinstance(y, (tuple, list)) else y
    with torch.no_grad():
        ref = compiled.replica.model(ids)
    ref = ref[0] if isinstance(ref, (tuple, list)) else ref
    assert y.shape == ref.shape and torch.allclose(y.float(), ref.float(), rtol=1e-3, atol=1e-3)
    assert report.numerics_ok and len(report.numerics_per_replica) == 2


def test_dp_with_tensor_parallel_groups_and_out(tmp_path):
    tp = run_json("--tp", "2", "--batch", "1")
    d = run_json("--dp", "2", "--tp", "2", "--batch", "2", "--out", str(tmp_path / "o"))
    assert (d["dp"], d["tp"], d["ranks"]) == (2, 2, 4) and d["numerics_ok"]
    assert d["collectives_us"] == pytest.approx(tp["collectives_us"]) and d["collectives_us"] > 0
    assert len(d["rank_latency_us"]) == 4
    assert d["tokens_per_s"] == pytest.approx(2 * tp["tokens_per_s"])
    saved = json.loads((tmp_path / "o" / "model.json").read_text())
    assert saved["dp"] == 2 and saved["ranks"] == 4
    assert "one replica&#x27;s" in (tmp_path / "o" / "model.html").read_text()
    assert (tmp_path / "o" / "trace.json").stat().st_size > 0


def test_dp_text_report_has_a_data_parallel_line():
    result = invoke("model", "llama-tiny", "--seq", "16", "--dp", "2", "--batch", "2", "--timing-only")
    assert result.exit_code == 0, result.output
    text = " ".join(result.output.split())
    assert "Data parallelism: 2 replicas x TP 1 = 2 ranks" in text


@pytest.mark.parametrize("args, needle", [
    (["--dp", "0"], "--dp must be an integer >= 1, got 0"),
    (["--dp", "3", "--batch", "2"], "--dp 3 does not divide --batch 2"),
    (["--dp", "20", "--tp", "2", "--batch", "20", "--target", "trn1"],
     "--dp 20 x --tp 2 = 40 ranks exceeds the 32 ranks of trn1.32xlarge"),
    (["--dp", "3", "--batch", "3", "--system", "trn1.2xlarge"], "--dp 3 x --tp 1 = 3 ranks exceeds the 2 ranks of trn1.2xlarge"),
])
def test_bad_dp_is_one_line_and_exit_2(args, needle):
    result = invoke("model", "llama-tiny", *args)
    assert result.exit_code == 2, result.output
    assert needle in result.stderr and result.stderr.strip().count("\n") == 0
    assert "Traceback" not in result.output
