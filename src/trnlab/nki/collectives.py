"""nki.collectives: collectives between the ranks of a multi-rank launch (nki.multi_rank_simulate), functional
and timed.

Signatures follow AWS's API (https://awsdocs-neuron.readthedocs-hosted.com/en/latest/nki/api/nki.collectives.html):
all_reduce(srcs, dsts, replica_group, op), all_gather(srcs, dsts, replica_group, collective_dim),
reduce_scatter(srcs, dsts, replica_group, collective_dim, op), all_to_all(srcs, dsts, replica_group,
collective_dim), all_to_all_v(...), collective_permute(srcs, dsts, source_target_pairs), rank_id(). Each call
is a rendezvous of the ranks of the caller's rank-list (trnlab.core.ranks) followed by one ISA instruction on
every participant (trnlab.isa.cc.CollectiveInstruction), timed by the collective cost model on the launch's
system.
A kernel launched on one rank (nki.simulate, calling the kernel) is a world of one rank.
all_to_all_v(srcs, dsts, replica_group, metadata_tensor, recv_counts_known, has_rdispls) reads its per-rank
counts from the metadata tensor when the ranks meet. The ring-implicit permutes are not modelled (they raise
NotImplementedError).
"""
from __future__ import annotations

import dataclasses
import enum

import numpy as np

from trnlab.core import dtypes as dt
from trnlab.core.machine import current as _current
from trnlab.core.ranks import Arrival, world_of
from trnlab.core.srcloc import user_location
from trnlab.errors import CollectiveError
from trnlab.isa import collectives as _cc
from trnlab.isa import multirank as _mr
from trnlab.isa.cc import CollectiveInstruction, queue_bytes


class rg_partition_op(enum.Enum):
    """How ReplicaGroup.from_partition_op maps a rank to its rank-list: rank // k, rank % k, rank & k."""
    div = "div"
    mod = "mod"
    bitwise_and = "bitwise_and"


class ReplicaGroup:
    """The ranks a collective runs on, as rank-lists: ReplicaGroup([[0, 1, 2, 3], [4, 5, 6, 7]]) runs the
    collective independently within ranks 0-3 and within ranks 4-7. A rank is in at most one rank-list."""

    def __init__(self, replica_groups=None, **kwargs):
        if replica_groups is None and len(kwargs) == 1:
            replica_groups = next(iter(kwargs.values()))
        elif kwargs:
            raise CollectiveError(f"ReplicaGroup: give the rank-lists, e.g. ReplicaGroup([[0, 1]]); got keywords "
                                  f"{sorted(kwargs)}")
        if replica_groups is None:
            raise CollectiveError("ReplicaGroup: give the rank-lists, e.g. ReplicaGroup([[0, 1], [2, 3]])")
        groups = [replica_groups] if replica_groups and all(isinstance(r, int) for r in replica_groups) \
            else replica_groups
        self.groups = tuple(tuple(int(r) for r in g) for g in groups)
        _mr.check_groups(max((r for g in self.groups for r in g), default=0) + 1, self.groups)

    @staticmethod
    def from_partition_op(world_size: int, op, operand: int) -> "ReplicaGroup":
        name = op.value if isinstance(op, rg_partition_op) else str(op)
        return ReplicaGroup(_mr.partition(int(world_size), name, int(operand)))

    def rank_list(self, rank: int) -> "tuple | None":
        return next((g for g in self.groups if rank in g), None)

    def __eq__(self, other):
        return isinstance(other, ReplicaGroup) and other.groups == self.groups

    def __hash__(self):
        return hash(self.groups)

    def __repr__(self):
        return f"ReplicaGroup({[list(g) for g in self.groups]})"


_REDUCE = {"add": "add", "maximum": "max", "minimum": "min", "max": "max", "min": "min"}


def _reduce_op(op, api: str, loc: str) -> str:
    name = op if isinstance(op, str) else getattr(op, "__name__", None)
    if name not in _REDUCE:
        raise CollectiveError(f"{api}: op must be nl.add, nl.maximum or nl.minimum, got {op!r}. At {loc}")
    return _REDUCE[name]


def _tensors(value, what: str, api: str, loc: str) -> tuple:
    items = tuple(value) if isinstance(value, (list, tuple)) else (value,)
    for t in items:
        if not hasattr(t, "storage"):
            raise CollectiveError(f"{api}: {what} must be a list of tensors, got {t!r:.60}. At {loc}")
    return items


def _group(replica_group, world_size: int, api: str, loc: str) -> ReplicaGroup:
    if not isinstance(replica_group, ReplicaGroup):
        replica_group = ReplicaGroup(replica_group)
    for g in replica_group.groups:
        for r in g:
            if r >= world_size:
                raise CollectiveError(f"{api}: replica group {replica_group} names rank {r}, but the kernel runs on "
                                      f"{world_size} rank(s) (launch it with nki.multi_rank_simulate(kernel, "
                                      f"world_size=..., per_rank_inputs=...)). At {loc}")
    return replica_group


def _run(api: str, collective, srcs, dsts, rank_list: "tuple | None", loc: str, pairs=None,
         metadata=None) -> None:
    """Meet the rank-list's ranks and issue `collective` on this one. metadata: all_to_all_v's metadata tensor,
    whose rows every rank reads at the call (numerics) and the counts are taken from (_with_counts)."""
    m = _current()
    world, rank = world_of(m)
    srcs, dsts = _tensors(srcs, "srcs", api, loc), _tensors(dsts, "dsts", api, loc)
    if rank_list is None:
        return                                   # this rank is in no rank-list: it does not take part
    targets = {d for _, d in pairs} if pairs is not None else None
    instr = CollectiveInstruction(api=api, loc=loc, collective=collective, srcs=srcs, dsts=dsts,
                                  position=rank_list.index(rank), ranks=len(rank_list),
                                  writes_dst=targets is None or rank in targets)
    instr.validate(m.chip)
    sched = m.scheduler
    signature = (collective, *((tuple(t.shape), dt.name_of(t.dtype), tuple(d.shape))
                               for t, d in zip(srcs, dsts)))
    sources = instr.sources() if m.numerics else ()
    if metadata is not None and m.numerics:      # all_to_all_v's counts: read at execution, like its sources
        sources += (np.array(metadata.read(api, loc), dtype=np.int64),)
    mine = Arrival(rank, api, loc, signature, sources, sched.ready_at(instr) if sched is not None else 0.0)
    arrivals = world.meet(rank, rank_list, mine) if len(rank_list) > 1 else {rank: mine}
    n = len(rank_list)
    inputs = (tuple(tuple(arrivals[r].sources[i] for r in rank_list) for i in range(len(srcs)))
              if m.numerics else ())
    nbytes = sum(t.nbytes for t in (dsts if collective.name == "all-gather" else srcs))
    counts = None
    if metadata is not None and m.numerics:
        collective = _with_counts(api, collective, [arrivals[r].sources[-1] for r in rank_list], srcs[0], loc)
        instr = dataclasses.replace(instr, collective=collective)
        counts = collective.send_counts
    seconds = 0.0
    if n > 1:
        itemsize = dt.itemsize(srcs[0].dtype) if counts is not None else 4
        seconds = _cc.collective_cost(collective.name, int(nbytes), n, world.system, pairs=pairs,
                                      itemsize=itemsize, counts=counts).latency_s
    instr = dataclasses.replace(instr, inputs=inputs, seconds=seconds,
                                not_before=max(a.ready_at for a in arrivals.values()),
                                queue_bytes=queue_bytes(collective.name, int(nbytes), n))
    if sched is not None and n > 1:       # every participant completes with the slowest one's part
        latest = world.finish_together(rank, rank_list, mine, sched.collective_end(instr))
        instr = dataclasses.replace(instr, min_end=latest)
    m.issue(instr)


def _with_counts(api: str, collective, metas: list, src, loc: str):
    """The all-to-allv with every rank's metadata rows (rank-list order): send counts and displacements, the
    receive counts checked against the senders' when known, receive displacements when given."""
    n = len(metas)
    counts = tuple(tuple(int(v) for v in meta[0]) for meta in metas)
    displs = tuple(tuple(int(v) for v in meta[1]) for meta in metas)
    for i in range(n):
        for j in range(n):
            if displs[i][j] + counts[i][j] > src.size:
                raise CollectiveError(f"{api}: rank-list position {i} sends elements {displs[i][j]}.."
                                      f"{displs[i][j] + counts[i][j] - 1} to position {j}, past its {src.size}-element "
                                      f"src. At {loc}")
            if collective.recv_counts_known and int(metas[j][2][i]) != counts[i][j]:
                raise CollectiveError(f"{api}: position {j}'s recv count from position {i} is {int(metas[j][2][i])}, "
                                      f"but position {i} sends it {counts[i][j]}. At {loc}")
    recv = tuple(tuple(int(v) for v in meta[3]) for meta in metas) if collective.has_rdispls else ()
    return dataclasses.replace(collective, send_counts=counts, send_displs=displs, recv_displs=recv)


def _collective_over_group(api, collective, srcs, dsts, replica_group, loc):
    world, rank = world_of(_current())
    group = _group(replica_group, world.size, api, loc)
    _run(api, collective, srcs, dsts, group.rank_list(rank), loc)


def all_reduce(srcs, dsts, replica_group, op, priority=None, name=None):
    """dsts[i] of every rank of a rank-list = the reduction (op) of srcs[i] over its ranks."""
    api, loc = "nki.collectives.all_reduce", user_location()
    _collective_over_group(api, _cc.AllReduce(op=_reduce_op(op, api, loc)), srcs, dsts, replica_group, loc)


def all_gather(srcs, dsts, replica_group, collective_dim, priority=None, name=None):
    """dsts[i] of every rank = the ranks' srcs[i] concatenated in rank-list order along collective_dim."""
    api, loc = "nki.collectives.all_gather", user_location()
    _collective_over_group(api, _cc.AllGather(axis=int(collective_dim)), srcs, dsts, replica_group, loc)


def reduce_scatter(srcs, dsts, replica_group, collective_dim, op, priority=None, name=None):
    """dsts[i] of the k-th rank of a rank-list = chunk k (along collective_dim) of the reduction of srcs[i]."""
    api, loc = "nki.collectives.reduce_scatter", user_location()
    coll = _cc.ReduceScatter(op=_reduce_op(op, api, loc), axis=int(collective_dim))
    _collective_over_group(api, coll, srcs, dsts, replica_group, loc)


def all_to_all(srcs, dsts, replica_group, collective_dim, priority=None, name=None):
    """Chunk j (along collective_dim) of rank i's srcs[i] goes to rank j, which concatenates them in rank order."""
    api, loc = "nki.collectives.all_to_all", user_location()
    _collective_over_group(api, _cc.AllToAll(axis=int(collective_dim)), srcs, dsts, replica_group, loc)


def all_to_all_v(srcs, dsts, replica_group, metadata_tensor, recv_counts_known=False, has_rdispls=False,
                 priority=None, name=None):
    """Flat element buffers: rank i sends metadata row 0[j] elements from row 1[j] of its srcs[0] to the j-th
    rank of its rank-list, which writes them in rank-list order from element 0 of dsts[0], or at its row 3[i]
    with has_rdispls; row 2 (recv counts, with recv_counts_known) must match the senders'. metadata_tensor:
    (2-4, rank-list size) integers, read when the ranks meet (counts "known only at execution time"); the cost
    moves the counted bytes. A kernel timed without numerics has no counts: the cost splits srcs evenly."""
    api, loc = "nki.collectives.all_to_all_v", user_location()
    world, rank = world_of(_current())
    group = _group(replica_group, world.size, api, loc)
    rank_list = group.rank_list(rank)
    srcs, dsts = _tensors(srcs, "srcs", api, loc), _tensors(dsts, "dsts", api, loc)
    if len(srcs) != 1 or len(dsts) != 1:
        raise CollectiveError(f"{api}: srcs and dsts must be exactly one tensor each, got {len(srcs)} and "
                              f"{len(dsts)}. At {loc}")
    (meta,) = _tensors(metadata_tensor, "metadata_tensor", api, loc)
    rows = 4 if has_rdispls else 3 if recv_counts_known else 2
    n = len(rank_list) if rank_list else 0
    if not dt.is_int(meta.dtype) or len(meta.shape) != 2 or meta.shape[0] < rows or meta.shape[1] != n:
        raise CollectiveError(f"{api}: metadata_tensor must be integers of shape ({rows}, {n}) (send counts, send "
                              f"displacements{', recv counts' if rows > 2 else ''}"
                              f"{', recv displacements' if rows > 3 else ''}; one column per rank of the "
                              f"rank-list), got {meta.describe()}. At {loc}")
    coll = _cc.AllToAllV(recv_counts_known=bool(recv_counts_known), has_rdispls=bool(has_rdispls))
    _run(api, coll, srcs, dsts, rank_list, loc, metadata=meta)


def collective_permute(srcs, dsts, source_target_pairs, priority=None, name=None):
    """Each (source, target) pair copies the source rank's srcs into the target rank's dsts; every rank of the
    launch makes the call, a rank that is no pair's target keeps its dsts unwritten."""
    permute("nki.collectives.collective_permute", srcs, dsts, source_target_pairs, user_location())


def permute(api: str, srcs, dsts, source_target_pairs, loc: str) -> None:
    """collective_permute of both front ends (Beta 1: neuronxcc.nki.nccl.collective_permute)."""
    world, _ = world_of(_current())
    pairs = tuple((int(s), int(d)) for s, d in source_target_pairs)
    for pair in pairs:
        if not all(0 <= r < world.size for r in pair):
            raise CollectiveError(f"{api}: pair {pair} names a rank outside 0..{world.size - 1}. At {loc}")
    if len({d for _, d in pairs}) != len(pairs):
        raise CollectiveError(f"{api}: a rank is the target of more than one pair in {list(pairs)}. At {loc}")
    _run(api, _cc.Permute(pairs=pairs), srcs, dsts, tuple(range(world.size)), loc, pairs=pairs)


def rank_id(name=None) -> int:
    """The calling rank's id in the launch (0 for a kernel launched on one rank)."""
    return world_of(_current())[1]


def self_index_in_replica_group(replica_group, name=None) -> int:
    """The caller's position within its own rank-list of replica_group."""
    api, loc = "nki.collectives.self_index_in_replica_group", user_location()
    world, rank = world_of(_current())
    group = _group(replica_group, world.size, api, loc)
    rank_list = group.rank_list(rank)
    if rank_list is None:
        raise CollectiveError(f"{api}: rank {rank} is in no rank-list of {group}. At {loc}")
    return rank_list.index(rank)


def _not_modelled(name, module: str = "nki.collectives", why: str = ""):
    """A stand-in for a collective trnlab does not model: calling it raises NotImplementedError naming it
    (also the Beta 1 front end's, trnlab.nki_beta1.nccl)."""
    def fn(*args, **kwargs):
        raise NotImplementedError(f"{module}.{name} is not modelled by trnlab{why}. At {user_location()}")
    fn.__name__ = name
    return fn


collective_permute_implicit = _not_modelled("collective_permute_implicit")
collective_permute_implicit_reduce = _not_modelled("collective_permute_implicit_reduce")
collective_permute_implicit_current_processing_rank_id = _not_modelled(
    "collective_permute_implicit_current_processing_rank_id")
send = _not_modelled("send")
recv = _not_modelled("recv")


def __getattr__(name):
    if name.startswith("__"):
        raise AttributeError(name)
    return _not_modelled(name)
