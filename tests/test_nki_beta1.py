"""Tests of trnlab.nki_beta1."""
import warnings

import numpy as np

import trnlab.nki_beta1 as nki
import trnlab.nki_beta1.language as nl
import trnlab.nki_beta1.typing as nt


# --- Beta 1: nki.benchmark accepts nt.tensor[[shape], dtype] placeholders --------------------------------
def test_b1_benchmark_with_typed_placeholders():
    @nki.jit
    def double(a):
        out = nl.ndarray(a.shape, dtype=a.dtype, buffer=nl.shared_hbm)
        nl.store(out, nl.load(a) * 2)
        return out

    bench = nki.benchmark(warmup=2, iters=3)(double)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")                     # the benchmark prints its summary
        out = bench(nt.tensor[[128, 256], nl.bfloat16])
    assert out.shape == (128, 256) and out.dtype == np.dtype(nl.bfloat16)
    assert np.isfinite(out.astype(np.float32)).all()
    # by hand (trn2): load and store of [128, 256] bf16 each cost ~1.3 us plus 8 partitions x 512 B per queue at
    # 23 B/ns x 0.44 x 512 / (512 + 128); the bf16 multiply of 256 elements per partition takes 256 Vector
    # cycles at most and 64 at least (NC-v3 up to 4x perf mode), plus the 60-cycle result latency, at 0.96 GHz
    dma_s = 1.3e-6 + 8 * 512 / (23e9 * 0.44 * 512 / (512 + 128))
    latency_s = bench.benchmark_result.nc_latency.get_latency_percentile(99) * 1e-6 - 10.4e-6   # trn2 launch time
    assert 2 * dma_s + (64 + 60) / 0.96e9 <= latency_s * (1 + 1e-9)
    assert latency_s <= (2 * dma_s + (256 + 60) / 0.96e9) * (1 + 1e-9)


def test_b1_benchmark_of_placeholders_only_is_timing_only():
    # placeholder inputs are random values the caller never sees: no value work, the same predicted time
    @nki.jit
    def double(a):
        out = nl.ndarray(a.shape, dtype=a.dtype, buffer=nl.shared_hbm)
        nl.store(out, nl.load(a) * 2)
        return out

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        timed = nki.benchmark(warmup=1, iters=1)(double)
        timed(nt.tensor[[128, 256], nl.float32])
        assert timed.kernel.last_run.machine.numerics is False
        computed = nki.benchmark(warmup=1, iters=1)(double)
        out = computed(np.full((128, 256), 3.0, np.float32))    # a real array: values computed
        assert computed.kernel.last_run.machine.numerics is True
    np.testing.assert_array_equal(out, np.full((128, 256), 6.0, np.float32))
    assert (timed.benchmark_result.nc_latency.get_latency_percentile(99)
            == computed.benchmark_result.nc_latency.get_latency_percentile(99))
