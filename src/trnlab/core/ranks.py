"""Multi-rank launches: a kernel run on N ranks, each rank one simulated NeuronCore (its own Machine: SBUF,
PSUM, HBM tensors, engines and timing scheduler), the ranks meeting at their nki.collectives calls.

As AWS's nki.multi_rank_simulate (https://awsdocs-neuron.readthedocs-hosted.com/en/latest/nki/api/generated/
nki.multi_rank_simulate.html): rank r runs kernel(*args_r, **kwargs_r); array arguments may differ across
ranks in value only, other arguments must be equal.

Each rank runs in its own Python thread (as trnlab.core.lnc runs the programs of an LNC launch). A collective
call is a rendezvous (World.meet): the k-th call of a rank-list on one rank meets the k-th call of the same
rank-list on every other rank of it; the calls must agree (op, attributes, shapes, dtypes) or every
participant raises CollectiveSyncError naming the ranks and their kernel lines. Each participant posts its
source values and its arrival time (when its operands are ready on its own timeline); the collective starts
on every participant at the latest arrival, so the slowest rank decides. Waits fail by state, never by the
clock: a rank that finished (or failed) without reaching a call its peers wait in, or every live rank
blocked in a call nobody can complete, raises at once.
"""
from __future__ import annotations

import threading
from dataclasses import dataclass
from typing import Any, Mapping, Sequence

import numpy as np

from trnlab.core.lnc import block_until, run_in_threads
from trnlab.errors import CollectiveSyncError, LaunchError
from trnlab.hw.systems import SystemSpec, get_system

# The system a launch's ranks are placed on when none is given: the training instance of the chip.
DEFAULT_SYSTEMS = {2: "trn1.32xlarge", 3: "trn2.48xlarge", 4: "trn3-ultraserver"}


class _PeerFailed(CollectiveSyncError):
    """Raised in a waiting rank because a peer raised first (the peer's error is the one re-raised)."""


@dataclass(frozen=True)
class Arrival:
    """One rank's collective call as it reached the rendezvous."""
    rank: int
    api: str
    loc: str
    signature: tuple        # what every participant's call must agree on
    sources: tuple          # per src tensor: this rank's values (None when numerics are off)
    ready_at: float         # simulated time the rank's operands are ready and its collective unit is free


class World:
    """The ranks of one launch: the system they are placed on, the rendezvous slots, who is done or stuck."""

    def __init__(self, size: int, system: SystemSpec):
        self.size = size
        self.system = system
        self.cond = threading.Condition()
        self.done: set[int] = set()
        self.failed: set[int] = set()
        self.blocked: dict[int, tuple] = {}     # rank -> (its call as text, ready predicate)
        self.slots: dict = {}                   # (rank-list, k) -> {rank: Arrival}
        self.taken: dict = {}                   # (rank-list, k) -> ranks that picked the slot up
        self.calls: dict = {}                   # (rank, rank-list) -> next k
        self.ends: dict = {}                    # (rank-list, k) -> {rank: simulated end of its part}

    def meet(self, rank: int, rank_list: tuple, arrival: Arrival) -> dict:
        """Post this rank's arrival at its next call of rank_list; every participant's Arrival once all came."""
        with self.cond:
            k = self.calls.get((rank, rank_list), 0)
            self.calls[(rank, rank_list)] = k + 1
            key = (rank_list, k)
            slot = self.slots.setdefault(key, {})
            slot[rank] = arrival
            self.cond.notify_all()
            what = f"{arrival.api} (call {k + 1} over ranks {list(rank_list)}) at {arrival.loc}"
            self._wait(rank, what, arrival, lambda: len(slot) == len(rank_list),
                       [r for r in rank_list if r != rank])
            taken = self.taken.setdefault(key, set())
            taken.add(rank)
            if len(taken) == len(rank_list):
                del self.slots[key], self.taken[key]
            _check_agree(slot, rank_list)
            return dict(slot)

    def finish_together(self, rank: int, rank_list: tuple, arrival: Arrival, end: float) -> float:
        """After meet: post when this rank's part of the call would end; the latest participant's end."""
        with self.cond:
            key = (rank_list, self.calls[(rank, rank_list)] - 1)
            ends = self.ends.setdefault(key, {})
            ends[rank] = end
            self.cond.notify_all()
            what = f"{arrival.api} (completing, over ranks {list(rank_list)}) at {arrival.loc}"
            self._wait(rank, what, arrival, lambda: len(ends) == len(rank_list),
                       [r for r in rank_list if r != rank])
            latest = max(ends.values())
            taken = self.taken.setdefault(("end",) + key, set())
            taken.add(rank)
            if len(taken) == len(rank_list):
                del self.ends[key], self.taken[("end",) + key]
            return latest

    def _wait(self, rank: int, what: str, arrival: Arrival, ready, partners) -> None:
        where = dict(rank=rank, op=arrival.api, loc=arrival.loc)

        def deadlock(blocked):
            waits = "; ".join(f"rank {r} in {w}" for r, (w, _) in blocked)
            return CollectiveSyncError(f"deadlock: every running rank waits in a collective no peer can "
                                       f"complete ({waits})", **where)
        block_until(self, self.size, rank, what, ready, partners,
                    failed=lambda p: _PeerFailed(f"rank {rank} stopped in {what}: rank {p} failed", **where),
                    left=lambda p: CollectiveSyncError(
                        f"rank {rank} waits in {what} for rank {p}, which finished without reaching it; every "
                        f"rank of a rank-list must make the same collective calls in the same order", **where),
                    deadlock=deadlock)

    def finish(self, rank: int, ok: bool) -> None:
        with self.cond:
            (self.done if ok else self.failed).add(rank)
            self.cond.notify_all()


def _check_agree(slot: dict, rank_list: tuple) -> None:
    """Every participant's call must be the same collective over the same tensors' shapes and dtypes."""
    first = slot[rank_list[0]]
    for r in rank_list[1:]:
        other = slot[r]
        if other.signature != first.signature:
            raise CollectiveSyncError(
                f"mismatched collective calls over ranks {list(rank_list)}: rank {first.rank} calls "
                f"{_describe(first)} at {first.loc}, rank {other.rank} calls {_describe(other)} at {other.loc}",
                rank=other.rank, op=other.api, loc=other.loc)


def _describe(a: Arrival) -> str:
    collective, tensors = a.signature[0], a.signature[1:]
    return f"{a.api}({collective!r}, tensors {list(tensors)})"


# --- one rank's view --------------------------------------------------------------------------------------
def world_of(m) -> tuple:
    """(World, rank) of the machine: a launch of one rank when the kernel was not launched over ranks."""
    world = getattr(m, "world", None)
    if world is None:
        return World(1, default_system(m.chip)), 0
    return world, m.rank


def default_system(chip) -> SystemSpec:
    return get_system(DEFAULT_SYSTEMS.get(chip.nc_version, DEFAULT_SYSTEMS[3]))


def system_for(chip, system, world_size: int) -> SystemSpec:
    """The launch's system (default: the chip's training instance); it must hold world_size ranks."""
    spec = default_system(chip) if system is None else get_system(system)
    if spec.chip.nc_version != chip.nc_version:
        raise LaunchError(f"system {spec.name} is built from {spec.chip.name} chips but the kernel runs on "
                          f"{chip.name}; pass a system of that chip")
    if world_size > spec.ranks:
        raise LaunchError(f"world_size {world_size} exceeds the {spec.ranks} ranks of {spec.name}; pass a larger "
                          f"system (trnlab.hw.systems.cluster({spec.name!r}, nodes))")
    return spec


# --- the launch -------------------------------------------------------------------------------------------
def per_rank_calls(world_size, per_rank_inputs) -> list:
    """[(args, kwargs)] in rank order from a sequence in rank order or a mapping {rank: (args, kwargs)}."""
    if not isinstance(world_size, (int, np.integer)) or isinstance(world_size, bool) or world_size < 1:
        raise LaunchError(f"multi-rank launch: world_size must be an integer >= 1, got {world_size!r}")
    n = int(world_size)
    if isinstance(per_rank_inputs, Mapping):
        if sorted(per_rank_inputs) != list(range(n)):
            raise LaunchError(f"multi-rank launch: per_rank_inputs must have one key per rank 0..{n - 1}, got "
                              f"keys {sorted(per_rank_inputs)}")
        calls = [per_rank_inputs[r] for r in range(n)]
    elif isinstance(per_rank_inputs, Sequence):
        calls = list(per_rank_inputs)
        if len(calls) != n:
            raise LaunchError(f"multi-rank launch: per_rank_inputs has {len(calls)} entries for world_size {n}")
    else:
        raise LaunchError(f"multi-rank launch: per_rank_inputs must be a sequence or a mapping of (args, kwargs), "
                          f"got {type(per_rank_inputs).__name__}")
    out = []
    for r, call in enumerate(calls):
        if not (isinstance(call, (tuple, list)) and len(call) == 2 and isinstance(call[0], (tuple, list))
                and isinstance(call[1], Mapping)):
            raise LaunchError(f"multi-rank launch: rank {r}'s entry must be an (args tuple, kwargs dict) pair, "
                              f"got {call!r:.80}")
        out.append((tuple(call[0]), dict(call[1])))
    return out


def run_ranks(fn, calls: list, machines: list, world: World) -> list:
    """Run rank r's fn(*args, **kwargs) on machines[r] in its own thread; the per-rank results."""
    def join(rank: int, m) -> None:
        m.world, m.rank = world, rank
    return run_in_threads(fn, calls, machines, world, join, "trnlab-rank", _PeerFailed)


def same_static(a: Any, b: Any) -> bool:
    try:
        return bool(a == b)
    except Exception:
        return a is b


__all__ = ["World", "Arrival", "world_of", "system_for", "default_system", "per_rank_calls", "run_ranks",
           "DEFAULT_SYSTEMS"]
