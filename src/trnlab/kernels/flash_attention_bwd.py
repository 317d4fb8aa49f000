"""Flash-attention backward: the gradients of out = softmax(scale * q @ k.T + mask) @ v with respect to
q, k and v, without the [Sq, Sk] probability matrix ever leaving SBUF/PSUM.

Algorithm: FlashAttention-2 backward (Dao 2023, Algorithm 2, https://arxiv.org/abs/2307.08691). The
forward's logsumexp lse (natural log, of the scaled and masked scores, one per query row) lets each
tile recompute its probabilities exactly, P = exp(scale * q k^T + mask - lse); with
D_i = rowsum(dO * O) per query row:
  dP = dO v^T,  dS = P * (dP - D),  dV += P^T dO,  dK += scale * dS^T q,  dQ += scale * dS k.

Public kernel (@nki.jit):
  flash_attention_bwd(q, k, v, out, dout, lse, mask=None, causal=True, scale=None) -> (dq, dk, dv)
  q, out, dout [B, Hq, Sq, D(v)] (also [H, S, D] or [S, D]); k, v [B, Hkv, Sk, D(v)] with Hq a multiple
  of Hkv (query head h reads kv head h // (Hq // Hkv); dk, dv sum over the group); lse [B, Hq, Sq]
  fp32 as returned by flash_attention(..., return_lse=True) or PyTorch's
  _scaled_dot_product_flash_attention_for_cpu; mask, causal, scale as the forward. D, Dv <= 512.
Model-path entry (HBM views, outputs given): flash_attention_bwd_into(dq, dk, dv, q, k, v, out, dout,
lse, scale=, causal=, mask=) with 4-D tensors, lse [B, H, Sq] and a mask broadcastable to [B, H, Sq, Sk].

Tiling: per key block of a kv head, K^T, V^T and K stay in SBUF; per query block of a query head,
q^T, dO^T, q, dO, -lse, -D and an fp32 dQ accumulator stay in SBUF. When a head's tiles fit SBUF
(nl.tile_size.total_available_sbuf_size) both blocks are the whole sequence; otherwise SBUF use is
bounded whatever the length, as in FlashAttention-2's Algorithm 2: the outer loop takes key blocks
as large as fit, the query side is reloaded per key block in Q_BLOCK-row blocks, dK and dV of a key
tile are summed in fp32 SBUF over the query blocks, and a query tile's dQ is summed over the key
blocks in an fp32 HBM scratch (store after the first block, load-add-store after the others, the
last one rounds and writes dq; a key block's streams start once the previous block's have ended). Work is split into 128-key tiles (one stream each) that walk the
128-row query tiles: the Tensor engine computes S and dP into one PSUM bank, the Scalar engine
takes P = exp(scale * S - lse) and dP - D straight from PSUM, the Vector engine multiplies them into
dS (both 16-bit in bf16: its fast path), the Tensor engine
accumulates dV and dK for the key tile in PSUM (the query tile is already on the partitions, so P
and dS are the stationary operands as they are), transposes dS and multiplies it by K into a dQ
partial that the Vector engine adds to the query tile's accumulator. Causal query tiles that see
none of a key tile's keys are skipped; tiles crossing the diagonal are masked with affine_select
before the exp. STREAMS key tiles are issued interleaved phase by phase so that one tile's exp and
dS overlap another's matmuls; the streams run on across heads, so a head's loads overlap the
previous head's last tiles, and each gradient tile is written out as soon as it is final. P and dS are rounded to the compute dtype (bf16) before the PE, as on
hardware; all accumulation is fp32 and each gradient is rounded once to its input's dtype.

Tensor-engine work per (query tile, key tile) of qn x kn: five matmuls of 2 * qn * kn * D(v) FLOPs
(S, dP, dV, dK, dQ) plus one qn x kn transpose (dS^T): 2.5x the forward's two products when Dv = D.
"""
from __future__ import annotations

import math

import numpy as np

import trnlab.nki as nki
from trnlab.core import dtypes as dt
from trnlab.errors import ShapeError
from trnlab.kernels._common import NEG_BIG, P, float_dtype_for, load_transposed, psum, sbuf
from trnlab.kernels._examples import randn
from trnlab.kernels.flash_attention import _as_4d, _interleave, column, reference as _forward_reference
from trnlab.nki import isa as nisa
from trnlab.nki import language as nl

F32 = nl.float32
BANK = 512                # fp32 columns of one PSUM bank (2 KiB per partition)
MAX_D = BANK              # dK, dQ and dV tiles are [128, D(v)] fp32 in one PSUM bank
STREAMS = 4               # key tiles issued interleaved (as many as the PSUM banks hold)
Q_BLOCK = 1024            # query rows per block when the sequence does not fit SBUF whole
RESERVE = 16 * 1024       # SBUF bytes per partition kept for transient tiles (O, dO * O, outputs, sums)
BLOCK = None              # (keys, query rows) per block; None: from the SBUF budget (_block_sizes)


@nki.jit
def flash_attention_bwd(q, k, v, out, dout, lse, mask=None, causal=True, scale=None):
    q4, k4, v4, o4, do4 = (_as_4d(t) for t in (q, k, v, out, dout))
    lse3 = lse.reshape((1,) * (3 - lse.ndim) + tuple(lse.shape))
    mask4 = None if mask is None else _as_4d(mask)
    _check(q4, k4, v4, o4, do4, lse3, mask4)
    scale = 1.0 / math.sqrt(q4.shape[3]) if scale is None else float(scale)
    dq = nl.ndarray(tuple(q.shape), dtype=q.dtype, buffer=nl.shared_hbm)
    dk = nl.ndarray(tuple(k.shape), dtype=k.dtype, buffer=nl.shared_hbm)
    dv = nl.ndarray(tuple(v.shape), dtype=v.dtype, buffer=nl.shared_hbm)
    flash_attention_bwd_into(_as_4d(dq), _as_4d(dk), _as_4d(dv), q4, k4, v4, o4, do4, lse3, scale=scale,
                             causal=bool(causal), mask=mask4)
    return dq, dk, dv


def _check(q4, k4, v4, o4, do4, lse3, mask4):
    b, hq, sq, d = q4.shape
    dv = v4.shape[3]
    if k4.shape[:3] != v4.shape[:3] or k4.shape[0] != b or k4.shape[3] != d or hq % k4.shape[1]:
        raise ShapeError(f"flash_attention_bwd: q {list(q4.shape)} needs k, v [B, Hkv, Sk, D] with Hq % Hkv == 0; "
                         f"got k {list(k4.shape)}, v {list(v4.shape)}")
    want = (b, hq, sq, dv)
    for name, t in (("out", o4), ("dout", do4)):
        if tuple(t.shape) != want:
            raise ShapeError(f"flash_attention_bwd: {name} {list(t.shape)} must be [B, Hq, Sq, Dv] = {list(want)}")
    if tuple(lse3.shape) != (b, hq, sq):
        raise ShapeError(f"flash_attention_bwd: lse {list(lse3.shape)} must be [B, Hq, Sq] = {[b, hq, sq]}")
    if max(d, dv) > MAX_D:
        raise ShapeError(f"flash_attention_bwd: head dims D={d}, Dv={dv} exceed {MAX_D} "
                         "(a [128, D] fp32 gradient tile must fit one PSUM bank)")
    if mask4 is not None:
        ok = tuple(mask4.shape[-2:]) == (sq, k4.shape[2]) and mask4.shape[0] in (1, b) and mask4.shape[1] in (1, hq)
        if not ok:
            raise ShapeError(f"flash_attention_bwd: mask {list(mask4.shape)} must be [Sq, Sk] or "
                             f"[B|1, Hq|1, Sq, Sk] with Sq={sq}, Sk={k4.shape[2]}")


def flash_attention_bwd_into(dq, dk, dv, q, k, v, out, dout, lse, *, scale: float, causal: bool = False,
                             mask=None):
    """dq, dk, dv = gradients of attention; all [B, H(kv), S, D(v)] HBM views, lse [B, H, Sq] fp32,
    mask broadcastable to [B, H, Sq, Sk] (additive float or bool)."""
    b_, h_, sq, d = q.shape
    hkv, skv = k.shape[1], k.shape[2]
    group = h_ // hkv
    mask4 = mask.broadcast_to((b_, h_, sq, skv)) if mask is not None else None
    cdt = float_dtype_for(q, k, v, out, dout)
    lanes = _Lanes(d, v.shape[3], cdt)
    kb, qb = _block_sizes(sq, skv, d, v.shape[3], cdt, group, b_ * hkv, lanes)
    kblocks, qblocks = _spans(skv, kb), _spans(sq, qb)
    partial = None                      # fp32 dQ of a kv group's heads between key blocks
    if len(kblocks) > 1:
        partial = nl.ndarray((group, sq, d), F32, buffer=nl.private_hbm, name="dq_partial")

    def streams():          # lazily: the next block's loads are issued while the last one's tiles run
        for b in range(b_):
            for hk in range(hkv):
                for m, (k_lo, k_hi) in enumerate(kblocks):
                    if partial is not None:     # a key block adds to dQ sums the previous one stored
                        yield None
                    seen = [(r0, r1) for r0, r1 in qblocks if _visible(r0, r1, k_lo, causal)]
                    kv = _KVSide(k.index((b, hk)), v.index((b, hk)), cdt, dk.index((b, hk)), dv.index((b, hk)),
                                 scale, group * len(seen), (k_lo, k_hi))
                    for h in range(hk * group, (hk + 1) * group):
                        role = _DqRole(kblocks, m, causal, None if partial is None else partial.index((h - hk * group,)))
                        for rows in seen:
                            qs = _QSide(q.index((b, h)), dout.index((b, h)), out.index((b, h)), lse.index((b, h)), cdt,
                                        dq.index((b, h)), scale, kv, causal, rows, role)
                            m4 = mask4.index((b, h)) if mask4 is not None else None
                            for j in range(kv.n_tiles):
                                yield _key_tile(kv, qs, j, m4, causal, scale, lanes)
                    if not seen:                    # causal: no query sees these keys
                        for j in range(kv.n_tiles):
                            kv.write(j, None, None)

    _interleave(streams(), lanes.width)
    return dq, dk, dv


def _spans(n, block):
    return [(r0, min(n, r0 + block)) for r0 in range(0, n, block)]


def _block_sizes(sq, skv, d, dv, cdt, group, kv_heads, lanes):
    """Keys and query rows per block, the first that fits SBUF of: the whole sequence (one load of
    each tile); all keys with Q_BLOCK-row query blocks (dK, dV summed over them in SBUF); key blocks as
    large as fit beside Q_BLOCK-row query blocks (FlashAttention-2's outer loop over key blocks: the
    query side is reloaded per key block and dQ is summed in HBM). Two instances of a block are
    counted when the streams run from one into the next."""
    if BLOCK is not None:
        return BLOCK
    budget = nl.tile_size.total_available_sbuf_size - lanes.width * lanes.bytes - RESERVE
    isz = dt.itemsize(cdt)

    def need(kb, qb):
        more_kv = kv_heads > 1 or kb < skv
        more_q = kv_heads * group > 1 or qb < sq or kb < skv
        return ((1 + more_kv) * _kv_bytes(kb, d, dv, isz, group > 1 or qb < sq)
                + (1 + more_q) * _q_bytes(qb, d, dv, isz))

    qb = min(sq, Q_BLOCK)
    for kb, rows in ((skv, sq), (skv, qb)):
        if need(kb, rows) <= budget:
            return kb, rows
    per_tile = _kv_bytes(P, d, dv, isz, True)
    tiles = max(1, (budget - 2 * _q_bytes(qb, d, dv, isz)) // (2 * per_tile))
    n = -(-skv // (tiles * P))                      # as few key blocks as fit, of even size
    return -(-skv // (n * P)) * P, qb


def _kv_bytes(n, d, dv, isz, acc):
    """SBUF bytes per partition of one key block of n keys (_KVSide): K^T, V^T, K rows, dK/dV sums."""
    tiles = -(-n // P)
    return (len(_chunks(d)) + len(_chunks(dv))) * n * isz + tiles * d * isz + (tiles * (d + dv) * 4 if acc else 0)


def _q_bytes(n, d, dv, isz):
    """SBUF bytes per partition of one query block of n rows (_QSide): q^T, dO^T, q, dO rows, dQ sums."""
    tiles = -(-n // P)
    return (len(_chunks(d)) + len(_chunks(dv))) * n * isz + tiles * ((d + dv) * isz + d * 4 + 8)


def _tiles(n):
    return [(r0, min(n, r0 + P)) for r0 in range(0, n, P)]


def _chunks(d):
    return [(d0, min(d, d0 + P)) for d0 in range(0, d, P)]


def _rows(src, cdt, name):
    """[S, C] HBM -> one SBUF tile [rows, C] per 128 rows."""
    tiles = []
    for r0, r1 in _tiles(src.shape[0]):
        t = sbuf((r1 - r0, src.shape[1]), cdt, name=name)
        nisa.dma_copy(dst=t, src=src[r0:r1])
        tiles.append(t)
    return tiles


def _zeros(shapes, name):
    tiles = [sbuf(s, F32, name=name) for s in shapes]
    for t in tiles:
        nisa.memset(dst=t, value=0.0)
    return tiles


class _KVSide:
    """One key block [lo, hi) of a kv head: K^T and V^T (contraction layouts of S and dP) and K rows
    (moving operand of dQ). Each stream (query head x query block) that walks a key tile hands over
    its dK, dV (add); with one stream per key tile they go from PSUM straight to HBM (dk, dv), with
    several they are summed in fp32 SBUF first. bounds are block-local; base is the first key."""

    def __init__(self, k, v, cdt, dk, dv, scale, contributions, span):
        lo, hi = span
        self.base, self.skv, self.d, self.dv = lo, hi - lo, k.shape[1], v.shape[1]
        self.dk_out, self.dv_out, self.scale = dk[lo:hi], dv[lo:hi], float(scale)
        self.contributions = contributions
        self.kt = [load_transposed(k[lo:hi, d0:d1], cdt, name="kT") for d0, d1 in _chunks(self.d)]
        self.vt = [load_transposed(v[lo:hi, d0:d1], cdt, name="vT") for d0, d1 in _chunks(self.dv)]
        self.k_rows = _rows(k[lo:hi], cdt, "k")
        self.bounds = _tiles(self.skv)
        self.n_tiles = len(self.bounds)
        self.left = [contributions] * self.n_tiles
        self.acc = [None] * self.n_tiles

    def add(self, j, dk_ps, dv_ps):
        """One stream's dK (unscaled), dV of key tile j: PSUM views, None if it saw none of its keys."""
        first, last = self.left[j] == self.contributions, self.left[j] == 1
        self.left[j] -= 1
        if not (first and last):
            if first:
                self.acc[j] = tuple(_start(ps, (self.bounds[j][1] - self.bounds[j][0], w), name)
                                    for ps, w, name in ((dk_ps, self.d, "dk_acc"), (dv_ps, self.dv, "dv_acc")))
            elif dk_ps is not None:
                for acc, ps in zip(self.acc[j], (dk_ps, dv_ps)):
                    nisa.tensor_tensor(dst=acc, data1=acc, data2=ps, op=nl.add)
            dk_ps, dv_ps = self.acc[j]
        if last:
            self.write(j, dk_ps, dv_ps)
            self.acc[j] = None

    def write(self, j, dk_src, dv_src):
        k0, k1 = self.bounds[j]
        dk_o = sbuf((k1 - k0, self.d), self.dk_out.dtype, name="dk")
        dv_o = sbuf((k1 - k0, self.dv), self.dv_out.dtype, name="dv")
        if dk_src is None:                          # causal: no query sees these keys
            nisa.memset(dst=dk_o, value=0.0)
            nisa.memset(dst=dv_o, value=0.0)
        else:
            nisa.activation(dst=dk_o, op=nl.copy, data=dk_src, scale=self.scale)
            nisa.tensor_copy(dst=dv_o, src=dv_src)
        nisa.dma_copy(dst=self.dk_out[k0:k1], src=dk_o)
        nisa.dma_copy(dst=self.dv_out[k0:k1], src=dv_o)


def _start(ps, shape, name):
    """An fp32 SBUF accumulator holding a PSUM tile (zeros when ps is None)."""
    acc = sbuf(shape, F32, name=name)
    if ps is None:
        nisa.memset(dst=acc, value=0.0)
    else:
        nisa.tensor_copy(dst=acc, src=ps)
    return acc


class _QSide:
    """One query block [lo, hi) of a query head: q^T and dO^T (stationary operands of S and dP), q and
    dO rows (moving operands of dK and dV), -lse and -D = -rowsum(dO * O) per row, and the fp32 dQ sum
    over the key block's tiles, per 128 rows. Once every key tile of the block that a query tile sees
    has added to it, its sum goes on (role: to dq, or to the partial sums between key blocks).
    bounds are block-local; base is the first row."""

    def __init__(self, q, dout, out, lse, cdt, dq, scale, kv, causal, span, role):
        lo, hi = span
        q, dout, out = q[lo:hi], dout[lo:hi], out[lo:hi]
        self.base, self.sq, self.d, self.dv = lo, hi - lo, q.shape[1], dout.shape[1]
        self.dq_out, self.scale, self.role = dq, float(scale), role
        self.bounds = _tiles(self.sq)
        k_starts = [kv.base + k0 for k0, _ in kv.bounds]
        self.left = [sum(_visible(lo + q0, lo + q1, k0, causal) for k0 in k_starts) for q0, q1 in self.bounds]
        self.qt = [load_transposed(q[:, d0:d1], cdt, name="qT") for d0, d1 in _chunks(self.d)]
        self.dot = [load_transposed(dout[:, d0:d1], cdt, name="doT") for d0, d1 in _chunks(self.dv)]
        self.q_rows = _rows(q, cdt, "q")
        self.do_rows = _rows(dout, cdt, "do")
        self.neg_lse, self.neg_delta = [], []
        for (r0, r1), do_t in zip(self.bounds, self.do_rows):
            n = r1 - r0
            nl_t = sbuf((n, 1), F32, name="neg_lse")
            nisa.dma_copy(dst=nl_t, src=column(lse.index((slice(lo + r0, lo + r1),))))
            nisa.tensor_scalar(dst=nl_t, data=nl_t, op0=nl.multiply, operand0=-1.0)
            o_t = sbuf((n, self.dv), out.dtype, name="o")
            nisa.dma_copy(dst=o_t, src=out[r0:r1])
            prod = sbuf((n, self.dv), F32, name="do_o")
            nisa.tensor_tensor(dst=prod, data1=do_t, data2=o_t, op=nl.multiply)
            neg_delta = sbuf((n, 1), F32, name="neg_delta")
            nisa.tensor_reduce(dst=neg_delta, op=nl.add, data=prod, axis=1, negate=True)
            self.neg_lse.append(nl_t)
            self.neg_delta.append(neg_delta)
        self.dq = _zeros([(r1 - r0, self.d) for r0, r1 in self.bounds], "dq_acc")

    def key_tile_done(self, i):
        self.left[i] -= 1
        if not self.left[i]:
            r0, r1 = self.bounds[i]
            self.role.finish(self.dq[i], self.base + r0, self.base + r1, self.dq_out, self.scale)


class _DqRole:
    """Where a query tile's dQ sum over key block m goes: key blocks that query tile sees add up in
    `partial` (fp32 HBM, [Sq, D] of one query head): the first stores its sum, later ones load, add
    and store; the last one's total is scaled, rounded and written to dq."""

    def __init__(self, kblocks, m, causal, partial):
        self.kblocks, self.m, self.causal, self.partial = kblocks, m, causal, partial

    def finish(self, acc, r0, r1, dq_out, scale):
        seen = [n for n, (k0, _) in enumerate(self.kblocks) if _visible(r0, r1, k0, self.causal)]
        if self.m != seen[0]:
            prev = sbuf(acc.shape, F32, name="dq_prev")
            nisa.dma_copy(dst=prev, src=self.partial[r0:r1])
            nisa.tensor_tensor(dst=acc, data1=acc, data2=prev, op=nl.add)
        if self.m != seen[-1]:
            nisa.dma_copy(dst=self.partial[r0:r1], src=acc)
            return
        o = sbuf(acc.shape, dq_out.dtype, name="dq")
        nisa.tensor_scalar(dst=o, data=acc, op0=nl.multiply, operand0=scale)
        nisa.dma_copy(dst=dq_out[r0:r1], src=o)


class _Lane:
    """One stream's buffers: PSUM for S and dP (one bank), dQ partial and dS^T, dK and dV (packed
    into banks), SBUF for the logits, mask, P, dS and dS^T."""

    def __init__(self, d, dv, cdt):
        half = P * dt.itemsize(cdt) // 4                     # fp32 columns holding P columns of cdt
        views = _pack([("s", P), ("dp", P), ("dq", d), ("dsT", half), ("dk", d), ("dv", dv)])
        self.banks = views.pop("_banks")
        self.s, self.dp, self.dq, self.dk, self.dv = (views[n] for n in ("s", "dp", "dq", "dk", "dv"))
        self.dst_ps = views["dsT"].bitcast(cdt)
        self.t = sbuf((P, P), F32, name="logits")
        self.m = sbuf((P, P), F32, name="mask")
        self.p = sbuf((P, P), cdt, name="p")
        self.dpd = sbuf((P, P), cdt, name="dp_minus_d")
        self.ds = sbuf((P, P), cdt, name="ds")
        self.dst = sbuf((P, P), cdt, name="dsT")


def _pack(widths):
    """First-fit of [128, w] fp32 PSUM tiles into 2 KiB banks; {name: view, '_banks': [bank, ...]}."""
    banks, used, views = [], [], {}
    for name, w in widths:
        for i, u in enumerate(used):
            if u + w <= BANK:
                break
        else:
            banks.append(psum((P, BANK), name="bwd_bank"))
            used.append(0)
            i = len(banks) - 1
        views[name] = banks[i][:, used[i]:used[i] + w]
        used[i] += w
    views["_banks"] = banks
    return views


class _Lanes:
    """A pool of lanes, one per stream in flight; as many streams as the PSUM banks allow."""

    def __init__(self, d, dv, cdt):
        first = _Lane(d, dv, cdt)
        self.width = max(1, min(STREAMS, nl.tile_size.psum_num_banks // len(first.banks)))
        self.free = [first] + [_Lane(d, dv, cdt) for _ in range(self.width - 1)]
        self.bytes = 2 * P * 4 + 4 * P * dt.itemsize(cdt)      # SBUF bytes per partition of one lane


def _visible(q0, q1, k0, causal):
    return not causal or q1 - 1 >= k0                 # some query row of the tile sees key k0


def _key_tile(kv, qs, j, mask, causal, scale, lanes):
    """dK, dV of key tile j (accumulated in PSUM over the query tiles) and its dQ contributions.

    A generator: it yields between phases so that several key tiles interleave on the engines."""
    k0, k1 = kv.bounds[j]                     # block-local; the mask and the diagonal see base + local
    kn, gk = k1 - k0, kv.base
    lane = lanes.free.pop()
    pairs = [i for i, (q0, q1) in enumerate(qs.bounds) if _visible(qs.base + q0, qs.base + q1, gk + k0, causal)]
    for n, i in enumerate(pairs):
        q0, q1 = qs.bounds[i]
        qn = q1 - q0
        s_ps, dp_ps = lane.s[:qn, :kn], lane.dp[:qn, :kn]
        for c, kt in enumerate(kv.kt):
            nisa.nc_matmul(dst=s_ps, stationary=qs.qt[c][:, q0:q1], moving=kt[:, k0:k1], accumulate=c > 0)
        for c, vt in enumerate(kv.vt):
            nisa.nc_matmul(dst=dp_ps, stationary=qs.dot[c][:, q0:q1], moving=vt[:, k0:k1], accumulate=c > 0)
        yield
        p = lane.p[:qn, :kn]
        gq = qs.base
        _probabilities(p, s_ps, lane, mask, gq + q0, gq + q1, gk + k0, gk + k1, causal, scale, qs.neg_lse[i])
        yield
        dpd = lane.dpd[:qn, :kn]                # dP - D on the Scalar engine, straight from PSUM
        nisa.activation(dst=dpd, op=nl.copy, data=dp_ps, bias=qs.neg_delta[i])
        yield
        ds = lane.ds[:qn, :kn]
        nisa.tensor_tensor(dst=ds, data1=dpd, data2=p, op=nl.multiply)
        yield
        nisa.nc_matmul(dst=lane.dv[:kn, :kv.dv], stationary=p, moving=qs.do_rows[i], accumulate=n > 0)
        nisa.nc_matmul(dst=lane.dk[:kn, :kv.d], stationary=ds, moving=qs.q_rows[i], accumulate=n > 0)
        nisa.nc_transpose(dst=lane.dst_ps[:kn, :qn], data=ds)
        yield
        dst = lane.dst[:kn, :qn]
        nisa.activation(dst=dst, op=nl.copy, data=lane.dst_ps[:kn, :qn])
        yield
        dq_ps = lane.dq[:qn, :kv.d]
        nisa.nc_matmul(dst=dq_ps, stationary=dst, moving=kv.k_rows[j], accumulate=False)
        yield
        nisa.tensor_tensor(dst=qs.dq[i], data1=qs.dq[i], data2=dq_ps, op=nl.add)
        qs.key_tile_done(i)
    kv.add(j, *((lane.dk[:kn, :kv.d], lane.dv[:kn, :kv.dv]) if pairs else (None, None)))
    lanes.free.append(lane)


def _probabilities(p, s_ps, lane, mask, q0, q1, k0, k1, causal, scale, neg_lse):
    """p = exp(scale * s + mask - lse), 0 where the mask or the causal diagonal hides a key."""
    qn, kn = q1 - q0, k1 - k0
    crossing = causal and k1 - 1 > q0
    if mask is None and not crossing:
        nisa.activation(dst=p, op=nl.exp, data=s_ps, bias=neg_lse, scale=float(scale))
        return
    t = lane.t[:qn, :kn]
    if mask is not None:
        mt = lane.m[:qn, :kn]
        nisa.dma_copy(dst=mt, src=mask[q0:q1, k0:k1])
        if dt.is_float(mask.dtype):                 # -inf -> NEG_BIG: finite through the add and exp
            nisa.tensor_scalar(dst=mt, data=mt, op0=nl.maximum, operand0=NEG_BIG)
        else:                                       # bool (1 = attend) -> 0 / NEG_BIG
            nisa.tensor_scalar(dst=mt, data=mt, op0=nl.subtract, operand0=1.0, op1=nl.multiply, operand1=-NEG_BIG)
        nisa.scalar_tensor_tensor(dst=t, data=s_ps, op0=nl.multiply, operand0=float(scale), op1=nl.add, operand1=mt)
        act_scale = 1.0
    else:
        nisa.activation(dst=t, op=nl.copy, data=s_ps)
        act_scale = float(scale)
    if crossing:                                    # keep key k0 + c for query q0 + r when q0 + r >= k0 + c
        nisa.affine_select(dst=t, pattern=[[-1, kn]], channel_multiplier=1, offset=q0 - k0, on_true_tile=t,
                           on_false_value=NEG_BIG, cmp_op=nl.greater_equal)
    nisa.activation(dst=p, op=nl.exp, data=t, bias=neg_lse, scale=act_scale)


def reference(q, k, v, out, dout, lse, mask=None, causal=True, scale=None):
    """fp32 numpy gradients (dq, dk, dv) of attention, same layouts and GQA mapping (out and lse unused:
    recomputed)."""
    q32, k32, v32, do32 = (np.asarray(t, dtype=np.float32) for t in (q, k, v, dout))
    shapes = (q32.shape, k32.shape, v32.shape)
    q32, k32, v32, do32 = (t.reshape((1,) * (4 - t.ndim) + t.shape) for t in (q32, k32, v32, do32))
    group = q32.shape[1] // k32.shape[1]
    ke, ve = np.repeat(k32, group, axis=1), np.repeat(v32, group, axis=1)
    sc = np.float32(1.0 / math.sqrt(q32.shape[-1]) if scale is None else scale)
    s = (q32 @ np.swapaxes(ke, -1, -2)) * sc
    if causal:
        s = np.where(np.tril(np.ones(s.shape[-2:], dtype=bool)), s, -np.inf)
    if mask is not None:
        mask = np.asarray(mask)
        s = s + (np.where(mask, 0.0, -np.inf) if mask.dtype == bool else mask).astype(np.float32)
    p = np.exp(s - s.max(-1, keepdims=True))
    p /= p.sum(-1, keepdims=True)
    o = p @ ve
    dp = do32 @ np.swapaxes(ve, -1, -2)
    ds = p * (dp - (do32 * o).sum(-1, keepdims=True))
    dq = ds @ ke * sc
    dk = (np.swapaxes(ds, -1, -2) @ q32 * sc).reshape(k32.shape[0], k32.shape[1], group, *k32.shape[2:]).sum(2)
    dv = (np.swapaxes(p, -1, -2) @ do32).reshape(v32.shape[0], v32.shape[1], group, *v32.shape[2:]).sum(2)
    dtype = np.asarray(q).dtype
    return tuple(g.reshape(sh).astype(dtype) for g, sh in zip((dq, dk, dv), shapes))


def example_inputs(shape_scale=1.0, dtype=np.float32, seed=0):
    """q, k, v [1, 2, 256 * shape_scale, 64] (causal), the forward's out and lse, and a random dout."""
    rng = np.random.default_rng(seed)
    s = max(1, int(round(256 * shape_scale)))
    q, k, v, dout = (randn(rng, (1, 2, s, 64), dtype) for _ in range(4))
    out = _forward_reference(q, k, v, causal=True)
    sc = (np.asarray(q, np.float32) @ np.swapaxes(np.asarray(k, np.float32), -1, -2)) / np.float32(8.0)
    sc = np.where(np.tril(np.ones((s, s), dtype=bool)), sc, -np.inf)
    mx = sc.max(-1, keepdims=True)
    lse = (mx + np.log(np.exp(sc - mx).sum(-1, keepdims=True)))[..., 0].astype(np.float32)
    return q, k, v, out, dout, lse
