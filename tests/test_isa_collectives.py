"""Collectives: semantics against independent numpy oracles (index arithmetic, float64 sums), bus-bandwidth
factors against nccl-tests' table, the algorithm picks and latencies against the nccom-test rows of
trainium-scale.md §1.4. Every one of those rows is a fit row (the collective constants are fitted to them
only, benchmarks/fit_collectives.py); the issue-11 tolerances are 25% for large messages, 50% otherwise."""
import dataclasses

import ml_dtypes
import numpy as np
import pytest

from trnlab.bench.collective_points import ROWS, VALIDATION_ROWS, predict
from trnlab.errors import CollectiveError
from trnlab.hw.systems import cluster, get_system
from trnlab.isa import collectives as cc

RNG = np.random.default_rng(11)
DTYPES = [np.float32, np.int32, ml_dtypes.bfloat16, np.uint8]


def _inputs(n, shape, dtype):
    if np.dtype(dtype).kind in "iu":
        return [RNG.integers(0, 50, size=shape).astype(dtype) for _ in range(n)]
    return [RNG.standard_normal(shape).astype(dtype) for _ in range(n)]


def _sum_oracle(arrays):
    total = np.zeros(arrays[0].shape, np.float64)
    for a in arrays:
        total += a.astype(np.float64)
    return total


def _close(got, want, dtype):
    if np.dtype(dtype).kind in "iu":
        np.testing.assert_array_equal(got, np.asarray(want).astype(np.int64).astype(dtype))
    else:
        tol = 2 ** -7 if dtype is ml_dtypes.bfloat16 else 1e-6
        np.testing.assert_allclose(np.asarray(got, np.float64), want, rtol=tol, atol=tol * 4)


@pytest.mark.parametrize("n", [2, 3, 8])
@pytest.mark.parametrize("dtype", DTYPES)
def test_all_reduce(n, dtype):
    xs = _inputs(n, (4, 6), dtype)
    out = cc.all_reduce(xs)
    want = _sum_oracle(xs)
    assert len(out) == n
    for o in out:
        assert o.dtype == np.dtype(dtype) and o.shape == (4, 6)
        _close(o, want, dtype)


@pytest.mark.parametrize("op, fn", [("max", np.maximum), ("min", np.minimum)])
def test_all_reduce_max_min(op, fn):
    xs = _inputs(4, (5,), np.float32)
    want = xs[0]
    for x in xs[1:]:
        want = fn(want, x)
    for o in cc.all_reduce(xs, op=op):
        np.testing.assert_array_equal(o, want)


@pytest.mark.parametrize("n", [2, 4, 8])
@pytest.mark.parametrize("dtype", DTYPES)
def test_all_gather(n, dtype):
    xs = _inputs(n, (3, 2), dtype)
    want = np.empty((3 * n, 2), dtype)
    for r in range(n):
        want[3 * r:3 * r + 3] = xs[r]
    for o in cc.all_gather(xs):
        np.testing.assert_array_equal(o, want)


@pytest.mark.parametrize("n", [2, 4, 8])
@pytest.mark.parametrize("dtype", DTYPES)
def test_reduce_scatter(n, dtype):
    xs = _inputs(n, (2 * n, 3), dtype)
    total = _sum_oracle(xs)
    out = cc.reduce_scatter(xs)
    for r in range(n):
        assert out[r].shape == (2, 3)
        _close(out[r], total[2 * r:2 * r + 2], dtype)


@pytest.mark.parametrize("n", [2, 3, 8])
def test_all_to_all(n):
    k = 2
    xs = _inputs(n, (k * n,), np.float32)
    out = cc.all_to_all(xs)
    for dst in range(n):
        for src in range(n):
            np.testing.assert_array_equal(out[dst][src * k:(src + 1) * k], xs[src][dst * k:(dst + 1) * k])


def test_all_to_all_v():
    sends = [[np.full(i + j, 10 * i + j) for j in range(3)] for i in range(3)]
    out = cc.all_to_all_v(sends)
    assert out[2].tolist() == [2, 2] + [12] * 3 + [22] * 4


def _alltoallv_oracle(bufs, counts, displs):
    """numpy slicing, one part at a time: rank j receives rank i's bufs[i][displs[i][j]:+counts[i][j]]."""
    n = len(bufs)
    return [np.concatenate([bufs[i][displs[i][j]:displs[i][j] + counts[i][j]] for i in range(n)])
            for j in range(n)]


def test_all_to_all_v_counts_and_displacements():
    rng = np.random.default_rng(3)
    bufs = [rng.standard_normal(16).astype(np.float32) for _ in range(3)]
    counts = [[1, 0, 4], [2, 3, 5], [0, 7, 1]]
    displs = [[10, 0, 2], [0, 4, 8], [0, 0, 15]]
    want = _alltoallv_oracle(bufs, counts, displs)
    got = cc.all_to_all_v(bufs, send_counts=counts, send_displs=displs)
    assert all(np.array_equal(g, w) for g, w in zip(got, want))
    # nccom-test's single metadata entry applies to every rank; default displacements pack in rank order
    got = cc.all_to_all_v(bufs, send_counts=[2, 1, 3])
    want = _alltoallv_oracle(bufs, [[2, 1, 3]] * 3, [[0, 2, 3]] * 3)
    assert all(np.array_equal(g, w) for g, w in zip(got, want))
    # receive displacements: a buffer like the input, zero but for the parts
    got = cc.all_to_all_v(bufs, send_counts=[2, 1, 3], recv_displs=[[0, 4, 8]] * 3)
    for j in range(3):
        want = np.zeros(16, np.float32)
        for i, at in enumerate((0, 4, 8)):
            part = bufs[i][[0, 2, 3][j]:[0, 2, 3][j] + [2, 1, 3][j]]
            want[at:at + len(part)] = part
        assert np.array_equal(got[j], want)
    # even counts are all_to_all
    even = cc.AllToAllV(send_counts=((4, 4, 4, 4),) * 4).execute([b[:16] for b in bufs] + [bufs[0]])
    assert all(np.array_equal(a, b) for a, b in zip(even, cc.all_to_all([b[:16] for b in bufs] + [bufs[0]])))


@pytest.mark.parametrize("kw, match", [
    (dict(send_counts=[1, 2]), "3 integers >= 0"),
    (dict(send_counts=[[1, 2, 3]] * 2), "3 x 3 matrix"),
    (dict(send_counts=[1, -1, 0]), "integers >= 0"),
    (dict(send_counts=[4, 4, 4], send_displs=[0, 4, 9]), "rank 0's part for rank 2 .* overruns its buffer of 12"),
    (dict(send_counts=[4, 4, 4], recv_displs=[0, 4, 9]), "overruns its buffer of 12"),
    (dict(send_counts=[4, 4, 4], send_displs=[0, -4, 8]), r"send_displs must be 3 integers >= 0 or a 3 x 3 matrix"),
    (dict(send_counts=[4, 4, 4], recv_displs=[0, 4]), r"recv_displs must be 3 integers >= 0 or a 3 x 3 matrix"),
])
def test_all_to_all_v_errors(kw, match):
    with pytest.raises(CollectiveError, match=match):
        cc.all_to_all_v([np.zeros(12)] * 3, **kw)


def test_all_to_allv_cost_moves_the_counts_not_the_buffer():
    """Hand counts on 2 x trn2.48xlarge, 8 ranks (4 per node, one chip each): rank i sends c[i][j] fp32
    elements to rank j; the cost is launch + one EFA step + 7 peers + the slowest of the busiest rank's DMA
    bytes, the busiest instance's EFA bytes (nothing crosses a chip boundary but to the other node)."""
    system = cluster("trn2.48xlarge", 2)
    t = cc.TUNINGS[3]
    counts = np.zeros((8, 8), dtype=int)
    counts[0, 5] = 3000     # node 0 -> node 1: 12,000 B
    counts[1, 4] = 1000     # node 0 -> node 1: 4,000 B
    counts[2, 3] = 50_000   # on node 0: 200,000 B, the busiest rank's DMA
    counts[6, 0] = 2000     # node 1 -> node 0: 8,000 B
    counts[7, 7] = 10 ** 6  # to itself: a copy in its own HBM, not sent
    dma_bytes, efa_bytes = 200_000, 12_000 + 4_000   # rank 2 sends; node 0's instance sends
    local = system.lnc * system.chip.dma_queues * system.chip.dma_queue_bytes_per_s * t.local_efficiency
    efa = system.efa_bytes_per_s_per_instance * t.efa_efficiency
    want = t.launch_s + t.efa_step_s + 7 * t.peer_s + max(dma_bytes / local, efa_bytes / efa)
    cost = cc.collective_cost("all-to-allv", 4_000_000, 8, system, counts=counts.tolist())
    assert cost.latency_s == pytest.approx(want) and cost.op == "all-to-allv"
    # EFA-bound once the cross-node part dominates: 4 MB from node 1 into node 0
    counts[6, 0] = 10 ** 6
    cost = cc.collective_cost("all-to-allv", 4_000_000, 8, system, counts=counts.tolist())
    assert cost.latency_s == pytest.approx(t.launch_s + t.efa_step_s + 7 * t.peer_s + max(4e6 / local, 4e6 / efa))
    # even counts cost what all-to-all does; nccom-test's all-to-allv row moves 6 KiB, not its 1 MiB buffer
    even = cc.collective_cost("all-to-allv", 2 ** 20, 8, system, counts=[2 ** 15] * 8)
    assert even.latency_s == pytest.approx(cc.collective_cost("all-to-all", 2 ** 20, 8, system).latency_s)
    assert cc.collective_cost("all-to-allv", 2 ** 20, 8, system).latency_s == pytest.approx(even.latency_s)
    row = next(r for r in ROWS if r.op == "all-to-allv")
    assert predict(row).latency_us < cc.collective_cost("all-to-all", row.nbytes, 2, cluster(row.system, 2)).latency_us
    assert cc.AllToAllV(send_counts=(512, 1024)).cost(row.nbytes, 2, cluster(row.system, 2)).latency_s == \
        pytest.approx(predict(row).latency_s)


@pytest.mark.parametrize("op, counts, match", [
    ("all-to-all", [1, 1], "all-to-allv's send counts; all-to-all takes none"),
    ("all-to-allv", [1, 2, 3], "2 integers >= 0"),
    ("all-to-allv", [200, 100], "rank 0 sends 1200 B .* more than the 1024 B buffer"),
])
def test_all_to_allv_cost_errors(op, counts, match):
    with pytest.raises(CollectiveError, match=match):
        cc.collective_cost(op, 1024, 2, "trn2.48xlarge", counts=counts)


def test_permute_ring_and_send_recv():
    xs = [np.full(4, r, np.float32) for r in range(5)]
    out = cc.permute(xs, cc.ring_pairs(5))
    assert [o[0] for o in out] == [4, 0, 1, 2, 3]
    out = cc.send_recv(xs, src=3, dst=0)
    assert out[0].tolist() == [3] * 4 and not out[1].any()


@pytest.mark.parametrize("call, match", [
    (lambda: cc.all_reduce([np.zeros(3), np.zeros(4)]), "rank 1"),
    (lambda: cc.all_reduce([np.zeros(3)], op="mul"), "add|max|min"),
    (lambda: cc.reduce_scatter([np.zeros(3)] * 2), "equal parts"),
    (lambda: cc.permute([np.zeros(2)] * 3, [(0, 1), (2, 1)]), "more than one"),
    (lambda: cc.permute([np.zeros(2)] * 3, [(0, 5)]), "outside"),
    (lambda: cc.all_reduce([]), "at least 1"),
])
def test_semantics_errors(call, match):
    with pytest.raises(CollectiveError, match=match):
        call()


def test_busbw_factors_are_nccl_tests():
    assert cc.busbw_factor("all-reduce", 16) == 2 * 15 / 16
    assert cc.busbw_factor("all-gather", 32) == 31 / 32
    assert cc.busbw_factor("reduce-scatter", 8) == 7 / 8
    assert cc.busbw_factor("permute", 8) == 1


def test_published_busbw_matches_time():
    """The rows are consistent: 32 MiB all-reduce on 2 ranks in 768 us is nccom-test's 40.69 GB/s (GiB/s)."""
    row = ROWS[0]
    assert row.nbytes / (row.time_us * 1e-6) / 2 ** 30 == pytest.approx(40.69, abs=0.01)


def test_algorithm_picks_match_show_algorithm():
    shown = [r for r in ROWS if r.algorithm]
    assert len(shown) == 6
    for row in shown:
        assert predict(row).algorithm == row.algorithm, row


# Rows the fitted model misses, each for a reason in docs/calibration.md ("Collectives"): KangaRing's 32 vs
# 512 MiB (16x the data in 3.5x the time) and all-to-allv (no documented path comes near 955 us).
KNOWN_MISSES = {("all-reduce", 16, 32 * 2 ** 20), ("all-to-allv", 2, 1048608)}


def _key(row):
    return (row.op, row.ranks, row.nbytes)


@pytest.mark.parametrize("row", [pytest.param(r, id=f"{r.op}-{r.ranks}r{r.nodes}n-{r.nbytes}B-{r.system}",
                                              marks=[pytest.mark.xfail(strict=True, reason="known miss")]
                                              if _key(r) in KNOWN_MISSES else [])
                                 for r in ROWS])
def test_nccom_rows_within_issue_tolerance(row):
    predicted = predict(row).latency_us
    assert abs(predicted / row.time_us - 1) <= row.tolerance, (predicted, row)


def test_multi_stream_rows_are_stream_0s_all_reduce():
    """nccom-test.rst: "The first output block belongs to stream 0", the streams json's bf16 all_reduce over
    replica groups of 16 ranks (count 512 for 1,024 B is bf16); stream 1's 64-rank all-gather is fp32."""
    rows = [r for r in ROWS if r.example.startswith("multi-stream")]
    assert [(r.op, r.ranks, r.dtype, r.nbytes // 2) for r in rows] == [("all-reduce", 16, "bf16", 512),
                                                                       ("all-reduce", 16, "bf16", 524288)]


def test_release_fixed_costs_follow_the_published_rows():
    """The same 16-rank all-reduce (ranks 0-15: 4 trn2 chips) measured by two runtime releases
    (nccom-test.rst's git history): release 2.28's --show-algorithm floor is 299.69-299.91 us from 4 B to 8 KiB;
    release 2.32's multi-stream example takes 101.14 us at 1 KiB while three more 16-rank groups and a 64-rank
    all-gather stream share the chips, so 2.32's lone all-reduce takes at most that. Oracle: the published
    rows; the model of each release must sit inside what its own rows allow, which one constant cannot."""
    system = get_system("trn2.48xlarge")
    late = cc.collective_cost("all-reduce", 1024, 16, system, itemsize=2, release="2.32").latency_us
    early = cc.collective_cost("all-reduce", 4, 16, system).latency_us
    assert late <= 101.14                          # contention only adds time: the contended row bounds it
    assert 299.91 * 0.5 <= early <= 299.69 * 1.5   # release 2.28's floor, within the issue's floor tolerance
    # only the fixed cost moves between releases: the size-dependent part is the generation's
    grow = [cc.collective_cost("all-reduce", n, 16, system, itemsize=2, release=r).latency_us
            for r in ("2.32", None) for n in (1024, 2 ** 20)]
    assert grow[1] - grow[0] == pytest.approx(grow[3] - grow[2])
    assert cc.tuning_for(system, "2.32") == dataclasses.replace(cc.TUNINGS[3], **cc.RELEASE_OVERRIDES[(3, "2.32")])
    with pytest.raises(CollectiveError, match="release must be one of 2.32"):
        cc.collective_cost("all-reduce", 1024, 16, system, release="2.99")


def test_release_fit_holds_the_multi_stream_sizes_it_never_saw():
    """Release 2.32's reducing launch is fitted to the multi-stream example's 1 KiB and 1 MiB rows only; its
    nine other sizes (2 KiB to 512 KiB, VALIDATION_ROWS, never fitted) must then fall within the issue's 50%
    with the generation's shared size-dependent terms. Oracle: the published rows."""
    rows = [r for r in VALIDATION_ROWS if r.example.startswith("multi-stream")]
    assert len(rows) == 9 and {r.release for r in rows} == {"2.32"}
    for row in rows:
        assert abs(predict(row).latency_us / row.time_us - 1) <= row.tolerance, row


def test_all_to_allv_row_is_beyond_every_documented_path():
    """nccom-test.rst's all-to-allv (2 ranks on 2 trn2 nodes, 1,048,608 B) takes 955.05 us. Hand bound from the
    docs: the whole buffer over one LNC=2 rank's EFA share (collectives.rst: 200 Gbps per chip, 4 ranks per
    chip: 50 Gbps) plus three ~15 us hops (internode doc: counts, data, received counts) = 213 us, below the
    issue's 50% band (>= 477.5 us), so the row stays a documented miss; the model, whose EFA constants come
    from other rows, stays under that bound (no constant tuned to this one row)."""
    bound_us = 1048608 / (50e9 / 8) * 1e6 + 3 * 15
    assert bound_us == pytest.approx(212.8, abs=0.1) and bound_us < 955.05 * 0.5
    row = next(r for r in ROWS if r.op == "all-to-allv")
    assert predict(row).latency_us <= bound_us


def test_reduction_costs_per_element():
    """The DMA engines reduce in fp32 (nki.isa.dma_compute): a uint8 all-reduce reduces 4x the elements of an
    fp32 one of the same bytes, so it is slower; a bf16 one lies between; an all-gather (no reduction) and a
    2-rank sweep's floor do not depend on the type."""
    t1 = "trn1.32xlarge"
    fp32, bf16, u8 = (cc.collective_cost("all-reduce", 32 * 2 ** 20, 2, t1, itemsize=k).latency_s for k in (4, 2, 1))
    assert fp32 < bf16 < u8
    assert (cc.collective_cost("all-gather", 2 ** 20, 8, t1, itemsize=1).latency_s
            == cc.collective_cost("all-gather", 2 ** 20, 8, t1, itemsize=4).latency_s)
    floor = [cc.collective_cost("all-reduce", 1024, 2, t1, itemsize=k).latency_s for k in (1, 4)]
    assert floor[1] == pytest.approx(floor[0], rel=0.01)
    with pytest.raises(CollectiveError, match="itemsize"):
        cc.collective_cost("all-reduce", 8, 2, t1, itemsize=3)


def test_two_rank_all_reduce_is_one_step():
    """With 2 ranks the single-step Mesh all-reduce (intranode doc) moves the same bytes as RS + AG in one hop
    instead of two: the floor is launch + one step + one peer (hand count from the tuning)."""
    t = cc.TUNINGS[2]
    floor = cc.collective_cost("all-reduce", 4, 2, "trn1.32xlarge").latency_s
    assert floor == pytest.approx(t.launch_s + t.reduce_launch_s + t.step_s + t.peer_s, rel=1e-3)


def test_latency_grows_with_size_and_bandwidth_saturates():
    costs = [cc.collective_cost("all-reduce", 2 ** k, 64, "trn2.48xlarge") for k in range(3, 31)]
    # monotonic while the algorithm stays (a switch by the runtime's size thresholds may step down)
    assert all(b.latency_s >= a.latency_s for a, b in zip(costs, costs[1:]) if a.algorithm == b.algorithm)
    assert costs[-1].busbw_bytes_per_s > 10 * costs[10].busbw_bytes_per_s


def test_scopes_and_what_ifs():
    two = cluster("trn2.48xlarge", 2)
    cost = cc.collective_cost("all-reduce", 2 ** 30, 64, two)
    assert cost.algorithm.startswith("hier(") and cost.algorithm.endswith("+ring)")
    fast_efa = two.replace(efa_bytes_per_s_per_instance=two.efa_bytes_per_s_per_instance * 4)
    assert cc.collective_cost("all-reduce", 2 ** 30, 64, fast_efa).latency_s < cost.latency_s
    us = cc.collective_cost("all-reduce", 2 ** 20, 256, "trn2-ultraserver")
    assert "hier(" in us.algorithm
    assert cc.collective_cost("all-gather", 2 ** 20, 256, "trn3-ultraserver").latency_s > 0
    forced = cc.collective_cost("all-reduce", 4, 16, "trn2.48xlarge", algorithm="ring")
    assert forced.algorithm == "ring"
    slower = cc.collective_cost("all-reduce", 4, 16, "trn2.48xlarge",
                                tuning=cc.TUNINGS[3].__class__(**{**cc.TUNINGS[3].__dict__, "launch_s": 1e-3}))
    assert slower.latency_s > 1e-3


@pytest.mark.parametrize("kw, match", [
    (dict(op="gather", nbytes=8, ranks=2), "op must be"),
    (dict(op="all-reduce", nbytes=8, ranks=65), "2..64"),
    (dict(op="all-reduce", nbytes=-1, ranks=2), "nbytes"),
    (dict(op="all-reduce", nbytes=8, ranks=16, algorithm="rdh-x"), "not available"),
])
def test_cost_errors(kw, match):
    with pytest.raises(CollectiveError, match=match):
        cc.collective_cost(system=get_system("trn2.48xlarge"), **kw)


# --- multi-rank execution with replica groups (nki.collectives.ReplicaGroup semantics) ---

def test_partition_matches_replica_group_examples():
    from trnlab.isa.multirank import partition
    assert partition(8, "bitwise_and", 0) == ((0, 1, 2, 3, 4, 5, 6, 7),)
    assert partition(8, "div", 4) == ((0, 1, 2, 3), (4, 5, 6, 7))
    assert partition(8, "mod", 4) == ((0, 4), (1, 5), (2, 6), (3, 7))


def test_grouped_all_reduce_runs_within_each_rank_list():
    from trnlab.isa.multirank import check, run
    xs = _inputs(8, (3,), np.float32)
    groups = [[0, 4], [1, 5], [2, 6], [3, 7]]
    out = run("all-reduce", xs, groups)
    for g in groups:
        for r in g:
            np.testing.assert_allclose(out[r], xs[g[0]].astype(np.float64) + xs[g[1]], rtol=1e-6)
    check("all-reduce", xs, out, groups)
    partial = run("all-gather", xs, [[0, 1]])
    assert partial[2] is None and partial[0].shape == (6,)
    bad = list(out)
    bad[5] = bad[5] + 1
    with pytest.raises(CollectiveError, match="rank 5"):
        check("all-reduce", xs, bad, groups)


@pytest.mark.parametrize("groups, match", [([[0, 1], [1, 2]], "more than one"), ([[0, 9]], "outside"),
                                           ([[]], "empty")])
def test_bad_replica_groups(groups, match):
    from trnlab.isa.multirank import run
    with pytest.raises(CollectiveError, match=match):
        run("all-reduce", [np.zeros(2)] * 4, groups)


def test_phases_add_up_and_name_the_scopes():
    cost = cc.collective_cost("all-reduce", 2 ** 26, 512, cluster("trn2-ultraserver", 2))
    labels = [label for label, _ in cost.phases]
    assert labels[0] == "launch" and labels[1].startswith("instance:")
    assert any(lab.startswith("ultraserver:") for lab in labels) and any(lab.startswith("efa:") for lab in labels)
    assert sum(s for _, s in cost.phases) == pytest.approx(cost.latency_s)
    with pytest.raises(CollectiveError, match="not available for permute"):
        cc.collective_cost("permute", 8, 8, "trn2.48xlarge", algorithm="ring")


def test_collective_objects_execute_and_cost():
    xs = _inputs(4, (8,), np.float32)
    ar = cc.AllReduce(op="max")
    assert all(np.array_equal(o, np.max(np.stack(xs), axis=0)) for o in ar.execute(xs))
    ag = cc.AllGather()
    assert ag.nbytes(xs) == 4 * 32 and cc.AllReduce().nbytes(xs) == 32
    assert ag.cost(ag.nbytes(xs), 4, "trn2.48xlarge").latency_s > 0
    assert cc.Permute().execute(xs)[1].tolist() == xs[0].tolist()
    assert cc.SendRecv(src=2, dst=3).execute(xs)[3].tolist() == xs[2].tolist()
    assert cc.ReduceScatter().busbw_factor(4) == 3 / 4
    assert set(cc.COLLECTIVES) == set(cc.OPS)
    with pytest.raises(CollectiveError, match="add|max|min"):
        cc.ReduceScatter(op="prod")
    with pytest.raises(dataclasses.FrozenInstanceError):
        ar.op = "add"


def test_fit_script_reproduces_the_preset_constants():
    """benchmarks/fit_collectives.py re-fits TUNINGS from the fit rows alone (3 significant digits kept)."""
    import importlib.util
    from pathlib import Path
    path = Path(__file__).resolve().parents[1] / "benchmarks" / "fit_collectives.py"
    spec = importlib.util.spec_from_file_location("fit_collectives", path)
    fit = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(fit)
    trn1, trn2, overrides = fit.fit_all()
    for version, got in ((2, trn1), (3, trn2)):
        for name in fit.NAMES:
            assert getattr(got, name) == pytest.approx(getattr(cc.TUNINGS[version], name), rel=0.01), (version, name)
    assert set(overrides) == {(3, "2.32")}
    for name, value in overrides[(3, "2.32")].items():
        assert value == pytest.approx(cc.RELEASE_OVERRIDES[(3, "2.32")][name], rel=0.01), name


@pytest.mark.parametrize("name", ["trn1.2xlarge", "trn1.32xlarge", "trn1n.32xlarge", "trn2.48xlarge",
                                  "trn2.48xlarge-lnc1", "trn2-ultraserver", "trn3-ultraserver"])
def test_every_system_op_and_scope_has_a_cost(name):
    for nodes in (1, 3):
        system = cluster(name, nodes)
        for op in cc.OPS:
            for ranks in {2 * nodes, system.ranks, 3 * nodes}:
                if ranks > system.ranks or ranks < 2:
                    continue
                for nbytes in (0, 8, 2 ** 20, 2 ** 30):
                    cost = cc.collective_cost(op, nbytes, ranks, system)
                    assert 0 < cost.latency_s < 10 and np.isfinite(cost.latency_s)
                    assert sum(s for _, s in cost.phases) == pytest.approx(cost.latency_s)
