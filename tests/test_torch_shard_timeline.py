"""Tensor parallelism's collectives on the ranks' timelines (trnlab.torch.shard.run_ranks): each collective
node issues an ISA CollectiveInstruction on every rank, its values checked against eager PyTorch, its time
on the rank's collective unit and DMA queues, overlapping independent compute. Oracles: eager PyTorch,
trnlab.isa.collectives.collective_cost called directly (launch="graph"), nccl-tests' bus-traffic factors
counted by hand, and a what-if run whose collectives cost nothing (the compute alone)."""
import dataclasses
import math

import pytest

torch = pytest.importorskip("torch")

import trnlab.torch as tt  # noqa: E402
from trnlab.errors import LoweringError  # noqa: E402
from trnlab.hw.systems import get_system  # noqa: E402
from trnlab.isa.collectives import collective_cost  # noqa: E402
from trnlab.torch import capture, models, shard  # noqa: E402
from trnlab.torch.report import BOUNDS  # noqa: E402

SEQ, TP = 16, 4
SYSTEM = get_system("trn2.48xlarge-lnc1")


def _close(got, ref, dtype="float32"):
    assert got.shape == ref.shape
    assert float((got - ref).abs().max()) <= BOUNDS[dtype] * float(ref.abs().max())


def test_collectives_are_instructions_on_every_ranks_collective_unit_and_dma_queues():
    """llama-tiny at TP 4, fp32: per layer two all-reduces of [16, 256] fp32 (16 x 256 x 4 B = 16 KiB),
    one after the embedding, one all-gather of the [16, 512] logits. Rank 0's trace holds one event per
    collective on its "cc" track lasting collective_cost(..., launch="graph"); its bytes on the DMA queues are
    the bus traffic 2(n-1)/n of the buffer (all-reduce) and (n-1)/n (all-gather); every rank's collective unit
    is busy for the sum; the values (computed by the ISA instruction) match eager."""
    m = models.build("llama-tiny")
    cfg = m.cfg
    ids = models.example_ids(cfg, 1, SEQ)
    fn = tt.compile(m, (ids,), dtype=torch.float32, tp=TP)
    with torch.no_grad():
        _close(fn.last_run.outputs, m(ids))
    act, logits = SEQ * cfg.hidden * 4, SEQ * cfg.vocab * 4
    want = [("all-reduce", act)] * (2 * cfg.layers + 1) + [("all-gather", logits)]
    seconds = [collective_cost(op, b, TP, SYSTEM, launch="graph").latency_s for op, b in want]
    sched = fn.last_run.runs[0].machine.scheduler
    cc = [e for e in sched.records if e.track == "cc"]
    assert [e.api.rsplit(".", 1)[1] for e in cc] == [op.replace("-", "_") for op, _ in want]
    for e, s in zip(cc, seconds):
        assert math.isclose(e.end - e.start, s, rel_tol=1e-9)
    hand = {"all-reduce": 2 * (TP - 1) / TP, "all-gather": (TP - 1) / TP}
    for e, (op, b) in zip(cc, want):
        moved = sum(q.nbytes for q in sched.records if q.index == e.index and q.track.startswith("dma.q"))
        assert abs(moved - hand[op] * b) <= 16           # an equal share per queue, rounded down
    for run in fn.last_run.runs:
        assert math.isclose(run.machine.scheduler.busy["cc"], sum(seconds), rel_tol=1e-9)
    assert fn.report.numerics_ok and fn.report.simulated_ranks == TP


class _Overlap(torch.nn.Module):
    """A column- then row-parallel MLP (an all-reduce of its [1, S, h] partial sums) and, after it in program
    order, a product of the input with a buffer (not a parameter: replicated, not split), independent of it."""

    def __init__(self, h=256, f=1024, w=256):
        super().__init__()
        g = torch.Generator().manual_seed(0)
        self.up = torch.nn.Linear(h, f, bias=False)
        self.down = torch.nn.Linear(f, h, bias=False)
        self.register_buffer("w", torch.randn(w, h, generator=g) / h ** 0.5)

    def forward(self, x):
        y = self.down(self.up(x))
        return y, torch.nn.functional.linear(x, self.w)


class _Product(torch.nn.Module):
    """_Overlap's independent product alone."""

    def __init__(self, w):
        super().__init__()
        self.register_buffer("w", w)

    def forward(self, x):
        return torch.nn.functional.linear(x, self.w)


@pytest.mark.parametrize("width", [256, 2048])
def test_independent_compute_overlaps_an_all_reduce(width, monkeypatch):
    """Width 256: the independent product is shorter than the all-reduce; 2048: longer. Either way the run
    ends no earlier than the compute alone (a what-if run whose collective costs nothing) or the all-reduce
    alone, and earlier than the two summed by at least half the shorter of the product (run alone on one
    core) and the all-reduce (serialising them would hide nothing); the all-reduce's interval on the cc
    track overlaps Tensor-engine work of the independent product."""
    torch.manual_seed(0)
    m = _Overlap(w=width).eval()
    x = torch.randn(1, 128, 256)
    fn = tt.compile(m, (x,), dtype=torch.float32, tp=TP)
    with torch.no_grad():
        for got, ref in zip(fn.last_run.outputs, m(x)):
            _close(got, ref)
    alone = collective_cost("all-reduce", 128 * 256 * 4, TP, SYSTEM, launch="graph").latency_s
    real = shard.collective_cost
    monkeypatch.setattr(shard, "collective_cost",
                        lambda *a, **k: dataclasses.replace(real(*a, **k), latency_s=0.0))
    compute = tt.compile(m, (x,), dtype=torch.float32, tp=TP).report.latency_s
    product = tt.compile(_Product(m.w), (x,), dtype=torch.float32).report.latency_s
    latency = fn.report.latency_s
    assert max(compute, alone) <= latency <= compute + alone - min(product, alone) / 2
    records = fn.last_run.runs[0].machine.scheduler.records
    (ar,) = [e for e in records if e.track == "cc"]
    assert any(e.track == "tensor" and e.index > ar.index and e.start < ar.end and e.end > ar.start
               for e in records)
    assert 0 <= fn.report.collectives_us <= fn.report.collectives_total_us * (1 + 1e-9)
    assert math.isclose(fn.report.collectives_total_us, alone * 1e6, rel_tol=1e-9)


def test_timing_only_and_functional_runs_give_the_same_timeline():
    """Timing-only simulates rank 0 alone (its own arrival is the latest: the ranks are symmetric); the
    functional run meets all 4 ranks at each collective. Same instructions, same latency."""
    m = models.build("llama-tiny")
    ids = models.example_ids(m.cfg, 1, SEQ)
    real = tt.compile(m, (ids,), tp=TP, name="llama-tiny").report
    meta = models.build("llama-tiny", meta=True)
    timing = tt.compile(meta, (ids.to("meta"),), tp=TP, numerics=False, name="llama-tiny").report
    assert (real.simulated_ranks, timing.simulated_ranks) == (TP, 1)
    assert timing.latency_s == pytest.approx(real.latency_s, rel=1e-12)
    assert timing.collectives_us == pytest.approx(real.collectives_us, rel=1e-12)
    assert timing.instructions == real.instructions


def test_a_collective_node_outside_run_ranks_is_refused():
    """A rank's graph run alone on one core (no rendezvous) cannot compute a collective: LoweringError."""
    from trnlab.torch.executor import Program
    m = models.build("llama-tiny")
    ids = models.example_ids(m.cfg, 1, SEQ)
    ep = capture.export(m, (ids,), torch.float32)
    plan = shard.shard(ep, TP)
    with pytest.raises(LoweringError, match="run_ranks"):
        Program(shard.rank_export(plan, ep, 0), name="rank0").run((ids,))
