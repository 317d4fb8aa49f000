"""The instruction set: the executable spec both front ends translate to (see base.Instruction)."""
from trnlab.isa.base import Engine, Instruction
from trnlab.isa.instructions import (Activation, AffineSelect, DmaCopy, DmaGather, DmaTranspose, Iota, MatMul,
                                     Memset, Reciprocal, ScalarTensorTensor, TensorCopy, TensorReduce,
                                     TensorScalar, TensorTensor, Transpose)
from trnlab.isa.dma import DmaIndirect, IndirectAccess
from trnlab.isa.gpsimd import NcNGather, NonzeroWithCount, TensorPartitionReduce
from trnlab.isa.random import Dropout, Rand, RandGetState, RandSetState, SetRngSeed
from trnlab.isa.vector import (BnAggr, BnStats, Exponential, Max8, NcFindIndex8, NcMatchReplace8, NcStreamShuffle,
                               RangeSelect, SelectReduce, TensorCopyPredicated, TensorScalarCumulative,
                               TensorTensorScan)

__all__ = [
    "Engine", "Instruction",
    "DmaCopy", "DmaGather", "DmaTranspose", "DmaIndirect", "IndirectAccess",
    "TensorCopy", "Memset", "Iota", "AffineSelect", "MatMul", "Transpose", "Activation", "TensorTensor",
    "TensorScalar", "ScalarTensorTensor", "TensorReduce", "Reciprocal",
    "TensorTensorScan", "TensorScalarCumulative", "BnStats", "BnAggr", "Max8", "NcFindIndex8",
    "NcMatchReplace8", "SelectReduce", "TensorCopyPredicated", "RangeSelect", "NcStreamShuffle", "Exponential",
    "TensorPartitionReduce", "NcNGather", "NonzeroWithCount",
    "Rand", "Dropout", "SetRngSeed", "RandSetState", "RandGetState",
]
