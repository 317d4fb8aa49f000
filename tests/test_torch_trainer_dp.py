"""Data-parallel training (trainer.train(dp=N, zero1=...), `trnlab train --dp N`): losses against one core
and eager PyTorch on the whole batch, ZeRO-1 against plain DP, the bucket/overlap rule against a timeline
worked out by hand, ZeRO-1 HBM against a hand count, and argument errors."""
import json

import pytest
import torch
from typer.testing import CliRunner

from trnlab.cli import app
from trnlab.errors import OptionError
from trnlab.hw.systems import get_system
from trnlab.torch.data_parallel import Bucket, DataParallelStep, Span, buckets, check_dp, schedule
from trnlab.torch.trainer import hbm_breakdown, train

TINY = dict(steps=2, batch=2, seq=8, dtype="fp32")


@pytest.fixture(scope="module")
def runs():
    return {"dp1": train("llama-tiny", **TINY),
            "dp2": train("llama-tiny", dp=2, bucket_bytes=300_000, **TINY),
            "zero1": train("llama-tiny", dp=2, zero1=True, bucket_bytes=300_000, **TINY)}


def test_dp2_fp32_losses_match_one_core_and_eager_on_the_whole_batch(runs):
    one, dp2 = runs["dp1"], runs["dp2"]
    assert dp2.eager_losses == one.eager_losses                   # the same global batch, the same oracle
    assert dp2.losses == pytest.approx(one.losses, rel=1e-6)
    assert dp2.losses == pytest.approx(dp2.eager_losses, rel=1e-6)
    assert dp2.losses[1] < dp2.losses[0] - 0.5                    # it learns
    assert dp2.grad_check["ok"] and dp2.grad_check["max_rel_err"] < 1e-5


def test_zero1_equals_plain_dp_and_shards_the_optimizer(runs):
    dp2, z = runs["dp2"], runs["zero1"]
    assert z.losses == dp2.losses                                 # same reductions, elementwise AdamW
    assert z.grad_check["max_rel_err"] == dp2.grad_check["max_rel_err"]
    assert z.hbm.optimizer_bytes == dp2.hbm.optimizer_bytes // 2   # llama-tiny's rows are all even
    assert z.hbm.weights_bytes == dp2.hbm.weights_bytes and z.hbm.gradients_bytes == dp2.hbm.gradients_bytes
    assert z.timing.optimizer_s < 0.75 * dp2.timing.optimizer_s   # half the elements per core
    ops = [c["op"] for c in z.to_dict()["collectives"]]
    assert set(ops) == {"reduce-scatter", "all-gather"} and ops.index("all-gather") > ops.index("reduce-scatter")


def test_gradient_collectives_overlap_backward_and_the_step_adds_only_the_exposed_part(runs):
    d = runs["dp2"].to_dict()
    t = runs["dp2"].timing
    assert d["ranks"] == 2 and [r["rank"] for r in d["rank_timings"]] == [0, 1]
    assert sum(c["bytes"] for c in d["collectives"]) == 4 * runs["dp2"].params     # fp32 gradients, once each
    spans = d["collectives"]
    assert len(spans) > 3 and all(c["op"] == "all-reduce" for c in spans)
    fwd_us, bwd_end_us = d["forward_ms"] * 1e3, d["backward_end_us"]
    assert fwd_us < spans[0]["ready_us"] < bwd_end_us                 # the first bucket is ready mid-backward
    assert spans[0]["start_us"] < bwd_end_us                          # ... and reduced while backward runs
    for a, b in zip(spans, spans[1:]):
        assert b["start_us"] >= max(a["end_us"], b["ready_us"]) - 1e-9
    assert d["collectives_total_us"] > d["collectives_us"] > 0        # part of it hidden behind backward
    assert d["collectives_us"] == pytest.approx(spans[-1]["end_us"] - bwd_end_us)
    assert t.step_s == pytest.approx(t.forward_s + t.backward_s + t.optimizer_s + t.collectives_s)
    assert d["tokens_per_s"] == pytest.approx(2 * 8 / t.step_s)


def _cost(op, nbytes):
    return 1.0 + nbytes / 100, "test"


def test_bucket_and_overlap_rule_against_a_hand_timeline():
    grads = [(300, 2.0), (100, 1.0), (50, 2.5), (1000, 3.0), (200, 4.0)]   # (bytes, ready s), any order
    assert buckets(grads, cap_bytes=400) == [Bucket(400, 2.0, 2), Bucket(50, 2.5, 1), Bucket(1000, 3.0, 1),
                                             Bucket(200, 4.0, 1)]
    spans = schedule(buckets(grads, 400), _cost, "all-reduce")
    assert [(s.start_s, s.end_s) for s in spans] == [(2.0, 7.0), (7.0, 8.5), (8.5, 19.5), (19.5, 22.5)]
    step = DataParallelStep(2, False, "x", 400, 0.5, 4.0, 2.0, spans, [], [])
    assert (step.backward_end_s, step.sync_end_s, step.step_s) == (4.5, 22.5, 24.5)
    assert (step.collectives_total_s, step.collectives_exposed_s) == (20.5, 18.0)
    # collectives that finish before backward does cost the step nothing; a ZeRO-1 all-gather always adds
    early = schedule([Bucket(100, 1.0, 1)], _cost, "reduce-scatter")             # 1.0 .. 3.0
    gather = [Span("all-gather", 100, 1, 6.5, 6.5, 8.5, "test")]
    z = DataParallelStep(2, True, "x", 400, 0.5, 4.0, 2.0, early, gather, [])
    assert (z.step_s, z.collectives_exposed_s, z.collectives_total_s) == (8.5, 2.0, 4.0)


def test_zero1_hbm_divides_optimizer_states_and_master_weights_by_hand_count():
    model = torch.nn.Module()
    model.lin = torch.nn.Linear(8, 6)                  # weight 6 x 8, bias 6
    model.extra = torch.nn.Parameter(torch.zeros(5))   # 5 rows: padded to 8 over 4 ranks
    # 59 parameters; one rank's blocks over 4 ranks: 2 x 8 + 2 + 2 = 20 elements
    plain = hbm_breakdown(model, torch.bfloat16, optimizer="adamw", activations_bytes=0, capacity_bytes=1 << 30)
    z = hbm_breakdown(model, torch.bfloat16, optimizer="adamw", activations_bytes=0, capacity_bytes=1 << 30,
                      zero1_ranks=4)
    assert (plain.weights_bytes, plain.gradients_bytes, plain.optimizer_bytes) == (118, 118, 708)
    assert (z.weights_bytes, z.gradients_bytes, z.optimizer_bytes) == (118, 118, 240)   # (8 + 4) B x 20
    sgd = hbm_breakdown(model, torch.float32, optimizer="sgd", activations_bytes=0, capacity_bytes=1 << 30,
                        zero1_ranks=4)
    assert sgd.optimizer_bytes == 80                                                    # 4 B x 20, no master


def test_bf16_cli_json_reports_ranks_and_collectives_and_writes_a_per_rank_trace(tmp_path):
    trace = tmp_path / "dp.json"
    result = CliRunner().invoke(app, ["train", "llama-tiny", "--dp", "2", "--zero1", "--seq", "8", "--batch", "2",
                                      "--steps", "1", "--system", "trn1.32xlarge", "--json", "--trace", str(trace)])
    assert result.exit_code == 0, result.output
    d = json.loads(result.stdout)
    assert d["ranks"] == 2 and d["zero1"] and d["system"] == "trn1.32xlarge" and d["target"] == "trn1"
    assert abs(d["losses"][0] - d["eager_losses"][0]) <= 0.02 * d["eager_losses"][0]   # bf16 vs fp32 eager
    assert d["grad_check"]["ok"] and len(d["rank_timings"]) == 2
    assert d["collectives_total_us"] >= d["collectives_us"] > 0
    assert d["step_ms"] == pytest.approx(d["forward_ms"] + d["backward_ms"] + d["optimizer_ms"]
                                         + d["collectives_us"] / 1e3)
    events = json.loads(trace.read_text())["traceEvents"]
    tracks = {(e["pid"], e["args"]["name"]) for e in events if e["name"] == "thread_name"}
    assert tracks == {(1, "compute"), (1, "cc"), (2, "compute"), (2, "cc")}
    cc = [e for e in events if e.get("cat") == "cc" and e["pid"] == 2]
    assert [e["name"].split()[0] for e in cc] == [c["op"] for c in d["collectives"]]
    assert cc[0]["ts"] == pytest.approx(d["collectives"][0]["start_us"])
    ops = [e for e in events if e.get("cat") == "compute" and e["pid"] == 1]
    assert ops[-1]["name"] == "optimizer" and any(e["name"].startswith("backward") for e in ops)


def test_dp_limits_are_typed_errors_naming_the_limit():
    trn1 = get_system("trn1.32xlarge")
    with pytest.raises(OptionError, match="dp=3 does not divide the global batch of 4"):
        check_dp(3, 4, trn1)
    with pytest.raises(OptionError, match="dp=33 exceeds the 32 ranks of trn1.32xlarge"):
        check_dp(33, 66, trn1)
    with pytest.raises(OptionError, match="dp must be an integer >= 1, got 0"):
        check_dp(0, 4, trn1)
    with pytest.raises(OptionError, match="zero1 .* needs dp >= 2, got dp=1"):
        train("llama-tiny", zero1=True, steps=1, batch=1, seq=8)


@pytest.mark.parametrize("args, needle", [
    (("--dp", "3", "--batch", "2"), "--dp 3 does not divide the --batch of 2 sequences"),
    (("--dp", "33", "--batch", "33", "--system", "trn1.32xlarge"), "--dp 33 exceeds the 32 ranks of trn1.32xlarge"),
    (("--zero1",), "--zero1 shards the optimizer over the --dp ranks; give --dp N with N >= 2, got --dp 1"),
    (("--dp", "2", "--batch", "2", "--bucket-mb", "0"), "--bucket-mb must be a finite number > 0, got 0.0"),
    (("--trace", "t.json"), "--trace writes the data-parallel step's per-rank timeline; give --dp N with N >= 2"),
])
def test_cli_refuses_bad_dp_with_exit_2(args, needle):
    result = CliRunner().invoke(app, ["train", "llama-tiny", *args])
    assert result.exit_code == 2 and needle in result.output and "Traceback" not in result.output
