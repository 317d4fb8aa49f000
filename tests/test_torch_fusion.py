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


# --- multi-output fusion (compiler switch multi_output_fusion) ---------------------------------------
class TwoOut(torch.nn.Module):
    def forward(self, x, w, b):
        h = x * w                         # also an output: written by the fused pass, not a chain break
        return (h + b).sigmoid() + x, h


def _run_two_out(**switches):
    x, w, b = (torch.randn(256, 512, generator=torch.Generator().manual_seed(i)) for i in range(3))
    with compiler.using(compiler.CompilerModel(**switches)):
        compiled = tt.compile(TwoOut(), (x, w, b), dtype=torch.float32)
    return compiled.last_run


def test_multi_output_chain_writes_the_shared_intermediate_once():
    multi = _run_two_out()
    single = _run_two_out(multi_output_fusion=False)
    plain = _run_two_out(elementwise_fusion=False)
    for run in (multi, single):
        assert all(torch.equal(a, b) for a, b in zip(run.outputs, plain.outputs))
    assert [o.op for o in multi.ops] == ["fused mul > add > sigmoid > add"]
    assert [o.op for o in single.ops] == ["aten.mul.Tensor", "fused add > sigmoid > add"]
    # multi-output: x, w, b read once, h and the result written (3 + 2); single-output: the mul reads
    # x, w and writes h, the chain reads h, b, x and writes the result (3 + 4); unfused: 7 reads + 4 writes
    assert sum(o.dma_bytes for o in multi.ops) == 5 * N * 4
    assert sum(o.dma_bytes for o in single.ops) == 7 * N * 4
    assert sum(o.dma_bytes for o in plain.ops) == 11 * N * 4
    assert multi.latency_s < single.latency_s < plain.latency_s


class Block(torch.nn.Module):
    """RMSNorm, a SwiGLU MLP and the residual add: in training, the forward saves the norm's and the
    MLP's intermediates for backward (every element-wise chain has members used outside it)."""

    def __init__(self):
        super().__init__()
        from trnlab.torch.models import RMSNorm
        self.norm = RMSNorm(64, 1e-5)
        self.up = torch.nn.Linear(64, 256, bias=False)
        self.down = torch.nn.Linear(128, 64, bias=False)

    def forward(self, x):
        g, u = self.up(self.norm(x)).chunk(2, dim=-1)
        return (x + self.down(torch.nn.functional.silu(g) * u)).float().pow(2).mean()


def _train_step(**switches):
    from trnlab.torch.train import compile_train
    from trnlab.torch.dynamo import last_training
    torch._dynamo.reset()
    torch.manual_seed(0)
    model = Block()
    x = torch.randn(2, 128, 64)
    with compiler.using(compiler.CompilerModel(**switches)):
        loss = compile_train(model, dtype=torch.bfloat16, check=False)(x)
        loss.backward()
    step = last_training()
    runs = step.forward_runs + step.backward_runs
    return (loss.detach(), {k: p.grad for k, p in model.named_parameters()}, sum(r.latency_s for r in runs),
            sum(o.dma_bytes for r in runs for o in r.ops), runs)


def test_training_step_is_bit_identical_and_faster_with_multi_output_fusion():
    loss, grads, time_s, dma, runs = _train_step()
    loss1, grads1, time1, dma1, _ = _train_step(multi_output_fusion=False)
    loss0, grads0, time0, dma0, _ = _train_step(elementwise_fusion=False)
    assert torch.equal(loss, loss0) and torch.equal(loss1, loss0)
    for k in grads0:
        assert torch.equal(grads[k], grads0[k]) and torch.equal(grads1[k], grads0[k]), k
    fwd = runs[0].program
    assert any(f.kind == "chain" and f.outputs for f in fwd.fused.values())   # saved activations written by a pass
    assert dma < dma1 < dma0 and time_s < time1 < time0


def test_multi_output_switch_is_part_of_the_compiler_model():
    assert compiler.CompilerModel.parse("multi_output_fusion=0").multi_output_fusion is False
    assert compiler.CompilerModel.parse("none").multi_output_fusion is False
    assert compiler.CompilerModel().multi_output_fusion is True
