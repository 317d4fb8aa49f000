"""Chip presets: one frozen, keyword-only dataclass per NeuronCore generation.

Every number carries its source. Short names, all public:
  RTD  = https://awsdocs-neuron.readthedocs-hosted.com/en/latest/
  SDK  = https://github.com/aws-neuron/aws-neuron-sdk/blob/master/ (the sources of RTD)
  ARCH = the NKI architecture guide of that generation: v2 (trn1) RTD nki/arch/trainium_inferentia2_arch.html,
         v3 (trn2) RTD nki/arch/trainium2_arch.html, v4 (trn3) RTD nki/about/trainium3_arch.html
  ISA  = NKI ISA docstrings, Nov-2025 ("Estimated instruction cost"): https://github.com/aws-neuron/
         aws-neuron-sdk/blob/1514f0161870766f551b0aee69da9a48b9ae6b7f/nki/api/nki/isa/__init__.py
  DMAG = SDK nki/deep-dives/nki-dma-bandwidth-guide.rst (2026-04)
  perf guide = SDK nki/deep-dives/nki_perf_guide.rst
  neuron-explorer = SDK tools/neuron-explorer/ (glossary.rst, profile-schema-reference.rst)
  TUT-2025-09 = https://github.com/aws-neuron/aws-neuron-sdk/blob/3eaf01ad78c37447c9c6f22ec34a980c0d16c0c9/
                general/nki/tutorials/ (the tutorial pages that still carry measured results)
Values marked [fitted] are calibrated in docs/calibration.md against published measurements.
"""
from __future__ import annotations

import dataclasses
import functools
import os
from dataclasses import dataclass

KiB = 1024
MiB = 1024 * KiB
GiB = 1024 * MiB


@dataclass(frozen=True, kw_only=True)
class ChipSpec:
    name: str                      # trn1 | trn2 | trn3
    nc_version: int                # NeuronCore generation: 2, 3, 4
    cores_per_chip: int
    # --- on-chip memories (per NeuronCore) ---
    partitions: int = 128          # ARCH: 128 SBUF/PSUM partitions
    sbuf_bytes_per_partition: int  # ARCH: 192/224/256 KiB
    psum_banks: int = 8            # ARCH: 8 banks x 2 KiB per partition
    psum_bank_bytes: int = 2 * KiB
    # --- Tensor engine operand limits ---
    pe_rows: int = 128             # ARCH: 128x128 systolic array
    pe_cols: int = 128
    gemm_stationary_fmax: int = 128   # ARCH: stationary free size <= 128
    gemm_moving_fmax: int = 512       # ARCH: moving free size <= 512 (one PSUM bank of fp32)
    bn_stats_fmax: int = 512          # nl.tile_size.bn_stats_fmax
    psum_free_max_elems: int = 4096   # ARCH v2: Vector/Scalar read up to 4K elements from PSUM
    sbuf_free_max_elems: int = 65536  # ARCH v2: up to 64K elements from SBUF
    fp8_double_row: bool = False      # ARCH v3+: perf_mode=double_row, K=256 for fp8
    # --- clocks (Hz), ARCH datapath table ---
    tensor_hz: float
    vector_hz: float
    scalar_hz: float
    gpsimd_hz: float
    # Vector-engine rate of 16-bit (bf16/fp16) SBUF data over other dtypes (ARCH datapath table: v3/v4
    # 512 BF16/FP16 elements per cycle vs 256 for others -> 2x; v2 one rate for all)
    vector_bf16_speedup: float = 1.0
    # --- instruction cost constants (ISA docstrings) ---
    # Vector cycles per element when two tensor operands stream in (tensor_tensor, tensor_tensor_scan,
    # scalar_tensor_tensor outside their fast cases). ISA: 2N. trn2 overrides it with the value fitted to
    # its calibration points; trn1 and trn3 have no point that constrains it and keep the ISA value.
    vector_two_input_cycles: float = 2.0
    # Fixed time a measured kernel latency includes beyond the engines' and queues' work (runtime launch,
    # start semaphores, end-of-kernel notification): added to the kernel time wherever a device latency is
    # reported (trnlab calibrate, nki.benchmark's nc_latency). Fitted on trn2 only; no trn1/trn3
    # calibration point determines it (the trn1 matmul points are milliseconds: < 1%), so 0 there.
    kernel_launch_s: float = 0.0
    min_ii_cycles: int = 64            # ISA: MIN_II ~ 64 engine cycles
    matmul_init_cycles: int = 64       # ARCH: MM_INIT_LATENCY = 64 PE cycles
    static_access_cycles: int = 60     # ARCH v2: ~60 cycles to start an SBUF/PSUM access
    gpsimd_start_cycles: int = 150     # ISA: GPSIMD_START ~ 150 cycles (iota, affine_select)
    dynamic_min_ii_cycles: int = 600   # ISA: MIN_II_DYNAMIC ~ 600 cycles
    matmul_fp32_factor: int = 4        # ISA nc_matmul: fp32 inputs cost 4x the 16-bit rate
    matmul_ls_speedup: float = 4.0     # perf guide Opt #7: fast LoadStationary up to 4x faster than an MM
    # Result latency: a consumer sees a producer's output static_access_cycles (producer clock) after
    # the producer's issue slot ends (ARCH v2 ~60-cycle access start; hidden for independent work).
    # --- DMA ---
    dma_queues: int = 16               # ARCH/DMAG: 16 DMA engines per NeuronCore
    dma_queue_bytes_per_s: float       # DMAG: 17 / 23 / 33 B/ns per engine
    dma_fixed_s: float = 1.3e-6        # DMAG: ~1,300 ns descriptor + semaphore cost per DMA (a latency:
                                       # hidden while the queue still has a backlog, see docs/calibration.md)
    # fixed cost of a DMA whose descriptors the hardware DGE makes (nisa.dma_copy(dge_mode=hwdge), NC-v3+):
    # "~600 ns per DGE-based DMA instruction" (Trainium2 architecture guide, hardware DGE,
    # https://awsdocs-neuron.readthedocs-hosted.com/en/latest/nki/arch/trainium2_arch.html); None: no hardware DGE
    hwdge_fixed_s: float | None = None
    dma_partitions_per_transfer: int = 8  # ARCH v2: a 128-partition load = 16 transfers x 8 partitions
    dma_efficiency: float = 0.44       # [fitted] sustained fraction of queue bandwidth on HBM<->SBUF tile
                                       # copies (trn1 matmul tutorial: ~105 GB/s of 272); docs/calibration.md
    dma_chunk_overhead_bytes: int = 128  # [fitted] per-descriptor overhead in byte-times: efficiency of a
                                         # c-byte contiguous chunk = c/(c+128); DMAG: <256 B bad, >=4 KiB saturates
    # [fitted] dma_efficiency of the DMAs in a compiled model graph (trnlab.torch, trnlab.plan: neuronx-cc's
    # own DMA rings, not an NKI kernel's loads). AWS's Llama-2-70b decode streams >= 175 GB/s of weights per
    # trn1 core (25.18 ms TPOT) where the NKI matmul tutorial sustains ~105 GB/s; fitted by
    # benchmarks/fit_plan.py to the trainium-scale.md §2 model-level rows, bounded to [dma_efficiency, 1]
    # (the DMAG per-engine peak). trn2/trn3 have no model-level row: trn1's value (docs/calibration.md)
    graph_dma_efficiency: float = 1.0
    hbm_bytes: int                     # per chip
    hbm_bytes_per_s: float             # per chip
    # --- peaks (per NeuronCore) ---
    peak_bf16_flops: float             # derived: 128*128*2*tensor_hz
    peak_fp8_flops: float
    peak_fp32_flops: float
    # --- power throttling of the Tensor engine (trn2/trn3) ---
    pe_throttle: bool = False          # RTD neuron-explorer glossary: starts at ~50%, ramps over ~3 us
    pe_throttle_ramp_s: float = 3e-6
    pe_throttle_floor: float = 0.5     # RTD neuron-explorer: starts at ~50% of max utilisation
    pe_throttle_window_s: float = 3e-6 # re-engages when utilisation < 50% over any ~3 us window
    # --- pricing: on-demand $/hour for the instance and NeuronCores it has ---
    instance: str
    instance_cores: int
    instance_usd_per_hour: float
    price_source: str

    def __post_init__(self):
        for names, ok, rule in _RULES:
            for name in names:
                value = getattr(self, name)
                if not ok(value):
                    from trnlab.errors import TargetError
                    raise TargetError(f"chip {self.name!r}: {name} must be {rule}, got {value!r}. "
                                      f"At {_caller()}")

    @property
    def sbuf_bytes(self) -> int:
        return self.partitions * self.sbuf_bytes_per_partition

    @property
    def psum_bytes_per_partition(self) -> int:
        return self.psum_banks * self.psum_bank_bytes

    @property
    def psum_bank_fmax(self) -> int:
        return self.psum_bank_bytes // 4

    @property
    def hbm_bytes_per_core(self) -> int:
        return self.hbm_bytes // self.cores_per_chip

    @property
    def hbm_bytes_per_s_per_core(self) -> float:
        return self.hbm_bytes_per_s / self.cores_per_chip

    @property
    def usd_per_core_second(self) -> float:
        return self.instance_usd_per_hour / self.instance_cores / 3600.0

    def replace(self, **changes) -> "ChipSpec":
        return dataclasses.replace(self, **changes)


def _caller() -> str:
    """file:line of the code that built the ChipSpec (outside trnlab and the dataclass machinery)."""
    import sys
    package = os.path.dirname(os.path.dirname(os.path.abspath(__file__))) + os.sep
    frame = sys._getframe(1)
    while frame is not None:
        filename = frame.f_code.co_filename
        if not (filename.startswith(package) or filename == dataclasses.__file__ or filename.startswith("<")):
            return f"{filename}:{frame.f_lineno}"
        frame = frame.f_back
    return "<unknown>"


# Constraints that keep the timing model meaningful (a zero or negative clock or bandwidth would divide
# by zero or run time backwards); checked on every ChipSpec, including ChipSpec.replace(...).
_RULES = (
    (("cores_per_chip", "partitions", "sbuf_bytes_per_partition", "psum_banks", "psum_bank_bytes", "pe_rows",
      "pe_cols", "tensor_hz", "vector_hz", "scalar_hz", "gpsimd_hz", "min_ii_cycles", "matmul_fp32_factor",
      "matmul_ls_speedup", "dma_queues", "dma_queue_bytes_per_s", "dma_partitions_per_transfer", "hbm_bytes",
      "hbm_bytes_per_s", "peak_bf16_flops", "peak_fp8_flops", "peak_fp32_flops", "pe_throttle_ramp_s",
      "pe_throttle_window_s", "instance_cores"), lambda v: v > 0, "> 0"),
    (("matmul_init_cycles", "static_access_cycles", "gpsimd_start_cycles", "dynamic_min_ii_cycles",
      "dma_fixed_s", "dma_chunk_overhead_bytes", "instance_usd_per_hour", "kernel_launch_s"), lambda v: v >= 0,
     ">= 0"),
    (("vector_two_input_cycles",), lambda v: v >= 1, ">= 1 (cycles per element of a two-input Vector op)"),
    (("dma_efficiency", "graph_dma_efficiency", "pe_throttle_floor"), lambda v: 0 < v <= 1, "in (0, 1]"),
    (("vector_bf16_speedup",), lambda v: v >= 1, ">= 1 (a rate-up for 16-bit data)"),
)

TRN1 = ChipSpec(
    name="trn1", nc_version=2, cores_per_chip=2,
    sbuf_bytes_per_partition=192 * KiB,            # ARCH v2: 24 MiB = 128 x 192 KiB
    tensor_hz=2.8e9, vector_hz=1.12e9, scalar_hz=1.4e9, gpsimd_hz=1.4e9,  # ARCH v2 datapath table
    dma_queue_bytes_per_s=17e9,                    # DMAG: TRN1 17 B/ns per engine (sustainable)
    hbm_bytes=32 * GiB, hbm_bytes_per_s=820e9,     # RTD trainium.html: 32 GiB, 820 GB/s per chip
    peak_bf16_flops=128 * 128 * 2 * 2.8e9,         # 91.75 TFLOPS; ARCH v2 says "92"
    peak_fp8_flops=128 * 128 * 2 * 2.8e9,          # cFP8 at BF16 rate on v2
    peak_fp32_flops=128 * 128 * 2 * 2.8e9 / 4,     # fp32 matmul is 4x slower (ISA nc_matmul)
    instance="trn1.2xlarge", instance_cores=2,
    instance_usd_per_hour=1.34375,                 # [3rd] cloudexpat.com trainium-vs-h100 (on-demand quote)
    price_source="trn1.2xlarge on-demand $1.34375/h, third-party quote (cloudexpat.com/blog/aws-trainium-vs-nvidia-h100)",
)

TRN2 = ChipSpec(
    name="trn2", nc_version=3, cores_per_chip=8,
    sbuf_bytes_per_partition=224 * KiB,            # ARCH v3: 28 MiB = 128 x 224 KiB
    fp8_double_row=True,                           # ARCH v3: double-row FP8
    tensor_hz=2.4e9, vector_hz=0.96e9, scalar_hz=1.2e9, gpsimd_hz=1.2e9,  # ARCH v3 datapath table
    vector_bf16_speedup=2.0,                       # ARCH v3: 512 BF16/FP16 elements/cycle vs 256 others
    # [fitted: the four rmsnorm_quant Target Latencies, trn2 LNC=2, nki-samples@1ee7f1d
    # doc/nki_samples.reference.rmsnorm_quant.rst] by benchmarks/fit_engines.py (docs/calibration.md)
    vector_two_input_cycles=1.375,                 # ISA value 2
    kernel_launch_s=10.4e-6,                       # at its upper limit from the nki-samples bounds
    dma_queue_bytes_per_s=23e9,                    # DMAG: TRN2 23 B/ns per engine
    hwdge_fixed_s=0.6e-6,                          # ARCH v3: ~600 ns per hardware-DGE DMA instruction
    hbm_bytes=96 * GiB, hbm_bytes_per_s=2.9e12,    # RTD trainium2.html: 96 GiB, 2.9 TB/s per chip
    peak_bf16_flops=128 * 128 * 2 * 2.4e9,         # 78.6 TFLOPS; RTD neuron-core-v3 says 79
    peak_fp8_flops=2 * 128 * 128 * 2 * 2.4e9,      # double-row FP8: 158 TFLOPS
    peak_fp32_flops=128 * 128 * 2 * 2.4e9 / 4,     # 20 TFLOPS (RTD neuron-core-v3)
    pe_throttle=True,
    instance="trn2.48xlarge", instance_cores=128,
    # No AWS on-demand list price for trn2.48xlarge is in any stored source (third-party quotes range
    # $14.56-$21.50/h). AWS does publish its EC2 Capacity Block rate, which we use:
    # https://aws.amazon.com/ec2/capacityblocks/pricing/ (US East (Ohio), read 2026-10-09) $35.7608/h.
    instance_usd_per_hour=35.7608,
    price_source=("trn2.48xlarge $35.7608/h, AWS EC2 Capacity Block rate (aws.amazon.com/ec2/capacityblocks/"
                  "pricing, us-east-2, read 2026-10-09); AWS publishes no on-demand list price in our sources"),
)

TRN3 = ChipSpec(
    name="trn3", nc_version=4, cores_per_chip=8,
    sbuf_bytes_per_partition=256 * KiB,            # ARCH v4: 32 MiB = 128 x 256 KiB [derived]
    fp8_double_row=True,
    gemm_moving_fmax=512,                          # 4096/8192 only for nc_matmul_mx; plain matmul keeps 512
    tensor_hz=2.4e9, vector_hz=1.2e9, scalar_hz=1.2e9, gpsimd_hz=1.2e9,   # ARCH v4 datapath table
    vector_bf16_speedup=2.0,                       # ARCH v4: 512 BF16/FP16/FP8 vs 256 others
    dma_queue_bytes_per_s=33e9,                    # DMAG: TRN3 33 B/ns per engine
    hwdge_fixed_s=0.6e-6,                          # ARCH v3's hardware DGE figure; no NC-v4 one is published
    hbm_bytes=144 * GiB, hbm_bytes_per_s=4.9e12,   # RTD trainium3.html
    peak_bf16_flops=128 * 128 * 2 * 2.4e9,
    peak_fp8_flops=4 * 128 * 128 * 2 * 2.4e9,      # MXFP8 4x BF16 (ARCH v4)
    peak_fp32_flops=128 * 128 * 2 * 2.4e9 / 4,
    pe_throttle=True,
    instance="trn3", instance_cores=8,
    instance_usd_per_hour=0.0,
    price_source="no published trn3 price",
)

PRESETS: dict[str, ChipSpec] = {"trn1": TRN1, "trn2": TRN2, "trn3": TRN3}
# Same aliases as AWS's NEURON_PLATFORM_TARGET_OVERRIDE.
ALIASES = {"trn1": "trn1", "gen2": "trn1", "inf2": "trn1",
           "trn2": "trn2", "gen3": "trn2",
           "trn3": "trn3", "gen4": "trn3"}
DEFAULT_TARGET = "trn2"


def get_chip(target: "str | ChipSpec | None" = None) -> ChipSpec:
    """Resolve a target: explicit argument, else NEURON_PLATFORM_TARGET_OVERRIDE, else trn2."""
    from trnlab.errors import TargetError
    from trnlab.config import env_target

    if isinstance(target, ChipSpec):
        return target
    name = target if target is not None else (env_target() or DEFAULT_TARGET)
    key = ALIASES.get(str(name).strip().lower())
    if key is None:
        raise TargetError(f"unknown target {name!r}; expected one of {sorted(ALIASES)}")
    return PRESETS[key]


def graph_chip(target: "str | ChipSpec | None" = None) -> ChipSpec:
    """The chip as a compiled model graph uses it (trnlab.torch, trnlab.plan): its DMAs sustain
    graph_dma_efficiency instead of the NKI-kernel dma_efficiency."""
    chip = get_chip(target)
    if chip.dma_efficiency == chip.graph_dma_efficiency:
        return chip
    return _graph_chip(chip)


@functools.lru_cache(maxsize=32)
def _graph_chip(chip: ChipSpec) -> ChipSpec:
    # one object per chip: instruction-cost memos are keyed by the chip's identity
    return chip.replace(dma_efficiency=chip.graph_dma_efficiency)


__all__ = ["ChipSpec", "TRN1", "TRN2", "TRN3", "PRESETS", "get_chip", "graph_chip", "DEFAULT_TARGET", "KiB", "MiB",
           "GiB"]
