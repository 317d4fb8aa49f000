"""nl.* tile functions of the current front end (nl.add(x, y), nl.exp(x), nl.sum(x, axis), ...).

Each allocates its result in SBUF and issues ISA instructions through nki.isa."""
from __future__ import annotations

from trnlab.core.srcloc import user_location


def call(op, *args, **kwargs):
    raise NotImplementedError(f"nl.{op.op_name}(...) as a tile function is not modelled yet. At {user_location()}")
