"""nki.collectives inside kernels: ranks of a multi-rank launch (nki.multi_rank_simulate) meet at each call;
results against numpy, times against the collective cost model called directly, typed errors for calls that
cannot meet."""
import numpy as np
import pytest

import trnlab.nki as nki
import trnlab.nki.collectives as nccl
import trnlab.nki.isa as nisa
import trnlab.nki.language as nl
from trnlab.errors import CollectiveError, CollectiveSyncError
from trnlab.isa.collectives import collective_cost
from trnlab.frontend.multi_rank import run_multi_rank

P, F = 32, 16          # a small tile: every test here runs in well under a second


def _inputs(n, shape=(P, F), seed=0):
    rng = np.random.default_rng(seed)
    return [rng.standard_normal(shape).astype(np.float32) for _ in range(n)]


def _line(marker: str) -> int:
    """The line of this file ending with the comment `# marker`."""
    with open(__file__) as f:
        return next(i for i, text in enumerate(f, start=1) if text.rstrip().endswith(f"# {marker}"))


def _launch(kernel, xs, *static, **kw):
    return nki.multi_rank_simulate(kernel, world_size=len(xs), per_rank_inputs=[((x, *static), {}) for x in xs],
                                   **kw)


# --- kernels in the current NKI API (as AWS's nki.multi_rank_simulate example) -------------------------------

@nki.jit
def all_reduce_hbm(x, replica_group):
    src = nl.ndarray(x.shape, dtype=x.dtype, buffer=nl.private_hbm)
    out = nl.ndarray(x.shape, dtype=x.dtype, buffer=nl.shared_hbm)
    nisa.dma_copy(dst=src, src=x)
    nccl.all_reduce(srcs=[src], dsts=[out], replica_group=replica_group, op=nl.add)  # <ar-hbm>
    return out


@nki.jit
def all_reduce_sbuf(x, replica_group):
    """An SBUF tile reduced across ranks, then used on chip (max: the other reduce op)."""
    t = nl.ndarray(x.shape, dtype=x.dtype, buffer=nl.sbuf)
    r = nl.ndarray(x.shape, dtype=x.dtype, buffer=nl.sbuf)
    out = nl.ndarray(x.shape, dtype=x.dtype, buffer=nl.shared_hbm)
    nisa.dma_copy(dst=t, src=x)
    nccl.all_reduce(srcs=[t], dsts=[r], replica_group=replica_group, op=nl.maximum)
    nisa.dma_copy(dst=out, src=r)
    return out


@nki.jit
def all_gather_sbuf(x, replica_group, ranks):
    """As nki-library's allgather_sb2sb: gather along the free dimension in SBUF."""
    p, f = x.shape
    t = nl.ndarray((p, f), dtype=x.dtype, buffer=nl.sbuf)
    g = nl.ndarray((p, f * ranks), dtype=x.dtype, buffer=nl.sbuf)
    out = nl.ndarray((p, f * ranks), dtype=x.dtype, buffer=nl.shared_hbm)
    nisa.dma_copy(dst=t, src=x)
    nccl.all_gather(srcs=[t], dsts=[g], replica_group=replica_group, collective_dim=1)
    nisa.dma_copy(dst=out, src=g)
    return out


@nki.jit
def reduce_scatter_hbm(x, replica_group, ranks):
    p, f = x.shape
    src = nl.ndarray((p, f), dtype=x.dtype, buffer=nl.private_hbm)
    out = nl.ndarray((p // ranks, f), dtype=x.dtype, buffer=nl.shared_hbm)
    nisa.dma_copy(dst=src, src=x)
    nccl.reduce_scatter(srcs=[src], dsts=[out], replica_group=replica_group, collective_dim=0, op=nl.add)
    return out


@nki.jit
def all_to_all_hbm(x, replica_group):
    src = nl.ndarray(x.shape, dtype=x.dtype, buffer=nl.private_hbm)
    out = nl.ndarray(x.shape, dtype=x.dtype, buffer=nl.shared_hbm)
    nisa.dma_copy(dst=src, src=x)
    nccl.all_to_all(srcs=[src], dsts=[out], replica_group=replica_group, collective_dim=0)
    return out


@nki.jit
def permute_hbm(x, pairs):
    src = nl.ndarray(x.shape, dtype=x.dtype, buffer=nl.private_hbm)
    out = nl.ndarray(x.shape, dtype=x.dtype, buffer=nl.shared_hbm)
    nisa.dma_copy(dst=src, src=x)
    nisa.dma_copy(dst=out, src=x)              # a rank that receives nothing keeps its own values
    nccl.collective_permute(srcs=[src], dsts=[out], source_target_pairs=pairs)
    return out


def _all(n):
    return nccl.ReplicaGroup([list(range(n))])


# --- functional: every collective at 2, 4 and 8 ranks against numpy --------------------------------------

@pytest.mark.parametrize("n", [2, 4, 8])
def test_all_reduce_in_a_kernel_matches_numpy(n):
    xs = _inputs(n)
    want = np.sum(np.stack(xs).astype(np.float64), axis=0)
    outs = _launch(all_reduce_hbm, xs, _all(n))
    assert len(outs) == n
    for out in outs:
        np.testing.assert_allclose(out, want, rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("n", [2, 4, 8])
def test_all_reduce_max_of_sbuf_tiles(n):
    xs = _inputs(n, seed=1)
    for out in _launch(all_reduce_sbuf, xs, _all(n)):
        np.testing.assert_array_equal(out, np.max(np.stack(xs), axis=0))


@pytest.mark.parametrize("n", [2, 4, 8])
def test_all_gather_along_the_free_dimension(n):
    xs = _inputs(n, seed=2)
    for out in _launch(all_gather_sbuf, xs, _all(n), n):
        np.testing.assert_array_equal(out, np.concatenate(xs, axis=1))


@pytest.mark.parametrize("n", [2, 4, 8])
def test_reduce_scatter_gives_rank_k_chunk_k(n):
    xs = _inputs(n, shape=(8 * n, F), seed=3)
    total = np.sum(np.stack(xs).astype(np.float64), axis=0)
    for k, out in enumerate(_launch(reduce_scatter_hbm, xs, _all(n), n)):
        np.testing.assert_allclose(out, total[8 * k: 8 * (k + 1)], rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("n", [2, 4, 8])
def test_all_to_all_transposes_the_chunks(n):
    xs = _inputs(n, shape=(4 * n, F), seed=4)
    outs = _launch(all_to_all_hbm, xs, _all(n))
    for dst in range(n):
        want = np.concatenate([xs[src][4 * dst: 4 * (dst + 1)] for src in range(n)], axis=0)
        np.testing.assert_array_equal(outs[dst], want)


@pytest.mark.parametrize("n", [2, 4, 8])
def test_collective_permute_shifts_the_ring(n):
    xs = _inputs(n, seed=5)
    pairs = tuple((r, (r + 1) % n) for r in range(n))
    outs = _launch(permute_hbm, xs, pairs)
    for r in range(n):
        np.testing.assert_array_equal(outs[r], xs[(r - 1) % n])


def test_permute_leaves_non_targets_unwritten():
    xs = _inputs(4, seed=6)
    outs = _launch(permute_hbm, xs, ((0, 3),))
    np.testing.assert_array_equal(outs[3], xs[0])
    for r in (0, 1, 2):
        np.testing.assert_array_equal(outs[r], xs[r])


def test_replica_group_rank_lists_reduce_independently():
    xs = _inputs(8, seed=7)
    group = nccl.ReplicaGroup.from_partition_op(8, nccl.rg_partition_op.mod, 4)   # [[0,4],[1,5],[2,6],[3,7]]
    outs = _launch(all_reduce_hbm, xs, group)
    for r in range(8):
        np.testing.assert_allclose(outs[r], xs[r % 4].astype(np.float64) + xs[r % 4 + 4], rtol=1e-6)


def test_bf16_all_reduce_rounds_once_to_bf16():
    xs = [x.astype(nl.bfloat16) for x in _inputs(4, seed=8)]
    want = np.sum(np.stack(xs).astype(np.float32), axis=0).astype(nl.bfloat16)
    for out in _launch(all_reduce_hbm, xs, _all(4)):
        assert out.dtype == nl.bfloat16
        np.testing.assert_array_equal(out.astype(np.float32), want.astype(np.float32))


@nki.jit
def _rank_ids(x):
    out = nl.ndarray(x.shape, dtype=x.dtype, buffer=nl.shared_hbm)
    t = nl.ndarray(x.shape, dtype=x.dtype, buffer=nl.sbuf)
    nisa.memset(dst=t, value=float(nccl.rank_id()))
    nisa.dma_copy(dst=out, src=t)
    return out


def test_rank_id_is_the_launch_rank():
    outs = _launch(_rank_ids, _inputs(4))
    assert [float(o[0, 0]) for o in outs] == [0.0, 1.0, 2.0, 3.0]


def test_one_rank_kernel_call_is_a_world_of_one():
    x = _inputs(1)[0]
    np.testing.assert_array_equal(all_reduce_hbm(x, _all(1)), x)
    with pytest.raises(CollectiveError, match="multi_rank_simulate"):
        all_reduce_hbm(x, _all(2))


# --- timing ------------------------------------------------------------------------------------------------

def _cc_events(machine):
    return [e for e in machine.scheduler.records if e.track == "cc"]


def _run(kernel, xs, *static, system=None):
    return run_multi_rank(kernel, len(xs), [((x, *static), {}) for x in xs], trace=True, system=system,
                          tensor_class=nki.NkiTensor)


@pytest.mark.parametrize("n,system", [(2, "trn2.48xlarge"), (8, "trn2.48xlarge"), (4, "trn1.32xlarge")])
def test_collective_time_is_the_cost_model_latency(n, system):
    xs = _inputs(n, shape=(128, 512))
    run = _run(all_reduce_hbm, xs, _all(n), system=system)
    want = collective_cost("all-reduce", 128 * 512 * 4, n, system).latency_s
    for m in run.machines:
        (event,) = _cc_events(m)
        assert event.end - event.start == pytest.approx(want, rel=1e-9)
        assert event.name == "collective" and event.api == "nki.collectives.all_reduce"
        assert event.loc.endswith(f"test_nki_collectives.py:{_line('<ar-hbm>')}")


@nki.jit
def _slow_rank_all_reduce(x, replica_group, slow_rank, extra):
    """Rank `slow_rank` works on its tile `extra` times before the all-reduce."""
    t = nl.ndarray(x.shape, dtype=x.dtype, buffer=nl.sbuf)
    r = nl.ndarray(x.shape, dtype=x.dtype, buffer=nl.sbuf)
    out = nl.ndarray(x.shape, dtype=x.dtype, buffer=nl.shared_hbm)
    nisa.dma_copy(dst=t, src=x)
    if nccl.rank_id() == slow_rank:
        for _ in range(extra):
            nisa.tensor_scalar(dst=t, data=t, op0=nl.multiply, operand0=1.0)
    nccl.all_reduce(srcs=[t], dsts=[r], replica_group=replica_group, op=nl.add)
    nisa.dma_copy(dst=out, src=r)
    return out


def test_a_slow_rank_delays_every_rank():
    xs = _inputs(4, shape=(128, 512))
    base = _run(_slow_rank_all_reduce, xs, _all(4), 1, 0)
    slow = _run(_slow_rank_all_reduce, xs, _all(4), 1, 30)
    extra = slow.machines[1].scheduler.end - base.machines[1].scheduler.end
    assert extra > 10e-6                                    # 30 Vector passes over a 128 x 512 fp32 tile
    starts = [_cc_events(m)[0].start for m in slow.machines]
    assert max(starts) == min(starts)                       # every rank starts at the slowest arrival
    for fast, late in zip(base.machines, slow.machines):    # and every rank finishes later by the same
        assert late.scheduler.end - fast.scheduler.end == pytest.approx(extra, rel=1e-6)
    for out in slow.outputs:
        np.testing.assert_allclose(out, np.sum(np.stack(xs), axis=0), rtol=1e-5, atol=1e-5)


@nki.jit
def _overlap(x, y, replica_group, compute):
    """An all-reduce of x, then `compute` Vector passes over y, which does not depend on it."""
    t = nl.ndarray(x.shape, dtype=x.dtype, buffer=nl.sbuf)
    r = nl.ndarray(x.shape, dtype=x.dtype, buffer=nl.sbuf)
    u = nl.ndarray(y.shape, dtype=y.dtype, buffer=nl.sbuf)
    out = nl.ndarray(x.shape, dtype=x.dtype, buffer=nl.shared_hbm)
    nisa.dma_copy(dst=t, src=x)
    nisa.dma_copy(dst=u, src=y)
    nccl.all_reduce(srcs=[t], dsts=[r], replica_group=replica_group, op=nl.add)
    for _ in range(compute):
        nisa.tensor_scalar(dst=u, data=u, op0=nl.multiply, operand0=1.0)
    nisa.dma_copy(dst=out, src=r)
    return out


def test_independent_compute_overlaps_the_collective():
    n = 2
    xs, y = _inputs(n, shape=(128, 512)), _inputs(1, shape=(128, 512), seed=9)[0]

    def end(compute):
        run = run_multi_rank(_overlap, n, [((x, y, _all(n), compute), {}) for x in xs], trace=True,
                             tensor_class=nki.NkiTensor)
        return run, run.machine.scheduler.end

    run, both = end(20)
    _, comm_only = end(0)
    vector = [e for e in run.machine.scheduler.records if e.track == "vector"]
    (cc,) = _cc_events(run.machine)
    assert vector and all(cc.start < e.start < cc.end for e in vector)   # compute runs under the collective
    compute_s = sum(e.end - e.start for e in vector)
    assert compute_s > 5e-6
    assert both < comm_only + 0.1 * compute_s                            # ... and costs (almost) nothing


@nki.jit
def _collective_then_load(x, replica_group, collective):
    """An all-reduce of x, then an SBUF load of part of x: ready when the all-reduce starts (it reads what the
    all-reduce reads), independent of it, but on the same DMA queues."""
    t = nl.ndarray(x.shape, dtype=x.dtype, buffer=nl.private_hbm)
    r = nl.ndarray(x.shape, dtype=x.dtype, buffer=nl.private_hbm)
    tile = nl.ndarray((128, x.shape[1]), dtype=x.dtype, buffer=nl.sbuf)
    out = nl.ndarray((128, x.shape[1]), dtype=x.dtype, buffer=nl.shared_hbm)
    nisa.dma_copy(dst=t, src=x)
    if collective:
        nccl.all_reduce(srcs=[t], dsts=[r], replica_group=replica_group, op=nl.add)
    nisa.dma_copy(dst=tile, src=t[0:128, :])
    nisa.dma_copy(dst=out, src=tile)
    return out


def test_dma_heavy_compute_contends_with_the_collective():
    n = 2
    xs = [np.zeros((1024, 4096), np.float32)] * n     # a 16 MiB all-reduce: its bytes occupy the DMA queues

    def load_start(collective):
        run = run_multi_rank(_collective_then_load, n, [((x, _all(n), collective), {}) for x in xs],
                             trace=True, numerics=False, tensor_class=nki.NkiTensor)
        records = run.machine.scheduler.records
        load = max(e.index for e in records if e.api == "nisa.dma_copy") - 1
        return min(e.start for e in records if e.index == load)

    # without the collective the load starts after the DMA start latency (1.3 us); with it, after the
    # collective's share of every queue: 2 (n-1)/n x 16 MiB spread over 16 queues at 23 GB/s each
    share = 16 * 2**20 / 16 / 23e9
    assert load_start(True) - load_start(False) == pytest.approx(share - 1.3e-6, rel=0.02)


# --- errors --------------------------------------------------------------------------------------------------

@nki.jit
def _mismatched(x, replica_group):
    src = nl.ndarray(x.shape, dtype=x.dtype, buffer=nl.private_hbm)
    out = nl.ndarray(x.shape, dtype=x.dtype, buffer=nl.shared_hbm)
    nisa.dma_copy(dst=src, src=x)
    if nccl.rank_id() == 1:
        nccl.all_reduce(srcs=[src], dsts=[out], replica_group=replica_group, op=nl.maximum)  # <max>
    else:
        nccl.all_reduce(srcs=[src], dsts=[out], replica_group=replica_group, op=nl.add)  # <add>
    return out


def test_mismatched_calls_name_the_ranks_and_lines():
    with pytest.raises(CollectiveSyncError) as info:
        _launch(_mismatched, _inputs(2), _all(2))
    msg = str(info.value)
    assert "rank 0" in msg and "rank 1" in msg and "mismatched" in msg
    assert f"test_nki_collectives.py:{_line('<max>')}" in msg and f"test_nki_collectives.py:{_line('<add>')}" in msg
    assert info.value.rank == 1 and info.value.op == "nki.collectives.all_reduce"


@nki.jit
def _absent(x, replica_group):
    src = nl.ndarray(x.shape, dtype=x.dtype, buffer=nl.private_hbm)
    out = nl.ndarray(x.shape, dtype=x.dtype, buffer=nl.shared_hbm)
    nisa.dma_copy(dst=src, src=x)
    if nccl.rank_id() != 2:
        nccl.all_reduce(srcs=[src], dsts=[out], replica_group=replica_group, op=nl.add)  # <absent>
    return out


def test_a_rank_that_never_arrives_is_named():
    line = _line("<absent>")
    with pytest.raises(CollectiveSyncError) as info:
        _launch(_absent, _inputs(4), _all(4))
    msg = str(info.value)
    assert "rank 2" in msg and "finished without reaching it" in msg
    assert f"test_nki_collectives.py:{line}" in msg and "all_reduce" in msg
    assert info.value.loc.endswith(f"test_nki_collectives.py:{line}")


@nki.jit
def _crossed(x, a, b):
    """Ranks 0 and 1 call two collectives in opposite orders: neither can complete."""
    src = nl.ndarray(x.shape, dtype=x.dtype, buffer=nl.private_hbm)
    out = nl.ndarray(x.shape, dtype=x.dtype, buffer=nl.shared_hbm)
    nisa.dma_copy(dst=src, src=x)
    first, second = (a, b) if nccl.rank_id() == 0 else (b, a)
    nccl.all_reduce(srcs=[src], dsts=[out], replica_group=first, op=nl.add)
    nccl.all_reduce(srcs=[src], dsts=[out], replica_group=second, op=nl.add)
    return out


def test_deadlock_is_reported_not_hung():
    with pytest.raises(CollectiveSyncError, match="deadlock"):
        _launch(_crossed, _inputs(2), nccl.ReplicaGroup([[0, 1]]), nccl.ReplicaGroup([[1, 0]]))


def test_shape_mismatch_across_ranks_is_refused_at_launch():
    from trnlab.errors import LaunchError
    with pytest.raises(LaunchError, match="same shape and dtype"):
        nki.multi_rank_simulate(all_reduce_hbm, world_size=2,
                                per_rank_inputs=[((np.zeros((4, 4), np.float32), _all(2)), {}),
                                                 ((np.zeros((4, 8), np.float32), _all(2)), {})])


# --- trnlab run / profile of a script written for AWS's nki package -----------------------------------------

SCRIPT = '''
import numpy as np
import nki
import nki.collectives as nccl
import nki.isa as nisa
import nki.language as nl


@nki.jit
def all_reduce_kernel(x, replica_group):
    src = nl.ndarray(x.shape, dtype=x.dtype, buffer=nl.private_hbm)
    out = nl.ndarray(x.shape, dtype=x.dtype, buffer=nl.shared_hbm)
    nisa.dma_copy(dst=src, src=x)
    nccl.all_reduce(srcs=[src], dsts=[out], replica_group=replica_group, op=nl.add)
    return out


group = nccl.ReplicaGroup.from_partition_op(2, nccl.rg_partition_op.bitwise_and, 0)
inputs = [((np.full((4, 8), r, dtype=np.float32), group), {}) for r in range(2)]
results = nki.multi_rank_simulate(all_reduce_kernel, world_size=2, per_rank_inputs=inputs)
for out in results:
    assert np.array_equal(out, np.full((4, 8), 1.0, dtype=np.float32)), out
print("all-reduce ok")
'''


@pytest.fixture
def shim():
    from trnlab import compat
    compat.uninstall()
    yield compat
    compat.uninstall()


def test_trnlab_run_of_an_nki_script_with_collectives(shim, tmp_path, capsys):
    script = tmp_path / "all_reduce.py"
    script.write_text(SCRIPT)
    assert shim.run_script(str(script)) == 0
    assert "all-reduce ok" in capsys.readouterr().out


def test_profile_trace_has_one_process_per_rank(shim, tmp_path):
    import json

    from trnlab.console import make_console
    from trnlab.profile.cli import profile_script
    script = tmp_path / "all_reduce.py"
    script.write_text(SCRIPT)
    out = tmp_path / "prof"
    assert profile_script(script, [], target=None, out=out, numerics=True, console=make_console()) == 0
    trace = json.loads((out / "trace.json").read_text())
    names = {e["pid"]: e["args"]["name"] for e in trace["traceEvents"] if e["name"] == "process_name"}
    assert sorted(names) == [1, 2] and names[2].startswith("rank 1: all_reduce_kernel")
    cc = [e for e in trace["traceEvents"] if e.get("cat") == "cc"]
    assert sorted(e["pid"] for e in cc) == [1, 2]
    want = collective_cost("all-reduce", 4 * 8 * 4, 2, "trn2.48xlarge").latency_s * 1e6
    assert all(e["dur"] == pytest.approx(want) for e in cc)
    assert trace["otherData"]["ranks"] == 2
    summary = json.loads((out / "summary.json").read_text())
    assert [r["rank"] for r in summary["ranks"]] == [0, 1]
    assert all(r["collective_us"] == pytest.approx(want) for r in summary["ranks"])


# --- the kernel library's collective kernels --------------------------------------------------------------------

def test_library_all_reduce_matches_its_numpy_reference():
    from trnlab.kernels import collectives as kc
    inputs = kc.example_inputs(4, shape=(64, 128))
    xs = [args[0] for args, _ in inputs]
    want = np.sum(np.stack(xs).astype(np.float64), axis=0)          # numpy, independent of kc.reference
    for out in nki.multi_rank_simulate(kc.all_reduce, world_size=4, per_rank_inputs=inputs):
        np.testing.assert_allclose(out, want, rtol=1e-5, atol=1e-5)
        np.testing.assert_allclose(out, kc.reference(xs), rtol=1e-6, atol=1e-6)


def test_library_scaled_all_reduce_and_all_gather():
    from trnlab.kernels import collectives as kc
    xs = _inputs(2, shape=(200, 64), seed=11)
    group = _all(2)
    outs = nki.multi_rank_simulate(kc.scaled_all_reduce, world_size=2,
                                   per_rank_inputs=[((x, group, 0.5), {}) for x in xs])
    for out in outs:
        np.testing.assert_allclose(out, (xs[0].astype(np.float64) + xs[1]) * 0.5, rtol=1e-5, atol=1e-6)
    outs = nki.multi_rank_simulate(kc.all_gather, world_size=2, per_rank_inputs=[((x, group, 2), {}) for x in xs])
    for out in outs:
        np.testing.assert_array_equal(out, np.concatenate(xs, axis=0))


# --- Beta 1 ---------------------------------------------------------------------------------------------------

def test_beta1_collective_permute_runs_on_ranks():
    import trnlab.nki_beta1 as b1
    import trnlab.nki_beta1.language as bl
    import trnlab.nki_beta1.nccl as b1nccl

    @b1.jit
    def swap(a):
        send = bl.ndarray(a.shape, dtype=a.dtype, buffer=bl.shared_hbm)
        recv = bl.ndarray(a.shape, dtype=a.dtype, buffer=bl.shared_hbm)
        bl.store(send, bl.load(a))
        b1nccl.collective_permute(dst=recv, src=send, source_target_pairs=[(0, 1), (1, 0)])
        return recv

    xs = _inputs(2, seed=12)
    outs = nki.multi_rank_simulate(swap, world_size=2, per_rank_inputs=[((x,), {}) for x in xs])
    np.testing.assert_array_equal(outs[0], xs[1])
    np.testing.assert_array_equal(outs[1], xs[0])
    with pytest.raises(NotImplementedError, match="all_reduce"):
        b1nccl.all_reduce()


def test_launch_arguments_are_checked():
    from trnlab.errors import LaunchError
    x = np.zeros((4, 4), np.float32)
    with pytest.raises(LaunchError, match="non-array arguments must be equal"):
        nki.multi_rank_simulate(all_reduce_hbm, world_size=2, per_rank_inputs=[((x, _all(2)), {}), ((x, _all(1)), {})])
    with pytest.raises(LaunchError, match="3 entries for world_size 2"):
        nki.multi_rank_simulate(all_reduce_hbm, world_size=2, per_rank_inputs=[((x, _all(2)), {})] * 3)
    with pytest.raises(LaunchError, match="exceeds the 32 ranks of trn1.32xlarge"):
        nki.multi_rank_simulate(all_reduce_hbm, world_size=33, system="trn1.32xlarge",
                                per_rank_inputs=[((x, _all(2)), {})] * 33)


@nki.jit
def _busy_queue_rank(x, big, replica_group):
    """Rank 1 first starts a long HBM-to-HBM copy (one DMA queue for ~1.7 ms), independent of the all-reduce."""
    src = nl.ndarray(x.shape, dtype=x.dtype, buffer=nl.private_hbm)
    out = nl.ndarray(x.shape, dtype=x.dtype, buffer=nl.shared_hbm)
    if nccl.rank_id() == 1:
        copy = nl.ndarray(big.shape, dtype=big.dtype, buffer=nl.private_hbm)
        nisa.dma_copy(dst=copy, src=big)
    nisa.dma_copy(dst=src, src=x)
    nccl.all_reduce(srcs=[src], dsts=[out], replica_group=replica_group, op=nl.add)
    return out


def test_every_rank_completes_with_the_slowest_part():
    xs, big = _inputs(2, shape=(128, 512)), np.zeros((1024, 4096), np.float32)
    run = run_multi_rank(_busy_queue_rank, 2, [((x, big, _all(2)), {}) for x in xs], trace=True, numerics=False,
                         tensor_class=nki.NkiTensor)
    (e0,), (e1,) = (_cc_events(m) for m in run.machines)
    latency = collective_cost("all-reduce", 128 * 512 * 4, 2, "trn2.48xlarge").latency_s
    copy_end = max(e.end for e in run.machines[1].scheduler.records if e.index == 0)
    assert e0.start == e1.start and e0.end == e1.end           # rank 0 waits for rank 1's delayed part
    assert e1.end > copy_end > e1.start + latency              # rank 1's queue share waited for the copy


@nki.jit
def _bad_gather(x, replica_group):
    src = nl.ndarray(x.shape, dtype=x.dtype, buffer=nl.private_hbm)
    out = nl.ndarray(x.shape, dtype=x.dtype, buffer=nl.shared_hbm)      # should be 2x rows for 2 ranks
    nisa.dma_copy(dst=src, src=x)
    nccl.all_gather(srcs=[src], dsts=[out], replica_group=replica_group, collective_dim=0)  # <bad-gather>
    return out


def test_a_dst_of_the_wrong_shape_is_refused_before_the_ranks_meet():
    from trnlab.errors import ShapeError
    with pytest.raises(ShapeError, match=r"all-gather over 2 ranks .* gives \[64, 16\]") as info:
        _launch(_bad_gather, _inputs(2), _all(2))
    assert f"test_nki_collectives.py:{_line('<bad-gather>')}" in str(info.value)
    with pytest.raises(ShapeError, match="must divide into 4 equal parts"):
        _launch(reduce_scatter_hbm, _inputs(4, shape=(6, F)), _all(4), 4)


@nki.jit
def _coalesced(x, y, replica_group):
    """Two HBM tensors reduced in one call (coalesced collective communication)."""
    xs = nl.ndarray(x.shape, dtype=x.dtype, buffer=nl.private_hbm)
    ys = nl.ndarray(y.shape, dtype=y.dtype, buffer=nl.private_hbm)
    xo = nl.ndarray(x.shape, dtype=x.dtype, buffer=nl.shared_hbm)
    yo = nl.ndarray(y.shape, dtype=y.dtype, buffer=nl.shared_hbm)
    nisa.dma_copy(dst=xs, src=x)
    nisa.dma_copy(dst=ys, src=y)
    nccl.all_reduce(srcs=[xs, ys], dsts=[xo, yo], replica_group=replica_group, op=nl.add)
    return xo, yo


def test_coalesced_all_reduce_is_one_collective_of_the_summed_size():
    xs, ys = _inputs(2, seed=13), _inputs(2, shape=(8, 4), seed=14)
    run = run_multi_rank(_coalesced, 2, [((x, y, _all(2)), {}) for x, y in zip(xs, ys)], trace=True,
                         tensor_class=nki.NkiTensor)
    for xo, yo in run.outputs:
        np.testing.assert_allclose(xo, xs[0].astype(np.float64) + xs[1], rtol=1e-6)
        np.testing.assert_allclose(yo, ys[0].astype(np.float64) + ys[1], rtol=1e-6)
    (event,) = _cc_events(run.machine)
    want = collective_cost("all-reduce", (P * F + 8 * 4) * 4, 2, "trn2.48xlarge").latency_s
    assert event.end - event.start == pytest.approx(want)


# --- all_to_all_v: per-rank counts from the metadata tensor -------------------------------------------------

@nki.jit
def all_to_all_v_hbm(x, meta, fill, replica_group, recv_counts_known, has_rdispls):
    src = nl.ndarray(x.shape, dtype=x.dtype, buffer=nl.private_hbm)
    out = nl.ndarray(fill.shape, dtype=x.dtype, buffer=nl.shared_hbm)
    nisa.dma_copy(dst=src, src=x)
    nisa.dma_copy(dst=out, src=fill)           # elements no part lands on keep these values
    nccl.all_to_all_v(srcs=[src], dsts=[out], replica_group=replica_group, metadata_tensor=meta,
                      recv_counts_known=recv_counts_known, has_rdispls=has_rdispls)
    return out


def _alltoallv_numpy(xs, fills, counts, sdispls, rdispls=None):
    """numpy, one part at a time on flat buffers: rank j's out gets rank i's x[sd[i][j]:+c[i][j]] at rd[j][i]
    (default: packed in rank order from 0); every other element keeps its fill."""
    n = len(xs)
    outs = [f.ravel().copy() for f in fills]
    for j in range(n):
        at = 0
        for i in range(n):
            part = xs[i].ravel()[sdispls[i][j]:sdispls[i][j] + counts[i][j]]
            start = rdispls[j][i] if rdispls is not None else at
            outs[j][start:start + part.size] = part
            at += part.size
    return [o.reshape(f.shape) for o, f in zip(outs, fills)]


def _alltoallv_launch(xs, metas, fills, group, known=False, rdispls=False):
    return nki.multi_rank_simulate(all_to_all_v_hbm, world_size=len(xs),
                                   per_rank_inputs=[((x, m, f, group, known, rdispls), {})
                                                    for x, m, f in zip(xs, metas, fills)])


def test_all_to_all_v_moves_each_ranks_counts():
    n = 3
    xs = _inputs(n, shape=(4, 8), seed=11)
    fills = _inputs(n, shape=(2, 16), seed=12)
    counts = [[3, 0, 5], [1, 4, 2], [6, 6, 0]]
    sdispls = [[0, 3, 20], [31, 0, 10], [0, 10, 0]]
    metas = [np.array([counts[r], sdispls[r]], dtype=np.uint32) for r in range(n)]
    outs = _alltoallv_launch(xs, metas, fills, _all(n))
    for got, want in zip(outs, _alltoallv_numpy(xs, fills, counts, sdispls)):
        np.testing.assert_array_equal(got, want)
    # rows 2 and 3: receive counts (checked) and receive displacements
    recv = [[counts[i][j] for i in range(n)] for j in range(n)]
    rd = [[20, 0, 8], [0, 28, 5], [1, 14, 30]]
    metas = [np.array([counts[r], sdispls[r], recv[r], rd[r]], dtype=np.uint32) for r in range(n)]
    outs = _alltoallv_launch(xs, metas, fills, _all(n), True, True)
    for got, want in zip(outs, _alltoallv_numpy(xs, fills, counts, sdispls, rd)):
        np.testing.assert_array_equal(got, want)


def test_all_to_all_v_time_moves_the_counted_bytes():
    """Rank 0 sends 4,096 fp32 elements to rank 1 and rank 1 nothing back: the cost model called with those
    counts, not with the whole 64 KiB buffer split evenly."""
    xs = _inputs(2, shape=(128, 128), seed=13)
    metas = [np.array([[0, 4096], [0, 0]], dtype=np.uint32), np.array([[0, 0], [0, 0]], dtype=np.uint32)]
    run = run_multi_rank(all_to_all_v_hbm, 2, [((x, m, x, _all(2), False, False), {}) for x, m in zip(xs, metas)],
                         trace=True, tensor_class=nki.NkiTensor)
    want = collective_cost("all-to-allv", 128 * 128 * 4, 2, "trn2.48xlarge", counts=[[0, 4096], [0, 0]])
    even = collective_cost("all-to-all", 128 * 128 * 4, 2, "trn2.48xlarge")
    assert want.latency_s < even.latency_s
    for m in run.machines:
        (event,) = _cc_events(m)
        assert event.end - event.start == pytest.approx(want.latency_s, rel=1e-9)
        assert event.api == "nki.collectives.all_to_all_v"


@pytest.mark.parametrize("meta, kw, match", [
    (np.zeros((1, 2), np.uint32), {}, r"shape \(2, 2\)"),
    (np.zeros((2, 2), np.uint32), dict(has_rdispls=True), r"shape \(4, 2\) .*recv displacements"),
    (np.zeros((2, 2), np.float32), {}, "integers"),
    (np.array([[0, 33], [0, 0]], np.uint32), {}, "elements 0..32 to position 1, past its 32-element src"),
    (np.array([[0, 2], [0, 0], [0, 5]], np.uint32), dict(recv_counts_known=True), "recv count from position"),
])
def test_all_to_all_v_bad_metadata(meta, kw, match):
    xs = _inputs(2, shape=(4, 8), seed=14)
    with pytest.raises(CollectiveError, match=match):
        _alltoallv_launch(xs, [meta, meta], xs, _all(2), kw.get("recv_counts_known", False),
                          kw.get("has_rdispls", False))
