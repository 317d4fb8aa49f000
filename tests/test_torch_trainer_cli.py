"""`trnlab train`: the loop on the chip beside eager PyTorch, activation checkpointing's effect on the
step, timing-only steps, and argument checks."""
import json

import pytest
from typer.testing import CliRunner

from trnlab.cli import app
from trnlab.torch.trainer import train


def invoke(*args):
    return CliRunner().invoke(app, list(args))


def test_loss_falls_and_tracks_eager_step_by_step():
    result = invoke("train", "llama-tiny", "--steps", "8", "--seq", "16", "--json")
    assert result.exit_code == 0, result.output
    d = json.loads(result.stdout)
    assert d["steps"] == 8 and len(d["losses"]) == len(d["eager_losses"]) == 8
    assert d["losses"][-1] < d["losses"][0] - 1.0            # the fixed batch is being learnt
    for ours, eager in zip(d["losses"], d["eager_losses"]):
        assert abs(ours - eager) <= 0.02 * eager + 0.01       # bf16 loss within ~1 bf16 ulp x 2
    assert d["grad_check"]["ok"] and d["grad_check"]["max_rel_err"] > 0
    assert d["step_ms"] == pytest.approx(d["forward_ms"] + d["backward_ms"] + d["optimizer_ms"])
    assert d["tokens_per_s"] == pytest.approx(16 / (d["step_ms"] / 1e3))
    for key in ("weights_bytes", "gradients_bytes", "optimizer_bytes", "activations_bytes"):
        assert d["hbm"][key] > 0
    assert 0 < d["mfu"] < 1 and d["model"] == "llama-tiny" and d["target"] == "trn2"


def test_fp32_gradients_match_eager_closely():
    r = train("llama-tiny", steps=1, seq=16, dtype="fp32")
    assert r.grad_check["ok"] and r.grad_check["max_rel_err"] < 1e-3


def test_full_checkpointing_trades_memory_for_recompute():
    none = train("llama-tiny", steps=1, seq=32, checkpointing="none", dtype="fp32")
    full = train("llama-tiny", steps=1, seq=32, checkpointing="full", dtype="fp32")
    assert full.hbm.activations_bytes < none.hbm.activations_bytes / 2
    assert full.timing.backward_s > none.timing.backward_s           # forward recomputed in backward
    assert full.hfu / full.mfu > none.hfu / none.mfu                 # hardware FLOPs beyond model FLOPs
    assert full.grad_check["ok"] and full.losses == pytest.approx(none.losses, rel=1e-3)


@pytest.mark.parametrize("args, needle", [
    (("llama-tiny", "--steps", "0"), "--steps must be an integer >= 1, got 0"),
    (("llama-tiny", "--seq", "1"), "--seq must be an integer >= 2, got 1"),
    (("llama-tiny", "--checkpointing", "half"), "--checkpointing 'half' is not supported; valid values: none|selective|full"),
    (("llama-tiny", "--optimizer", "lion"), "--optimizer 'lion' is not supported; valid values: adamw|sgd"),
    (("llama-tiny", "--lr", "-1"), "--lr must be a finite number > 0, got -1.0"),
    (("no-such-model",), "unknown model 'no-such-model'"),
    (("llama-8b-layer",), "unknown model 'llama-8b-layer'"),
    (("hf-llama", "--checkpointing", "full"), "--checkpointing full is for the built-in decoders, not hf-llama"),
    (("gpt2-tiny", "--seq", "600"), "gpt2-tiny has 512 learned positions; --seq (plus --decode) asks for 600"),
])
def test_bad_arguments_are_one_line(args, needle):
    result = invoke("train", *args)
    assert result.exit_code == 2
    assert needle in result.output and "Traceback" not in result.output
