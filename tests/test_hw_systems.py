"""System presets against the numbers of trainium-scale.md §1.1-1.2 (literals from the reference, not from
the presets), what-if edits, clusters, and the typed errors."""
import dataclasses

import pytest

from trnlab.errors import TargetError
from trnlab.hw.systems import SYSTEMS, cluster, get_system

GiB = 2 ** 30


@pytest.mark.parametrize("name, chips, physical, ranks, hbm_per_rank_gib, links", [
    ("trn1.2xlarge", 1, 2, 2, 16, 0),            # 1 chip, 2 NC; 16 GB per NC
    ("trn1.32xlarge", 16, 32, 32, 16, 4),        # 16 chips, 32 NC, 4 x NeuronLink-v2
    ("trn1n.32xlarge", 16, 32, 32, 16, 4),
    ("trn2.48xlarge", 16, 128, 64, 24, 4),       # LNC=2: 64 logical cores, 24 GB each
    ("trn2.48xlarge-lnc1", 16, 128, 128, 12, 4),  # LNC=1: 12 GB per physical core
    ("trn2-ultraserver", 64, 512, 256, 24, 4),   # 4 x trn2u.48xlarge
    ("trn3-ultraserver", 64, 512, 256, 36, 4),   # Gen1: 4 servers x 16 chips; 144 GiB / 4 logical cores
])
def test_counts_and_memory(name, chips, physical, ranks, hbm_per_rank_gib, links):
    s = get_system(name)
    assert (s.chips, s.physical_cores, s.ranks) == (chips, physical, ranks)
    assert s.hbm_bytes_per_rank == hbm_per_rank_gib * GiB
    assert s.chip_fabric.links_per_chip == links


@pytest.mark.parametrize("name, hbm_total_gib", [("trn1.32xlarge", 512), ("trn2.48xlarge", 1536),
                                                 ("trn2-ultraserver", 6144), ("trn3-ultraserver", 9216)])
def test_total_hbm(name, hbm_total_gib):
    assert get_system(name).hbm_bytes == hbm_total_gib * GiB


@pytest.mark.parametrize("name, gbps, nics", [("trn1.2xlarge", 25, 1), ("trn1.32xlarge", 800, 8),
                                              ("trn1n.32xlarge", 1600, 16), ("trn2.48xlarge", 3200, 16),
                                              ("trn3-ultraserver", 12800 / 4, 16)])
def test_efa(name, gbps, nics):
    s = get_system(name)
    assert s.efa_bytes_per_s_per_instance == pytest.approx(gbps * 1e9 / 8)
    assert s.efa_nics_per_instance == nics


def test_efa_per_chip():
    assert get_system("trn2.48xlarge").efa_nics_per_chip == 1                    # 200 Gbps per chip
    assert get_system("trn2.48xlarge").efa_bytes_per_s_per_nic == pytest.approx(200e9 / 8)
    assert get_system("trn1.32xlarge").efa_nics_per_chip == 0.5


def test_neuronlink_per_chip():
    assert get_system("trn1.32xlarge").neuronlink_bytes_per_s_per_chip == pytest.approx(384e9)
    assert get_system("trn2.48xlarge").neuronlink_bytes_per_s_per_chip == pytest.approx(1024e9)
    # UltraServer: 1,024 intra + 256 inter-instance (Z ring) GB/s per chip
    assert get_system("trn2-ultraserver").neuronlink_bytes_per_s_per_chip == pytest.approx(1280e9)
    assert get_system("trn2-ultraserver").domain_fabric.kind == "ring"
    assert get_system("trn3-ultraserver").chip_fabric.kind == "switch"
    assert get_system("trn2.48xlarge").chip_fabric.shape == (4, 4)


def test_every_link_has_a_source():
    for s in SYSTEMS.values():
        for fabric in (s.chip_fabric, s.domain_fabric):
            if fabric.link is not None:
                assert fabric.link.source and fabric.link.latency_s > 0


def test_cluster_and_what_if():
    c = cluster("trn1.32xlarge", 2)
    assert (c.ranks, c.chips, c.nodes) == (64, 32, 2)
    fast = dataclasses.replace(get_system("trn2.48xlarge"), efa_bytes_per_s_per_instance=1e12)
    assert fast.efa_bytes_per_s_per_instance == 1e12 and fast.ranks == 64
    assert get_system(fast) is fast


def test_errors_name_the_valid_values():
    with pytest.raises(TargetError, match="trn1.32xlarge.*trn3-ultraserver"):
        get_system("trn9.huge")
    with pytest.raises(TargetError, match="nodes"):
        cluster("trn2.48xlarge", 0)
    with pytest.raises(TargetError, match="lnc"):
        get_system("trn2.48xlarge").replace(lnc=3)
    with pytest.raises(TargetError, match="efa_bytes_per_s_per_instance"):
        get_system("trn2.48xlarge").replace(efa_bytes_per_s_per_instance=0)
