"""DMA bytes of an indirect scatter (trnlab.isa.instructions.DmaGather with scatter=True): the rows it
writes, as the KV-cache update of a decode step. Oracle: a hand count of the bytes moved."""
import ml_dtypes
import numpy as np

import trnlab.nki as nki
from trnlab.kernels import gather


def test_kv_cache_scatter_moves_its_rows_not_the_table():
    """The decode graph's KV-cache update: one [128] bf16 row scattered into a [512, 128] cache moves
    256 bytes (+ the 4-byte index), as a gather of one row does; not the 128 KiB table."""
    @nki.jit
    def update(cache, row, pos):
        gather.scatter_rows(cache, row, pos)
        return cache

    cache = np.zeros((512, 128), ml_dtypes.bfloat16)
    row = np.ones((1, 128), ml_dtypes.bfloat16)
    run = update.run((cache, row, np.array([7], np.int32)), {}, timing=True, trace=True, target="trn1")
    moved = [e.nbytes for e in run.machine.scheduler.records if e.name == "dma_indirect"]
    assert moved == [128 * 2 + 4]
