"""Collectives at the ISA level: what each one computes (numpy over per-rank arrays, the executable spec) and
what it costs on a system (the algorithm AWS's runtime would pick, and its latency). The functions
(all_reduce, ..., collective_cost) are the definitions; the frozen classes AllReduce, AllGather,
ReduceScatter, AllToAll, Permute, SendRecv bind a collective's attributes to both (execute, cost).

Semantics follow SDK neuron-runtime/explore/intranode-collective-comm.rst ("Collective Operations" table):
AllGather C -> N*C, ReduceScatter N*C -> C, AllReduce B -> B, AllToAll transposes the N chunks between ranks.
SDK = https://github.com/aws-neuron/aws-neuron-sdk/blob/master/

Cost model (one collective, nothing else running): an algorithm is a sequence of phases; a phase costs
    steps x step latency + (T + R + max(T, R)) / 2
with T = bytes on its busiest link / (link bandwidth x efficiency) and R = reduced elements x 4 B / DMA rate
(the DMA engines reduce in fp32; transfer and reduction pipelined in two slices), plus one launch time per
collective. The algorithms and where they apply are those of
SDK neuron-runtime/explore/intranode-collective-comm.rst (Mesh, RDH, Ring, KangaRing on the chip torus) and
internode-collective-comm.rst (hierarchical: RS inside, AR across, AG inside; Ring/RDH/Mesh across instances;
the flat Ring across instances on trn1 only). The runtime's choice by message size is modelled as the fastest
eligible algorithm (the doc's sweet ranges are empirical: Mesh < 1 MB, RDH 1-56 MB, KangaRing > 56 MB).
The few constants in CollectiveTuning are fitted to the nccom-test rows of
SDK tools/neuron-sys-tools/nccom-test.rst by benchmarks/fit_collectives.py (docs/calibration.md); fixed costs
that a later runtime release measured apart are RELEASE_OVERRIDES (collective_cost(..., release=)).
"""
from __future__ import annotations

import math
from dataclasses import dataclass, replace
from typing import ClassVar, Optional, Sequence

import numpy as np

from trnlab.errors import CollectiveError
from trnlab.hw.systems import SystemSpec, get_system

OPS = ("all-reduce", "all-gather", "reduce-scatter", "all-to-all", "all-to-allv", "permute", "send-recv")
REDUCE_OPS = ("add", "max", "min")


def _error(message: str):
    from trnlab.errors import CollectiveError
    return CollectiveError(message)


# ------------------------------------------------------------------------------------------------------
# Semantics: a list of per-rank numpy arrays in, a list of per-rank numpy arrays out.
# ------------------------------------------------------------------------------------------------------

def _check_ranks(name: str, inputs: Sequence[np.ndarray]) -> list:
    arrays = [np.asarray(a) for a in inputs]
    if len(arrays) < 1:
        raise _error(f"{name}: needs at least 1 rank, got 0 input arrays")
    first = arrays[0]
    for r, a in enumerate(arrays):
        if a.shape != first.shape or a.dtype != first.dtype:
            raise _error(f"{name}: every rank's array must match rank 0's shape {first.shape} and dtype "
                         f"{first.dtype}; rank {r} has {a.shape} {a.dtype}")
    return arrays


def _accumulator(dtype) -> np.dtype:
    kind = np.dtype(dtype).kind
    if kind in "iu":
        return np.dtype(np.int64) if kind == "i" else np.dtype(np.uint64)
    return np.dtype(np.float32) if np.dtype(dtype).itemsize <= 4 else np.dtype(dtype)


def _reduce(name: str, arrays: list, op: str) -> np.ndarray:
    """Element-wise reduction over ranks, accumulated in fp32 (integers: 64-bit, wrapping on the cast back),
    rounded once to the rank dtype (ml_dtypes does the bf16/fp8 rounding)."""
    if op not in REDUCE_OPS:
        raise _error(f"{name}: op must be one of {'|'.join(REDUCE_OPS)}, got {op!r}")
    acc = np.stack([a.astype(_accumulator(a.dtype)) for a in arrays])
    out = {"add": np.sum, "max": np.max, "min": np.min}[op](acc, axis=0)
    return out.astype(arrays[0].dtype)


def _split(name: str, array: np.ndarray, parts: int, axis: int) -> list:
    if array.ndim == 0 or array.shape[axis] % parts:
        raise _error(f"{name}: axis {axis} of shape {array.shape} must divide into {parts} equal parts "
                     f"(one per rank)")
    return np.split(array, parts, axis=axis)


def all_reduce(inputs: Sequence[np.ndarray], op: str = "add") -> list:
    """Every rank ends with the reduction of all ranks' arrays."""
    arrays = _check_ranks("all_reduce", inputs)
    out = _reduce("all_reduce", arrays, op)
    return [out.copy() for _ in arrays]


def all_gather(inputs: Sequence[np.ndarray], axis: int = 0) -> list:
    """Every rank ends with the ranks' arrays concatenated in rank order along `axis`."""
    arrays = _check_ranks("all_gather", inputs)
    out = np.concatenate([np.atleast_1d(a) for a in arrays], axis=axis)
    return [out.copy() for _ in arrays]


def reduce_scatter(inputs: Sequence[np.ndarray], op: str = "add", axis: int = 0) -> list:
    """Rank r ends with chunk r (of N equal chunks along `axis`) of the reduction."""
    arrays = _check_ranks("reduce_scatter", inputs)
    return _split("reduce_scatter", _reduce("reduce_scatter", arrays, op), len(arrays), axis)


def all_to_all(inputs: Sequence[np.ndarray], axis: int = 0) -> list:
    """Rank r ends with chunk r of every rank, in rank order: r0[A0, A1] r1[B0, B1] -> r0[A0, B0] r1[A1, B1]."""
    arrays = _check_ranks("all_to_all", inputs)
    n = len(arrays)
    chunks = [_split("all_to_all", a, n, axis) for a in arrays]
    return [np.concatenate([chunks[src][dst] for src in range(n)], axis=axis) for dst in range(n)]


def all_to_all_v(sends: Sequence, axis: int = 0, send_counts=None, send_displs=None, recv_displs=None) -> list:
    """All-to-allv in two forms. Without send_counts: sends[i][j] goes from rank i to rank j (any length along
    `axis`). With send_counts (an n x n matrix of elements along `axis`, or one row for every rank, as
    nccom-test's --variable-size-op-metadata): sends[i] is rank i's send buffer, and rank i sends the
    send_counts[i][j] elements at send_displs[i][j] (default: packed in rank order) to rank j. Rank j ends
    with what it receives in rank order, or, given recv_displs (n x n or one row), a buffer shaped like its
    input, zero but for the part from rank i at recv_displs[j][i] (nki.collectives.all_to_all_v's
    send/recv counts and displacements: https://awsdocs-neuron.readthedocs-hosted.com/en/latest/nki/api/
    generated/nki.collectives.all_to_all_v.html)."""
    n = len(sends)
    if send_counts is None:
        for i, row in enumerate(sends):
            if len(row) != n:
                raise _error(f"all_to_all_v: rank {i} must give one array per rank ({n}), got {len(row)}")
        return [np.concatenate([np.asarray(sends[src][dst]) for src in range(n)], axis=axis) for dst in range(n)]
    arrays = _check_ranks("all_to_all_v", sends)
    length = arrays[0].shape[axis] if arrays[0].ndim else 0
    counts = counts_matrix(send_counts, n)
    displs = _displacements("send_displs", send_displs, counts, n)
    for i in range(n):
        for j in range(n):
            if displs[i, j] + counts[i, j] > length:
                raise _error(f"all_to_all_v: rank {i}'s part for rank {j} (elements {displs[i, j]}.."
                             f"{displs[i, j] + counts[i, j] - 1}) overruns its buffer of {length} along axis {axis}")
    parts = [[np.take(arrays[i], np.arange(displs[i, j], displs[i, j] + counts[i, j]), axis=axis)
              for j in range(n)] for i in range(n)]
    if recv_displs is None:
        return [np.concatenate([parts[i][j] for i in range(n)], axis=axis) for j in range(n)]
    rdispls = _displacements("recv_displs", recv_displs, counts.T, n)
    out = []
    for j in range(n):
        buf = np.zeros_like(arrays[j])
        for i in range(n):
            if rdispls[j, i] + counts[i, j] > length:
                raise _error(f"all_to_all_v: rank {j}'s place for rank {i}'s {counts[i, j]} elements at "
                             f"{rdispls[j, i]} overruns its buffer of {length} along axis {axis}")
            index = [slice(None)] * buf.ndim
            index[axis] = slice(rdispls[j, i], rdispls[j, i] + counts[i, j])
            buf[tuple(index)] = parts[i][j]
        out.append(buf)
    return out


def counts_matrix(counts, ranks: int) -> np.ndarray:
    """An all-to-allv's send counts as an n x n integer matrix (row i: what rank i sends to each rank). One row
    applies to every rank (nccom-test's single metadata entry: "If one metadata entry is provided, it applies to
    all ranks")."""
    try:
        m = np.array(counts, dtype=object)
        if m.ndim == 1:
            m = np.array([list(counts)] * ranks, dtype=object)
        ok = m.shape == (ranks, ranks) and all(isinstance(v, (int, np.integer)) and v >= 0 for v in m.flat)
    except (TypeError, ValueError):
        ok = False
    if not ok:
        raise _error(f"all-to-allv: send counts must be {ranks} integers >= 0 (one per rank, for every rank) or a "
                     f"{ranks} x {ranks} matrix of them, got {counts!r}")
    return m.astype(np.int64)


def _displacements(name: str, displs, counts: np.ndarray, n: int) -> np.ndarray:
    """Displacements as an n x n matrix; None: each row's parts packed in rank order."""
    if displs is None:
        return np.cumsum(counts, axis=1) - counts
    try:
        return counts_matrix(displs, n)
    except CollectiveError:             # counts_matrix names them send counts: say which displacements
        raise _error(f"all_to_all_v: {name} must be {n} integers >= 0 or a {n} x {n} matrix, got {displs!r}") from None


def permute(inputs: Sequence[np.ndarray], pairs: Sequence[tuple]) -> list:
    """Each (source, target) pair copies the source rank's array to the target rank; a rank that is no pair's
    target ends with zeros (its output buffer is not written by the collective)."""
    arrays = _check_ranks("permute", inputs)
    n = len(arrays)
    targets = set()
    for pair in pairs:
        src, dst = pair
        if not (0 <= src < n and 0 <= dst < n):
            raise _error(f"permute: pair {pair} names a rank outside 0..{n - 1}")
        if dst in targets:
            raise _error(f"permute: rank {dst} is the target of more than one pair")
        targets.add(dst)
    out = [np.zeros_like(a) for a in arrays]
    for src, dst in pairs:
        out[dst] = arrays[src].copy()
    return out


def send_recv(inputs: Sequence[np.ndarray], src: int, dst: int) -> list:
    """Point to point: rank `dst` receives rank `src`'s array (a permute with one pair)."""
    return permute(inputs, [(src, dst)])


def ring_pairs(n: int, shift: int = 1) -> list:
    """The circular permute the runtime supports (SDK neuron-runtime/about/collectives.rst): r -> r+shift mod n."""
    return [(r, (r + shift) % n) for r in range(n)]


# ------------------------------------------------------------------------------------------------------
# Cost
# ------------------------------------------------------------------------------------------------------

KiB, MiB = 1024, 1024 * 1024

# The runtime's choice by message size (intranode doc "Sweet Range (Empirically)": Mesh < 1 MB, RDH 1-56 MB,
# KangaRing > 56 MB, stated for its 64-rank trn2 node). [derived] We apply them to the per-rank chunk
# (size / ranks: 16 KiB and 896 KiB), which reproduces all six --show-algorithm picks of the 16-rank
# nccom-test example (mesh at 4 B, 8 KiB, 128 KiB; rdh at 2 MiB; kangaring at 32 and 512 MiB). KangaRing
# moves the same link traffic as Ring with half the hops; its fewer HBM touches are not modelled (no HBM
# contention in this model).
MESH_CHUNK_BYTES = 1 * MiB // 64
RDH_CHUNK_BYTES = 56 * MiB // 64
# Trn1 across instances: the flat Ring "only on Trn1 for large messages" (internode doc; no size given).
# [fitted] to the 64-rank / 2-node rows: 8 B is hierarchical (520 us), 1 MiB already pays ~126 EFA steps.
FLAT_RING_BYTES = 1 * MiB

INTRA_ALGORITHMS = ("mesh", "rdh", "ring", "kangaring")


@dataclass(frozen=True, kw_only=True)
class CollectiveTuning:
    """The model's constants for one chip generation (and the runtime releases AWS measured it with).
    [fitted] by benchmarks/fit_collectives.py to the nccom-test rows of trainium-scale.md §1.4 on that
    generation (docs/calibration.md "Collectives"). Edit with dataclasses.replace for what-if studies."""
    launch_s: float                  # per collective: CC-core sync, descriptors, completion
    reduce_launch_s: float           # extra per reducing collective (all-reduce, reduce-scatter)
    step_s: float                    # per algorithm step inside an instance (intranode doc: 1-2 us per hop)
    peer_s: float                    # per peer a rank writes to in one Mesh step
    link_efficiency: float           # achieved fraction of the NeuronLink bandwidth
    local_efficiency: float          # achieved fraction of a rank's DMA bandwidth to a core of its own chip
    efa_step_s: float                # per step across instances over EFA (internode doc: ~15 us per hop)
    efa_efficiency: float            # achieved fraction of the instance's EFA bandwidth

    def __post_init__(self):
        for name in ("launch_s", "reduce_launch_s", "step_s", "peer_s", "efa_step_s"):
            if not getattr(self, name) >= 0:
                raise _error(f"CollectiveTuning: {name} must be >= 0, got {getattr(self, name)!r}")
        for name in ("link_efficiency", "local_efficiency", "efa_efficiency"):
            if not 0 < getattr(self, name) <= 1:
                raise _error(f"CollectiveTuning: {name} must be in (0, 1], got {getattr(self, name)!r}")


# [fitted] benchmarks/fit_collectives.py (docs/calibration.md "Collectives"); keyed by NeuronCore version.
TUNINGS = {
    2: CollectiveTuning(launch_s=0.114e-6, reduce_launch_s=11.6e-6, step_s=27.6e-6, peer_s=16.7e-6,
                        link_efficiency=0.149, local_efficiency=0.257, efa_step_s=10.7e-6, efa_efficiency=0.574),
    # trn2 has no multi-node row: efa_step_s and efa_efficiency are trn1's. step_s is not fitted: the
    # intranode doc's per-hop latency of Ring/KangaRing, "about 1-2 us".
    3: CollectiveTuning(launch_s=0.1e-6, reduce_launch_s=413e-6, step_s=1.5e-6, peer_s=1.40e-6,
                        link_efficiency=0.215, local_efficiency=0.0570, efa_step_s=10.7e-6, efa_efficiency=0.574),
}
# trn3 (NC-v4): no published measurement; it keeps trn2's constants.
TUNINGS[4] = TUNINGS[3]


# The runtime release that measured each generation's fit rows: most of trn2's examples (--show-algorithm,
# percentiles, all-to-allv) were added to nccom-test.rst with release 2.28, trn1's with 2.10 (the doc's git
# history). A collective's fixed costs belong to the runtime's launch path, not to the chips: the same 16-rank
# all-reduce (ranks 0-15, 4 trn2 chips) takes 300 us at 4 B - 8 KiB in release 2.28's --show-algorithm example
# and 101 us at 1 KiB in release 2.32's multi-stream example, though there it shares the chips with three more
# 16-rank groups and a 64-rank all-gather stream (contention adds time, so 2.32's lone all-reduce is faster
# still). No constant of one release can give both; the later release's fixed costs are its own.
# [fitted] benchmarks/fit_collectives.py, jointly with TUNINGS[3], to the multi-stream rows (release 2.32);
# every other constant is the generation's. Keyed by (NeuronCore version, release).
RELEASE_OVERRIDES = {(3, "2.32"): {"reduce_launch_s": 76.5e-6}}
RELEASE_OVERRIDES[(4, "2.32")] = RELEASE_OVERRIDES[(3, "2.32")]    # trn3 keeps trn2's constants
RELEASES = tuple(sorted({release for _, release in RELEASE_OVERRIDES}))


def with_release(tuning: CollectiveTuning, nc_version: int, release: Optional[str],
                 overrides: Optional[dict] = None) -> CollectiveTuning:
    """`tuning` with the fixed costs of runtime `release` on that generation; None, or a release not measured
    apart on it: `tuning` unchanged (its fit rows' releases)."""
    if release is not None and release not in RELEASES:
        raise _error(f"collective: release must be one of {', '.join(RELEASES)}, got {release!r}")
    table = RELEASE_OVERRIDES if overrides is None else overrides
    return replace(tuning, **table.get((nc_version, release), {}))


def tuning_for(system: SystemSpec, release: Optional[str] = None) -> CollectiveTuning:
    """The generation's fitted constants, with `release`'s fixed costs where they were measured apart."""
    return with_release(TUNINGS[system.chip.nc_version], system.chip.nc_version, release)


# Where a collective is issued: "host" = a stand-alone launch as nccom-test times it (the fit above);
# "graph" = a collective node inside a compiled NEFF (TP all-reduces of a decode/prefill/training graph),
# which the runtime's collective engine runs without a host launch.
LAUNCHES = ("host", "graph")


@dataclass(frozen=True, kw_only=True)
class GraphCollectiveTuning:
    """The fixed terms of a collective issued inside a compiled graph; the bandwidth terms (link, DMA and
    EFA efficiencies) stay those of the generation's CollectiveTuning, except `link_efficiency` when given.
    Intranode doc (SDK neuron-runtime/explore/intranode-collective-comm.rst): "the latency term is of 10^0 to
    10^1 us magnitude", "per-hop latency of Ring/KangaRing is about 1-2 us", and Mesh is a single-step
    (one-hop) algorithm, so a Mesh step pays one hop whatever its peer count.
    launch_s and trn1's link_efficiency [fitted] by benchmarks/fit_plan.py to the trainium-scale.md §2 rows
    (docs/calibration.md "Model-level constants"): launch_s bounded to the doc's latency term [1, 10] us;
    link_efficiency only on trn1, whose nccom-test rows never move a large message between the chips of an
    instance (their fit leaves the NeuronLink efficiency undetermined), bounded to (0.1, 1]."""
    launch_s: float                  # per collective: semaphores, descriptor rings, completion (no host)
    hop_s: float = 1.5e-6            # per algorithm step (intranode doc: "about 1-2 us" per hop) [not fitted]
    link_efficiency: Optional[float] = None    # achieved fraction of NeuronLink bandwidth (None: the host fit's)

    def __post_init__(self):
        for name in ("launch_s", "hop_s"):
            if not getattr(self, name) >= 0:
                raise _error(f"GraphCollectiveTuning: {name} must be >= 0, got {getattr(self, name)!r}")
        if self.link_efficiency is not None and not 0 < self.link_efficiency <= 1:
            raise _error(f"GraphCollectiveTuning: link_efficiency must be in (0, 1], got {self.link_efficiency!r}")

    def apply(self, host: CollectiveTuning) -> CollectiveTuning:
        """The CollectiveTuning of an in-graph collective: its own launch, no separate reducing launch, one
        hop per step and no per-peer serialisation (Mesh writes its peers in one step); bandwidth terms
        unchanged but for a given link efficiency. collective_cost never prices an in-graph collective above
        the same collective launched alone (a graph removes host work; it adds none)."""
        return replace(host, launch_s=self.launch_s, reduce_launch_s=0.0,
                       step_s=min(self.hop_s, host.step_s), peer_s=0.0,
                       link_efficiency=self.link_efficiency or host.link_efficiency)


# [fitted] benchmarks/fit_plan.py (docs/calibration.md "Model-level constants"), keyed by NeuronCore version:
# one launch for every generation (the calibration rows are trn1's; no trn2/trn3 model-level latency row
# exists); the NeuronLink efficiency only for trn1 (trn2's is held by its nccom-test rows).
GRAPH_LAUNCH_S = 1.0e-6
GRAPH_TUNINGS = {2: GraphCollectiveTuning(launch_s=GRAPH_LAUNCH_S, link_efficiency=0.571),
                 3: GraphCollectiveTuning(launch_s=GRAPH_LAUNCH_S)}
GRAPH_TUNINGS[4] = GRAPH_TUNINGS[3]
GRAPH_TUNING = GRAPH_TUNINGS[2]


def graph_tuning_for(system: SystemSpec) -> GraphCollectiveTuning:
    return GRAPH_TUNINGS[system.chip.nc_version]


@dataclass(frozen=True)
class CollectiveCost:
    """One collective's latency, the algorithm chosen, and where the time goes: `phases` is a breakdown
    ((label, seconds), ...) summing to latency_s: launch, inside an instance, across the instances of an
    UltraServer, across nodes (an all-reduce runs its intra-instance part in two halves, RS then AG)."""
    latency_s: float
    algorithm: str
    op: str
    nbytes: int
    ranks: int
    phases: tuple = ()

    @property
    def latency_us(self) -> float:
        return self.latency_s * 1e6

    @property
    def algbw_bytes_per_s(self) -> float:
        return self.nbytes / self.latency_s if self.latency_s > 0 else 0.0

    @property
    def busbw_bytes_per_s(self) -> float:
        return self.algbw_bytes_per_s * busbw_factor(self.op, self.ranks)


def busbw_factor(op: str, ranks: int) -> float:
    """nccl-tests' bus-bandwidth factors, which nccom-test uses (SDK tools/neuron-sys-tools/nccom-test.rst;
    https://github.com/NVIDIA/nccl-tests/blob/master/doc/PERFORMANCE.md): all-reduce 2(n-1)/n,
    all-gather / reduce-scatter / all-to-all / all-to-allv (n-1)/n (nccom-test.rst's table), permute and
    send/recv 1."""
    n = ranks
    if op == "all-reduce":
        return 2 * (n - 1) / n
    if op in ("all-gather", "reduce-scatter", "all-to-all", "all-to-allv"):
        return (n - 1) / n
    return 1.0


# Traffic of each reducing/gathering collective in passes of (n-1)/n x size per rank (AR = RS + AG).
_PASSES = {"all-reduce": 2, "all-gather": 1, "reduce-scatter": 1}
_REDUCING = ("all-reduce", "reduce-scatter")


@dataclass(frozen=True)
class _Group:
    """n ranks of one instance: p ranks per chip on c chips."""
    n: int
    p: int
    c: int


def _torus_distance(shape: tuple, c: int) -> float:
    """Mean hop count between distinct chips among the first c of a torus (row-major placement)."""
    if c <= 1:
        return 0.0
    rows, cols = shape
    coords = [(i // cols, i % cols) for i in range(c)]

    def d(a, b, size):
        k = abs(a - b)
        return min(k, size - k)

    total = sum(d(a[0], b[0], rows) + d(a[1], b[1], cols) for a in coords for b in coords if a != b)
    return total / (c * (c - 1))


def _ring_cycles(system: SystemSpec, c: int) -> int:
    """Directed cycles a Ring runs on disjoint links: all the chip's links when the group fills the torus
    (2 Hamiltonian cycles, both directions; intranode doc), else the 2 directions of one ring."""
    fabric = system.chip_fabric
    if fabric.kind == "switch" or c >= system.chips_per_instance:
        return fabric.links_per_chip
    return 2


def _local_bytes_per_s(system: SystemSpec) -> float:
    """Rank to rank on one chip: the sending rank's DMA queues (ARCH/DMAG: 16 queues per core)."""
    chip = system.chip
    return system.lnc * chip.dma_queues * chip.dma_queue_bytes_per_s


def _reduce_bytes_per_s(system: SystemSpec) -> float:
    """The DMA engines reduce at 50% of copy throughput before NC-v4, at full throughput on NC-v4
    (SDK nki/guides/architecture/trainium3_arch.rst)."""
    return _local_bytes_per_s(system) * (1.0 if system.chip.nc_version >= 4 else 0.5)


def _reduce_seconds(system: SystemSpec, op: str, size: float, frac: float, itemsize: int) -> float:
    """A rank's reduction: the DMA engines compute in fp32 whatever the data type (SDK
    nki/api/generated/nki.isa.dma_compute, "Input tensors are automatically cast ... to float32"), so the cost
    is per element: an element of `itemsize` bytes costs a 4-byte fp32 element's time."""
    if op not in _REDUCING:
        return 0.0
    return frac * size * 4 / itemsize / _reduce_bytes_per_s(system)


def _sliced(transfer_s: float, reduce_s: float) -> float:
    """A transfer and its reduction in two slices, the first slice's reduction overlapping the second's
    transfer (intranode doc, Ring ReduceScatter)."""
    return (transfer_s + reduce_s + max(transfer_s, reduce_s)) / 2


def _intra_algorithms(system: SystemSpec, op: str, size: float, g: _Group, t: CollectiveTuning,
                      itemsize: int = 4) -> dict:
    """{algorithm: seconds} of every algorithm eligible for op over one instance's ranks (no launch time)."""
    m = _PASSES[op]
    frac = (g.n - 1) / g.n
    local_bw = _local_bytes_per_s(system) * t.local_efficiency
    reduce_s = _reduce_seconds(system, op, size, frac, itemsize)
    if g.c == 1:   # one chip: direct writes between its cores
        mesh = m * (t.step_s + (g.n - 1) * t.peer_s) + _sliced(m * frac * size / local_bw, reduce_s)
        if op == "all-reduce":
            mesh = min(mesh, _single_step_mesh(system, size, g, t, local_bw, itemsize))
        return {"mesh": mesh}
    fabric = system.chip_fabric
    link_bw = fabric.link.bytes_per_s * t.link_efficiency
    local_s = m * (g.p - 1) / g.p * size / local_bw
    # Ring: every chip boundary carries m (n-1)/n size, split over the disjoint directed cycles; the hops
    # between the ranks of a chip run at the same time on the ranks' DMA queues.
    link_s = m * frac * size / (_ring_cycles(system, g.c) * link_bw)
    out = {"ring": m * (g.n - 1) * t.step_s + _sliced(max(link_s, local_s), reduce_s)}
    if g.p >= 2:
        # KangaRing: only the primary rank of each pair is in the cycle (half the hops); it reads its
        # secondary's chunk and writes both copies in one 1R2W DMA, so there is no separate on-chip pass.
        out["kangaring"] = m * (g.n // 2) * t.step_s + _sliced(link_s, reduce_s)
    # Mesh: each chip writes its (c-1)/c share straight to every other chip, routed (over-subscribed links).
    hops = 1.0 if fabric.kind == "switch" else _torus_distance(fabric.shape, g.c)
    peers = math.ceil((g.c - 1) / g.p) + (g.p - 1)
    mesh_bw_s = m * (g.c - 1) / g.c * size * hops / (fabric.links_per_chip * link_bw)
    out["mesh"] = m * (t.step_s + peers * t.peer_s) + _sliced(mesh_bw_s + local_s, reduce_s)
    if fabric.kind == "torus2d" and g.c & (g.c - 1) == 0:
        # RDH: log2(c) exchanges, one torus axis (one link) each, plus one intra-chip stage.
        steps = int(math.log2(g.c)) + (1 if g.p > 1 else 0)
        out["rdh"] = m * steps * t.step_s + _sliced(m * (g.c - 1) / g.c * size / link_bw + local_s, reduce_s)
    return out


def _single_step_mesh(system, size, g, t, local_bw, itemsize) -> float:
    """Single-step Mesh all-reduce (intranode doc): every rank writes its whole buffer to every peer in one
    hop and reduces the n-1 copies it receives; the runtime's choice when that beats RS + AG."""
    reduce_s = _reduce_seconds(system, "all-reduce", size, g.n - 1, itemsize)
    return t.step_s + (g.n - 1) * t.peer_s + _sliced((g.n - 1) * size / local_bw, reduce_s)


def _pick(costs: dict, chunk: float, forced: Optional[str]) -> tuple:
    """The runtime's choice by per-rank chunk size, among the eligible algorithms (or the forced one)."""
    if forced is not None:
        if forced not in costs:
            raise _error(f"collective: algorithm {forced!r} is not available here; valid values: "
                         f"{', '.join(costs)}")
        return costs[forced], forced
    if "mesh" in costs and (chunk < MESH_CHUNK_BYTES or len(costs) == 1):
        name = "mesh"
    elif "rdh" in costs and chunk < RDH_CHUNK_BYTES:
        name = "rdh"
    else:
        name = "kangaring" if "kangaring" in costs else "ring"
    return costs[name], name


def _inter_algorithms(system: SystemSpec, op: str, size: float, groups: int, t: CollectiveTuning,
                      efa_instances: int = 0) -> dict:
    """{algorithm: seconds} of the stage across `groups` instances of an UltraServer (efa_instances 0), or
    across `groups` nodes over EFA (efa_instances: the instances per node, each with its own NICs). Every rank
    runs its share with its peers; a node's whole m (groups-1)/groups x size goes through its links."""
    m = _PASSES[op]
    if efa_instances:
        bw = system.efa_bytes_per_s_per_instance * efa_instances * t.efa_efficiency
        step = t.efa_step_s
    else:   # the instances of an UltraServer: every chip's domain links
        fabric = system.domain_fabric
        bw = system.chips_per_instance * fabric.links_per_chip * fabric.link.bytes_per_s * t.link_efficiency
        step = t.step_s
    bw_s = m * (groups - 1) / groups * size / bw
    out = {"mesh": m * (step + (groups - 1) * t.peer_s) + bw_s * max(1.0, groups / 2), "ring":
           m * (groups - 1) * step + bw_s}
    if groups & (groups - 1) == 0:
        out["rdh"] = m * int(math.log2(groups)) * step + bw_s
    return out


def _placement(system: SystemSpec, ranks: int) -> tuple:
    """(the ranks of one instance, instances used per node, nodes used). As nccom-test's -r/-N: the ranks are
    spread evenly over the nodes (ranks / nodes each); inside a node they fill a chip, then the next chip,
    then the next instance of an UltraServer."""
    per_node = ranks // system.nodes
    per_inst = min(per_node, system.ranks_per_instance)
    p = min(per_inst, system.ranks_per_chip)
    group = _Group(n=per_inst, p=p, c=math.ceil(per_inst / p))
    return group, math.ceil(per_node / system.ranks_per_instance), system.nodes


def _hierarchical(system, op, size, ranks, t, forced, itemsize=4) -> tuple:
    """Intra RS, inter AR, intra AG for all-reduce (internode doc); AG: inter then intra; RS: intra then inter.
    Returns (seconds, algorithm name, phases)."""
    group, instances, nodes = _placement(system, ranks)
    chunk = size / ranks
    seconds, name = _pick(_intra_algorithms(system, op, size, group, t, itemsize), chunk, forced)
    names, phases = [name], [(f"instance:{name}", seconds)]
    for groups, efa_instances, scope in ((instances, 0, "ultraserver"), (nodes, instances, "efa")):
        if groups > 1:
            s, n = _pick(_inter_algorithms(system, op, size, groups, t, efa_instances), chunk, None)
            seconds, names = seconds + s, names + [n]
            phases.append((f"{scope}:{n}", s))
    return seconds, name if len(names) == 1 else "hier(" + "+".join(names) + ")", phases


def _flat_ring(system, op, size, ranks, t, itemsize=4) -> float:
    """Trn1 across instances: one ring over all ranks, a channel per EFA NIC (internode doc); every step
    waits for its EFA hop."""
    group, _, _ = _placement(system, ranks)
    m, frac = _PASSES[op], (ranks - 1) / ranks
    efa_s = m * frac * size / (system.efa_bytes_per_s_per_instance * t.efa_efficiency)
    if group.c > 1:
        link_s = m * frac * size / (_ring_cycles(system, group.c) * system.chip_fabric.link.bytes_per_s
                                    * t.link_efficiency)
    else:   # one chip per node (trn1.2xlarge): its hops on chip run on the cores' DMA queues
        link_s = m * frac * size / (_local_bytes_per_s(system) * t.local_efficiency)
    reduce_s = _reduce_seconds(system, op, size, frac, itemsize)
    return m * (ranks - 1) * t.efa_step_s + _sliced(max(efa_s, link_s), reduce_s)


def _all_to_all(system, size, ranks, t) -> float:
    """Direct writes to every peer: the busiest of the rank's DMA, the chip's links, the instance's EFA."""
    group, _, nodes = _placement(system, ranks)
    bw_s = size * (ranks - 1) / ranks / (_local_bytes_per_s(system) * t.local_efficiency)
    if system.chip_fabric.kind != "none" and group.c > 1:
        off_chip = group.p * size * (ranks - group.p) / ranks
        link_bw = system.chip_fabric.link.bytes_per_s * t.link_efficiency
        bw_s = max(bw_s, off_chip / (system.chip_fabric.links_per_chip * link_bw))
    if nodes > 1:
        off_node = group.n * size * (ranks - group.n) / ranks
        bw_s = max(bw_s, off_node / (system.efa_bytes_per_s_per_instance * t.efa_efficiency))
    step = t.efa_step_s if nodes > 1 else t.step_s
    return step + (ranks - 1) * t.peer_s + bw_s


def _all_to_all_v(system, counts: np.ndarray, ranks, t, itemsize) -> float:
    """All-to-allv moves what its counts send, not the buffer: the slowest of the busiest rank's DMA (what it
    sends or receives), the busiest chip's links (what leaves or enters it) and the busiest instance's EFA
    (what leaves or enters an instance of a multi-node run), as _all_to_all with its even parts; a rank's part for itself is a copy
    in its own HBM (not counted, as the (n-1)/n of the even case). Every rank still pays a step and a peer
    for each other rank: the counts are exchanged with all of them (nki.collectives.all_to_all_v: counts
    "known only at execution time")."""
    sent = counts.astype(float) * itemsize
    np.fill_diagonal(sent, 0.0)
    bw_s = max(sent.sum(axis=1).max(), sent.sum(axis=0).max()) / (_local_bytes_per_s(system) * t.local_efficiency)
    group, _, nodes = _placement(system, ranks)
    where = np.array([_where(system, ranks, r) for r in range(ranks)])     # (node, instance, chip) per rank
    if system.chip_fabric.kind != "none" and group.c > 1:
        link_bw = system.chip_fabric.links_per_chip * system.chip_fabric.link.bytes_per_s * t.link_efficiency
        bw_s = max(bw_s, _busiest_boundary(sent, _domains(where)) / link_bw)
    if nodes > 1:
        efa_bw = system.efa_bytes_per_s_per_instance * t.efa_efficiency
        bw_s = max(bw_s, _busiest_boundary(sent, _domains(where[:, :2])) / efa_bw)    # per instance, its own NICs
    step = t.efa_step_s if nodes > 1 else t.step_s
    return float(step + (ranks - 1) * t.peer_s + bw_s)


def _domains(places: np.ndarray) -> np.ndarray:
    """One integer per rank naming its domain: ranks with equal rows of `places` share it."""
    return np.unique(places, axis=0, return_inverse=True)[1].reshape(-1)


def _busiest_boundary(sent: np.ndarray, domain: np.ndarray) -> float:
    """The most bytes that leave or enter one domain (a chip, a node) of the ranks."""
    cross = sent * (domain[:, None] != domain[None, :])
    return max(max(cross[domain == d].sum(), cross[:, domain == d].sum()) for d in np.unique(domain))


def _where(system: SystemSpec, ranks: int, rank: int) -> tuple:
    """(node, instance, chip) of a rank placed as _placement places them."""
    per_node = ranks // system.nodes
    node, idx = divmod(rank, per_node)
    instance, in_inst = divmod(idx, system.ranks_per_instance)
    return node, instance, in_inst // system.ranks_per_chip


def _pair_seconds(system, ranks, src, dst, size, t) -> float:
    """One rank's whole buffer to another: over the chip's DMA, a NeuronLink path (one link, a step per torus
    hop), the UltraServer's Z links, or one EFA NIC."""
    if src == dst:
        return 0.0
    a, b = _where(system, ranks, src), _where(system, ranks, dst)
    if a[0] != b[0]:
        nic_bw = system.efa_bytes_per_s_per_instance / system.efa_nics_per_instance
        return t.efa_step_s + size / (nic_bw * t.efa_efficiency)
    if a[1] != b[1]:
        return t.step_s + size / (system.domain_fabric.link.bytes_per_s * t.link_efficiency)
    if a[2] != b[2]:
        fabric = system.chip_fabric
        hops = 1 if fabric.kind == "switch" else _torus_hops(fabric.shape, a[2], b[2])
        return hops * t.step_s + size / (fabric.link.bytes_per_s * t.link_efficiency)
    return t.step_s + size / (_local_bytes_per_s(system) * t.local_efficiency)


def _torus_hops(shape: tuple, x: int, y: int) -> int:
    rows, cols = shape
    dr, dc = abs(x // cols - y // cols), abs(x % cols - y % cols)
    return min(dr, rows - dr) + min(dc, cols - dc)


def _permute(system, size, ranks, pairs, t) -> float:
    """Every pair at once, each on its own path (the circular permute the runtime supports puts one pair on
    each chip boundary): the slowest pair."""
    for pair in pairs:
        if not all(0 <= r < ranks for r in pair):
            raise _error(f"collective: permute pair {tuple(pair)} names a rank outside 0..{ranks - 1}")
    return t.peer_s + max((_pair_seconds(system, ranks, s, d, size, t) for s, d in pairs), default=0.0)


def collective_cost(op: str, nbytes: int, ranks: int, system: "str | SystemSpec" = "trn2.48xlarge",
                    tuning: Optional[CollectiveTuning] = None, algorithm: Optional[str] = None,
                    pairs: Optional[Sequence[tuple]] = None, itemsize: int = 4, launch: str = "host",
                    graph_tuning: Optional[GraphCollectiveTuning] = None,
                    release: Optional[str] = None, counts=None) -> CollectiveCost:
    """Latency of one collective of `nbytes` over the first `ranks` ranks of `system` (nothing else running).
    nbytes is nccom-test's size: the all-reduce buffer, the all-gather output, the reduce-scatter input, the
    all-to-all buffer, the permuted buffer. `algorithm` forces the algorithm inside an instance (what-ifs).
    `pairs`: the (source, target) ranks of a permute (default: the ring r -> r+1) or send-recv (default 0 -> 1).
    `counts`: an all-to-allv's send counts in elements of `itemsize` bytes (an n x n matrix, or one row for
    every rank, as nccom-test's metadata); the cost moves those bytes (default: nbytes split evenly, all-to-all).
    `itemsize`: bytes per element (nccom-test's -d; 4 = fp32): a reduction costs per element.
    `launch`: "host" (a stand-alone launch, as nccom-test measures) or "graph" (a node of a compiled graph:
    the fixed terms of `graph_tuning`, default GRAPH_TUNINGS[generation], over the bandwidth terms of `tuning`).
    `release`: a runtime release whose fixed costs to use (RELEASES; default: those of the fit rows' releases,
    2.10 on trn1, 2.24-2.28 on trn2); ignored when `tuning` is given."""
    system = get_system(system)
    if op not in OPS:
        raise _error(f"collective: op must be one of {'|'.join(OPS)}, got {op!r}")
    if launch not in LAUNCHES:
        raise _error(f"collective: launch must be one of {'|'.join(LAUNCHES)}, got {launch!r}")
    if not (isinstance(ranks, (int, np.integer)) and 2 <= ranks <= system.ranks and ranks % system.nodes == 0):
        raise _error(f"collective: ranks must be an integer in 2..{system.ranks} and a multiple of the "
                     f"{system.nodes} nodes of {system.nodes} x {system.name}, got {ranks!r}")
    if not (isinstance(nbytes, (int, np.integer)) and nbytes >= 0):
        raise _error(f"collective: nbytes must be an integer >= 0, got {nbytes!r}")
    if itemsize not in (1, 2, 4):
        raise _error(f"collective: itemsize must be 1, 2 or 4 bytes per element, got {itemsize!r}")
    if counts is not None:
        counts = _checked_counts(op, counts, ranks, nbytes, itemsize)
    t = tuning or tuning_for(system, release)
    if launch == "graph":
        # a graph removes the host's work and adds none: never above the same collective launched alone
        kwargs = dict(tuning=t, algorithm=algorithm, pairs=pairs, itemsize=itemsize, counts=counts)
        graph = collective_cost(op, nbytes, ranks, system, launch="host",
                                **{**kwargs, "tuning": (graph_tuning or graph_tuning_for(system)).apply(t)})
        host = collective_cost(op, nbytes, ranks, system, launch="host", **kwargs)
        return graph if graph.latency_s <= host.latency_s else host
    size, ranks = float(nbytes), int(ranks)
    if op in ("all-to-all", "all-to-allv", "permute", "send-recv"):
        if op == "all-to-allv" and counts is not None:
            seconds, name = _all_to_all_v(system, counts, ranks, t, itemsize), "mesh"
        elif op.startswith("all-to-all"):
            seconds, name = _all_to_all(system, size, ranks, t), "mesh"
        else:
            default = ring_pairs(ranks) if op == "permute" else [(0, 1)]
            seconds, name = _permute(system, size, ranks, pairs if pairs is not None else default, t), "direct"
        if algorithm not in (None, name):
            raise _error(f"collective: algorithm {algorithm!r} is not available for {op}; valid values: {name}")
        phases = [(name, seconds)]
    elif (algorithm in (None, "flat-ring") and system.chip.nc_version == 2 and _placement(system, ranks)[2] > 1
          and (size >= FLAT_RING_BYTES or algorithm == "flat-ring")):
        seconds, name = _flat_ring(system, op, size, ranks, t, itemsize), "flat-ring"
        phases = [(name, seconds)]
    else:
        seconds, name, phases = _hierarchical(system, op, size, ranks, t, algorithm, itemsize)
    fixed = t.launch_s + (t.reduce_launch_s if op in _REDUCING else 0.0)
    return CollectiveCost(latency_s=fixed + seconds, algorithm=name, op=op, nbytes=int(nbytes), ranks=ranks,
                          phases=(("launch", fixed), *phases))


def _checked_counts(op: str, counts, ranks: int, nbytes: int, itemsize: int) -> np.ndarray:
    if op != "all-to-allv":
        raise _error(f"collective: counts are an all-to-allv's send counts; {op} takes none")
    matrix = counts_matrix(counts, int(ranks))
    sent = matrix.sum(axis=1) * itemsize
    worst = int(np.argmax(sent))
    if sent[worst] > nbytes:
        raise _error(f"collective: all-to-allv rank {worst} sends {int(sent[worst])} B ({int(matrix[worst].sum())} "
                     f"elements of {itemsize} B), more than the {nbytes} B buffer")
    return matrix


# ------------------------------------------------------------------------------------------------------
# The collectives as ISA-level definitions: semantics and cost in one frozen object each.
# ------------------------------------------------------------------------------------------------------

@dataclass(frozen=True, kw_only=True)
class Collective:
    """One collective with its attributes: `execute(inputs)` is its numpy semantics over the per-rank arrays,
    `cost(nbytes, ranks, system)` its latency there, `nbytes(inputs)` nccom-test's size of a call."""
    name: ClassVar[str]

    def execute(self, inputs: Sequence[np.ndarray]) -> list:
        raise NotImplementedError

    def nbytes(self, inputs: Sequence[np.ndarray]) -> int:
        """nccom-test's size: one rank's buffer (the all-gather's output: every rank's input)."""
        one = np.asarray(inputs[0]).nbytes
        return one * len(inputs) if self.name == "all-gather" else one

    def cost(self, nbytes: int, ranks: int, system: "str | SystemSpec" = "trn2.48xlarge",
             tuning: Optional["CollectiveTuning"] = None, algorithm: Optional[str] = None) -> "CollectiveCost":
        return collective_cost(self.name, nbytes, ranks, system, tuning, algorithm)

    def busbw_factor(self, ranks: int) -> float:
        return busbw_factor(self.name, ranks)


def _check_reduce_op(name: str, op: str) -> None:
    if op not in REDUCE_OPS:
        raise _error(f"{name}: op must be one of {'|'.join(REDUCE_OPS)}, got {op!r}")


@dataclass(frozen=True, kw_only=True)
class AllReduce(Collective):
    name: ClassVar[str] = "all-reduce"
    op: str = "add"

    def __post_init__(self):
        _check_reduce_op(self.name, self.op)

    def execute(self, inputs):
        return all_reduce(inputs, op=self.op)


@dataclass(frozen=True, kw_only=True)
class AllGather(Collective):
    name: ClassVar[str] = "all-gather"
    axis: int = 0

    def execute(self, inputs):
        return all_gather(inputs, axis=self.axis)


@dataclass(frozen=True, kw_only=True)
class ReduceScatter(Collective):
    name: ClassVar[str] = "reduce-scatter"
    op: str = "add"
    axis: int = 0

    def __post_init__(self):
        _check_reduce_op(self.name, self.op)

    def execute(self, inputs):
        return reduce_scatter(inputs, op=self.op, axis=self.axis)


@dataclass(frozen=True, kw_only=True)
class AllToAll(Collective):
    name: ClassVar[str] = "all-to-all"
    axis: int = 0

    def execute(self, inputs):
        return all_to_all(inputs, axis=self.axis)


@dataclass(frozen=True, kw_only=True)
class AllToAllV(Collective):
    """send_counts: an n x n matrix (or one row for every rank) of elements along `axis`; empty: even parts.
    send_displs / recv_displs: n x n (row i: rank i's), empty: packed in rank order. recv_counts_known and
    has_rdispls: nki.collectives.all_to_all_v's flags (which rows its metadata tensor has)."""
    name: ClassVar[str] = "all-to-allv"
    send_counts: tuple = ()
    send_displs: tuple = ()
    recv_displs: tuple = ()
    recv_counts_known: bool = False
    has_rdispls: bool = False
    axis: int = 0

    def execute(self, inputs):
        if not self.send_counts:
            return all_to_all(inputs, axis=self.axis)
        return all_to_all_v(inputs, axis=self.axis, send_counts=self.send_counts,
                            send_displs=self.send_displs or None, recv_displs=self.recv_displs or None)

    def received(self, inputs: Sequence[np.ndarray], position: int) -> list:
        """(offset, values) of each part rank `position` receives, the ranks' buffers taken flat (as
        nki.collectives.all_to_all_v: "treats tensors as flat element buffers"), in rank order."""
        flat = [np.ravel(a) for a in inputs]
        n = len(flat)
        counts = counts_matrix(self.send_counts, n)
        got = all_to_all_v(flat, send_counts=counts, send_displs=self.send_displs or None)[position]
        column = counts[:, position]
        starts = np.cumsum(column) - column
        at = (counts_matrix(self.recv_displs, n)[position] if self.recv_displs else starts)
        return [(int(at[i]), got[starts[i]:starts[i] + column[i]]) for i in range(n)]

    def cost(self, nbytes, ranks, system="trn2.48xlarge", tuning=None, algorithm=None, itemsize: int = 4):
        return collective_cost(self.name, nbytes, ranks, system, tuning, algorithm, itemsize=itemsize,
                               counts=self.send_counts or None)


@dataclass(frozen=True, kw_only=True)
class Permute(Collective):
    """pairs: (source, target) ranks; empty means the circular shift r -> r+1 the runtime supports."""
    name: ClassVar[str] = "permute"
    pairs: tuple = ()

    def execute(self, inputs):
        return permute(inputs, self.pairs or ring_pairs(len(inputs)))


@dataclass(frozen=True, kw_only=True)
class SendRecv(Collective):
    name: ClassVar[str] = "send-recv"
    src: int = 0
    dst: int = 1

    def execute(self, inputs):
        return send_recv(inputs, self.src, self.dst)


COLLECTIVES = {c.name: c for c in (AllReduce, AllGather, ReduceScatter, AllToAll, AllToAllV, Permute, SendRecv)}


__all__ = ["OPS", "REDUCE_OPS", "all_reduce", "all_gather", "reduce_scatter", "all_to_all", "all_to_all_v",
           "counts_matrix", "permute", "send_recv", "ring_pairs", "CollectiveTuning", "TUNINGS", "tuning_for",
           "RELEASE_OVERRIDES", "RELEASES", "with_release",
           "LAUNCHES", "GraphCollectiveTuning", "GRAPH_TUNING", "GRAPH_TUNINGS", "graph_tuning_for", "CollectiveCost",
           "collective_cost", "busbw_factor", "INTRA_ALGORITHMS", "Collective", "AllReduce", "AllGather",
           "ReduceScatter", "AllToAll", "AllToAllV", "Permute", "SendRecv", "COLLECTIVES"]
