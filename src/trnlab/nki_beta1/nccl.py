"""neuronxcc.nki.nccl (Beta 1 collectives): collective_permute(dst, src, source_target_pairs), as AWS's Beta 1
ring-attention kernels call it, runs as nki.collectives.collective_permute does (a rendezvous of the ranks of a
multi-rank launch, then one timed ISA instruction per rank: trnlab.nki.collectives). AWS documents no other
Beta 1 collective signature; the other names raise NotImplementedError."""
from __future__ import annotations

from trnlab.core.srcloc import user_location
from trnlab.nki import collectives as _current_api


def collective_permute(dst, src, source_target_pairs, **_options):
    """Each (source, target) pair copies the source rank's src into the target rank's dst."""
    _current_api.permute("nki.nccl.collective_permute", [src], [dst], source_target_pairs, user_location())


def _not_modelled(name):
    return _current_api._not_modelled(name, "neuronxcc.nki.nccl", " (AWS documents no Beta 1 signature for it); "
                                      f"use nki.collectives.{name} of the current front end")


all_reduce = _not_modelled("all_reduce")
all_gather = _not_modelled("all_gather")
reduce_scatter = _not_modelled("reduce_scatter")


def __getattr__(name):
    if name.startswith("__"):
        raise AttributeError(name)
    return _not_modelled(name)
