"""The profile summary's intensity and roofline use the same bytes as MBU (HBM traffic) and the dtype
peaks of trnlab.timing.metrics (trn2 fp8: 2x bf16, AWS's "158 TFLOPS" double-row FP8)."""
import ml_dtypes
import numpy as np

import trnlab.nki as nki
import trnlab.nki.isa as nisa
import trnlab.nki.language as nl
from trnlab.profile import summarize
from trnlab.timing.metrics import peak_flops


@nki.jit
def matmul_with_sbuf_copy(lhsT, rhs):
    """One [128,128] x [128,512] matmul whose moving tile also takes an SBUF->SBUF DMA (no HBM traffic)."""
    out = nl.ndarray((128, 512), dtype=nl.float32, buffer=nl.shared_hbm)
    lt = nl.ndarray((128, 128), dtype=lhsT.dtype, buffer=nl.sbuf)
    staged = nl.ndarray((128, 512), dtype=rhs.dtype, buffer=nl.sbuf)
    rt = nl.ndarray((128, 512), dtype=rhs.dtype, buffer=nl.sbuf)
    nisa.dma_copy(dst=lt, src=lhsT)
    nisa.dma_copy(dst=staged, src=rhs)
    nisa.dma_copy(dst=rt, src=staged)
    ps = nl.ndarray((128, 512), dtype=nl.float32, buffer=nl.psum)
    nisa.nc_matmul(dst=ps, stationary=lt, moving=rt)
    ot = nl.ndarray((128, 512), dtype=nl.float32, buffer=nl.sbuf)
    nisa.tensor_copy(dst=ot, src=ps)
    nisa.dma_copy(dst=out, src=ot)
    return out


def test_mbu_and_intensity_count_hbm_bytes_not_sbuf_copies():
    rng = np.random.default_rng(0)
    a = rng.standard_normal((128, 128)).astype(ml_dtypes.bfloat16)
    b = rng.standard_normal((128, 512)).astype(ml_dtypes.bfloat16)
    run = matmul_with_sbuf_copy.run((a, b), {}, target="trn2", trace=True)
    s = summarize(run)
    t = run.machine.scheduler.end
    hbm = (128 * 128 + 128 * 512) * 2 + 128 * 512 * 4            # two loads and one fp32 store
    assert s["dma"]["bytes"] == hbm + 128 * 512 * 2                # DMA traffic includes the SBUF copy
    assert s["hbm_bytes"] == hbm
    assert s["mbu"] == hbm / (2.9e12 / 8 * t)                      # trn2: 2.9 TB/s per chip, 8 cores
    assert s["arithmetic_intensity"] == 2 * 128 * 128 * 512 / hbm


def test_dtype_peaks_are_the_published_ones():
    from trnlab.hw import TRN1, TRN2
    bf16 = 128 * 128 * 2 * 2.4e9
    assert peak_flops(TRN2, (ml_dtypes.bfloat16,)) == bf16
    assert peak_flops(TRN2, (np.dtype(ml_dtypes.float8_e4m3),)) == 2 * bf16     # 158 TFLOPS
    assert peak_flops(TRN2, (np.dtype(np.float32),)) == bf16 / 4                 # 20 TFLOPS
    assert peak_flops(TRN1, (np.dtype(ml_dtypes.float8_e4m3),)) == 128 * 128 * 2 * 2.8e9   # cFP8 at bf16 rate
