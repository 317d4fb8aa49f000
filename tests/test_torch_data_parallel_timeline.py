"""Data-parallel gradient collectives on the ranks' backward timelines (issue 11): each bucket's
CollectiveInstruction is issued on the backward graph's Machine once its gradients are computed. Oracles:
collective_cost(..., launch="graph") called directly, the bucket sizes counted from the parameters, numpy's
pre-divided sum, the DMA queues' busy time with and without the collectives' bytes, and what-if runs."""
import numpy as np
import pytest
import torch

from trnlab.hw import graph_chip
from trnlab.hw.systems import get_system
from trnlab.isa.cc import CC_UNIT
from trnlab.isa.collectives import collective_cost
from trnlab.torch import data_parallel as dpl
from trnlab.torch.train import compile_train, last_training
from trnlab.torch.trainer import build_for_training, train, training_batch

SYSTEM = get_system("trn2.48xlarge-lnc1")
BUCKET = 300_000


def _backward(sync, seq=8):
    """One fp32 llama-tiny forward + backward with `sync` active: (gradients, the backward's RunResult)."""
    model, vocab = build_for_training("llama-tiny")
    ids, labels = training_batch("llama-tiny", vocab, 1, seq)
    compiled = compile_train(model, target="trn2", dtype=torch.float32, check=False, name="llama-tiny")
    loss = compiled(ids, labels)
    with dpl.gradient_sync(sync):
        loss.backward()
    grads = [p.grad.detach().clone() for p in model.parameters() if p.requires_grad]
    return grads, last_training().backward_runs[-1]


@pytest.fixture(scope="module")
def runs():
    sync = dpl.GradientSync("all-reduce", 2, SYSTEM, torch.float32, BUCKET)
    quiet = dpl.GradientSync("all-reduce", 2, SYSTEM, torch.float32, BUCKET, queues=False)
    return {"none": _backward(None), "sync": (*_backward(sync), sync), "quiet": (*_backward(quiet), quiet)}


def test_the_collectives_leave_the_gradients_bit_identical_and_average_like_numpy(runs):
    plain, synced = runs["none"][0], runs["sync"][0]
    assert all(torch.equal(a, b) for a, b in zip(plain, synced))
    other = [g * 0.5 + 0.25 for g in plain]                         # a second rank's gradients
    got = dpl.all_reduce_mean([plain, other], torch.float32)
    for a, b, g in zip(plain, other, got):
        want = (a.numpy() / np.float32(2)) + (b.numpy() / np.float32(2))
        assert np.array_equal(g.numpy(), want)


def test_each_bucket_is_on_the_backward_timeline_for_collective_costs_graph_latency(runs):
    grads, run, sync = runs["sync"]
    spans = sync.issuers[-1].spans
    sizes = sorted(4 * g.numel() for g in grads)
    assert sum(s.nbytes for s in spans) == sum(sizes)                           # every gradient once, fp32
    assert all(s.nbytes <= BUCKET or s.tensors == 1 for s in spans)
    sched = run.machine.scheduler
    for s in spans:
        cost = collective_cost("all-reduce", s.nbytes, 2, SYSTEM, itemsize=4, launch="graph")
        assert s.end_s - s.start_s >= cost.latency_s - 1e-15                   # contention only adds
        assert s.algorithm == cost.algorithm and s.start_s >= s.ready_s
    exact = [s for s in spans if s.end_s - s.start_s == pytest.approx(
        collective_cost("all-reduce", s.nbytes, 2, SYSTEM, itemsize=4, launch="graph").latency_s, rel=1e-12)]
    assert len(exact) >= len(spans) // 2
    for a, b in zip(spans, spans[1:]):                                          # one cc unit: one at a time
        assert b.start_s >= a.end_s - 1e-15
    assert spans[0].start_s < sched.compute_end                                 # overlaps the rest of backward
    assert sched.end == pytest.approx(max(sched.compute_end, spans[-1].end_s))
    assert sched.busy[CC_UNIT] == pytest.approx(sum(s.end_s - s.start_s for s in spans))
    ops = [o for o in run.ops if o.op == "all-reduce"]
    assert len(ops) == len(spans) and sum(o.dma_bytes for o in ops) == sum(sizes)   # 2 ranks: 2(n-1)/n = 1


def test_the_collectives_bytes_occupy_the_dma_queues_and_contend_with_backward(runs):
    plain = runs["none"][1]
    _, busy_run, sync = runs["sync"]
    _, quiet_run, quiet = runs["quiet"]
    queues = [u for u in busy_run.machine.scheduler.busy if isinstance(u, tuple) and u[0] == "dma"]
    dma = lambda r: sum(r.machine.scheduler.busy[u] for u in queues)   # noqa: E731
    nbytes = sum(s.nbytes for s in sync.issuers[-1].spans)
    rate = graph_chip("trn2").dma_queue_bytes_per_s
    assert dma(busy_run) - dma(quiet_run) == pytest.approx(nbytes / rate, rel=1e-9)   # all-reduce, 2 ranks
    assert dma(quiet_run) == pytest.approx(dma(plain), rel=1e-12)
    # without queue bytes the backward computes as if alone; with them its DMAs (or the collectives) wait
    assert quiet_run.machine.scheduler.compute_end == pytest.approx(plain.machine.scheduler.compute_end, rel=1e-12)
    later_compute = busy_run.machine.scheduler.compute_end - plain.machine.scheduler.compute_end
    longer_cc = (sum(s.end_s - s.start_s for s in sync.issuers[-1].spans)
                 - sum(s.end_s - s.start_s for s in quiet.issuers[-1].spans))
    assert later_compute >= -1e-15 and longer_cc >= -1e-15
    assert later_compute > 1e-9 or longer_cc > 1e-9


def test_the_step_overlaps_backward_and_collectives_and_is_never_shorter_than_either():
    r = train("llama-tiny", dp=2, bucket_bytes=BUCKET, steps=1, batch=2, seq=8, dtype="fp32")
    p, t = r.parallel, r.timing
    total = sum(s.end_s - s.start_s for s in p.gradient_sync)
    assert p.step_s < p.forward_s + p.backward_s + total + p.optimizer_s         # overlapped
    assert p.sync_end_s >= p.backward_end_s
    assert p.sync_end_s >= p.forward_s + total - 1e-15                            # one cc unit, after forward
    assert t.step_s == pytest.approx(t.forward_s + t.backward_s + t.optimizer_s + t.collectives_s)
    rows = r.to_dict()["rank_timings"]
    assert rows[0]["backward_ms"] == rows[1]["backward_ms"] and rows[0]["sync_ms"] == rows[1]["sync_ms"]
    # the backward's Report carries the collectives: its latency is the sync end, measured from its start
    assert r.parallel.sync_end_s == pytest.approx(p.forward_s + sum(b.latency_s for b in last_training().backwards))


def test_zero1_reduce_scatters_are_on_the_timeline_with_their_graph_cost_and_queue_bytes():
    sync = dpl.GradientSync("reduce-scatter", 4, SYSTEM, torch.float32, BUCKET)
    grads, run = _backward(sync)
    spans = sync.issuers[-1].spans
    assert sum(s.nbytes for s in spans) == sum(4 * g.numel() for g in grads)
    for s in spans:
        cost = collective_cost("reduce-scatter", s.nbytes, 4, SYSTEM, itemsize=4, launch="graph")
        assert s.op == "reduce-scatter" and s.end_s - s.start_s >= cost.latency_s - 1e-15
    ops = [o for o in run.ops if o.op == "reduce-scatter"]
    assert [o.dma_bytes for o in ops] == [round(s.nbytes * 3 / 4) for s in spans]     # (n - 1) / n of the bucket
    assert run.machine.scheduler.end == pytest.approx(max(run.machine.scheduler.compute_end, spans[-1].end_s))
