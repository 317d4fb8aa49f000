"""Functional multi-rank execution of collectives: replica groups and a checker, for nki.collectives and the
sharded-model path to build on.

Replica groups follow nki.collectives.ReplicaGroup (https://awsdocs-neuron.readthedocs-hosted.com/en/latest/
nki/api/generated/nki.collectives.ReplicaGroup.html): a list of rank-lists; the collective runs independently
within each rank-list, all in parallel; a rank is in at most one rank-list. `partition` builds them as
ReplicaGroup.from_partition_op does: ranks with the same op(rank, operand) form one rank-list
(div 4 on 8 ranks: [[0..3], [4..7]]; mod 4: [[0, 4], [1, 5], [2, 6], [3, 7]]; bitwise_and 0: all ranks).
"""
from __future__ import annotations

from typing import Optional, Sequence

import numpy as np

from trnlab.isa import collectives as cc

PARTITION_OPS = {"div": lambda r, k: r // k, "mod": lambda r, k: r % k, "bitwise_and": lambda r, k: r & k}
_SEMANTICS = {"all-reduce": cc.all_reduce, "all-gather": cc.all_gather, "reduce-scatter": cc.reduce_scatter,
              "all-to-all": cc.all_to_all}


def _error(message: str):
    from trnlab.errors import CollectiveError
    return CollectiveError(message)


def partition(world_size: int, op: str, operand: int) -> tuple:
    """Rank-lists of ranks [0, world_size) that share op(rank, operand), in order of their first rank."""
    if op not in PARTITION_OPS:
        raise _error(f"partition: op must be one of {'|'.join(PARTITION_OPS)}, got {op!r}")
    if op in ("div", "mod") and operand < 1:
        raise _error(f"partition: {op} needs an operand >= 1, got {operand!r}")
    lists: dict = {}
    for rank in range(world_size):
        lists.setdefault(PARTITION_OPS[op](rank, operand), []).append(rank)
    return tuple(tuple(ranks) for ranks in lists.values())


def check_groups(world_size: int, groups: Optional[Sequence[Sequence[int]]]) -> tuple:
    """The rank-lists, validated (default: one list of all ranks)."""
    if groups is None:
        return (tuple(range(world_size)),)
    seen: set = set()
    out = []
    for group in groups:
        group = tuple(int(r) for r in group)
        if not group:
            raise _error("replica group: a rank-list is empty")
        for r in group:
            if not 0 <= r < world_size:
                raise _error(f"replica group: rank {r} is outside 0..{world_size - 1}")
            if r in seen:
                raise _error(f"replica group: rank {r} is in more than one rank-list")
            seen.add(r)
        out.append(group)
    return tuple(out)


def run(op: str, inputs: Sequence[np.ndarray], groups=None, **kwargs) -> list:
    """The outputs of a collective on every rank: one array per rank of `inputs`, None for a rank in no
    rank-list. op: all-reduce, all-gather, reduce-scatter, all-to-all (kwargs: op='add'|'max'|'min', axis)."""
    if op not in _SEMANTICS:
        raise _error(f"collective: op must be one of {'|'.join(_SEMANTICS)}, got {op!r}")
    outputs: list = [None] * len(inputs)
    for group in check_groups(len(inputs), groups):
        for rank, out in zip(group, _SEMANTICS[op]([inputs[r] for r in group], **kwargs)):
            outputs[rank] = out
    return outputs


def check(op: str, inputs: Sequence[np.ndarray], outputs: Sequence, groups=None, *, rtol: float = 1e-6,
          atol: float = 1e-6, **kwargs) -> None:
    """Raise CollectiveError naming the first rank whose output differs from the collective's semantics (a
    multi-rank kernel run, or a sharded model, checked against the executable spec)."""
    want = run(op, inputs, groups, **kwargs)
    if len(outputs) != len(want):
        raise _error(f"{op}: {len(outputs)} outputs for {len(want)} ranks")
    for rank, (got, expected) in enumerate(zip(outputs, want)):
        if expected is None:
            continue
        got = np.asarray(got)
        if got.shape != expected.shape:
            raise _error(f"{op}: rank {rank} output has shape {got.shape}, expected {expected.shape}")
        a, b = got.astype(np.float64), expected.astype(np.float64)
        if not np.allclose(a, b, rtol=rtol, atol=atol, equal_nan=True):
            worst = float(np.max(np.abs(a - b)))
            raise _error(f"{op}: rank {rank} output differs from the collective's result by up to {worst:.3g} "
                         f"(rtol {rtol}, atol {atol})")


__all__ = ["partition", "check_groups", "run", "check", "PARTITION_OPS"]
