"""System presets: instances, UltraServers and clusters built from the chip presets plus a topology.

Every number carries its source. Short names (public):
  SDK   = https://github.com/aws-neuron/aws-neuron-sdk/blob/master/
    trn1-arch = SDK about-neuron/arch/neuron-hardware/trn1-arch.rst (instance table: chips, cores, EFA, the
                unlabelled 384/768 column read as NeuronLink GB/s per chip [UNVERIFIED unit])
    trn2-arch = SDK about-neuron/arch/neuron-hardware/trn2-arch.rst (4x4 torus, 1,024 GB/s/chip intra,
                UltraServer Z ring, EFAv3 3,200 Gbps)
    trn3-arch = SDK about-neuron/arch/neuron-hardware/trn3-arch.rst (NeuronSwitch-v1, 2,048 GiB/s/device)
    chip pages = SDK about-neuron/arch/neuron-hardware/trainium.rst, trainium2.rst, trainium3.rst (links/chip)
    lnc       = SDK about-neuron/arch/neuron-features/logical-neuroncore-config.rst (LNC=2: 24 GB per logical core)
    collectives = SDK neuron-runtime/about/collectives.rst (200 Gbps EFA per trn2 chip)
    intranode = SDK neuron-runtime/explore/intranode-collective-comm.rst (per-hop latency 1-2 us, 2D torus)
    internode = SDK neuron-runtime/explore/internode-collective-comm.rst (EFA per-hop latency ~15 us)
  EKS-523 = https://github.com/aws/aws-k8s-tester/pull/523 ("EFA Per Node: 8" on trn1.32xlarge)
  MOONCAKE = https://github.com/kvcache-ai/Mooncake/pull/3888 (16 trn2 devices -> 8 PCIe switches x 2 NICs)

A rank is one (logical) NeuronCore: `lnc` physical cores. Ranks fill a chip, then the chips of an instance,
then the instances of a scale-up domain (UltraServer), then the domains of a cluster (over EFA).
`dataclasses.replace(system, ...)` (or `system.replace(...)`) makes a what-if variant; the checks re-run.
"""
from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Optional

from trnlab.hw import TRN1, TRN2, TRN3, ChipSpec, GiB

GBPS = 1e9 / 8          # one gigabit per second, in bytes per second


@dataclass(frozen=True, kw_only=True)
class Link:
    """One kind of interconnect link: bandwidth per link and direction [UNVERIFIED: the sources give per-chip
    totals without a direction], one-hop latency as documented (the collective model fits its own per-step
    time, trnlab.isa.collectives.CollectiveTuning.step_s; this value is the documented reference)."""
    name: str
    bytes_per_s: float
    latency_s: float
    source: str

    def __post_init__(self):
        _positive(self, "bytes_per_s", "latency_s")


@dataclass(frozen=True, kw_only=True)
class Fabric:
    """How chips of one scope are wired: 'torus2d' (rows x cols chips, `links_per_chip` neighbour links),
    'ring' (one instance per position, 2 neighbours), 'switch' (any-to-any, one hop) or 'none' (one chip)."""
    kind: str
    shape: tuple = ()
    links_per_chip: int = 0
    link: Optional[Link] = None

    def __post_init__(self):
        from trnlab.errors import TargetError
        if self.kind not in FABRICS:
            raise TargetError(f"fabric kind {self.kind!r} is not one of {'|'.join(FABRICS)}")
        if self.kind != "none" and (self.link is None or self.links_per_chip < 1):
            raise TargetError(f"a {self.kind} fabric needs a link and links_per_chip >= 1, got "
                              f"{self.link!r}, {self.links_per_chip}")


FABRICS = ("none", "torus2d", "ring", "switch")


@dataclass(frozen=True, kw_only=True)
class SystemSpec:
    """An instance (or UltraServer) type times `nodes`: the unit `trnlab collective --system` takes."""
    name: str
    chip: ChipSpec
    lnc: int = 1                   # physical NeuronCores per rank (logical core)
    chips_per_instance: int
    instances_per_domain: int = 1  # instances joined by NeuronLink (4 in an UltraServer)
    nodes: int = 1                 # scale-up domains of the cluster, joined by EFA
    chip_fabric: Fabric            # chips of one instance
    domain_fabric: Fabric = Fabric(kind="none")   # instances of an UltraServer
    efa_nics_per_instance: int
    efa_bytes_per_s_per_instance: float
    efa_latency_s: float = 15e-6   # internode: "the per-hop or point-to-point latency is ~15us" (reference;
                                   # the collective model fits efa_step_s: 10.6 us on trn1)
    usd_per_hour: float = 0.0      # per instance
    price_source: str = "no published price"
    source: str = ""

    def __post_init__(self):
        from trnlab.errors import TargetError
        _positive(self, "lnc", "chips_per_instance", "instances_per_domain", "nodes", "efa_nics_per_instance",
                  "efa_bytes_per_s_per_instance", "efa_latency_s")
        if self.chip.cores_per_chip % self.lnc:
            raise TargetError(f"system {self.name!r}: lnc must divide the chip's {self.chip.cores_per_chip} "
                              f"cores, got {self.lnc}")
        if self.chip_fabric.kind == "torus2d" and _prod(self.chip_fabric.shape) != self.chips_per_instance:
            raise TargetError(f"system {self.name!r}: torus shape {self.chip_fabric.shape} does not hold "
                              f"{self.chips_per_instance} chips")

    # --- counts ---
    @property
    def ranks_per_chip(self) -> int:
        return self.chip.cores_per_chip // self.lnc

    @property
    def ranks_per_instance(self) -> int:
        return self.ranks_per_chip * self.chips_per_instance

    @property
    def ranks_per_domain(self) -> int:
        return self.ranks_per_instance * self.instances_per_domain

    @property
    def instances(self) -> int:
        return self.instances_per_domain * self.nodes

    @property
    def chips(self) -> int:
        return self.chips_per_instance * self.instances

    @property
    def ranks(self) -> int:
        return self.ranks_per_domain * self.nodes

    @property
    def physical_cores(self) -> int:
        return self.chip.cores_per_chip * self.chips

    # --- memory and bandwidth ---
    @property
    def hbm_bytes_per_rank(self) -> int:
        return self.chip.hbm_bytes // self.ranks_per_chip

    @property
    def hbm_bytes(self) -> int:
        return self.chip.hbm_bytes * self.chips

    @property
    def neuronlink_bytes_per_s_per_chip(self) -> float:
        total = 0.0
        for fabric in (self.chip_fabric, self.domain_fabric):
            if fabric.kind != "none":
                total += fabric.links_per_chip * fabric.link.bytes_per_s
        return total

    @property
    def efa_nics_per_chip(self) -> float:
        """trn2: 1 (collectives doc: 200 Gbps per chip); trn1: 0.5 (8 NICs for 16 chips)."""
        return self.efa_nics_per_instance / self.chips_per_instance

    @property
    def efa_bytes_per_s_per_nic(self) -> float:
        return self.efa_bytes_per_s_per_instance / self.efa_nics_per_instance

    def replace(self, **changes) -> "SystemSpec":
        return dataclasses.replace(self, **changes)


def _prod(shape) -> int:
    out = 1
    for s in shape:
        out *= s
    return out


def _positive(obj, *names) -> None:
    from trnlab.errors import TargetError
    for name in names:
        value = getattr(obj, name)
        if not value > 0:
            raise TargetError(f"{type(obj).__name__} {getattr(obj, 'name', '')!r}: {name} must be > 0, "
                              f"got {value!r}")


# --- links ---------------------------------------------------------------------------------------------
# Per-hop latency: intranode "the per-hop latency of Ring/KangaRing is about 1-2 us (HBM load dependent)";
# we take the middle, 1.5 us; the collective model fits its own per-step time (docs/calibration.md).
NEURONLINK_V2 = Link(name="NeuronLink-v2", bytes_per_s=384e9 / 4, latency_s=1.5e-6,
                     source="trn1-arch: 384 GB/s per chip [UNVERIFIED unit] / 4 links (trainium.rst) = 96 GB/s")
NEURONLINK_V2_TRN1N = Link(name="NeuronLink-v2 (trn1n)", bytes_per_s=768e9 / 4, latency_s=1.5e-6,
                           source="trn1-arch: 768 in the same unlabelled column for trn1n [UNVERIFIED unit] / 4")
NEURONLINK_V3 = Link(name="NeuronLink-v3", bytes_per_s=1024e9 / 4, latency_s=1.5e-6,
                     source="trn2-arch: 1,024 GB/s per chip intra-instance / 4 X/Y neighbours = 256 GB/s")
NEURONLINK_V3_Z = Link(name="NeuronLink-v3 Z", bytes_per_s=256e9 / 2, latency_s=1.5e-6,
                       source="trn2-arch: 256 GB/s per chip inter-instance over 2 Z neighbours (ring of 4)")
NEURONSWITCH_V1 = Link(name="NeuronLink-v4 + NeuronSwitch-v1", bytes_per_s=2048 * GiB / 4, latency_s=1.5e-6,
                       source="trn3-arch: 2,048 GiB/s per device through the switch / 4 NeuronLink-v4 (trainium3.rst)")

_TORUS_TRN1 = Fabric(kind="torus2d", shape=(4, 4), links_per_chip=4, link=NEURONLINK_V2)
_TORUS_TRN2 = Fabric(kind="torus2d", shape=(4, 4), links_per_chip=4, link=NEURONLINK_V3)

_TRN1_PRICE = "trn1.32xlarge $21.50/h on-demand, third-party quote (trainium-scale.md §3)"

TRN1_2XLARGE = SystemSpec(
    name="trn1.2xlarge", chip=TRN1, chips_per_instance=1,            # trn1-arch: 1 chip, 2 NeuronCores
    chip_fabric=Fabric(kind="none"),
    efa_nics_per_instance=1, efa_bytes_per_s_per_instance=25 * GBPS,  # trn1-arch: "up to 25 Gbps" [1 NIC assumed]
    usd_per_hour=TRN1.instance_usd_per_hour, price_source=TRN1.price_source,
    source="trn1-arch")
TRN1_32XLARGE = SystemSpec(
    name="trn1.32xlarge", chip=TRN1, chips_per_instance=16,          # trn1-arch: 16 chips, 32 NeuronCores
    chip_fabric=_TORUS_TRN1,                                         # trn1-arch: 2D torus; trainium.rst: 4 links
    efa_nics_per_instance=8,                                         # EKS-523: "EFA Per Node: 8"
    efa_bytes_per_s_per_instance=800 * GBPS,                         # trn1-arch: 800 Gbps
    usd_per_hour=21.50, price_source=_TRN1_PRICE, source="trn1-arch")
TRN1N_32XLARGE = TRN1_32XLARGE.replace(
    name="trn1n.32xlarge",
    chip_fabric=dataclasses.replace(_TORUS_TRN1, link=NEURONLINK_V2_TRN1N),
    efa_nics_per_instance=16,                                        # [derived] 1,600 Gbps at EKS-523's 100 Gbps/NIC
    efa_bytes_per_s_per_instance=1600 * GBPS,                        # trn1-arch: 1,600 Gbps
    usd_per_hour=0.0, price_source="no published trn1n price in our sources")
_TRN2_COMMON = dict(
    chip=TRN2, chips_per_instance=16,                                # trn2-arch: 16 chips, 128 physical NCs
    chip_fabric=_TORUS_TRN2,                                         # trn2-arch: 4x4 2D torus
    efa_nics_per_instance=16,                                        # MOONCAKE: 8 PCIe switches x 2 NICs
    efa_bytes_per_s_per_instance=3200 * GBPS,                        # trn2-arch: 3,200 Gbps EFAv3
    usd_per_hour=TRN2.instance_usd_per_hour, price_source=TRN2.price_source, source="trn2-arch")
TRN2_48XLARGE = SystemSpec(name="trn2.48xlarge", lnc=2, **_TRN2_COMMON)  # lnc: LNC=2 is the default
TRN2_48XLARGE_LNC1 = SystemSpec(name="trn2.48xlarge-lnc1", lnc=1, **_TRN2_COMMON)
TRN2_ULTRASERVER = SystemSpec(
    name="trn2-ultraserver", lnc=2, instances_per_domain=4,          # trn2-arch: 4 x trn2u.48xlarge, 64 chips
    domain_fabric=Fabric(kind="ring", shape=(4,), links_per_chip=2, link=NEURONLINK_V3_Z),
    **{**_TRN2_COMMON, "usd_per_hour": 0.0, "price_source": "no published trn2u price in our sources"})
TRN3_ULTRASERVER = SystemSpec(
    name="trn3-ultraserver", chip=TRN3, lnc=2,                       # trainium3.rst: LNC 1 or 2 (as trn2)
    chips_per_instance=16, instances_per_domain=4,                   # trn3-arch: Gen1, 4 servers x 16 chips
    chip_fabric=Fabric(kind="switch", shape=(16,), links_per_chip=4, link=NEURONSWITCH_V1),
    domain_fabric=Fabric(kind="switch", shape=(4,), links_per_chip=4, link=NEURONSWITCH_V1),  # one switched domain
    efa_nics_per_instance=16,                                        # [UNVERIFIED] as trn2, one NIC per chip
    efa_bytes_per_s_per_instance=12800 * GBPS / 4,                   # trn3-arch: 12,800 Gbps per UltraServer
    price_source=TRN3.price_source, source="trn3-arch")

SYSTEMS: dict[str, SystemSpec] = {s.name: s for s in (
    TRN1_2XLARGE, TRN1_32XLARGE, TRN1N_32XLARGE, TRN2_48XLARGE, TRN2_48XLARGE_LNC1, TRN2_ULTRASERVER,
    TRN3_ULTRASERVER)}
ALIASES = {"trn2.48xlarge-lnc2": "trn2.48xlarge", "trn2u.48xlarge": "trn2.48xlarge",
           "trn2-us": "trn2-ultraserver", "trn3-us": "trn3-ultraserver"}


def system_names() -> list[str]:
    return list(SYSTEMS)


def get_system(name: "str | SystemSpec") -> SystemSpec:
    """A system preset by name (see SYSTEMS; also the ALIASES); a SystemSpec is returned as is."""
    from trnlab.errors import TargetError
    if isinstance(name, SystemSpec):
        return name
    key = str(name).strip().lower()
    key = ALIASES.get(key, key)
    if key not in SYSTEMS:
        raise TargetError(f"unknown system {name!r}; valid values: {', '.join(SYSTEMS)}")
    return SYSTEMS[key]


def cluster(system: "str | SystemSpec", nodes: int) -> SystemSpec:
    """`nodes` copies of a system (instances, or UltraServers) joined by EFA."""
    from trnlab.errors import TargetError
    base = get_system(system)
    if not isinstance(nodes, int) or isinstance(nodes, bool) or nodes < 1:
        raise TargetError(f"cluster: nodes must be an integer >= 1, got {nodes!r}")
    return base.replace(nodes=nodes)


__all__ = ["Link", "Fabric", "SystemSpec", "SYSTEMS", "get_system", "cluster", "system_names",
           "TRN1_2XLARGE", "TRN1_32XLARGE", "TRN1N_32XLARGE", "TRN2_48XLARGE", "TRN2_48XLARGE_LNC1",
           "TRN2_ULTRASERVER", "TRN3_ULTRASERVER"]
