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
    x = torch.randn(2, 128, 64, requires_grad=True)     # the norm's backward runs too
    with compiler.using(compiler.CompilerModel(**switches)):
        loss = compile_train(model, dtype=torch.bfloat16, check=False)(x)
        loss.backward()
    step = last_training()
    runs = step.forward_runs + step.backward_runs
    grads = {k: p.grad for k, p in model.named_parameters()} | {"x": x.grad}
    return (loss.detach(), grads, sum(r.latency_s for r in runs), sum(o.dma_bytes for r in runs for o in r.ops),
            runs)


def test_training_step_is_bit_identical_and_faster_with_each_fusion():
    """All on; reductions off; multi-output (and so reductions with saved members) off; fusion off."""
    loss, grads, time_s, dma, runs = _train_step()
    loss2, grads2, time2, dma2, _ = _train_step(reduction_fusion=False)
    loss1, grads1, time1, dma1, _ = _train_step(multi_output_fusion=False, reduction_fusion=False)
    loss0, grads0, time0, dma0, _ = _train_step(elementwise_fusion=False)
    assert torch.equal(loss, loss0) and torch.equal(loss1, loss0) and torch.equal(loss2, loss0)
    for k in grads0:
        assert all(torch.equal(g[k], grads0[k]) for g in (grads, grads1, grads2)), k
    fused = [f for r in runs for f in r.program.fused.values() if f.kind == "chain"]
    assert any(f.outputs for f in fused)             # saved activations written by a fused pass
    assert any(f.reduce for f in fused)              # the norm's mean / its backward's sum inside a pass
    assert dma < dma2 < dma1 < dma0 and time_s < time2 < time1 < time0


def test_multi_output_switch_is_part_of_the_compiler_model():
    assert compiler.CompilerModel.parse("multi_output_fusion=0").multi_output_fusion is False
    assert compiler.CompilerModel.parse("none").multi_output_fusion is False
    assert compiler.CompilerModel().multi_output_fusion is True


# --- reduction fusion (compiler switch reduction_fusion) ---------------------------------------------
class SquareMean(torch.nn.Module):
    def forward(self, x, w):
        return (x * w).pow(2).mean(-1, keepdim=True)


def _run_square_mean(**switches):
    x, w = (torch.randn(256, 512, generator=torch.Generator().manual_seed(i)) for i in range(2))
    with compiler.using(compiler.CompilerModel(**switches)):
        compiled = tt.compile(SquareMean(), (x, w), dtype=torch.float32)
    return compiled.last_run


def test_reduction_joins_its_producer_chain():
    fused = _run_square_mean()
    chained = _run_square_mean(reduction_fusion=False)
    plain = _run_square_mean(elementwise_fusion=False)
    assert torch.equal(fused.outputs, plain.outputs) and torch.equal(chained.outputs, plain.outputs)
    assert [o.op for o in fused.ops] == ["fused mul > pow > mean"]
    # rows = 256 results of 4 bytes. Fused: x, w read once, the means written (2 N + rows); chain then
    # mean: the chain reads x, w and writes (x w)^2, the mean reads it back (4 N + rows)
    assert sum(o.dma_bytes for o in fused.ops) == 2 * N * 4 + 256 * 4
    assert sum(o.dma_bytes for o in chained.ops) == 4 * N * 4 + 256 * 4
    assert fused.latency_s < chained.latency_s < plain.latency_s


def test_rows_too_wide_to_fuse_reduce_after_the_chain():
    """fp32 rows of 12288 (GPT-3's hidden): the fused pass's live chunks (x, w, x w, (x w)^2 at 8192 columns,
    three chunks deep) would not fit SBUF, so the chain stores (x w)^2 and the mean reads it back: the
    unfused values and the chain-then-mean traffic (4 N + rows), and no SBUF capacity error."""
    rows, cols = 8, 12288
    x, w = (torch.randn(rows, cols, generator=torch.Generator().manual_seed(i)) for i in range(2))
    runs = {}
    for name, switches in (("fused", {}), ("plain", {"elementwise_fusion": False})):
        with compiler.using(compiler.CompilerModel(**switches)):
            runs[name] = tt.compile(SquareMean(), (x, w), dtype=torch.float32).last_run
    assert torch.equal(runs["fused"].outputs, runs["plain"].outputs)
    assert [o.op for o in runs["fused"].ops] == ["fused mul > pow > mean"]
    assert sum(o.dma_bytes for o in runs["fused"].ops) == 4 * rows * cols * 4 + rows * 4


def test_reduction_switch_is_part_of_the_compiler_model():
    assert compiler.CompilerModel.parse("reduction_fusion=0").reduction_fusion is False
    assert compiler.CompilerModel.parse("none").reduction_fusion is False
    assert compiler.CompilerModel().reduction_fusion is True
