"""The published nccom-test measurements (the calibration set of the collective model) and their comparison.

Source of every row: SDK tools/neuron-sys-tools/nccom-test.rst, https://github.com/aws-neuron/aws-neuron-sdk/
blob/master/tools/neuron-sys-tools/nccom-test.rst, as collected in trainium-scale.md §1.4. nccom-test sizes
are binary (its "32 MB" is 33,554,432 bytes: 32 MiB / 768 us = 40.69 GiB/s, the row's busbw) and its GB/s
are GiB/s. The doc never names the instance type; `system` is our inference (see the comments on ROWS).
ROWS are the fit rows: the rows trainium-scale.md §1.4 quotes, its calibration set for collectives (§2: the
collective constants are fitted to these only). VALIDATION_ROWS are the other sizes of the same example
tables and one more example (the doc at commit 81ce03a, 2026-08-21): never fitted to. Every row carries the
SDK release that added its example (the doc's git history); predict() uses that release's fixed costs where
they were measured apart (trnlab.isa.collectives.RELEASE_OVERRIDES). The multi-stream rows
are that example's stream 0, a bf16 all-reduce over 16-rank replica groups (the doc's streams json and "The
first output block belongs to stream 0"), which trainium-scale.md §1.4 lists as a 64-rank all-gather; its
stream 1 (a 64-rank all-gather beside it, 258 us) is left out: the model times one collective alone.
"""
from __future__ import annotations

from dataclasses import dataclass

KiB, MiB, GiB = 1024, 1024 ** 2, 1024 ** 3

ITEMSIZE = {"uint8": 1, "fp16": 2, "bf16": 2, "fp32": 4}
LARGE_BYTES = 4 * MiB        # at or above: a bandwidth row (done when within 25%)
FLOOR_BYTES = 64 * KiB       # at or below: a latency floor (done when within 50%); between: mid (50%)


@dataclass(frozen=True)
class NccomRow:
    op: str
    ranks: int
    nodes: int
    nbytes: int
    time_us: float
    system: str
    example: str               # which example of the doc
    algorithm: str = ""        # the algorithm nccom-test --show-algorithm printed, when it did
    dtype: str = "fp32"
    role: str = "fit"          # fit | validate
    pairs: tuple = ()          # a permute's (source, target) ranks, as the example's pairs.json
    release: str = ""          # the SDK release that added the example to the doc (its git history)
    counts: tuple = ()         # an all-to-allv's send counts (elements; one row for every rank), as its metadata

    @property
    def kind(self) -> str:
        if self.nbytes >= LARGE_BYTES:
            return "large"
        return "floor" if self.nbytes <= FLOOR_BYTES else "mid"

    @property
    def tolerance(self) -> float:
        return 0.25 if self.kind == "large" else 0.50


_T1, _T2 = "trn1.32xlarge", "trn2.48xlarge"
# the permute example's pairs.json: 0 <-> 1, 2 <-> 3 swap, 4..7 keep their data
_SWAPS = ((0, 1), (1, 0), (2, 3), (3, 2), (4, 4), (5, 5), (6, 6), (7, 7))
# 2 ranks / 1 node: the default example (`nccom-test -r 2 allr`), trn1 era; 2 ranks = the 2 cores of one chip.
# 16 ranks with --show-algorithm: KangaRing is trn2 LNC=2's algorithm (intranode doc) -> trn2.48xlarge, 4 chips.
# 32-rank all-gather, older example: 32 ranks fill trn1.32xlarge. The newer example (same command, 25x faster),
# the percentile, multi-stream and all-to-allv examples and the permute: newer doc era -> trn2.48xlarge (LNC=2)
# [inferred]. 64 ranks / 2 nodes: 32 ranks per host -> trn1.32xlarge. Release that added each example (the
# doc's git history): 2.10 (2023-05) the 2-rank, older 32-rank and 2-node ones; 2.24 the newer 32-rank;
# 2025-11 the permute; 2.28 --show-algorithm, percentiles, all-to-allv; 2.32 multi-stream, all_gatherv.
ROWS: tuple = (
    NccomRow("all-reduce", 2, 1, 32 * MiB, 768, _T1, "default example", dtype="uint8", release="2.10"),
    NccomRow("all-reduce", 2, 1, 1 * KiB, 58, _T1, "2-rank sweep", release="2.10"),
    NccomRow("all-reduce", 2, 1, 64 * KiB, 58, _T1, "2-rank sweep", release="2.10"),
    NccomRow("all-reduce", 2, 1, 4 * MiB, 107, _T1, "2-rank sweep", release="2.10"),
    NccomRow("all-reduce", 2, 1, 64 * MiB, 1214, _T1, "2-rank sweep", release="2.10"),
    NccomRow("all-reduce", 2, 1, 1 * GiB, 18930, _T1, "2-rank sweep", release="2.10"),
    NccomRow("all-reduce", 16, 1, 4, 300, _T2, "--show-algorithm", "mesh", release="2.28"),
    NccomRow("all-reduce", 16, 1, 8 * KiB, 300, _T2, "--show-algorithm", "mesh", release="2.28"),
    NccomRow("all-reduce", 16, 1, 128 * KiB, 574, _T2, "--show-algorithm", "mesh", release="2.28"),
    NccomRow("all-reduce", 16, 1, 2 * MiB, 686, _T2, "--show-algorithm", "rdh", release="2.28"),
    NccomRow("all-reduce", 16, 1, 32 * MiB, 2754, _T2, "--show-algorithm", "kangaring", release="2.28"),
    NccomRow("all-reduce", 16, 1, 512 * MiB, 9690, _T2, "--show-algorithm", "kangaring", release="2.28"),
    NccomRow("all-gather", 32, 1, 1 * KiB, 151, _T1, "older all-gather", release="2.10"),
    NccomRow("all-gather", 32, 1, 512 * KiB, 179, _T1, "older all-gather", release="2.10"),
    NccomRow("all-gather", 32, 1, 1 * KiB, 6.16, _T2, "--show-input-output-size", release="2.24"),
    NccomRow("all-gather", 32, 1, 512 * KiB, 23.16, _T2, "--show-input-output-size", release="2.24"),
    NccomRow("all-gather", 8, 1, 1 * KiB, 10.0, _T2, "percentiles", release="2.28"),
    NccomRow("all-gather", 8, 1, 512 * KiB, 14.83, _T2, "percentiles", release="2.28"),
    NccomRow("all-reduce", 16, 1, 1 * KiB, 101.14, _T2, "multi-stream, stream 0", dtype="bf16", release="2.32"),
    NccomRow("all-reduce", 16, 1, 1 * MiB, 117.67, _T2, "multi-stream, stream 0", dtype="bf16", release="2.32"),
    NccomRow("permute", 8, 1, 32 * MiB, 894, _T2, "custom pairs", dtype="uint8", pairs=_SWAPS, release="2025-11"),
    NccomRow("all-reduce", 64, 2, 8, 520, _T1, "2 nodes", release="2.10"),
    NccomRow("all-reduce", 64, 2, 1 * MiB, 1328, _T1, "2 nodes", release="2.10"),
    NccomRow("all-reduce", 64, 2, 16 * MiB, 2138, _T1, "2 nodes", release="2.10"),
    NccomRow("all-reduce", 64, 2, 128 * MiB, 6279, _T1, "2 nodes", release="2.10"),
    NccomRow("all-reduce", 64, 2, 1 * GiB, 41806, _T1, "2 nodes", release="2.10"),
    # all-to-allv: size 1,048,608 B (1 MiB + its 4 x 2 uint32 metadata words); its alltoallv_metadata.json (one
    # entry: every rank) sends 512 fp32 elements to rank 0 and 1,024 to rank 1
    NccomRow("all-to-allv", 2, 2, 1048608, 955, _T2, "all-to-allv, 2 nodes", release="2.28",
             counts=(512, 1024)),
)



def _validate(op, ranks, nodes, system, example, points, release):
    return tuple(NccomRow(op, ranks, nodes, nbytes, us, system, example, role="validate", release=release)
                 for nbytes, us in points)


# The sizes of the same tables that §1.4 does not quote, and the all_gatherv example (SDK nccom-test.rst at
# commit 81ce03a; the 2-rank, older 32-rank and 2-node tables are also in the older f25691d).
VALIDATION_ROWS: tuple = (
    _validate("all-reduce", 2, 1, _T1, "2-rank sweep", [(4 * KiB, 58), (16 * KiB, 58), (256 * KiB, 60),
                                                        (1 * MiB, 68), (16 * MiB, 332), (256 * MiB, 4750)], "2.10")
    + _validate("all-gather", 32, 1, _T1, "older all-gather", [(8 * KiB, 149), (64 * KiB, 150)], "2.10")
    + _validate("all-reduce", 64, 2, _T1, "2 nodes", [
        (16, 520), (32, 523), (64, 525), (128, 553), (256, 709), (512, 782), (1 * KiB, 840), (2 * KiB, 881),
        (4 * KiB, 916), (8 * KiB, 1013), (16 * KiB, 1031), (32 * KiB, 1174), (64 * KiB, 1315), (128 * KiB, 1315),
        (256 * KiB, 1311), (512 * KiB, 1312), (2 * MiB, 1329), (4 * MiB, 1378), (8 * MiB, 1419),
        (32 * MiB, 2711), (64 * MiB, 3963), (256 * MiB, 11954), (512 * MiB, 21803)], "2.10")
    + _validate("all-reduce", 16, 1, _T2, "--show-algorithm", [(32, 299.69), (512, 299.82)], "2.28")
    + _validate("all-gather", 32, 1, _T2, "--show-input-output-size", [(8 * KiB, 6.48), (64 * KiB, 8.17)], "2.24")
    + _validate("all-gather", 8, 1, _T2, "percentiles", [(8 * KiB, 10.22), (64 * KiB, 11.31)], "2.28")
    + _validate("all-gather", 4, 1, _T2, "all_gatherv (fp16, 4 ranks)", [(2 * KiB, 16.28)], "2.32")
    + tuple(NccomRow("all-reduce", 16, 1, nbytes, us, _T2, "multi-stream, stream 0", dtype="bf16", role="validate",
                     release="2.32")
            for nbytes, us in [(2 * KiB, 101.93), (4 * KiB, 101.45), (8 * KiB, 101.84), (16 * KiB, 102.21),
                               (32 * KiB, 102.36), (64 * KiB, 103.28), (128 * KiB, 105.03), (256 * KiB, 107.37),
                               (512 * KiB, 110.07)]))


def predict(row: NccomRow, tuning=None, overrides=None):
    """The model's CollectiveCost for a row (on its inferred system, `nodes` of them, with the fixed costs of the
    runtime release that measured it). `tuning`: the generation's constants (default the fitted ones);
    `overrides`: per-release fixed costs as collectives.RELEASE_OVERRIDES (default that)."""
    from trnlab.hw.systems import cluster
    from trnlab.isa.collectives import RELEASES, collective_cost, tuning_for, with_release
    system = cluster(row.system, row.nodes)
    release = row.release if row.release in RELEASES else None
    t = with_release(tuning or tuning_for(system), system.chip.nc_version, release, overrides)
    return collective_cost(row.op, row.nbytes, row.ranks, system, t, pairs=row.pairs or None,
                           itemsize=ITEMSIZE[row.dtype], counts=row.counts or None)


def table(tunings=None, rows=ROWS, overrides=None) -> list:
    """One dict per row: measured, predicted, error, tolerance, pass. `tunings`: {nc_version: CollectiveTuning}
    and `overrides` (as collectives.RELEASE_OVERRIDES) to try other constants (default: the fitted ones)."""
    from trnlab.hw.systems import get_system
    out = []
    for row in rows:
        tuning = tunings.get(get_system(row.system).chip.nc_version) if tunings else None
        cost = predict(row, tuning, overrides)
        err = cost.latency_us / row.time_us - 1
        out.append({"role": row.role, "op": row.op, "ranks": row.ranks, "nodes": row.nodes, "bytes": row.nbytes,
                    "system": row.system, "example": row.example, "kind": row.kind,
                    "release": row.release, "measured_us": row.time_us, "predicted_us": round(cost.latency_us, 2),
                    "error": round(err, 4), "tolerance": row.tolerance, "ok": abs(err) <= row.tolerance,
                    "algorithm": cost.algorithm, "published_algorithm": row.algorithm})
    return out
