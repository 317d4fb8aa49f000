"""Typed errors. Every message names the API, the tensor, the limit, the value and the kernel's file:line."""
from __future__ import annotations


class TrnlabError(Exception):
    """Base class of every trnlab error."""


class TargetError(TrnlabError, ValueError):
    """Unknown chip target, or a chip preset with an impossible value."""


class NkiValidationError(TrnlabError, ValueError):
    """A hardware rule was broken (AWS's simulator raises a class of the same name)."""


class PartitionError(NkiValidationError):
    """Partition dimension too large, mismatched, or at an illegal start partition."""


class ShapeError(NkiValidationError):
    """Shapes that do not match, rank too small, or a free size above a limit."""


class MatmulLimitError(ShapeError):
    """nc_matmul K/M/N limits."""


class BufferKindError(NkiValidationError):
    """An operand lives in the wrong memory (e.g. matmul input not in SBUF)."""


class DtypeError(NkiValidationError, TypeError):
    """A dtype rule was broken (fp32 mixed with fp8 in matmul, e4m3 with e4m3fn, ...)."""


class OutOfBoundsError(NkiValidationError, IndexError):
    """Static or dynamic access outside a tensor."""


class CapacityError(NkiValidationError):
    """On-chip memory over-subscribed. Carries required and limit like Triton's OutOfResources."""

    def __init__(self, message: str, *, required: int = 0, limit: int = 0, largest=()):
        super().__init__(message)
        self.required = required
        self.limit = limit
        self.largest = tuple(largest)


class SbufCapacityError(CapacityError):
    """Live SBUF tiles need more bytes in a partition than the chip has."""


class PsumCapacityError(CapacityError):
    """Live PSUM tiles need more banks than the chip has."""


class HbmCapacityError(CapacityError):
    """Tensors in HBM exceed the device memory."""


class HostMemoryError(CapacityError):
    """A tensor the simulating host cannot hold in its memory (the device might)."""


class ApiArgumentError(TrnlabError, TypeError):
    """A call that does not match the API's signature: an unknown keyword, a missing or extra argument."""


class KernelArgumentError(TrnlabError, TypeError):
    """A kernel argument the simulator cannot place in HBM (a string, a list of numbers, an object array)."""


class UnsupportedOperatorError(TrnlabError, NotImplementedError):
    """A model operator with no lowering (raised by trnlab.torch)."""


class DeviceValueError(TrnlabError, ValueError):
    """A dtype or a value the NeuronCore cannot hold (compile dtype float64, int64 beyond int32)."""


class LoweringError(TrnlabError, RuntimeError):
    """Internal: a lowering's result does not match the captured graph's shape or dtype."""


class RecompileLimitError(TrnlabError, RuntimeError):
    """A trnlab training capture would be recompiled past the limit, where torch.compile falls back to eager
    PyTorch (the steps would run on the host, not the simulated NeuronCore)."""


class ModelInputError(TrnlabError, TypeError):
    """A compiled model called with arguments its forward does not take (count, names)."""


class OptionError(TrnlabError, ValueError):
    """An option of trnlab.torch.compile / torch.compile(backend="trnlab") that does not exist or has a bad value."""


class CollectiveError(TrnlabError, ValueError):
    """A collective with bad arguments: mismatched per-rank arrays, a rank count the system cannot hold, an
    unknown op (trnlab.isa.collectives)."""


class CollectiveSyncError(CollectiveError):
    """Ranks of a multi-rank launch that cannot meet at a collective: calls that differ across ranks (op,
    replica group, sizes), a rank that finishes without reaching a call its peers wait in, or a deadlock.
    `rank`, `op` and `loc` name the waiting or mismatched rank's call (trnlab.core.ranks)."""

    def __init__(self, message: str, *, rank: "int | None" = None, op: str = "", loc: str = ""):
        super().__init__(message)
        self.rank, self.op, self.loc = rank, op, loc


class SimulationError(TrnlabError, RuntimeError):
    """A kernel failed while running on the simulated NeuronCore."""


class LaunchError(TrnlabError, ValueError):
    """A kernel launch that cannot run: e.g. an SPMD grid with a dimension that is not a positive int."""


class ForeignTileError(SimulationError):
    """An SBUF/PSUM tile of another kernel run (kept in a global or returned) used by this run."""


class InstructionLimitError(SimulationError):
    """A run issued more instructions than its max_instructions limit."""


class TrnlabWarning(UserWarning):
    """Base class of trnlab warnings."""


class UninitializedReadWarning(TrnlabWarning):
    """A read of memory that was never written (NaN/sentinel-filled)."""


class AccumulateUninitializedWarning(TrnlabWarning):
    """nc_matmul accumulate=True into PSUM that was never written: undefined on hardware."""


class UndefinedBehaviorWarning(TrnlabWarning):
    """An instruction whose hardware result is documented as undefined for these inputs."""


class SbufSpillWarning(TrnlabWarning):
    """Compiler-allocated tiles did not fit SBUF and were spilled to HBM (extra DMA traffic)."""


class ConfigError(TrnlabError, ValueError):
    """An environment flag holds a value trnlab does not accept (names the variable, value and valid values)."""


class OutputError(TrnlabError, OSError):
    """An output directory cannot be written (a file, unwritable, or a folder that is not a trnlab output)."""
