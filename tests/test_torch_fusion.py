"""Element-wise chain fusion (compiler model switch elementwise_fusion): one pass over SBUF tiles,
bit-identical values, HBM traffic of the inputs and the output only."""
import torch

import trnlab.torch as tt
from trnlab.core import compiler

N = 256 * 512


class Chain(torch.nn.Module):
    def forward(self, x, w, b):
        return (x * w + b).sigmoid() + x


def _run(fusion: bool):
    x, w, b = (torch.randn(256, 512, generator=torch.Generator().manual_seed(i)) for i in range(3))
    with compiler.using(compiler.CompilerModel(elementwise_fusion=fusion)):
        compiled = tt.compile(Chain(), (x, w, b), dtype=torch.float32)
    return compiled.last_run, compiled.report


def test_fused_chain_is_bit_identical_and_moves_only_inputs_and_output():
    fused, fused_rep = _run(True)
    plain, plain_rep = _run(False)
    assert torch.equal(fused.outputs, plain.outputs) and fused_rep.numerics_ok
    assert [o.op for o in fused.ops] == ["fused mul > add > sigmoid > add"]
    assert len(plain.ops) == 4
    # fused: x, w, b read once (x feeds two steps), the result written once; unfused: every op reads
    # its operands from HBM and writes its result (2 + 2 + 1 + 2 reads, 4 writes)
    assert sum(o.dma_bytes for o in fused.ops) == 4 * N * 4
    assert sum(o.dma_bytes for o in plain.ops) == 11 * N * 4
    assert fused.latency_s < 0.6 * plain.latency_s


def test_switch_is_part_of_the_compiler_model():
    assert compiler.CompilerModel.parse("elementwise_fusion=0").elementwise_fusion is False
    assert compiler.CompilerModel.parse("none").elementwise_fusion is False
    assert compiler.CompilerModel().elementwise_fusion is True
