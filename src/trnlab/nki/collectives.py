"""nki.collectives: cross-NeuronCore collectives. AWS's own simulator does not implement them and neither
does trnlab: every API raises NotImplementedError naming itself."""
from __future__ import annotations

from trnlab.core.srcloc import user_location


class ReplicaGroup:
    """A group of ranks (constructible so that kernel modules import; collectives themselves raise)."""

    def __init__(self, *args, **kwargs):
        self.args, self.kwargs = args, kwargs


def _not_modelled(name):
    def fn(*args, **kwargs):
        raise NotImplementedError(f"nki.collectives.{name} is not modelled by trnlab (the NKI CPU simulator "
                                  f"does not implement collectives either). At {user_location()}")
    fn.__name__ = name
    return fn


_NAMES = ("all_reduce", "all_gather", "reduce_scatter", "all_to_all", "all_to_all_v", "collective_permute",
          "collective_permute_implicit", "collective_permute_implicit_current_processing_rank_id",
          "collective_permute_implicit_reduce", "send", "recv", "rank_id")
for _n in _NAMES:
    globals()[_n] = _not_modelled(_n)


def __getattr__(name):
    if name.startswith("__"):
        raise AttributeError(name)
    return _not_modelled(name)
