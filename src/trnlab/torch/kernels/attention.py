"""Flash attention: out = softmax(q k^T * scale + mask) v, one pass over K/V tiles with an online
softmax (running max and sum in fp32), so the [Sq, Skv] score matrix never leaves SBUF/PSUM.

Per 128 query rows: q^T is DMA-transposed into SBUF (stationary); for each 512-wide K/V tile the
Tensor engine computes scores into one PSUM bank, the Scalar engine scales them and takes
exp(s - max) with a fused row-sum, the Tensor engine transposes P in 128x128 blocks and multiplies
by V into PSUM, and the Vector engine rescales the fp32 accumulator. Causal tiles above the diagonal
are skipped; diagonal tiles are masked with affine_select (GpSimd). Grouped-query attention maps
query head h to K/V head h // (H / Hkv); for single-token decode the query heads of a group are
processed together as rows so each K/V tile is loaded once per group.
"""
from __future__ import annotations

from collections import deque

import numpy as np

from trnlab.core import dtypes as dt

from trnlab.nki import isa as nisa
from trnlab.nki import language as nl
from trnlab.torch.kernels.common import NEG_BIG, P, ceil_div, chip, float_dtype_for, load_transposed, psum, sbuf

F32 = nl.float32
TK = 512


RESIDENT = 96 * 1024      # bytes per partition for K^T, V and Q^T kept resident per K/V head


def flash_attention(out, q, k, v, *, scale: float, causal: bool = False, mask=None):
    """q [B,H,Sq,D], k/v [B,Hkv,Skv,D(v)], mask broadcastable to [B,H,Sq,Skv] (additive float or bool)."""
    b_, h_, sq, _ = q.shape
    hkv, skv = k.shape[1], k.shape[2]
    group = h_ // hkv
    mask4 = mask.broadcast_to((b_, h_, sq, skv)) if mask is not None else None
    cdt = float_dtype_for(q, k, v)
    for b in range(b_):
        for hk in range(hkv):
            kv = _KV(k.index((b, hk)), v.index((b, hk)), cdt)
            h0, h1 = hk * group, (hk + 1) * group
            if sq == 1 and not causal:          # decode: the group's query heads are the rows
                _drain(_attend(out.index((b, slice(h0, h1), 0)), _QT(q.index((b, slice(h0, h1), 0)), cdt), kv,
                               mask4.index((b, slice(h0, h1), 0)) if mask4 is not None else None, None, scale))
                continue
            banks = 2 if _shared_bank(kv.dv, min(P, sq), cdt) else 3
            _interleave(_streams(out, q, kv, mask4, b, h0, h1, sq, causal, scale, cdt),
                        max(1, min(STREAMS, chip().psum_banks // banks)))
    return out


STREAMS = 4     # query tiles issued interleaved, so one tile's softmax overlaps another's matmuls


def _streams(out, q, kv, mask4, b, h0, h1, sq, causal, scale, cdt):
    for h in range(h0, h1):
        qt = _QT(q.index((b, h)), cdt)
        for q0 in range(0, sq, P):
            q1 = min(sq, q0 + P)
            yield _attend(out.index((b, h, slice(q0, q1))), qt.rows(q0, q1), kv,
                          mask4.index((b, h, slice(q0, q1))) if mask4 is not None else None,
                          q0 if causal else None, scale)


def _interleave(gens, width: int) -> None:
    """Advance up to `width` step generators round-robin (one K/V tile each) until all finish."""
    active = []
    for g in gens:
        active.append(g)
        while len(active) >= width:
            active = [a for a in active if _step(a)]
    while active:
        active = [a for a in active if _step(a)]


def _step(gen) -> bool:
    try:
        next(gen)
        return True
    except StopIteration:
        return False


def _drain(gen) -> None:
    for _ in gen:
        pass


class _QT:
    """q^T [D, S] in SBUF (DMA transpose), per 128-wide D chunk; sliced per query tile."""

    def __init__(self, q, cdt, lo=0, hi=None):
        self.q, self.cdt = q, cdt
        self.d = q.shape[1]
        self.lo, self.hi = lo, (q.shape[0] if hi is None else hi)
        self.chunks = [(d0, min(self.d, d0 + P)) for d0 in range(0, self.d, P)]
        if hi is None:                      # whole sequence: load once if it fits, else per tile
            n = q.shape[0]
            self.tiles = None
            if n * dt.itemsize(cdt) * len(self.chunks) <= RESIDENT // 2:
                self.tiles = [self._load(0, n, d0, d1) for d0, d1 in self.chunks]

    def _load(self, r0, r1, d0, d1):
        return load_transposed(self.q[r0:r1, d0:d1], self.cdt, name="qT")

    def rows(self, r0, r1):
        sub = _QT.__new__(_QT)
        sub.q, sub.cdt, sub.d, sub.chunks, sub.lo, sub.hi = self.q, self.cdt, self.d, self.chunks, r0, r1
        sub.tiles = [t[:, r0:r1] for t in self.tiles] if self.tiles is not None else \
            [self._load(r0, r1, d0, d1) for d0, d1 in self.chunks]
        return sub

    @property
    def n(self):
        return self.hi - self.lo

    def chunk_tiles(self):
        if self.tiles is None:
            self.tiles = [self._load(self.lo, self.hi, d0, d1) for d0, d1 in self.chunks]
        return self.tiles


class _KV:
    """K^T [D, Skv] and V [128, Skv/128, Dv] of one K/V head, resident in SBUF when they fit
    (loaded once for all query heads and tiles), else streamed per 512-wide tile."""

    def __init__(self, k, v, cdt):
        self.k, self.v, self.cdt = k, v, cdt
        self.skv, self.d, self.dv = k.shape[0], k.shape[1], v.shape[1]
        self.chunks = [(d0, min(self.d, d0 + P)) for d0 in range(0, self.d, P)]
        isz = dt.itemsize(cdt)
        need = self.skv * isz * len(self.chunks) + ceil_div(self.skv, P) * self.dv * isz
        self.resident = need <= RESIDENT
        if self.resident:
            self.kt = [self._load_kt(0, self.skv, d0, d1) for d0, d1 in self.chunks]
            self.vt = [self._load_v(c0, min(self.skv, c0 + P)) for c0 in range(0, self.skv, P)]

    def _load_kt(self, k0, k1, d0, d1):
        return load_transposed(self.k[k0:k1, d0:d1], self.cdt, name="kT")

    def _load_v(self, c0, c1):
        t = sbuf((c1 - c0, self.dv), self.cdt, name="v")
        nisa.dma_copy(dst=t, src=self.v[c0:c1])
        return t

    def kt_tiles(self, k0, k1):
        if self.resident:
            return [t[:, k0:k1] for t in self.kt]
        return [self._load_kt(k0, k1, d0, d1) for d0, d1 in self.chunks]

    def v_tile(self, c0, c1):
        if self.resident:
            return self.vt[c0 // P][:c1 - c0]
        return self._load_v(c0, c1)


def _pt_width(rows, cdt) -> int:
    """fp32 PSUM columns that hold the P^T blocks of one K/V tile."""
    return TK // P * rows * dt.itemsize(cdt) // 4


def _shared_bank(dv, rows, cdt) -> bool:
    return dv + _pt_width(rows, cdt) <= TK


class _Buffers:
    """One stream's tiles, allocated once: streams never share an address, so the scheduler sees
    no false (write-after-read) dependencies between them."""

    def __init__(self, rows, dv, cdt):
        self.scores = psum((rows, TK), name="scores")
        width = _pt_width(rows, cdt)
        if _shared_bank(dv, rows, cdt):                            # P@V and P^T share one PSUM bank
            bank = psum((P, TK), name="pv_pT")
            self.pv = bank[:rows, :dv]
            self.pt_ps = bank[:, dv:dv + width].bitcast(cdt)
        else:
            self.pv = psum((rows, dv), name="pv")
            self.pt_ps = psum((P, TK // P * rows), name="pT_ps", dtype=cdt)
        self.pt = sbuf((P, TK // P * rows), cdt, name="pT")
        self.s = sbuf((rows, TK), F32, name="s")
        self.mask = sbuf((rows, TK), F32, name="mask")
        self.p = sbuf((rows, TK), cdt, name="p")
        self.m = [_vec(rows, "m0"), _vec(rows, "m1")]
        self.neg_m, self.alpha, self.rowsum = _vec(rows, "negm"), _vec(rows, "alpha"), _vec(rows, "rowsum")


def _attend(out, qt, kv, mask, causal_q0, scale):
    """out[R, Dv] = attention of R query rows (q^T tiles in qt) over one K/V head.

    A generator: it yields after each K/V tile so that several query tiles can be interleaved."""
    rows = qt.n
    q_tiles = qt.chunk_tiles()
    buf = _Buffers(rows, kv.dv, kv.cdt)
    m_run = buf.m[0]                       # running max of the raw (unscaled) scores
    nisa.memset(dst=m_run, value=NEG_BIG)
    l_run = _vec(rows, "l")
    nisa.memset(dst=l_run, value=0.0)
    o_acc = sbuf((rows, kv.dv), F32, name="o")
    nisa.memset(dst=o_acc, value=0.0)
    kv_end = kv.skv if causal_q0 is None else min(kv.skv, causal_q0 + rows)
    for it, k0 in enumerate(range(0, kv_end, TK)):
        n = min(TK, kv_end - k0)
        s_ps = buf.scores[:, :n]
        for j, kt in enumerate(kv.kt_tiles(k0, k0 + n)):
            nisa.nc_matmul(dst=s_ps, stationary=q_tiles[j], moving=kt, accumulate=j > 0)
        s = s_ps
        if causal_q0 is not None and k0 + n - 1 > causal_q0:       # tile crosses the diagonal
            s = buf.s[:, :n]
            nisa.activation(dst=s, op=nl.copy, data=s_ps)
            nisa.affine_select(dst=s, pattern=[[-1, n]], channel_multiplier=1, offset=causal_q0 - k0,
                               on_true_tile=s, on_false_value=NEG_BIG, cmp_op=nl.greater_equal)
        if mask is not None:
            s = _apply_mask(s, mask[:, k0:k0 + n], buf, n, scale)
        yield                                   # phases of different streams interleave on the engines
        m_new = buf.m[(it + 1) % 2]
        nisa.tensor_reduce(dst=m_new, op=nl.maximum, data=s, axis=1)
        nisa.tensor_tensor(dst=m_new, data1=m_new, data2=m_run, op=nl.maximum)
        nisa.tensor_scalar(dst=buf.neg_m, data=m_new, op0=nl.multiply, operand0=-float(scale))  # -scale*max
        yield
        nisa.activation(dst=buf.alpha, op=nl.exp, data=m_run, bias=buf.neg_m, scale=float(scale))
        p = buf.p[:, :n]
        nisa.activation_reduce(dst=p, op=nl.exp, data=s, bias=buf.neg_m, scale=float(scale),
                               reduce_op=nl.add, reduce_res=buf.rowsum)
        yield
        nisa.scalar_tensor_tensor(dst=l_run, data=l_run, op0=nl.multiply, operand0=buf.alpha, op1=nl.add,
                                  operand1=buf.rowsum)
        yield
        chunks = [(c0, min(P, n - c0)) for c0 in range(0, n, P)]
        for i, (c0, c) in enumerate(chunks):        # P^T blocks side by side in one PSUM bank
            nisa.nc_transpose(dst=buf.pt_ps[:c, i * rows:(i + 1) * rows], data=p[:, c0:c0 + c])
        yield
        width = len(chunks) * rows
        if n % P == 0:
            nisa.activation(dst=buf.pt[:, :width], op=nl.copy, data=buf.pt_ps[:, :width])
        else:
            for i, (c0, c) in enumerate(chunks):
                nisa.tensor_copy(dst=buf.pt[:c, i * rows:(i + 1) * rows], src=buf.pt_ps[:c, i * rows:(i + 1) * rows])
        yield
        for i, (c0, c) in enumerate(chunks):
            nisa.nc_matmul(dst=buf.pv, stationary=buf.pt[:c, i * rows:(i + 1) * rows],
                           moving=kv.v_tile(k0 + c0, k0 + c0 + c), accumulate=i > 0)
        nisa.scalar_tensor_tensor(dst=o_acc, data=o_acc, op0=nl.multiply, operand0=buf.alpha, op1=nl.add,
                                  operand1=buf.pv)
        m_run = m_new
        yield
    recip = _vec(rows, "recip")
    nisa.reciprocal(dst=recip, data=l_run)
    o = sbuf((rows, kv.dv), out.dtype, name="out")
    nisa.tensor_scalar(dst=o, data=o_acc, op0=nl.multiply, operand0=recip)
    nisa.dma_copy(dst=out, src=o)
    buf.scores = buf.pv = buf.pt_ps = None          # PSUM banks go back to the next stream
    _recent.append((o, o_acc, l_run, recip, buf))   # SBUF addresses stay distinct from the next streams


_recent: deque = deque(maxlen=2 * STREAMS + 2)


def _apply_mask(s, mask, buf, n, scale):
    """s + mask / scale (scores are still unscaled); bool masks (1 = attend) become 0 / -3e38."""
    mt = buf.mask[:, :n]
    nisa.dma_copy(dst=mt, src=mask)
    if dt.is_float(mask.dtype):
        nisa.tensor_scalar(dst=mt, data=mt, op0=nl.maximum, operand0=NEG_BIG, op1=nl.multiply,
                           operand1=1.0 / float(scale))
    else:
        nisa.tensor_scalar(dst=mt, data=mt, op0=nl.subtract, operand0=1.0, op1=nl.multiply, operand1=-NEG_BIG)
    out = buf.s[:, :n]
    nisa.tensor_tensor(dst=out, data1=s, data2=mt, op=nl.add)
    return out


def _vec(rows, name):
    return sbuf((rows, 1), F32, name=name)


__all__ = ["flash_attention", "np", "ceil_div"]
