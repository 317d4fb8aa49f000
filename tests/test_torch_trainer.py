"""trnlab.torch.trainer: the HBM a training step needs and the FLOPs it is credited with, against hand
counts and AWS's published MFU."""
import pytest
import torch
from functorch.compile import make_boxed_func
from torch._decomp import core_aten_decompositions
from torch._dynamo.backends.common import aot_autograd

from trnlab.errors import HbmCapacityError
from trnlab.torch import models
from trnlab.torch.trainer import HbmBreakdown, hbm_breakdown, saved_activation_bytes, training_flops_per_token

# llama-tiny by hand: hidden 256, 2 layers, 4 heads x 64, 2 kv heads, FFN 512, vocab 512, untied head.
LAYER = 256 * 256 + 2 * 256 * 128 + 256 * 256 + 3 * 256 * 512 + 2 * 256      # q, k+v, o, gate/up/down, 2 norms
LLAMA_TINY_PARAMS = 2 * LAYER + 512 * 256 + 512 * 256 + 256                  # + embedding, lm_head, final norm


def test_llama_tiny_bf16_adamw_breakdown_matches_hand_count():
    assert LLAMA_TINY_PARAMS == 1_443_072
    hbm = hbm_breakdown(models.build("llama-tiny"), torch.bfloat16, optimizer="adamw", activations_bytes=1000,
                        capacity_bytes=16 << 30)
    n = LLAMA_TINY_PARAMS
    assert (hbm.weights_bytes, hbm.gradients_bytes, hbm.optimizer_bytes) == (2 * n, 2 * n, 12 * n)
    assert hbm.total_bytes == 16 * n + 1000 and hbm.fits


def test_fp32_needs_no_master_copy_and_accumulation_adds_an_fp32_buffer():
    model = models.build("llama-tiny")
    n = LLAMA_TINY_PARAMS
    fp32 = hbm_breakdown(model, torch.float32, optimizer="adamw", activations_bytes=0, capacity_bytes=1 << 40)
    assert (fp32.weights_bytes, fp32.gradients_bytes, fp32.optimizer_bytes) == (4 * n, 4 * n, 8 * n)
    sgd = hbm_breakdown(model, torch.bfloat16, optimizer="sgd", activations_bytes=0, capacity_bytes=1 << 40,
                        accumulation=4)
    assert (sgd.gradients_bytes, sgd.optimizer_bytes) == (2 * n + 4 * n, 4 * n + 4 * n)


def test_tied_embeddings_count_once():
    gpt2 = models.build("gpt2-tiny")         # lm_head shares the embedding
    hbm = hbm_breakdown(gpt2, torch.float32, optimizer="sgd", activations_bytes=0, capacity_bytes=1 << 40)
    assert hbm.weights_bytes == 4 * models.config("gpt2-tiny").params()


def test_capacity_error_names_every_part():
    hbm = HbmBreakdown(10 << 30, 10 << 30, 60 << 30, 5 << 30, 16 << 30)
    with pytest.raises(HbmCapacityError) as err:
        hbm.check("llama-3-8b", "trn2")
    text = str(err.value)
    for part in ("weights 10", "gradients 10", "optimizer 60", "activations 5", "of 16"):
        assert part in text
    assert err.value.required == 85 << 30 and err.value.limit == 16 << 30


def _forward_graph(model, *inputs):
    graphs = []

    def fw(gm, _):
        graphs.append(gm)
        return make_boxed_func(gm.forward)

    backend = aot_autograd(fw_compiler=fw, bw_compiler=lambda gm, _: make_boxed_func(gm.forward),
                           decompositions=core_aten_decompositions())
    torch._dynamo.reset()
    out = torch.compile(model, backend=backend)(*inputs)
    out.float().sum().backward()
    return graphs[0].graph


def test_saved_activations_of_an_mlp_are_the_relu_output():
    mlp = torch.nn.Sequential(torch.nn.Linear(64, 256), torch.nn.ReLU(), torch.nn.Linear(256, 64))
    graph = _forward_graph(mlp, torch.randn(8, 64))
    # backward needs relu's output [8, 256] (for the ReLU mask and the second weight's gradient); the
    # input and the weights are graph inputs, not activations
    assert saved_activation_bytes(graph, 1, torch.bfloat16) == 8 * 256 * 2
    assert saved_activation_bytes(graph, 1, torch.float32) == 8 * 256 * 4


def test_full_checkpointing_saves_less_than_none():
    ids = models.example_ids(models.config("llama-tiny"), 1, 32)
    saved = {}
    for mode in ("none", "full"):
        model = models.set_checkpointing(models.build("llama-tiny").train(), mode)
        saved[mode] = saved_activation_bytes(_forward_graph(model, ids), 1, torch.bfloat16)
    assert 0 < saved["full"] < saved["none"] / 2


def test_aws_llama2_7b_mfu_from_the_published_throughput():
    # trn1 NxD Llama2-7B: 16 nodes x 16 chips at 190 TFLOP/s bf16, 81 seq/s of 4096 tokens, published MFU 30.8%
    flops = training_flops_per_token(6_740_000_000, 32, 4096, 4096)
    mfu = 81 * 4096 * flops / (16 * 16 * 190e12)
    assert abs(mfu - 0.308) < 0.015
