"""General matrix multiply on the Tensor engine: out[M, N] = a[M, K] @ b[K, N] (+ bias[N]).

a and b are HBM views (any strides). Blocking: a block of up to 4 x 128 rows of a is transposed
into SBUF once (DMA transpose) and stays resident as the stationary operand; b streams through a
ring of [128, 512] tiles (moving operand); each [128, 512] output tile accumulates over K in one
PSUM bank in fp32 and is evacuated (plus bias) by the Vector or Scalar engine, alternately.
"""
from __future__ import annotations

from trnlab.core import dtypes as dt
from trnlab.nki import isa as nisa
from trnlab.nki import language as nl
from trnlab.torch.kernels.common import P, ceil_div, chip, float_dtype_for, psum, sbuf

TN = 512          # moving free size = one PSUM bank of fp32
RING = 8          # moving tiles in flight (DMA prefetch depth)


def _row_block(k: int, itemsize: int) -> int:
    """How many 128-row tiles of a stay resident: the transposed block uses <= 1/2 of SBUF."""
    budget = chip().sbuf_bytes_per_partition // 2
    per_tile = ceil_div(k, P) * P * itemsize
    return max(1, min(4, budget // per_tile))


def gemm(out, a, b, bias=None):
    M, K = a.shape
    N = b.shape[1]
    cdt = float_dtype_for(a, b)
    isz = dt.itemsize(cdt)
    nk = ceil_div(K, P)
    mb = _row_block(K, isz) * P
    ring = [sbuf((P, TN), cdt, name=f"mov{i}") for i in range(RING)]
    step = 0
    for m0 in range(0, M, mb):
        msz_b = min(mb, M - m0)
        a_t = []
        for k in range(nk):
            k0, ksz = k * P, min(P, K - k * P)
            t = sbuf((P, mb), cdt, name=f"aT{k}")
            nisa.dma_transpose(dst=t[:ksz, :msz_b], src=a[m0:m0 + msz_b, k0:k0 + ksz], axes=(1, 0))
            a_t.append(t)
        m_tiles = ceil_div(msz_b, P)
        for n0 in range(0, N, TN):
            nsz = min(TN, N - n0)
            bias_t = None
            if bias is not None:
                bias_t = sbuf((P, TN), nl.float32, name="bias")
                row = bias.reshape(1, N)[:, n0:n0 + nsz]
                nisa.dma_copy(dst=bias_t[:min(P, msz_b), :nsz], src=row.broadcast_to((min(P, msz_b), nsz)))
            acc = [psum((P, TN), name=f"acc{i}") for i in range(m_tiles)]
            for k in range(nk):
                k0, ksz = k * P, min(P, K - k * P)
                mov = ring[step % RING]
                step += 1
                nisa.dma_copy(dst=mov[:ksz, :nsz], src=b[k0:k0 + ksz, n0:n0 + nsz])
                for i in range(m_tiles):
                    msz = min(P, msz_b - i * P)
                    nisa.nc_matmul(dst=acc[i][:msz, :nsz], stationary=a_t[k][:ksz, i * P:i * P + msz],
                                   moving=mov[:ksz, :nsz], accumulate=k > 0)
            for i in range(m_tiles):
                msz = min(P, msz_b - i * P)
                res = sbuf((P, TN), out.dtype, name="res")
                if bias_t is not None:
                    nisa.tensor_tensor(dst=res[:msz, :nsz], data1=acc[i][:msz, :nsz], data2=bias_t[:msz, :nsz],
                                       op=nl.add)
                elif i % 2 == 0:
                    nisa.tensor_copy(dst=res[:msz, :nsz], src=acc[i][:msz, :nsz])
                else:
                    nisa.activation(dst=res[:msz, :nsz], op=nl.copy, data=acc[i][:msz, :nsz])
                r0 = m0 + i * P
                nisa.dma_copy(dst=out[r0:r0 + msz, n0:n0 + nsz], src=res[:msz, :nsz])
    return out
