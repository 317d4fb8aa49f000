"""Collectives issued inside a compiled graph (collective_cost(..., launch="graph")): the fixed terms of
GraphCollectiveTuning over the host fit's bandwidth terms.

Oracles: hand arithmetic from the constants' definitions (one launch per collective, one hop per algorithm
step, an all-reduce = reduce-scatter + all-gather = 2 steps, Mesh writes its peers in one step) and the
host-launched cost of the same collective."""
import pytest

from trnlab.errors import CollectiveError
from trnlab.isa.collectives import (GRAPH_TUNING, GRAPH_TUNINGS, TUNINGS, GraphCollectiveTuning, collective_cost)

G = GraphCollectiveTuning(launch_s=3e-6, hop_s=1e-6)


def test_in_graph_latency_floor_by_hand():
    # 2 ranks on one trn1 chip, nothing to move: Mesh, one launch; the all-reduce is the intranode doc's
    # single-step Mesh on one chip (one hop), like the all-gather
    ar = collective_cost("all-reduce", 0, 2, "trn1.32xlarge", launch="graph", graph_tuning=G)
    ag = collective_cost("all-gather", 0, 2, "trn1.32xlarge", launch="graph", graph_tuning=G)
    assert ar.algorithm == ag.algorithm == "mesh"
    assert ar.latency_s == pytest.approx(3e-6 + 1e-6)
    assert ag.latency_s == pytest.approx(3e-6 + 1e-6)
    assert dict(ar.phases)["launch"] == pytest.approx(3e-6)


def test_in_graph_keeps_the_bandwidth_terms():
    # host minus in-graph is the fixed terms only, whatever the size (Mesh over the 32 ranks of trn1, forced)
    host_fixed = collective_cost("all-reduce", 0, 32, "trn1.32xlarge", algorithm="mesh").latency_s
    graph_fixed = collective_cost("all-reduce", 0, 32, "trn1.32xlarge", algorithm="mesh", launch="graph",
                                  graph_tuning=G).latency_s
    assert graph_fixed == pytest.approx(G.launch_s + 2 * G.hop_s)          # RS step + AG step, one hop each
    assert host_fixed > 10 * graph_fixed
    for nbytes in (0, 16 * 1024, 4 * 1024 * 1024):
        host = collective_cost("all-reduce", nbytes, 32, "trn1.32xlarge", algorithm="mesh").latency_s
        graph = collective_cost("all-reduce", nbytes, 32, "trn1.32xlarge", algorithm="mesh", launch="graph",
                                graph_tuning=G).latency_s
        assert host - graph == pytest.approx(host_fixed - graph_fixed, rel=1e-9)


@pytest.mark.parametrize("system", ["trn1.32xlarge", "trn2.48xlarge"])
@pytest.mark.parametrize("op", ["all-reduce", "all-gather", "reduce-scatter"])
def test_in_graph_is_below_host_and_monotone(system, op):
    sizes = [0, 1024, 16 * 1024, 256 * 1024]
    by_size = [collective_cost(op, n, 32, system, launch="graph").latency_s for n in sizes]
    assert by_size == sorted(by_size)
    by_ranks = [collective_cost(op, 16 * 1024, r, system, launch="graph").latency_s for r in (2, 4, 8, 16, 32)]
    assert by_ranks == sorted(by_ranks)
    for n in sizes + [64 * 1024 * 1024]:
        for r in (2, 8, 32):
            graph = collective_cost(op, n, r, system, launch="graph").latency_s
            host = collective_cost(op, n, r, system).latency_s
            # never above a stand-alone launch; strictly below on trn1 (29.7 us host launch) and for trn2's
            # reducing collectives (393 us reducing launch); trn2's non-reducing RDH has 0.1 us of launch
            assert graph <= host
            if system.startswith("trn1") or op != "all-gather":
                assert graph < host


def test_fitted_constant_within_its_documented_bounds():
    # benchmarks/fit_plan.py bounds launch_s to the intranode doc's latency term, 10^0 to 10^1 us
    assert 1e-6 <= GRAPH_TUNING.launch_s <= 10e-6
    assert 1e-6 <= GRAPH_TUNING.hop_s <= 2e-6          # the doc's "about 1-2 us" per hop


def test_trn1_in_graph_link_efficiency_is_the_fitted_one():
    """Only trn1's in-graph NeuronLink efficiency is fitted (its nccom-test rows leave it undetermined): a
    large all-gather across the chips of a trn1 instance is bandwidth-bound, so its time scales by the ratio
    of the efficiencies; trn2 keeps its host fit's."""
    eff = GRAPH_TUNINGS[2].link_efficiency
    assert eff is not None and 0.1 <= eff <= 1.0
    assert GRAPH_TUNINGS[3].link_efficiency is None and GRAPH_TUNINGS[4] is GRAPH_TUNINGS[3]
    nbytes = 256 * 2**20
    graph = collective_cost("all-gather", nbytes, 32, "trn1.32xlarge", launch="graph").latency_s
    as_host = collective_cost("all-gather", nbytes, 32, "trn1.32xlarge", launch="graph",
                              graph_tuning=GraphCollectiveTuning(launch_s=GRAPH_TUNING.launch_s)).latency_s
    assert eff > TUNINGS[2].link_efficiency
    assert graph < as_host / 2                       # 1.0 against the host fit's 0.149, less the fixed terms
    with pytest.raises(CollectiveError, match="link_efficiency must be in"):
        GraphCollectiveTuning(launch_s=1e-6, link_efficiency=1.5)


def test_bad_launch_and_constants_are_refused():
    with pytest.raises(CollectiveError, match="launch must be one of host|graph"):
        collective_cost("all-reduce", 1024, 2, "trn1.32xlarge", launch="kernel")
    with pytest.raises(CollectiveError, match="launch_s must be >= 0"):
        GraphCollectiveTuning(launch_s=-1e-6)

