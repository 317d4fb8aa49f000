"""Collective kernels across the ranks of a multi-rank launch (nki.multi_rank_simulate), in the current NKI API.

all_reduce(x, replica_group, op): every rank returns the reduction of all ranks' x (HBM to HBM: one
    collective call, the cheapest form; each call pays the collective's launch cost).
all_gather(x, replica_group, ranks): every rank returns the ranks' x concatenated along axis 0.
scaled_all_reduce(x, replica_group, scale): the all-reduce of x * scale, the scaling done on each rank's
    Vector engine tile by tile before the collective (a data-parallel gradient average).

Not in trnlab.kernels.KERNELS (those run on one core): launch with
    nki.multi_rank_simulate(all_reduce, world_size=n, per_rank_inputs=example_inputs(n))
and check with `reference` (numpy over the ranks' inputs).
"""
from __future__ import annotations

import numpy as np

import trnlab.nki as nki
import trnlab.nki.collectives as nccl
import trnlab.nki.isa as nisa
import trnlab.nki.language as nl
from trnlab.kernels._layout import as_rows, tiles


@nki.jit
def all_reduce(x, replica_group, op=nl.add):
    src = nl.ndarray(x.shape, dtype=x.dtype, buffer=nl.private_hbm)
    out = nl.ndarray(x.shape, dtype=x.dtype, buffer=nl.shared_hbm)
    nisa.dma_copy(dst=src, src=x)
    nccl.all_reduce(srcs=[src], dsts=[out], replica_group=replica_group, op=op)
    return out


@nki.jit
def all_gather(x, replica_group, ranks):
    src = nl.ndarray(x.shape, dtype=x.dtype, buffer=nl.private_hbm)
    out = nl.ndarray((x.shape[0] * ranks, *x.shape[1:]), dtype=x.dtype, buffer=nl.shared_hbm)
    nisa.dma_copy(dst=src, src=x)
    nccl.all_gather(srcs=[src], dsts=[out], replica_group=replica_group, collective_dim=0)
    return out


@nki.jit
def scaled_all_reduce(x, replica_group, scale):
    scaled = nl.ndarray(x.shape, dtype=x.dtype, buffer=nl.private_hbm)
    out = nl.ndarray(x.shape, dtype=x.dtype, buffer=nl.shared_hbm)
    x2, s2 = as_rows(x), as_rows(scaled)
    rows, cols = x2.shape
    for r0, nr in tiles(rows):
        t = nl.ndarray((nr, cols), dtype=x.dtype, buffer=nl.sbuf)
        nisa.dma_copy(dst=t, src=x2[r0:r0 + nr, :])
        nisa.tensor_scalar(dst=t, data=t, op0=nl.multiply, operand0=float(scale))
        nisa.dma_copy(dst=s2[r0:r0 + nr, :], src=t)
    nccl.all_reduce(srcs=[scaled], dsts=[out], replica_group=replica_group, op=nl.add)
    return out


_NUMPY = {"add": np.sum, "maximum": np.max, "minimum": np.min}


def reference(xs, op="add", scale=1.0) -> np.ndarray:
    """The all-reduce of the ranks' arrays xs (in fp32, rounded once to their dtype)."""
    name = op if isinstance(op, str) else op.__name__
    stacked = np.stack([np.asarray(x, np.float32) * np.float32(scale) for x in xs])
    return _NUMPY[name](stacked, axis=0).astype(np.asarray(xs[0]).dtype)


def example_inputs(world_size=4, shape=(256, 512), dtype=np.float32, seed=0):
    """per_rank_inputs of an all_reduce over all ranks: rank r's x is standard normal (seeded by seed + r)."""
    group = nccl.ReplicaGroup([list(range(world_size))])
    return [((np.random.default_rng(seed + r).standard_normal(shape).astype(dtype), group), {})
            for r in range(world_size)]
