"""Sequence-parallel collectives as graph ops of one rank's layer, timed elsewhere (trnlab.plan).

With sequence parallelism (Korthikanti et al., https://arxiv.org/abs/2205.05198) a rank's layer all-gathers
its [b, n/sp, h] shard before the column-parallel linears and reduce-scatters the gradient of the gathered
tensor in backward. trnlab.plan costs those collectives itself (plan/train.py, plan/infer.py), so in the
layer's graph they must do no device work:

- `sp_gather(x, sp)`: [b, n/sp, h] -> [b, n, h], every rank's block standing in as this rank's (the values of
  torch.cat([x] * sp, dim=1)). Lowered to a zero-second all-gather on the rank's collective unit
  (trnlab.isa.cc.CollectiveInstruction): it starts when x is written, writes the gathered tensor with no
  DMA and no engine time, and what reads the gathered tensor waits for it (norm -> gather -> linear keeps
  its order; the collective's own time and its overlap are the planner's).
- `sp_scatter(g, sp)`: its gradient, [b, n, h] -> [b, n/sp, h], the sum of g's sp blocks (the exact gradient
  of sp_gather; a reduce-scatter's block of a sum over ranks). Lowered the same way: a zero-second
  reduce-scatter that waits for the whole of g.
"""
from __future__ import annotations

import dataclasses

import numpy as np
import torch

from trnlab.isa import collectives as cc
from trnlab.isa.cc import CollectiveInstruction
from trnlab.torch.lowering import INDEX, lowers


@torch.library.custom_op("trnlab::sp_gather", mutates_args=())
def sp_gather(x: torch.Tensor, sp: int) -> torch.Tensor:
    return torch.cat([x] * sp, dim=1)


@sp_gather.register_fake
def _(x, sp):
    return x.new_empty((x.shape[0], x.shape[1] * sp, *x.shape[2:]))


@torch.library.custom_op("trnlab::sp_scatter", mutates_args=())
def sp_scatter(g: torch.Tensor, sp: int) -> torch.Tensor:
    return g.unflatten(1, (sp, g.shape[1] // sp)).sum(1).to(g.dtype)


@sp_scatter.register_fake
def _(g, sp):
    return g.new_empty((g.shape[0], g.shape[1] // sp, *g.shape[2:]))


def _gather_backward(ctx, grad):
    return sp_scatter(grad, ctx.sp), None


def _keep_sp(ctx, inputs, output):
    ctx.sp = inputs[1]


def _scatter_backward(ctx, grad):
    return sp_gather(grad, ctx.sp), None


sp_gather.register_autograd(_gather_backward, setup_context=_keep_sp)
sp_scatter.register_autograd(_scatter_backward, setup_context=_keep_sp)


def _free_collective(ctx, node, collective, src, position_inputs):
    """Issue `collective` over this rank's src as a zero-second, zero-byte collective instruction.
    position_inputs(a, sp): the sp ranks' source arrays as this rank stands in for all of them."""
    from trnlab.torch import capture
    from trnlab.torch.executor import device_dtype
    val = node.meta["val"]
    dst = ctx.alloc(val.shape, device_dtype(val.dtype), node.name)
    sp = node.args[1]
    instr = CollectiveInstruction(api=f"trnlab.torch.sequence_parallel.{node.target.name().split('::')[-1]}",
                                  loc=capture.source_line(node), collective=collective, srcs=(src,), dsts=(dst,),
                                  ranks=sp)
    if ctx.numerics:
        instr = dataclasses.replace(instr, inputs=(position_inputs(instr.sources()[0], sp),))
    ctx.machine.issue(instr)
    return dst


@lowers(torch.ops.trnlab.sp_gather.default, dtypes=INDEX)
def _sp_gather(ctx, node, x, sp):
    return _free_collective(ctx, node, cc.AllGather(axis=1), x, lambda a, n: (a,) * n)


@lowers(torch.ops.trnlab.sp_scatter.default, dtypes=INDEX)
def _sp_scatter(ctx, node, g, sp):
    # rank j's buffer holds g's block j at block 0, so the reduce-scatter's block 0 is the sum of g's blocks
    return _free_collective(ctx, node, cc.ReduceScatter(axis=1), g,
                            lambda a, n: tuple(np.roll(a, -j * (a.shape[1] // n), axis=1) for j in range(n)))
