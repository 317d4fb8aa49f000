"""Flash-attention forward: out = softmax(scale * q @ k.T + mask) @ v, one pass over K/V tiles with
an online softmax (running max and sum in fp32), so the [Sq, Sk] score matrix never leaves SBUF/PSUM.

Public kernel (@nki.jit):
  flash_attention(q, k, v, mask=None, causal=True, scale=None, return_lse=False)
  q     [B, Hq, Sq, D]   (also [H, S, D] or [S, D], read as B = 1 / H = 1)
  k, v  [B, Hkv, Sk, D] and [B, Hkv, Sk, Dv]; Hq must be a multiple of Hkv: grouped-query attention
                         maps query head h to kv head h // (Hq // Hkv)
  mask  optional [Sq, Sk] or [B|1, Hq|1, Sq, Sk]: additive float (0 / -inf) or bool (True = attend)
  causal=True           query i sees keys j <= i (top-left aligned, as torch's is_causal)
  scale=None            defaults to 1 / sqrt(D)
  returns [..., Sq, Dv] in q.dtype. D > 128 is contracted in 128-row chunks accumulating in PSUM.
  return_lse=True       returns (out, lse): lse [..., Sq] fp32 = log(sum_j exp(scale * s_ij + mask_ij)) per
                        query row (natural log), what the backward (flash_attention_bwd) recomputes P from
  A query row the mask hides entirely gets out = 0 and lse = 0, as PyTorch's CPU flash attention.
Model-path entry (HBM views, output given): flash_attention_into(out, q, k, v, scale=, causal=, mask=,
lse=None) with 4-D q/k/v/out, a mask broadcastable to [B, H, Sq, Sk] and an optional [B, H, Sq] fp32
lse output; for single-token decode (Sq == 1, not causal) the query heads of a group are processed
together as rows, so each K/V tile (e.g. of a KV cache) is loaded once per group.

Decode streams the cache: q^T is queued first, then K^T (2048-key pieces), V and the mask tile by
tile in key order, so the first scores start while the rest of the cache is still in flight (as
AWS's decode kernels do) instead of after the whole cache. V tiles are key-interleaved (m consecutive
cache rows per partition: one long descriptor instead of m 256-byte ones), and the even and the odd
tiles are two online softmaxes interleaved on the engines and merged at the end (flash-decoding).

Per 128 query rows: q^T is DMA-transposed into SBUF (stationary); for each 512-wide K/V tile the
Tensor engine computes scores into one PSUM bank, the Scalar engine takes exp(scale * (s - max))
with a fused row-sum, the Tensor engine transposes P in 128x128 blocks and multiplies by V into
PSUM, and the Vector engine rescales the fp32 accumulator. Causal tiles above the diagonal are
skipped; diagonal tiles are masked with affine_select (GpSimd). K^T and V of a kv head that fit
KV_BUDGET stay resident and are shared by all query heads of its group; otherwise they stream per
tile. STREAMS query tiles are issued interleaved step by step (each with its own buffers), so the
in-order engines overlap one tile's softmax with another's matmuls (about 3x shorter than one tile
at a time). Statistics are fp32; P is rounded to the compute dtype (bf16) for the PE as on hardware
and the output is rounded once to q.dtype.
"""
from __future__ import annotations

import math
from collections import deque

import numpy as np

import trnlab.nki as nki
from trnlab.core import dtypes as dt
from trnlab.errors import ShapeError
from trnlab.kernels._common import NEG_BIG, P, ceil_div, float_dtype_for, load_transposed, psum, sbuf, strided
from trnlab.kernels._examples import randn, scaled
from trnlab.nki import isa as nisa
from trnlab.nki import language as nl

F32 = nl.float32
TK = 512                  # keys per score tile: one fp32 PSUM bank per query row
KV_BUDGET = 96 * 1024     # SBUF bytes per partition for one kv head's K^T and V kept resident
Q_BUDGET = 48 * 1024      # SBUF bytes per partition for one query head's q^T kept resident
KT_PIECE = 2048           # decode: keys per resident K^T DMA (4 KiB descriptors, DMAG: >= 4 KiB saturates)
STREAMS = 4               # query tiles issued interleaved, so one tile's softmax overlaps another's matmuls


@nki.jit
def flash_attention(q, k, v, mask=None, causal=True, scale=None, return_lse=False):
    q4, k4, v4 = _as_4d(q), _as_4d(k), _as_4d(v)
    _check(q4, k4, v4, mask)
    scale = 1.0 / math.sqrt(q4.shape[3]) if scale is None else float(scale)
    out = nl.ndarray(tuple(q.shape[:-1]) + (v.shape[-1],), dtype=q.dtype, buffer=nl.shared_hbm)
    lse = nl.ndarray(tuple(q.shape[:-1]), dtype=F32, buffer=nl.shared_hbm) if return_lse else None
    flash_attention_into(_as_4d(out), q4, k4, v4, scale=scale, causal=bool(causal),
                         mask=None if mask is None else _as_4d(mask),
                         lse=None if lse is None else lse.reshape((1,) * (3 - lse.ndim) + tuple(lse.shape)))
    return (out, lse) if return_lse else out


def _as_4d(t):
    return t.reshape((1,) * (4 - t.ndim) + tuple(t.shape))


def _check(q4, k4, v4, mask):
    b, hq, sq, d = q4.shape
    if k4.shape[:3] != v4.shape[:3] or k4.shape[0] != b or k4.shape[3] != d or hq % k4.shape[1]:
        raise ShapeError(f"flash_attention: q {list(q4.shape)} needs k, v [B, Hkv, Sk, D] with Hq % Hkv == 0; "
                         f"got k {list(k4.shape)}, v {list(v4.shape)}")
    if mask is not None:
        ok = mask.ndim in (2, 4) and tuple(mask.shape[-2:]) == (sq, k4.shape[2]) and (
            mask.ndim == 2 or (mask.shape[0] in (1, b) and mask.shape[1] in (1, hq)))
        if not ok:
            raise ShapeError(f"flash_attention: mask {list(mask.shape)} must be [Sq, Sk] or [B|1, Hq|1, Sq, Sk] "
                             f"with Sq={sq}, Sk={k4.shape[2]}")


def flash_attention_into(out, q, k, v, *, scale: float, causal: bool = False, mask=None, lse=None):
    """out [B,H,Sq,Dv] = attention; q [B,H,Sq,D], k/v [B,Hkv,Skv,D(v)] HBM views, mask broadcastable
    to [B,H,Sq,Skv] (additive float or bool); lse [B,H,Sq] fp32, if given, receives the logsumexp."""
    b_, h_, sq, _ = q.shape
    hkv, skv = k.shape[1], k.shape[2]
    group = h_ // hkv
    mask4 = mask.broadcast_to((b_, h_, sq, skv)) if mask is not None else None
    cdt = float_dtype_for(q, k, v)
    ring = deque(maxlen=2 * STREAMS + 2)    # the last streams' tiles: SBUF addresses stay distinct from the
    for b in range(b_):                     # next streams'; they die with this call
        for hk in range(hkv):
            h0, h1 = hk * group, (hk + 1) * group
            if sq == 1 and not causal:          # decode: the group's query heads are the rows; q^T is
                qt = _QT(q.index((b, slice(h0, h1), 0)), cdt)       # queued before the cache it scores
                mrows = mask4.index((b, slice(h0, h1), 0)) if mask4 is not None else None
                kv = _DecodeKV(k.index((b, hk)), v.index((b, hk)), cdt, mrows)
                _decode(out.index((b, slice(h0, h1), 0)), qt, kv, mrows, scale,
                        column(lse.index((b, slice(h0, h1), 0))) if lse is not None else None, ring)
                continue
            kv = _KV(k.index((b, hk)), v.index((b, hk)), cdt)
            banks = 2 if _shared_bank(kv.dv, min(P, sq), cdt) else 3
            _interleave(_streams(out, q, kv, mask4, b, h0, h1, sq, causal, scale, cdt, lse, ring),
                        max(1, min(STREAMS, nl.tile_size.psum_num_banks // banks)))
    return out


def _decode(out, qt, kv, mask, scale, lse, ring):
    """One decode step of a kv group: with two or more K/V tiles, the even and the odd tiles are two
    interleaved online softmaxes (flash-decoding's split over the cache) so one's softmax overlaps
    the other's matmuls, combined at the end: m = max(m0, m1), l = sum l_i e^(scale (m_i - m)),
    o = sum o_i e^(scale (m_i - m))."""
    starts = list(range(0, kv.skv, TK))
    if len(starts) < 2:
        _drain(_attend(out, qt, kv, mask, None, scale, lse, ring=ring))
        return
    parts = [{}, {}]
    _interleave([_attend(None, qt, kv, mask, None, scale, None, starts[i::2], parts[i], ring=ring)
                 for i in range(2)], 2)
    a, b = parts
    rows = qt.n
    m = _vec(rows, "m")
    nisa.tensor_tensor(dst=m, data1=a["m"], data2=b["m"], op=nl.maximum)
    neg_m = _vec(rows, "negm")
    nisa.tensor_scalar(dst=neg_m, data=m, op0=nl.multiply, operand0=-float(scale))
    for part in parts:
        part["alpha"] = _vec(rows, "alpha")
        nisa.activation(dst=part["alpha"], op=nl.exp, data=part["m"], bias=neg_m, scale=float(scale))
    nisa.tensor_scalar(dst=b["l"], data=b["l"], op0=nl.multiply, operand0=b["alpha"])
    nisa.scalar_tensor_tensor(dst=a["l"], data=a["l"], op0=nl.multiply, operand0=a["alpha"], op1=nl.add,
                              operand1=b["l"])
    nisa.tensor_scalar(dst=b["o"], data=b["o"], op0=nl.multiply, operand0=b["alpha"])
    nisa.scalar_tensor_tensor(dst=a["o"], data=a["o"], op0=nl.multiply, operand0=a["alpha"], op1=nl.add,
                              operand1=b["o"])
    _finish(out, m, a["l"], a["o"], mask, scale, lse, a["buf"], ring)
    ring.append((m, neg_m, a["alpha"], b["alpha"], b["o"], b["l"], b["m"], a["m"], b["buf"]))


def _streams(out, q, kv, mask4, b, h0, h1, sq, causal, scale, cdt, lse, ring):
    for h in range(h0, h1):
        qt = _QT(q.index((b, h)), cdt)
        for q0 in range(0, sq, P):
            q1 = min(sq, q0 + P)
            yield _attend(out.index((b, h, slice(q0, q1))), qt.rows(q0, q1), kv,
                          mask4.index((b, h, slice(q0, q1))) if mask4 is not None else None,
                          q0 if causal else None, scale,
                          column(lse.index((b, h, slice(q0, q1)))) if lse is not None else None, ring=ring)


def _interleave(gens, width: int) -> None:
    """Advance up to `width` step generators round-robin (one K/V tile each) until all finish. A None
    in gens is a barrier: the generators before it finish before the next one starts."""
    active = []
    for g in gens:
        if g is None:
            while active:
                active = [a for a in active if _step(a)]
            continue
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
            if n * dt.itemsize(cdt) * len(self.chunks) <= Q_BUDGET:
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

    def __init__(self, k, v, cdt, load=True):
        self.k, self.v, self.cdt = k, v, cdt
        self.skv, self.d, self.dv = k.shape[0], k.shape[1], v.shape[1]
        self.chunks = [(d0, min(self.d, d0 + P)) for d0 in range(0, self.d, P)]
        isz = dt.itemsize(cdt)
        need = self.skv * isz * len(self.chunks) + ceil_div(self.skv, P) * self.dv * isz
        self.resident = need <= KV_BUDGET
        if self.resident and load:
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


class _DecodeKV(_KV):
    """_KV for decode, with V in key-interleaved tiles: a K/V tile of n keys is split into m =
    ceil(n / 128) blocks, key k0 + m*p + j on partition p of block j, so each partition reads m
    consecutive V rows (one m*Dv-element descriptor instead of m short ones: DMAG, <256 B is
    overhead-bound) and P^T block j is the transpose of P's columns j, j + m, ... (a strided read).
    Only for a fixed tiling (every query row sees all keys): causal tiles end at varying keys."""

    def __init__(self, k, v, cdt, mask=None):
        self.vtiles, self.kpieces, self.masks = {}, {}, {}
        super().__init__(k, v, cdt, load=False)
        if mask is not None:                  # a resident cache brings its mask tiles along
            self.resident = self.resident and self.skv * (len(self.chunks) + 1) * dt.itemsize(cdt) + \
                ceil_div(self.skv, P) * self.dv * dt.itemsize(cdt) + self.skv * dt.itemsize(mask.dtype) <= KV_BUDGET
        if not self.resident:
            return
        for k0 in range(0, self.skv, TK):     # K^T in KT_PIECE-key pieces, V and mask per tile, in key
            k1 = min(self.skv, k0 + TK)       # order: the first tiles' scores start while the rest streams
            if k0 % KT_PIECE == 0:
                e = min(self.skv, k0 + KT_PIECE)
                self.kpieces[k0] = [self._load_kt(k0, e, d0, d1) for d0, d1 in self.chunks]
            self.vtiles[k0] = self._load_vtile(k0, k1)
            if mask is not None:
                self.masks[k0] = sbuf((mask.shape[0], k1 - k0), mask.dtype, name="mask_in")
                nisa.dma_copy(dst=self.masks[k0], src=mask[:, k0:k1])

    def kt_tiles(self, k0, k1):
        if not self.resident:
            return super().kt_tiles(k0, k1)
        base = k0 - k0 % KT_PIECE
        return [t[:, k0 - base:k1 - base] for t in self.kpieces[base]]

    def _load_vtile(self, k0, k1):
        n = k1 - k0
        m = ceil_div(n, P)
        if n % m:                                # ragged: one 128-row block per DMA, as _KV
            return [(c0, min(P, n - c0), 1, _KV._load_v(self, k0 + c0, k0 + min(n, c0 + P))) for c0 in range(0, n, P)]
        t = sbuf((n // m, m, self.dv), self.cdt, name="v")
        rs, es = self.v.strides
        nisa.dma_copy(dst=t, src=strided(self.v[k0:k1], (n // m, m, self.dv), (m * rs, rs, es)))
        return [(j, n // m, m, t[:, j, :]) for j in range(m)]

    def v_blocks(self, k0, n):
        """[(first column, rows, column step, V block)] of the tile at k0: P^T block = p[:, c0::step]."""
        if self.resident:
            return self.vtiles[k0]
        return self._load_vtile(k0, k0 + n)


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


def _attend(out, qt, kv, mask, causal_q0, scale, lse=None, tiles=None, state=None, *, ring):
    """out[R, Dv] = attention of R query rows (q^T tiles in qt) over one K/V head; lse [R, 1], if
    given, receives scale * max + log(sum) per row. tiles/state (decode split over the cache): only
    the K/V tiles starting at these keys, and the unnormalised (max, sum, P @ V) go into state
    instead of out. ring: where the finished stream's tiles are kept (flash_attention_into).

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
    for it, k0 in enumerate(range(0, kv_end, TK) if tiles is None else tiles):
        n = min(TK, kv_end - k0)
        s_ps = buf.scores[:, :n]
        for j, kt in enumerate(kv.kt_tiles(k0, k0 + n)):
            nisa.nc_matmul(dst=s_ps, stationary=q_tiles[j], moving=kt, accumulate=j > 0)
        s = s_ps
        if mask is not None:                    # before the causal select: NEG_BIG + NEG_BIG overflows
            s = _apply_mask(s, mask[:, k0:k0 + n], buf, n, scale, getattr(kv, "masks", {}).get(k0))
        if causal_q0 is not None and k0 + n - 1 > causal_q0:       # tile crosses the diagonal
            if s is s_ps:
                s = buf.s[:, :n]
                nisa.activation(dst=s, op=nl.copy, data=s_ps)
            nisa.affine_select(dst=s, pattern=[[-1, n]], channel_multiplier=1, offset=causal_q0 - k0,
                               on_true_tile=s, on_false_value=NEG_BIG, cmp_op=nl.greater_equal)
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
        if isinstance(kv, _DecodeKV):
            blocks = kv.v_blocks(k0, n)
            chunks = [(c0, c) for c0, c, _, _ in blocks]
            cols = [p[:, c0::m] if m > 1 else p[:, c0:c0 + c] for c0, c, m, _ in blocks]
            vts = [vt for _, _, _, vt in blocks]
        else:
            chunks = [(c0, min(P, n - c0)) for c0 in range(0, n, P)]
            cols = [p[:, c0:c0 + c] for c0, c in chunks]
            vts = None
        for i, (c0, c) in enumerate(chunks):        # P^T blocks side by side in one PSUM bank
            nisa.nc_transpose(dst=buf.pt_ps[:c, i * rows:(i + 1) * rows], data=cols[i])
        yield
        width = len(chunks) * rows
        if all(c == P for _, c in chunks):
            nisa.activation(dst=buf.pt[:, :width], op=nl.copy, data=buf.pt_ps[:, :width])
        else:
            for i, (c0, c) in enumerate(chunks):
                nisa.tensor_copy(dst=buf.pt[:c, i * rows:(i + 1) * rows], src=buf.pt_ps[:c, i * rows:(i + 1) * rows])
        yield
        for i, (c0, c) in enumerate(chunks):
            nisa.nc_matmul(dst=buf.pv, stationary=buf.pt[:c, i * rows:(i + 1) * rows],
                           moving=vts[i] if vts else kv.v_tile(k0 + c0, k0 + c0 + c), accumulate=i > 0)
        nisa.scalar_tensor_tensor(dst=o_acc, data=o_acc, op0=nl.multiply, operand0=buf.alpha, op1=nl.add,
                                  operand1=buf.pv)
        m_run = m_new
        yield
    buf.scores = buf.pv = buf.pt_ps = None          # PSUM banks go back to the next stream
    if state is not None:
        state.update(m=m_run, l=l_run, o=o_acc, buf=buf)
        return
    _finish(out, m_run, l_run, o_acc, mask, scale, lse, buf, ring)


def _finish(out, m_run, l_run, o_acc, mask, scale, lse, buf, ring):
    """out = o_acc / l_run (0 where the mask hid every key) and lse = scale * max + log(sum)."""
    rows, dv = o_acc.shape
    recip = _vec(rows, "recip")
    nisa.reciprocal(dst=recip, data=l_run)
    valid = None
    if mask is not None:            # a row the mask hides entirely gets out = 0 and lse = 0, as PyTorch's
        valid = _vec(rows, "valid")
        nisa.tensor_scalar(dst=valid, data=m_run, op0=nl.greater, operand0=NEG_BIG / 2)
        nisa.tensor_tensor(dst=recip, data1=recip, data2=valid, op=nl.multiply)
    o = sbuf((rows, dv), out.dtype, name="out")
    nisa.tensor_scalar(dst=o, data=o_acc, op0=nl.multiply, operand0=recip)
    nisa.dma_copy(dst=out, src=o)
    if lse is not None:
        ln_l = _vec(rows, "lse")
        nisa.activation(dst=ln_l, op=nl.log, data=l_run)
        nisa.scalar_tensor_tensor(dst=ln_l, data=m_run, op0=nl.multiply, operand0=float(scale), op1=nl.add,
                                  operand1=ln_l)
        if valid is not None:
            nisa.tensor_tensor(dst=ln_l, data1=ln_l, data2=valid, op=nl.multiply)
        nisa.dma_copy(dst=lse, src=ln_l)
        ring.append(ln_l)
    if valid is not None:
        ring.append(valid)
    ring.append((o, o_acc, l_run, recip, buf))


def _apply_mask(s, mask, buf, n, scale, loaded=None):
    """s + mask / scale (scores are still unscaled); bool masks (1 = attend) become 0 / -3e38. loaded:
    the mask tile already in SBUF (decode brings it with the cache), else it is loaded here."""
    mt = buf.mask[:, :n]
    if loaded is None:
        nisa.dma_copy(dst=mt, src=mask)
    src = mt if loaded is None else loaded
    # decode: GpSimd prepares the mask tile, off the Vector engine's per-tile softmax chain
    eng = {} if loaded is None else {"engine": nisa.engine.gpsimd}
    if dt.is_float(mask.dtype):
        nisa.tensor_scalar(dst=mt, data=src, op0=nl.multiply, operand0=1.0 / float(scale), op1=nl.maximum,
                           operand1=NEG_BIG, **eng)   # scale first: clamping first would overflow -3e38 / scale
    else:
        nisa.tensor_scalar(dst=mt, data=src, op0=nl.subtract, operand0=1.0, op1=nl.multiply, operand1=-NEG_BIG,
                           **eng)
    out = buf.s[:, :n]
    nisa.tensor_tensor(dst=out, data1=s, data2=mt, op=nl.add)
    return out


def column(v):
    """A 1-D HBM view [n] (any stride) as [n, 1]: one value per partition."""
    return strided(v, (v.shape[0], 1), (v.strides[0], 1))


def _vec(rows, name):
    return sbuf((rows, 1), F32, name=name)



def reference(q, k, v, mask=None, causal=True, scale=None):
    """fp32 numpy attention with the same layout and GQA head mapping."""
    q32, k32, v32 = (np.asarray(t, dtype=np.float32) for t in (q, k, v))
    shape = q32.shape
    q32, k32, v32 = (t.reshape((1,) * (4 - t.ndim) + t.shape) for t in (q32, k32, v32))
    group = q32.shape[1] // k32.shape[1]
    k32, v32 = np.repeat(k32, group, axis=1), np.repeat(v32, group, axis=1)
    d = q32.shape[-1]
    s = (q32 @ np.swapaxes(k32, -1, -2)) * np.float32(1.0 / math.sqrt(d) if scale is None else scale)
    if causal:
        sq, sk = s.shape[-2:]
        s = np.where(np.tril(np.ones((sq, sk), dtype=bool)), s, -np.inf)
    if mask is not None:
        mask = np.asarray(mask)
        s = s + (np.where(mask, 0.0, -np.inf) if mask.dtype == bool else mask).astype(np.float32)
    s = s - s.max(axis=-1, keepdims=True)
    p = np.exp(s)
    o = (p / p.sum(axis=-1, keepdims=True)) @ v32
    return o.reshape(shape).astype(np.asarray(q).dtype)


def example_inputs(shape_scale=1.0, dtype=np.float32, seed=0):
    """Grouped-query attention: q [1, 4, 512 * shape_scale, 128], k, v [1, 2, S, 128] (causal)."""
    rng = np.random.default_rng(seed)
    s = scaled(512, shape_scale)
    return randn(rng, (1, 4, s, 128), dtype), randn(rng, (1, 2, s, 128), dtype), randn(rng, (1, 2, s, 128), dtype)
