"""Optimizer steps on flat tensors: AdamW, SGD, gradient clipping by global L2 norm, gradient accumulation.

Every tensor is flat (any size; a shaped HBM tensor is walked in its contiguous element order): it is
streamed through SBUF in [128, F] tiles (each partition a contiguous run of F = COLS elements), then
one [128, q] tile of the remainder's whole columns, then one [1, r] tile of the last r < 128 elements.
Hyper-parameters (lr, betas, the bias corrections of step t, ...) are immediates. All arithmetic is
fp32; results are rounded once on write to the destination's dtype (bf16 stochastically when the
Machine's stochastic rounding is on).

Mixed precision (AWS's recipe: bf16 parameters for compute, fp32 master weights and optimizer states,
https://awsdocs-neuron.readthedocs-hosted.com/en/latest/frameworks/torch/torch-neuronx/tutorials/training/bert.html):
`p` is the fp32 master (or the parameter itself), `p_low` an optional bf16 copy written from the new p.
With bf16 `p` and no master (AWS's "full BF16 with stochastic rounding"), the update is written
straight into the bf16 parameter.

AdamW (torch.optim.AdamW: decoupled weight decay, bias correction, eps outside the sqrt), per tile:
  p = p * (1 - lr * wd)                                  activation(copy, scale)        Scalar
  m = (g - m) * (1 - beta1) + m                          tensor_tensor, s_t_t           Vector
  v = v * beta2 + (g * (1 - beta2)) * g                  s_t_t, s_t_t                   Vector
  d = sqrt(v) / sqrt(1 - beta2^t) + eps                  activation(sqrt); tensor_scalar
  p = (m / d) * -(lr / (1 - beta1^t)) + p                tensor_tensor, s_t_t           Vector
With a clip coefficient c (a [128, 1] tile), g*c - m and (g * c^2 (1 - beta2)) * g replace the ops
that read g: clipping costs no extra pass over g.
SGD (torch.optim.SGD, dampening 0), per tile:
  g = p * wd + g;  b = g (first step) or b * momentum + g;  d = b * momentum + g (nesterov) or b
  p = d * -lr + p
Each operation's operand order is torch's single-tensor implementation's, so fp32 results agree to
an ulp or two.

Public kernels (@nki.jit): adamw(p, g, m, v, lr, beta1, beta2, eps, weight_decay, step) -> (p, m, v),
sgd(p, g, buf, lr, momentum, weight_decay, nesterov, first) -> (p, buf), sum_squares(g) -> [1] fp32,
grad_accumulate(acc, g) -> acc + g.
Entries on existing HBM tensors (in place, several tensors in one run): adamw_into, sgd_into,
sum_squares_into + clip_coef + scale_into, accumulate_into.
"""
from __future__ import annotations

from collections import deque
from dataclasses import dataclass

import trnlab.nki as nki
from trnlab.kernels._common import P, sbuf
from trnlab.nki import isa as nisa
from trnlab.nki import language as nl

F32 = nl.float32
COLS = 4096                  # free elements per partition of a full tile (at most)
BUDGET = 160 * 1024          # SBUF bytes per partition for the tiles of the iterations in flight
CLIP_EPS = 1e-6              # torch.nn.utils.clip_grad_norm_: max_norm / (total_norm + 1e-6)


@dataclass(frozen=True)
class AdamWHyper:
    lr: float = 1e-3
    beta1: float = 0.9
    beta2: float = 0.999
    eps: float = 1e-8
    weight_decay: float = 1e-2
    step: int = 1                # t, counted from 1 (the bias corrections)

    @property
    def step_size(self) -> float:
        return self.lr / (1.0 - self.beta1 ** self.step)

    @property
    def bias_correction2_sqrt(self) -> float:
        return (1.0 - self.beta2 ** self.step) ** 0.5


@dataclass(frozen=True)
class SGDHyper:
    lr: float = 1e-3
    momentum: float = 0.0
    weight_decay: float = 0.0
    nesterov: bool = False
    first: bool = True           # no momentum buffer yet: it starts as the gradient (torch)


# --- tiling ------------------------------------------------------------------------------------------

def flat_tiles(n: int, cols: int = COLS):
    """(start, rows, cols) of the tiles covering n flat elements: [128, cols] tiles, then [128, q],
    then [1, r]."""
    block = P * cols
    full = n // block
    for i in range(full):
        yield i * block, P, cols
    rest = n - full * block
    q, r = divmod(rest, P)
    if q:
        yield full * block, P, q
    if r:
        yield n - r, 1, r


def _flat(t):
    return t if t.ndim == 1 else t.reshape(t.size)


def _piece(flat, start: int, rows: int, cols: int):
    return flat.index((slice(start, start + rows * cols),)).reshape(rows, cols)


def _load(view, name, dtype=None):
    t = sbuf(view.shape, dtype or view.dtype, name=name)
    nisa.dma_copy(dst=t, src=view)
    return t


def _store(view, tile):
    nisa.dma_copy(dst=view, src=tile)


def _walk(tensors, bytes_per_elem: int):
    """Per tile: the [rows, cols] HBM views of each tensor, and a deque that keeps the tiles of the
    last few iterations allocated (their loads run ahead of the compute: multi-buffering). Tiles are
    as wide as BUDGET allows with at least two iterations' tiles live."""
    flats = [_flat(t) if t is not None else None for t in tensors]
    n = flats[0].size
    cols = COLS
    while cols > 256 and 2 * bytes_per_elem * cols > BUDGET:
        cols //= 2
    depth = max(1, min(4, BUDGET // max(1, bytes_per_elem * cols) - 1))
    keep = deque(maxlen=depth)
    for start, rows, cols in flat_tiles(n, cols):
        yield [_piece(f, start, rows, cols) if f is not None else None for f in flats], keep


def _check_sizes(api: str, **tensors):
    from trnlab.errors import ShapeError
    sizes = {k: t.size for k, t in tensors.items() if t is not None}
    if len(set(sizes.values())) > 1:
        raise ShapeError(f"{api}: tensors must have the same number of elements, got "
                         + ", ".join(f"{k} {v}" for k, v in sizes.items()))


# --- AdamW -------------------------------------------------------------------------------------------

def adamw_into(p, g, m, v, hp: AdamWHyper, *, p_low=None, scale=None):
    """One AdamW step in place on HBM tensors: p (fp32 master, or the parameter), g, m and v (fp32);
    p_low: a low-precision copy of the new p to write (bf16 parameter), or None. scale: a [128, 1]
    fp32 SBUF tile c (the clip coefficient) folded into the two ops that read g (g*c - m and
    (g * c^2 (1 - beta2)) * g), or None."""
    _check_sizes("adamw", p=p, g=g, m=m, v=v, p_low=p_low)
    w1, w2 = 1.0 - hp.beta1, 1.0 - hp.beta2
    decay = 1.0 - hp.lr * hp.weight_decay
    per_elem = (16 + g.itemsize + (p.itemsize if p.dtype != F32 else 0)
                + (p_low.itemsize if p_low is not None else 0))       # SBUF bytes of one iteration's tiles
    sq_scale = w2
    if scale is not None:               # the clip coefficient c folds into the ops that read g
        sq_scale = sbuf((P, 1), F32, name="c2w2")
        nisa.tensor_scalar(dst=sq_scale, data=scale, op0=nl.multiply, operand0=scale, op1=nl.multiply, operand1=w2)
    for (vp, vg, vm, vv, vl), keep in _walk((p, g, m, v, p_low), per_elem):
        rows, cols = vp.shape
        tp, tg, tm, tv = _load(vp, "p", F32), _load(vg, "g"), _load(vm, "m"), _load(vv, "v")
        sq = sq_scale if scale is None else sq_scale[:rows, :]
        if decay != 1.0:
            nisa.activation(dst=tp, op=nl.copy, data=tp, scale=decay)
        t1 = sbuf((rows, cols), F32, name="t1")
        if scale is None:
            nisa.tensor_tensor(dst=t1, data1=tg, data2=tm, op=nl.subtract)
        else:
            nisa.scalar_tensor_tensor(dst=t1, data=tg, op0=nl.multiply, operand0=scale[:rows, :],
                                      op1=nl.subtract, operand1=tm)
        nisa.scalar_tensor_tensor(dst=tm, data=t1, op0=nl.multiply, operand0=w1, op1=nl.add, operand1=tm)
        nisa.scalar_tensor_tensor(dst=t1, data=tg, op0=nl.multiply, operand0=sq, op1=nl.multiply, operand1=tg)
        nisa.scalar_tensor_tensor(dst=tv, data=tv, op0=nl.multiply, operand0=hp.beta2, op1=nl.add, operand1=t1)
        nisa.activation(dst=t1, op=nl.sqrt, data=tv)
        nisa.tensor_scalar(dst=t1, data=t1, op0=nl.divide, operand0=hp.bias_correction2_sqrt,
                           op1=nl.add, operand1=hp.eps)
        nisa.tensor_tensor(dst=t1, data1=tm, data2=t1, op=nl.divide)
        tn = tp if p.dtype == F32 else sbuf((rows, cols), p.dtype, name="pn")
        nisa.scalar_tensor_tensor(dst=tn, data=t1, op0=nl.multiply, operand0=-hp.step_size, op1=nl.add, operand1=tp)
        _store(vp, tn)
        _store(vm, tm)
        _store(vv, tv)
        low = _store_low(vl, tn)
        keep.append((tp, tg, tm, tv, t1, tn, low))


def _store_low(view, tile):
    """Round the new fp32 values to the low-precision copy on the Scalar engine and store it."""
    if view is None:
        return None
    low = sbuf(tile.shape, view.dtype, name="p_low")
    nisa.activation(dst=low, op=nl.copy, data=tile)
    _store(view, low)
    return low


@nki.jit
def adamw(p, g, m, v, lr=1e-3, beta1=0.9, beta2=0.999, eps=1e-8, weight_decay=1e-2, step=1):
    outs = [nl.ndarray(t.shape, dtype=t.dtype, buffer=nl.shared_hbm) for t in (p, m, v)]
    for o, t in zip(outs, (p, m, v)):
        nisa.dma_copy(dst=o, src=t)
    adamw_into(outs[0], g, outs[1], outs[2], AdamWHyper(lr, beta1, beta2, eps, weight_decay, step))
    return tuple(outs)


# --- SGD ---------------------------------------------------------------------------------------------

def sgd_into(p, g, buf, hp: SGDHyper, *, p_low=None, scale=None):
    """One SGD step in place: p (fp32 master or the parameter), g, buf (fp32 momentum buffer, None
    without momentum); p_low, scale as adamw_into."""
    _check_sizes("sgd", p=p, g=g, buf=buf, p_low=p_low)
    use_buf = hp.momentum != 0.0
    per_elem = (8 + (4 if use_buf and not hp.first else 0) + (4 if hp.nesterov else 0)
                + (p.itemsize if p.dtype != F32 else 0) + (p_low.itemsize if p_low is not None else 0))
    for (vp, vg, vb, vl), keep in _walk((p, g, buf if use_buf else None, p_low), per_elem):
        rows, cols = vp.shape
        tp, tg = _load(vp, "p", F32), _load(vg, "g", F32)
        if scale is not None:
            nisa.tensor_scalar(dst=tg, data=tg, op0=nl.multiply, operand0=scale[:rows, :])
        if hp.weight_decay != 0.0:
            nisa.scalar_tensor_tensor(dst=tg, data=tp, op0=nl.multiply, operand0=hp.weight_decay,
                                      op1=nl.add, operand1=tg)
        d, tb = tg, None
        if use_buf:
            if hp.first:
                tb = tg
            else:
                tb = _load(vb, "buf")
                nisa.scalar_tensor_tensor(dst=tb, data=tb, op0=nl.multiply, operand0=hp.momentum,
                                          op1=nl.add, operand1=tg)
            _store(vb, tb)
            d = tb
            if hp.nesterov:
                d = sbuf((rows, cols), F32, name="d")
                nisa.scalar_tensor_tensor(dst=d, data=tb, op0=nl.multiply, operand0=hp.momentum,
                                          op1=nl.add, operand1=tg)
        tn = tp if p.dtype == F32 else sbuf((rows, cols), p.dtype, name="pn")
        nisa.scalar_tensor_tensor(dst=tn, data=d, op0=nl.multiply, operand0=-hp.lr, op1=nl.add, operand1=tp)
        _store(vp, tn)
        low = _store_low(vl, tn)
        keep.append((tp, tg, tb, d, tn, low))


@nki.jit
def sgd(p, g, buf, lr=1e-3, momentum=0.9, weight_decay=0.0, nesterov=False, first=False):
    outs = [nl.ndarray(t.shape, dtype=t.dtype, buffer=nl.shared_hbm) for t in (p, buf)]
    for o, t in zip(outs, (p, buf)):
        nisa.dma_copy(dst=o, src=t)
    sgd_into(outs[0], g, outs[1], SGDHyper(lr, momentum, weight_decay, nesterov, first))
    return tuple(outs)


# --- gradient clipping by global L2 norm ---------------------------------------------------------

def sum_squares_into(acc, g):
    """acc[p] += sum of g^2 over the elements streamed through partition p (acc: [128, 1] fp32 SBUF
    tile, zeroed by the caller); one acc serves all the gradients of a global norm."""
    for (vg,), keep in _walk((g,), 4 + g.itemsize):
        rows, cols = vg.shape
        tg = _load(vg, "g")
        sq = sbuf((rows, cols), F32, name="sq")
        part = sbuf((rows, 1), F32, name="part")
        nisa.activation_reduce(dst=sq, op=nl.square, data=tg, reduce_op=nl.add, reduce_res=part)
        nisa.tensor_tensor(dst=acc[:rows, :], data1=acc[:rows, :], data2=part, op=nl.add)
        keep.append((tg, sq, part))


def new_accumulator():
    acc = sbuf((P, 1), F32, name="sumsq")
    nisa.memset(dst=acc, value=0.0)
    return acc


def total_norm(acc):
    """[128, 1] tile holding sqrt(sum over partitions of acc) in every partition: one matmul with an
    all-ones [128, 128] stationary sums the partitions and broadcasts the sum to each of them."""
    ones = sbuf((P, P), F32, name="ones")
    nisa.memset(dst=ones, value=1.0)
    total = nl.ndarray((P, 1), dtype=F32, buffer=nl.psum, name="total")
    nisa.nc_matmul(dst=total, stationary=ones, moving=acc)
    norm = sbuf((P, 1), F32, name="norm")
    nisa.activation(dst=norm, op=nl.sqrt, data=total)
    return norm


def clip_coef(norm, max_norm: float):
    """min(max_norm / (norm + 1e-6), 1) per partition (torch.nn.utils.clip_grad_norm_)."""
    coef = sbuf((P, 1), F32, name="coef")
    nisa.tensor_scalar(dst=coef, data=norm, op0=nl.add, operand0=CLIP_EPS, op1=nl.divide,
                       operand1=float(max_norm), reverse1=True)
    nisa.tensor_scalar(dst=coef, data=coef, op0=nl.minimum, operand0=1.0)
    return coef


def scale_into(g, coef):
    """g *= coef (a [128, 1] tile of one value) in place."""
    for (vg,), keep in _walk((g,), 2 * g.itemsize):
        rows, cols = vg.shape
        tg = _load(vg, "g")
        out = sbuf((rows, cols), g.dtype, name="gs")
        nisa.tensor_scalar(dst=out, data=tg, op0=nl.multiply, operand0=coef[:rows, :])
        _store(vg, out)
        keep.append((tg, out))


def store_scalar(dst, tile):
    """dst (HBM, 1 element) = tile[0, 0]."""
    nisa.dma_copy(dst=_flat(dst).reshape(1, 1), src=tile[0:1, 0:1])


@nki.jit
def sum_squares(g):
    """[1] fp32: the sum of squares of g's elements."""
    out = nl.ndarray((1,), dtype=F32, buffer=nl.shared_hbm)
    acc = new_accumulator()
    sum_squares_into(acc, g)
    ones = sbuf((P, P), F32, name="ones")
    nisa.memset(dst=ones, value=1.0)
    total = nl.ndarray((P, 1), dtype=F32, buffer=nl.psum, name="total")
    nisa.nc_matmul(dst=total, stationary=ones, moving=acc)
    res = sbuf((P, 1), F32, name="res")
    nisa.tensor_copy(dst=res, src=total)
    store_scalar(out, res)
    return out


# --- gradient accumulation -------------------------------------------------------------------------

def accumulate_into(acc, g):
    """acc += g in place (acc fp32; g any float dtype): accumulation over micro-batches."""
    _check_sizes("grad_accumulate", acc=acc, g=g)
    for (va, vg), keep in _walk((acc, g), 8 + g.itemsize):
        ta, tg = _load(va, "acc"), _load(vg, "g")
        nisa.tensor_tensor(dst=ta, data1=ta, data2=tg, op=nl.add)
        _store(va, ta)
        keep.append((ta, tg))


@nki.jit
def grad_accumulate(acc, g):
    out = nl.ndarray(acc.shape, dtype=acc.dtype, buffer=nl.shared_hbm)
    nisa.dma_copy(dst=out, src=acc)
    accumulate_into(out, g)
    return out


__all__ = ["AdamWHyper", "SGDHyper", "COLS", "flat_tiles", "adamw_into", "sgd_into", "sum_squares_into",
           "new_accumulator", "total_norm", "clip_coef", "scale_into", "store_scalar", "accumulate_into",
           "adamw", "sgd", "sum_squares", "grad_accumulate"]
