"""End to end: built-in decoders and transformers models compiled onto a simulated NeuronCore."""
import json

import pytest
import torch

import trnlab.torch as tt
from trnlab.torch import models


# Model FLOPs of one prefill of batch 2 x 40 tokens, counted by hand from the configs (hidden 256, 2 layers,
# 4 heads of 64, vocab 512): 2 x tokens x (weights of every linear) + causal attention 4 x B x H x pairs x D,
# pairs = sum over query i of min(40, i + 1) = 820.
TOKENS = 2 * 40
ATTENTION = 4 * 2 * 4 * 820 * 64
LINEAR_WEIGHTS = {
    # q, o: 256x256; k, v: 256x128 (2 kv heads); gate, up, down: 256x512; lm_head 256x512
    "llama-tiny": 2 * (2 * 256 * 256 + 2 * 256 * 128 + 3 * 256 * 512) + 256 * 512,
    # c_attn 256x768, c_proj 256x256, fc and proj 256x1024; tied lm_head 256x512
    "gpt2-tiny": 2 * (256 * 768 + 256 * 256 + 2 * 256 * 1024) + 256 * 512,
}
MATMUL_OPS = {"llama-tiny": 2 * 7 + 1, "gpt2-tiny": 2 * 4 + 1}     # linears per layer x 2 + lm_head
# trn2 peak per NeuronCore: 128 x 128 PEs x 2 FLOP x 2.4 GHz; fp32 matmul at 1/4 of that rate
PEAK = {torch.bfloat16: 128 * 128 * 2 * 2.4e9, torch.float32: 128 * 128 * 2 * 2.4e9 / 4}
TRN2_USD_PER_CORE_S = 35.7608 / 128 / 3600          # trn2.48xlarge on-demand $/h over its 128 NeuronCores


@pytest.mark.parametrize("name", ["llama-tiny", "gpt2-tiny"])
@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float32])
def test_builtin_decoder_end_to_end(name, dtype):
    m = models.build(name)
    ids = models.example_ids(m.cfg, 2, 40)
    fn, rep = tt.compile(m, (ids,), target="trn2", dtype=dtype)
    assert rep.numerics and rep.numerics_ok, [c for c in rep.numerics]
    # bound written in trnlab.torch.report.BOUNDS: fp32 1e-3, bf16 5e-2 of the largest |logit|
    bound = 1e-3 if dtype == torch.float32 else 5e-2
    assert rep.numerics[0].max_rel_err <= bound
    flops = 2 * TOKENS * LINEAR_WEIGHTS[name] + 2 * ATTENTION
    assert rep.tokens == TOKENS and rep.model_flops == flops
    assert sum(1 for o in rep.ops if "linear" in o.op) == MATMUL_OPS[name]
    assert rep.mfu == pytest.approx(flops / (rep.latency_s * PEAK[dtype]), rel=1e-12) and 0 < rep.mfu < 1
    assert rep.tokens_per_s == pytest.approx(TOKENS / rep.latency_s, rel=1e-12)
    assert rep.usd_per_million_tokens == pytest.approx(TRN2_USD_PER_CORE_S * rep.latency_s / TOKENS * 1e6, rel=1e-9)
    fused = [o.op for o in rep.ops if "fused" in o.op]
    if name.startswith("llama"):
        assert any("rms_norm" in f for f in fused) and any("silu" in f for f in fused)
    out2 = fn(ids)                                   # the compiled callable runs again: still eager's logits
    with torch.no_grad():
        ref = m(ids)
    assert out2.shape == ref.shape
    assert float((out2.float() - ref).abs().max()) <= bound * float(ref.abs().max())
    assert json.loads(rep.to_json())["model_flops"] == flops


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
    # $ per NeuronCore-second x seconds per token: trn1.2xlarge $1.34375/h over 2 cores, trn2.48xlarge
    # $35.7608/h over 128 cores (the third-party quotes cited in trnlab.hw)
    assert r1.usd_per_million_tokens == pytest.approx(1.34375 / 2 / 3600 * r1.latency_s / 16 * 1e6, rel=1e-9)
    assert r2.usd_per_million_tokens == pytest.approx(TRN2_USD_PER_CORE_S * r2.latency_s / 16 * 1e6, rel=1e-9)


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
    assert rep.mode == "timing-only" and not rep.numerics and rep.latency_s > 0
    # one llama-tiny layer on 64 tokens: 2 x 64 x its linear weights + causal attention over 2080 pairs
    layer_weights = 2 * 256 * 256 + 2 * 256 * 128 + 3 * 256 * 512
    assert rep.model_flops == 2 * 64 * layer_weights + 4 * 1 * 4 * (64 * 65 // 2) * 64
    assert rep.mfu == pytest.approx(rep.model_flops / (rep.latency_s * PEAK[torch.bfloat16]), rel=1e-12)


def test_dynamo_backend():
    from trnlab.torch.dynamo import last_compiled
    m = models.build("gpt2-tiny")
    ids = models.example_ids(m.cfg, 1, 16)
    compiled = torch.compile(m, backend="trnlab", options={"target": "trn1", "dtype": torch.float32})
    with torch.no_grad():                 # inference (with grad enabled the call is a training capture)
        out = compiled(ids)
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
    # prefill of 16 tokens: 2 x 16 x linear weights + causal attention over 16 x 17 / 2 pairs, 2 layers
    w = LINEAR_WEIGHTS["gpt2-tiny"]
    assert data["tokens"] == 16 and data["model_flops"] == 2 * 16 * w + 2 * 4 * 4 * (16 * 17 // 2) * 64
    # a decode step: one token against the static cache of 16 + 2 positions (masked, not causal)
    assert data["decode"]["model_flops"] == 2 * 1 * w + 2 * 4 * 4 * 18 * 64
