"""Timing-only runs: every on-chip tile of one shape views one shared array of zero pages
(core.machine.Machine._zero_view), which is safe only while no timing-only path writes into a tile.
Oracle: the pages' bytes, all zero after timing-only runs of registry kernels, a Beta 1 kernel with a
cast transpose and the stack-allocated rmsnorm_quant (a write anywhere would leave a non-zero byte,
as the check's own self-test shows)."""
import ml_dtypes
import numpy as np

import trnlab.nki_beta1 as nki_b1
import trnlab.nki_beta1.language as nl_b1
from trnlab.bench.published import rmsnorm_quant
from trnlab.kernels import KERNELS

KERNEL_NAMES = ("add", "softmax", "rmsnorm", "layernorm", "transpose", "flash_attention", "gemm", "cumsum",
                "rope", "matmul_blocked")


def _pages_written(machine) -> bool:
    pages = machine._zeros
    return pages is not None and bool(np.frombuffer(pages, dtype=np.uint8).any())


def test_the_check_sees_a_write_into_a_shared_tile():
    run = KERNELS["add"].kernel.run(KERNELS["add"].example_inputs(), {}, target="trn2", numerics=False)
    assert not _pages_written(run.machine)
    np.frombuffer(run.machine._zeros, dtype=np.uint8)[7] = 1      # what a write into any tile would do
    assert _pages_written(run.machine)


def test_timing_only_runs_leave_the_shared_zero_pages_zero():
    for name in KERNEL_NAMES:
        spec = KERNELS[name]
        for target in ("trn1", "trn2"):
            run = spec.kernel.run(spec.example_inputs(), {}, target=target, numerics=False)
            assert run.machine._zeros is not None and not _pages_written(run.machine), (name, target)


@nki_b1.jit
def _cast_transpose(a):
    out = nl_b1.ndarray((a.shape[1], a.shape[0]), dtype=nl_b1.bfloat16, buffer=nl_b1.shared_hbm)
    nl_b1.store(out, value=nl_b1.load_transpose2d(a, dtype=nl_b1.bfloat16))
    return out


def test_beta1_timing_only_runs_leave_the_shared_zero_pages_zero():
    run = _cast_transpose.run((np.ones((64, 128), np.float32),), {}, target="trn2", numerics=False)
    assert run.machine._zeros is not None and not _pages_written(run.machine)
    hidden = np.ones((1, 128, 512), dtype=ml_dtypes.bfloat16)
    gamma = np.ones((1, 512), dtype=ml_dtypes.bfloat16)
    run = rmsnorm_quant.run((hidden, gamma), {}, target="trn2", numerics=False)
    assert run.machine.sbuf.stack and run.machine._zeros is not None and not _pages_written(run.machine)
