"""ALU operators and activation functions: the numpy definitions every engine uses (fp32 math).

Front ends refer to them by name (nl.add -> "add", nl.exp -> "exp").
"""
from __future__ import annotations

import numpy as np
from scipy import special

from trnlab.errors import NkiValidationError


def _cmp(fn):
    return lambda a, b: fn(a, b).astype(np.float32)


def _int_op(fn):
    """Bitwise ops act on the integer bits; floats are converted to int32 first."""
    def op(a, b):
        ai = a if a.dtype.kind in "iu" else a.astype(np.int32)
        bi = b if np.asarray(b).dtype.kind in "iu" else np.asarray(b).astype(np.int32)
        return fn(ai, bi)
    return op


def _divide(a, b):
    with np.errstate(divide="ignore", invalid="ignore"):
        return np.divide(a, b)


def _rsqrt(a):
    with np.errstate(divide="ignore", invalid="ignore"):
        return np.float32(1.0) / np.sqrt(a)


def _logical_shift_right(a, b):
    ai = np.asarray(a).astype(np.int64) & 0xFFFFFFFF
    return (ai >> np.asarray(b).astype(np.int64)).astype(np.int64)


ALU_OPS = {
    "add": np.add,
    "subtract": np.subtract,
    "multiply": np.multiply,
    "divide": _divide,
    "maximum": np.maximum,
    "minimum": np.minimum,
    "max": np.maximum,
    "min": np.minimum,
    "power": lambda a, b: np.power(a, b, dtype=np.float32) if np.asarray(a).dtype.kind == "f" else np.power(a, b),
    "pow": lambda a, b: np.power(a, b, dtype=np.float32),
    "abs_max": lambda a, b: np.maximum(np.abs(a), np.abs(b)),
    "abs_min": lambda a, b: np.minimum(np.abs(a), np.abs(b)),
    "equal": _cmp(np.equal),
    "not_equal": _cmp(np.not_equal),
    "greater": _cmp(np.greater),
    "greater_equal": _cmp(np.greater_equal),
    "less": _cmp(np.less),
    "less_equal": _cmp(np.less_equal),
    "logical_and": _cmp(lambda a, b: np.logical_and(a != 0, b != 0)),
    "logical_or": _cmp(lambda a, b: np.logical_or(a != 0, b != 0)),
    "logical_xor": _cmp(lambda a, b: np.logical_xor(a != 0, b != 0)),
    "bitwise_and": _int_op(np.bitwise_and),
    "bitwise_or": _int_op(np.bitwise_or),
    "bitwise_xor": _int_op(np.bitwise_xor),
    "left_shift": _int_op(np.left_shift),
    "right_shift": _int_op(np.right_shift),
    "arith_shift_right": _int_op(np.right_shift),
    "logical_shift_left": _int_op(np.left_shift),
    "logical_shift_right": _logical_shift_right,
    "mod": lambda a, b: np.mod(a, b),
    "fmod": lambda a, b: np.fmod(a, b),
    "bypass": lambda a, b: a,
    # unary operators of AWS's ALU table ("Supported Math Operators for NKI ISA"): the operand is ignored
    "rsqrt": lambda a, b: _rsqrt(a),
    "reciprocal": lambda a, b: _divide(np.float32(1.0), a),
    "abs": lambda a, b: np.abs(a),
    "logical_not": lambda a, b: (np.asarray(a) == 0).astype(np.float32),
    "invert": _int_op(lambda a, b: np.invert(a)),
}
UNARY_ALU = frozenset({"rsqrt", "reciprocal", "abs", "logical_not", "invert"})

# Reductions usable in tensor_reduce / activation reduce / scans (identity, numpy reducer).
REDUCE_OPS = {
    "add": (0.0, np.add),
    "multiply": (1.0, np.multiply),
    "maximum": (-np.inf, np.maximum),
    "max": (-np.inf, np.maximum),
    "minimum": (np.inf, np.minimum),
    "min": (np.inf, np.minimum),
    "bitwise_and": (-1, np.bitwise_and),
    "bitwise_or": (0, np.bitwise_or),
    "bitwise_xor": (0, np.bitwise_xor),
    "logical_and": (1.0, np.logical_and),
    "logical_or": (0.0, np.logical_or),
    "abs_max": (0.0, None),
}


def _gelu(x):
    return 0.5 * x * (1.0 + special.erf(x / np.sqrt(2.0)))


def _gelu_tanh(x):
    return 0.5 * x * (1.0 + np.tanh(np.sqrt(2.0 / np.pi) * (x + 0.044715 * x ** 3)))


def _gelu_dx(x):
    cdf = 0.5 * (1.0 + special.erf(x / np.sqrt(2.0)))
    pdf = np.exp(-0.5 * x * x) / np.sqrt(2.0 * np.pi)
    return cdf + x * pdf


def _sigmoid(x):
    return special.expit(x)


def _silu(x):
    return x * special.expit(x)


def _silu_dx(x):
    s = special.expit(x)
    return s * (1.0 + x * (1.0 - s))


def _softplus(x):
    return np.logaddexp(0.0, x)


def _safe(fn):
    def wrapped(x):
        with np.errstate(divide="ignore", invalid="ignore", over="ignore"):
            return fn(x)
    return wrapped


ACTIVATIONS = {
    "copy": lambda x: x,
    "identity": lambda x: x,
    "bypass": lambda x: x,
    "square": np.square,
    "sigmoid": _sigmoid,
    "relu": lambda x: np.maximum(x, 0.0),
    "gelu": _gelu,
    "gelu_dx": _gelu_dx,
    "gelu_apprx_tanh": _gelu_tanh,
    "gelu_apprx_sigmoid": lambda x: x * special.expit(1.702 * x),
    "gelu_apprx_sigmoid_dx": lambda x: special.expit(1.702 * x) * (1 + 1.702 * x * (1 - special.expit(1.702 * x))),
    "silu": _silu,
    "silu_dx": _silu_dx,
    "tanh": np.tanh,
    "softplus": _softplus,
    "mish": lambda x: x * np.tanh(_softplus(x)),
    "erf": special.erf,
    "erf_dx": lambda x: 2.0 / np.sqrt(np.pi) * np.exp(-x * x),
    "exp": _safe(np.exp),
    "log": _safe(np.log),
    "sin": np.sin,
    "cos": np.cos,
    "arctan": np.arctan,
    "sqrt": _safe(np.sqrt),
    "rsqrt": _safe(lambda x: 1.0 / np.sqrt(x)),
    "reciprocal": _safe(lambda x: 1.0 / x),
    "sign": np.sign,
    "abs": np.abs,
    "negative": np.negative,
    "floor": np.floor,
    "ceil": np.ceil,
    "trunc": np.trunc,
    "erf_inv": special.erfinv,
    "softsign": lambda x: x / (1.0 + np.abs(x)),
    "logistic": _sigmoid,
}


def _lookup(table: dict, name: str, error, what: str, api: str, loc: str):
    """table[name], or error naming the API, `what` (which holds {name}), the supported names and loc."""
    try:
        return table[name]
    except KeyError:
        raise error(f"{api}: {what.format(name=repr(name))}; supported: {sorted(table)}. At {loc}") from None


def alu(name: str, api: str, loc: str = ""):
    return _lookup(ALU_OPS, name, NkiValidationError, "unsupported ALU operator {name}", api, loc)


def activation(name: str, api: str, loc: str = ""):
    return _lookup(ACTIVATIONS, name, NotImplementedError,
                   "activation function {name} is not modelled by trnlab", api, loc)


def reducer(name: str, api: str, loc: str = ""):
    identity, fn = _lookup(REDUCE_OPS, name, NkiValidationError, "unsupported reduce operator {name}", api, loc)
    if fn is None:
        return identity, lambda a, b: np.maximum(np.abs(a), np.abs(b))
    return identity, fn


def reduce(name: str, x: np.ndarray, axis, api: str, loc: str = "", keepdims: bool = False) -> np.ndarray:
    """Reduce x along axis with a named ALU reducer (fp32)."""
    if name == "abs_max":
        return np.max(np.abs(x), axis=axis, keepdims=keepdims)
    _, fn = reducer(name, api, loc)
    if fn is np.logical_and or fn is np.logical_or:
        return fn.reduce(x != 0, axis=axis, keepdims=keepdims).astype(np.float32)
    return fn.reduce(x, axis=axis, keepdims=keepdims)


def op_name(op) -> str:
    """Name of an ALU operator or activation given as nl.add, np.add, 'add', or an enum-like object."""
    if op is None:
        return None
    if isinstance(op, str):
        return op
    name = getattr(op, "op_name", None) or getattr(op, "name", None) or getattr(op, "__name__", None)
    if name is None:
        raise NkiValidationError(f"cannot interpret {op!r} as an ALU operator or activation function")
    return _NUMPY_ALIASES.get(name, name)


_NUMPY_ALIASES = {"true_divide": "divide", "amax": "maximum", "amin": "minimum", "absolute": "abs",
                  "negative": "negative", "sub": "subtract", "mul": "multiply", "truediv": "divide",
                  "sum": "add", "prod": "multiply", "fabs": "abs", "bitwise_left_shift": "left_shift",
                  "bitwise_right_shift": "right_shift"}
