"""The compiler model: what neuronx-cc does to a kernel that changes its time, one switch per behaviour.

trnlab runs a kernel's instructions as written, but on hardware the kernel first goes through neuronx-cc,
which allocates tiles, places high-level ops on engines and removes work. The behaviours below are the
ones that change measured time; each is implemented in one place (named here) and can be switched off
for what-if runs: `trnlab run --compiler psum_zero_fold=0,multibuffer=0 ...`, the environment variable
TRNLAB_COMPILER (same syntax, read in trnlab.config), or `with compiler.using(CompilerModel(...))`.
"""
from __future__ import annotations

import contextvars
from dataclasses import dataclass, fields, replace

from trnlab.errors import ConfigError


@dataclass(frozen=True)
class CompilerModel:
    # nl.zeros(..., buffer=nl.psum) followed by matmul accumulation: the zeroing is folded into the
    # first matmul's overwrite (no Vector memset). Implemented where PSUM tiles are zero-filled.
    psum_zero_fold: bool = True
    # tiles allocated inside a loop body rotate through up to `multibuffer_depth` buffers, so
    # independent iterations pipeline across engines. Implemented in core.memory (allocation).
    # Depth 2: the documented default factor of neuronx-cc's multi-buffer directive
    # (nki.compiler.multi_buffer(factor=2),
    # https://awsdocs-neuron.readthedocs-hosted.com/en/latest/_modules/nki/compiler.html); deeper rings
    # (CompileConfig experimental_allocation_mode=RING) are opt-in. See docs/calibration.md.
    multibuffer: bool = True
    multibuffer_depth: int = 2
    # high-level nl ops (both front ends) go to the least-loaded engine that can run them
    # (Vector, Scalar, GpSimd), as neuronx-cc balances them. Implemented in the timing scheduler.
    engine_balance: bool = True
    # compiler-allocated tiles that overflow SBUF are spilled to HBM (extra DMA traffic and a warning)
    # instead of raising SbufCapacityError; tiles at explicit addresses still get the error.
    sbuf_spill: bool = True
    # chains of element-wise PyTorch ops whose intermediates have no other use run as one pass over
    # SBUF tiles (one load of each input, one store of the result) instead of an HBM round trip per op,
    # as neuronx-cc, an XLA-based compiler, fuses element-wise HLO ops
    # (https://awsdocs-neuron.readthedocs-hosted.com/en/latest/compiler/about-neuronx-cc.html,
    # https://openxla.org/xla/operation_semantics). Values are bit-identical: each intermediate is
    # still rounded to its dtype. Implemented in trnlab.torch.fusion (model path only).
    elementwise_fusion: bool = True
    # with elementwise_fusion: a chain member whose value is also used outside the chain (in training,
    # the activations the forward saves for backward) is written to HBM by the fused pass instead of
    # ending the chain, as XLA's producer-consumer multi-output fusion does
    # (https://github.com/openxla/xla/blob/main/xla/service/multi_output_fusion.h). Values are
    # bit-identical. Implemented in trnlab.torch.fusion.find_chains (model path only).
    multi_output_fusion: bool = True
    # with elementwise_fusion: a sum / mean / amax over the last dim joins the chain that produces its
    # input (RMSNorm's x*x -> mean, its backward's product -> sum): one row-tiled pass, the reduced
    # values never stored, as XLA fuses a reduction with its element-wise producers (reduce input
    # fusion, https://github.com/openxla/xla/blob/main/xla/service/gpu/gpu_fusible.h). Bit-identical: the
    # same per-chunk partials in the same order as the unfused reduction. Model path only.
    reduction_fusion: bool = True
    # Beta 1 `tile.broadcast_to((M, F))` of an on-chip [1, F] tile is a Tensor-engine matmul with a ones
    # row ("NKI invokes such matmul under the hood when broadcast_input.broadcast_to(...) is called",
    # NC-v2 architecture guide, TensorE "Alternative Use Case"); its fp32 result stays in PSUM when it is one
    # PSUM tile (<= psum_fmax = 512 columns), else it is copied to SBUF one 512-column matmul at a time.
    # Off: a free zero-stride view. Implemented in trnlab.nki_beta1.ops.pe_broadcast.
    pe_broadcast: bool = True
    # with tiles freed at their last use (core.machine.Liveness: kernels that exceed SBUF as written): the
    # result of an element-wise instruction takes the bytes of an operand tile whose last read is that
    # instruction (same partitions, shape and element size; the engines stream position by position, so
    # in place is safe). neuronx-cc allocates by graph colouring after tracing the kernel
    # (nki.compiler.Allocation, COLORING), where a result interferes only with what is live after its
    # instruction. Implemented in core.machine.Liveness.donor / core.memory.OnChipMemory.allocate(share=).
    operand_reuse: bool = True
    # kernels decorated with nki.compiler.enable_stack_allocator ("Use stack allocator to allocate the psum
    # and sbuf tensors in the kernel", with skip_middle_end_transformations;
    # https://awsdocs-neuron.readthedocs-hosted.com/en/latest/nki/api/generated/nki.compiler.enable_stack_allocator.html)
    # get SBUF addresses from a stack instead of the rotating allocator: a loop body's tiles are popped
    # before the next iteration pushes the same sequence, so each tile takes its previous instance's
    # address and the next iteration's load waits for this iteration's last read of those bytes (what
    # nki.compiler.AllocationMode documents for stacked tiles). PSUM keeps its rotation (such kernels ask
    # for PSUM buffers with ncc.multi_buffer). Implemented in core.memory (OnChipMemory stack=). Off: the
    # decorator is ignored (multibuffer rotation as for any kernel).
    stack_allocator: bool = True

    @classmethod
    def parse(cls, text: str, base: "CompilerModel | None" = None, *, source: str = "--compiler") -> "CompilerModel":
        """'psum_zero_fold=0,multibuffer_depth=2' -> CompilerModel; 'none' turns every behaviour off."""
        model = base or cls()
        text = text.strip()
        if text.lower() == "none":
            return replace(model, psum_zero_fold=False, multibuffer=False, engine_balance=False, sbuf_spill=False,
                           elementwise_fusion=False, multi_output_fusion=False,
                           reduction_fusion=False, pe_broadcast=False,
                           operand_reuse=False, stack_allocator=False)
        names = {f.name: f.type for f in fields(cls)}
        for item in filter(None, (s.strip() for s in text.split(","))):
            key, _, value = item.partition("=")
            key, value = key.strip(), value.strip()
            if key not in names:
                raise ConfigError(f"{source}: unknown compiler behaviour {key!r}; valid: {', '.join(names)}")
            if names[key] in ("bool", bool):
                if value not in ("0", "1"):
                    raise ConfigError(f"{source}: {key}={value!r} is not accepted; valid values: 0|1")
                model = replace(model, **{key: value == "1"})
            else:
                if not value.isdigit() or int(value) < 1:
                    raise ConfigError(f"{source}: {key}={value!r} is not accepted; valid values: a positive integer")
                model = replace(model, **{key: int(value)})
        return model


_current: contextvars.ContextVar = contextvars.ContextVar("trnlab_compiler_model", default=None)


def current() -> CompilerModel:
    """The model in force: the innermost `using(...)`, else TRNLAB_COMPILER, else the defaults."""
    model = _current.get()
    if model is not None:
        return model
    from trnlab.config import compiler_switches
    text = compiler_switches()
    return CompilerModel.parse(text, source="TRNLAB_COMPILER") if text else CompilerModel()


class using:
    """with using(CompilerModel(psum_zero_fold=False)): machines created inside use that model."""

    def __init__(self, model: CompilerModel):
        self.model = model
        self._token = None

    def __enter__(self) -> CompilerModel:
        self._token = _current.set(self.model)
        return self.model

    def __exit__(self, *exc) -> None:
        _current.reset(self._token)
