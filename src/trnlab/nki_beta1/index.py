"""Beta 1 index expressions: nl.arange / nl.mgrid values, affine arithmetic on them, and predicates.

An Index holds the integer values of an affine expression over arange variables as a broadcastable
int64 array (`nl.arange(128)[:, None]` is shape (128, 1)). Loop variables and program ids are plain
Python ints, so `k*128 + i_p` is an Index too. Comparisons give a Predicate: a boolean array over
the iteration space that also remembers `lhs - rhs` and the operator (affine_select needs both).
"""
from __future__ import annotations

import numpy as np


def _values(x):
    return x.values if isinstance(x, Index) else x


class Index:
    """An affine index expression (values as a broadcastable int64 array)."""

    __slots__ = ("values",)
    __array_priority__ = 100          # numpy scalars on the left defer to our operators

    def __init__(self, values):
        self.values = np.asarray(values, dtype=np.int64)

    # --- shape ---
    @property
    def shape(self) -> tuple:
        return self.values.shape

    @property
    def ndim(self) -> int:
        return self.values.ndim

    def __getitem__(self, key) -> "Index":
        return Index(self.values[key])

    def __len__(self) -> int:
        return len(self.values)

    def __repr__(self) -> str:
        return f"Index(shape={self.shape}, min={self.values.min()}, max={self.values.max()})"

    # --- affine arithmetic ---
    def __add__(self, o):
        return Index(self.values + _values(o))

    __radd__ = __add__

    def __sub__(self, o):
        return Index(self.values - _values(o))

    def __rsub__(self, o):
        return Index(_values(o) - self.values)

    def __mul__(self, o):
        return Index(self.values * _values(o))

    __rmul__ = __mul__

    def __floordiv__(self, o):
        return Index(self.values // _values(o))

    def __mod__(self, o):
        return Index(self.values % _values(o))

    def __neg__(self):
        return Index(-self.values)

    def __pos__(self):
        return self

    # --- predicates ---
    def _cmp(self, o, op: str, fn) -> "Predicate":
        return Predicate(fn(self.values, _values(o)), diff=self - o, op=op)

    def __lt__(self, o):
        return self._cmp(o, "less", np.less)

    def __le__(self, o):
        return self._cmp(o, "less_equal", np.less_equal)

    def __gt__(self, o):
        return self._cmp(o, "greater", np.greater)

    def __ge__(self, o):
        return self._cmp(o, "greater_equal", np.greater_equal)

    def __eq__(self, o):  # noqa: D105  (an index predicate, as in NKI)
        return self._cmp(o, "equal", np.equal)

    def __ne__(self, o):
        return self._cmp(o, "not_equal", np.not_equal)

    __hash__ = object.__hash__


class Predicate:
    """A mask: a boolean array over the iteration space (combine with &, |, ~)."""

    __slots__ = ("values", "diff", "op")

    def __init__(self, values, diff: Index | None = None, op: str | None = None):
        self.values = np.asarray(values, dtype=bool)
        self.diff, self.op = diff, op

    @property
    def shape(self) -> tuple:
        return self.values.shape

    def __and__(self, o):
        return Predicate(self.values & _pred(o))

    __rand__ = __and__

    def __or__(self, o):
        return Predicate(self.values | _pred(o))

    __ror__ = __or__

    def __invert__(self):
        return Predicate(~self.values)

    def __bool__(self):
        raise TypeError("an NKI mask predicate has no truth value; pass it as mask=")

    def __repr__(self) -> str:
        return f"Predicate(shape={self.shape}, true={int(self.values.sum())})"


def _pred(x) -> np.ndarray:
    if isinstance(x, Predicate):
        return x.values
    return np.asarray(x, dtype=bool)


def arange(*args) -> Index:
    """nl.arange(stop) / nl.arange(start, stop[, step]): a 1-D index (use [:, None] / [None, :])."""
    return Index(np.arange(*[int(a) for a in args], dtype=np.int64))


class Grid(tuple):
    """nl.mgrid[...] result: unpack it, or read .p (partition), .x, .y, .z (free dims)."""

    @property
    def p(self) -> Index:
        return self[0]

    @property
    def x(self) -> Index:
        return self[1]

    @property
    def y(self) -> Index:
        return self[2]

    @property
    def z(self) -> Index:
        return self[3]


class _MGrid:
    """nl.mgrid[0:P, 0:F, ...]: one broadcastable Index per dimension."""

    def __getitem__(self, key) -> Grid:
        key = key if isinstance(key, tuple) else (key,)
        n = len(key)
        out = []
        for d, k in enumerate(key):
            if not isinstance(k, slice):
                raise TypeError(f"nl.mgrid takes slices like nl.mgrid[0:128, 0:512], got {k!r}")
            start = 0 if k.start is None else int(k.start)
            step = 1 if k.step is None else int(k.step)
            values = np.arange(start, int(k.stop), step, dtype=np.int64)
            shape = [1] * n
            shape[d] = len(values)
            out.append(Index(values.reshape(shape)))
        return Grid(out)

    def __repr__(self) -> str:
        return "nl.mgrid"


mgrid = _MGrid()


def compact(values: np.ndarray) -> np.ndarray:
    """The array without its broadcast copies: each stride-0 dim cut to size 1 (the values are constant
    along it). Index arrays reach the tile views broadcast to the access shape, so the affine check and
    the bounds scan then touch P + F values instead of P x F."""
    strides = getattr(values, "strides", None)
    if not strides or 0 not in strides or values.size == 0:
        return values
    return values[tuple(slice(0, 1) if s == 0 else slice(None) for s in strides)]


def affine_form(values: np.ndarray):
    """(offset, coefficients per axis) of an integer array that is affine over its grid, or None."""
    v = compact(np.asarray(values, dtype=np.int64))     # a broadcast dim has coefficient 0: n = 1 below
    if v.size == 0:
        return 0, (0,) * v.ndim
    origin = v[(0,) * v.ndim]
    coefs = []
    recon = np.full(v.shape, origin, dtype=np.int64)
    for k, n in enumerate(v.shape):
        if n > 1:
            e = [0] * v.ndim
            e[k] = 1
            c = int(v[tuple(e)] - origin)
            shape = [1] * v.ndim
            shape[k] = n
            recon = recon + c * np.arange(n, dtype=np.int64).reshape(shape)
        else:
            c = 0
        coefs.append(c)
    if not np.array_equal(recon, v):
        return None
    return int(origin), tuple(coefs)
