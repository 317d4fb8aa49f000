"""trnlab.hw.graph_chip: compiled model graphs (trnlab.torch, trnlab.plan) run their DMAs at the fitted
graph_dma_efficiency; NKI kernels keep the kernel-level dma_efficiency."""
import pytest
import torch

from trnlab.errors import TrnlabError
from trnlab.hw import TRN1, get_chip, graph_chip


def test_graph_chip_changes_only_the_dma_efficiency():
    g = graph_chip("trn1")
    assert g.dma_efficiency == TRN1.graph_dma_efficiency != TRN1.dma_efficiency
    assert get_chip("trn1").dma_efficiency == TRN1.dma_efficiency       # the NKI-kernel preset is untouched
    assert g.replace(dma_efficiency=TRN1.dma_efficiency) == TRN1
    assert graph_chip("trn1") is g                                      # one object: cost memos key on it


def test_graph_dma_efficiency_is_checked():
    with pytest.raises(TrnlabError, match="graph_dma_efficiency"):
        TRN1.replace(graph_dma_efficiency=1.5)


def _add_latency(chip) -> float:
    from trnlab.torch.api import CompiledModel

    class Add(torch.nn.Module):
        def forward(self, x, y):
            return x + y

    x = torch.empty(2048, 8192, dtype=torch.bfloat16)
    m = CompiledModel(Add(), (x, x.clone()), target=chip, numerics=False, check=False, trace=False,
                      run_example=False)
    m(x, x.clone())
    return m.report.latency_s


def test_a_memory_bound_graph_runs_at_the_graph_dma_efficiency():
    # 2 x 32 MiB read + 32 MiB written, all through the DMA queues: the time scales as 1 / efficiency
    # (hand count), less the fixed DMA start latencies
    slow = _add_latency(TRN1.replace(graph_dma_efficiency=TRN1.dma_efficiency))
    fast = _add_latency(TRN1)
    expected = TRN1.graph_dma_efficiency / TRN1.dma_efficiency
    assert slow / fast == pytest.approx(expected, rel=0.1)
    nbytes = 3 * 2048 * 8192 * 2
    assert nbytes / fast < TRN1.dma_queues * TRN1.dma_queue_bytes_per_s * TRN1.graph_dma_efficiency
