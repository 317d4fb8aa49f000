"""Calls of the NKI front end are checked against AWS's signatures: an unknown or misspelt keyword
(`nisa.activation(..., sclae=2.0)`) is an ApiArgumentError naming the API, the keyword, the valid
parameters and the kernel line, never silently ignored."""
from __future__ import annotations

import difflib
import functools
import inspect

from trnlab.core.srcloc import user_location
from trnlab.errors import ApiArgumentError


def raise_unbound(api: str, sig: inspect.Signature, args: tuple, kwargs: dict) -> None:
    """Raise ApiArgumentError if (args, kwargs) do not bind to sig; return if they do."""
    try:
        sig.bind(*args, **kwargs)
    except TypeError as exc:
        valid = list(sig.parameters)
        unknown = [k for k in kwargs if k not in sig.parameters]
        if unknown:
            hints = [f"{k!r} (did you mean {close[0]!r}?)" if (close := difflib.get_close_matches(k, valid, 1))
                     else repr(k) for k in unknown]
            what = f"unexpected keyword argument {', '.join(hints)}"
        else:
            what = str(exc)
        raise ApiArgumentError(f"{api}: {what}; valid parameters: ({', '.join(valid)}). "
                               f"At {user_location()}") from None


def checked(fn, api: str):
    """fn with the same signature; a call that does not bind raises ApiArgumentError. Binding is only
    checked after a TypeError, so a correct call costs nothing extra."""
    sig = inspect.signature(fn)

    @functools.wraps(fn)
    def call(*args, **kwargs):
        try:
            return fn(*args, **kwargs)
        except TypeError:
            raise_unbound(api, sig, args, kwargs)
            raise
    call.__trnlab_api__ = api
    return call


def check_module(namespace: dict, prefix: str, names) -> None:
    """Wrap the public functions `names` of a module namespace with `checked`."""
    for name in names:
        namespace[name] = checked(namespace[name], f"{prefix}.{name}")
