"""End to end: built-in decoders and transformers models compiled onto a simulated NeuronCore."""
import json

import pytest
import torch

import trnlab.torch as tt
from trnlab.torch import models


@pytest.mark.parametrize("name", ["llama-tiny", "gpt2-tiny"])
@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float32])
def test_builtin_decoder_end_to_end(name, dtype):
    m = models.build(name)
    ids = models.example_ids(m.cfg, 2, 40)
    fn, rep = tt.compile(m, (ids,), target="trn2", dtype=dtype)
    assert rep.numerics and rep.numerics_ok, [c for c in rep.numerics]
    # bound written in trnlab.torch.report.BOUNDS: fp32 1e-3, bf16 5e-2 of the largest |logit|
    assert rep.numerics[0].max_rel_err <= (1e-3 if dtype == torch.float32 else 5e-2)
    assert rep.tokens == 80 and rep.latency_s > 0 and 0 < rep.mfu < 1
    assert rep.usd_per_million_tokens > 0 and rep.tokens_per_s > 0
    assert abs(sum(o.time_s for o in rep.ops) - rep.latency_s) < 1e-9      # per-op times add up
    assert sum(o.instructions for o in rep.ops) == rep.instructions
    fused = [o.op for o in rep.ops if "fused" in o.op]
    if name.startswith("llama"):
        assert any("rms_norm" in f for f in fused) and any("silu" in f for f in fused)
    out2 = fn(ids)                                   # the compiled callable runs again
    assert torch.equal(out2, fn.last_run.outputs)
    json.loads(rep.to_json())


def test_decode_step_updates_kv_cache_in_place():
    m = models.build("llama-tiny")
    step = models.DecodeStep(m)
    inputs = models.decode_inputs(m.cfg, 1, 24, pos=10)
    fn, rep = tt.compile(step, inputs, dtype=torch.float32)
    assert rep.numerics_ok
    new_k = fn.last_run.outputs[1]
    assert torch.allclose(new_k[:, :, :10], inputs[3][:, :, :10])        # old entries kept
    assert not torch.allclose(new_k[:, :, 10], inputs[3][:, :, 10])      # position 10 written
    copies = [o for o in rep.ops if "index_copy" in o.op]
    assert copies and all(o.dma_bytes < 24 * 64 * 4 * 4 for o in copies)   # scatter, not a cache copy


def test_trn1_and_trn2_prices_differ():
    m = models.build("gpt2-tiny")
    ids = models.example_ids(m.cfg, 1, 16)
    r1 = tt.compile(m, (ids,), target="trn1", check=False).report
    r2 = tt.compile(m, (ids,), target="trn2", check=False).report
    assert r1.instance == "trn1.2xlarge" and r2.instance == "trn2.48xlarge"
    assert r1.price_source and r2.price_source
    assert r1.usd_per_million_tokens != r2.usd_per_million_tokens


@pytest.mark.parametrize("name", ["hf-llama", "hf-gpt2", "hf-bert"])
def test_transformers_models(name):
    from trnlab.torch import hf
    m = hf.LogitsOnly(hf.build(name))
    ids = torch.randint(0, 512, (1, 24), generator=torch.Generator().manual_seed(0))
    fn, rep = tt.compile(m, (ids,), dtype=torch.bfloat16)
    assert not rep.fallbacks
    assert rep.numerics_ok and rep.numerics[0].max_rel_err <= 5e-2, rep.numerics


def test_timing_only_meta_model():
    layer = models.build_layer("llama-tiny", meta=True)
    x = torch.empty(1, 64, layer.cfg.hidden, device="meta")
    rep = tt.compile(layer, (x,), numerics=False).report
    assert rep.mode == "timing-only" and not rep.numerics and rep.latency_s > 0 and rep.mfu > 0


def test_dynamo_backend():
    from trnlab.torch.dynamo import last_compiled
    m = models.build("gpt2-tiny")
    ids = models.example_ids(m.cfg, 1, 16)
    compiled = torch.compile(m, backend="trnlab", options={"target": "trn1", "dtype": torch.float32})
    out = compiled(ids)
    with torch.no_grad():
        ref = m(ids)
    assert torch.allclose(out.float(), ref, atol=1e-3 * float(ref.abs().max()))
    rep = last_compiled().report
    assert rep.target == "trn1" and rep.numerics_ok


def test_cli_model_json(capsys):
    from trnlab.torch.cli import model_command
    code = model_command("gpt2-tiny", seq=16, dtype="fp32", decode=2, json_out=True)
    data = json.loads(capsys.readouterr().out)
    assert code == 0 and data["numerics_ok"] and data["decode"]["tokens"] == 1
    assert data["decode"]["latency_s"] > 0
