"""The trnlab.kernels registry (KERNELS / KernelSpec), capacity errors, targets and torch I/O."""
import importlib

import ml_dtypes
import numpy as np
import pytest

import trnlab.nki as nki
import trnlab.nki.isa as nisa
import trnlab.nki.language as nl
from trnlab.errors import PsumCapacityError, SbufCapacityError
from trnlab.kernels import KERNELS, KernelSpec, flash_attention, rmsnorm, softmax

OURS = ("add", "transpose", "softmax", "rmsnorm", "layernorm", "flash_attention", "cumsum", "rope",
        "gemm", "elementwise", "gather")
BF16 = ml_dtypes.bfloat16


def test_registry_lists_every_kernel_with_reference_and_inputs():
    for name in OURS:
        spec = KERNELS[name]
        assert isinstance(spec, KernelSpec) and spec.name == name
        assert callable(spec.reference) and callable(spec.example_inputs)
        assert spec.kernel.__name__ == name


def test_registry_includes_the_matmul_steps():
    importlib.import_module("trnlab.kernels.matmul")      # a missing module is a failure, not a skip
    matmuls = [n for n in KERNELS if n.startswith("matmul")]
    assert matmuls, "kernels/matmul.py exists but no matmul entry was registered"
    lhsT, rhs = KERNELS[matmuls[0]].example_inputs(1.0, BF16, 0)
    assert lhsT.dtype == np.dtype(BF16) and lhsT.shape[0] == rhs.shape[0]


def tolerance(name, dtype):
    """(rtol, atol) written here, not read from the registry under test. fp32: summation order only.
    bf16: kernel and reference each round an fp32 value once, so they differ by at most one bf16 ulp,
    2^-7 relative; flash_attention also rounds p to bf16 before P @ v (2^-8 x P @ |v|, |v| up to ~4:
    2^-5 absolute); gemm sums 1024 bf16 products and adds the bias (2^-6 absolute)."""
    if np.dtype(dtype) == np.float32:
        return 1e-5, 1e-5
    return {"flash_attention": (2 ** -6, 2 ** -5), "gemm": (2 ** -7, 2 ** -6)}.get(name, (2 ** -7, 2 ** -7))


@pytest.mark.parametrize("name", OURS)
@pytest.mark.parametrize("dtype", [np.float32, BF16])
def test_example_inputs_run_with_timing_and_match_reference(name, dtype):
    spec = KERNELS[name]
    args = spec.example_inputs(0.25, dtype, 1)
    assert all(a.dtype == np.dtype(dtype) for a in args if not np.issubdtype(a.dtype, np.integer))   # gather ids stay int32
    assert [a.shape for a in args] == [a.shape for a in spec.example_inputs(0.25, dtype, 2)]
    run = spec.kernel.run(args, {})                      # timing on, as the profiler runs it
    expected = spec.reference(*args)                     # numpy, fp32 on the same rounded inputs
    rtol, atol = tolerance(name, dtype)
    np.testing.assert_allclose(run.outputs.astype(np.float32), expected.astype(np.float32), rtol=rtol, atol=atol)
    # an input is loaded and a result stored after it: at least two dependent DMAs of ~1.3 us fixed cost each
    assert run.machine.scheduler.end >= 2 * 1.3e-6


def test_example_inputs_scale_the_problem():
    small, = KERNELS["softmax"].example_inputs(0.25)
    large, = KERNELS["softmax"].example_inputs(2.0)
    assert large.shape[0] == 8 * small.shape[0]


# --- capacity --------------------------------------------------------------------------------------
@nki.jit
def greedy_kernel(x):
    """Keeps four [128, 16384] fp32 tiles (64 KiB per partition each) live at once: each is read after
    all four exist, so even last-use allocation cannot overlap them."""
    tiles = []
    for i in range(4):
        t = nl.ndarray((128, 16384), dtype=nl.float32, buffer=nl.sbuf, name=f"greedy_tile_{i}")
        nisa.memset(dst=t, value=float(i))
        tiles.append(t)
    for t in tiles[1:]:
        nisa.tensor_tensor(dst=tiles[0], data1=tiles[0], data2=t, op=nl.add)
    return x


def test_overallocating_sbuf_raises_naming_the_largest_tiles():
    from trnlab.core.compiler import CompilerModel, using
    # with the compiler's SBUF spill switched off (on, it spills: tests/test_core_compiler_spill.py)
    with using(CompilerModel(sbuf_spill=False)), pytest.raises(SbufCapacityError) as info:
        greedy_kernel.run((np.zeros((4, 4), np.float32),), {}, target="trn2", timing=False)
    message = str(info.value)
    assert "greedy_tile_3" in message                    # the tile that did not fit
    assert "greedy_tile_0" in message and "greedy_tile_1" in message and "greedy_tile_2" in message
    assert "229376 B" in message                         # trn2: 224 KiB per partition
    assert "test_kernels_registry.py" in message         # the kernel's file:line
    assert [a.name for a in info.value.largest][:3] == ["greedy_tile_0", "greedy_tile_1", "greedy_tile_2"]


@nki.jit
def psum_hog(x):
    """Nine one-bank PSUM tiles, all written before any is read; the chip has eight banks."""
    live = [nl.ndarray((128, 512), dtype=nl.float32, buffer=nl.psum, name=f"bank_{i}") for i in range(9)]
    for i, t in enumerate(live):
        nisa.memset(dst=t, value=float(i))
    acc = nl.ndarray((128, 512), dtype=nl.float32, buffer=nl.sbuf)
    nisa.memset(dst=acc, value=0.0)
    for t in live:
        nisa.tensor_tensor(dst=acc, data1=acc, data2=t, op=nl.add)
    return x


@nki.jit
def psum_dead_but_referenced(a, w):
    """Twelve matmul results, each consumed right away but all kept referenced by the Python code
    (as kernels that allocate through a helper do): neuronx-cc allocates by last use, so this fits
    eight banks; trnlab retries with last-use liveness (core.machine.Liveness)."""
    out = nl.ndarray((128, 512), dtype=nl.float32, buffer=nl.shared_hbm)
    at = nl.ndarray((128, 128), dtype=a.dtype, buffer=nl.sbuf)
    wt = nl.ndarray((128, 512), dtype=w.dtype, buffer=nl.sbuf)
    nisa.dma_copy(dst=at, src=a)
    nisa.dma_copy(dst=wt, src=w)
    acc = nl.ndarray((128, 512), dtype=nl.float32, buffer=nl.sbuf)
    nisa.memset(dst=acc, value=0.0)
    held = []
    for i in range(12):
        ps = nl.ndarray((128, 512), dtype=nl.float32, buffer=nl.psum, name=f"ps_{i}")
        nisa.nc_matmul(dst=ps, stationary=at, moving=wt)
        nisa.tensor_tensor(dst=acc, data1=acc, data2=ps, op=nl.add)
        held.append(ps)
    nisa.dma_copy(dst=out, src=acc)
    return out


def test_dead_but_referenced_psum_tiles_fit_by_last_use():
    a = np.random.default_rng(1).standard_normal((128, 128)).astype(np.float32)
    w = np.random.default_rng(2).standard_normal((128, 512)).astype(np.float32)
    out = psum_dead_but_referenced.run((a, w), {}, target="trn2").outputs
    np.testing.assert_allclose(out, 12 * (a.T @ w), rtol=1e-4, atol=1e-3)   # fp32 matmul + 12 fp32 adds


def test_overallocating_psum_raises():
    with pytest.raises(PsumCapacityError, match="bank_8"):
        psum_hog.run((np.zeros((4, 4), np.float32),), {}, timing=False)


def test_kernels_stay_within_capacity_on_every_target():
    x = np.random.default_rng(0).standard_normal((130, 3000)).astype(np.float32)
    q = np.random.default_rng(1).standard_normal((1, 2, 200, 128)).astype(BF16)
    # per-partition SBUF of trn1/2/3 (192/224/256 KiB) and PSUM (8 banks x 2 KiB), as published
    for target, sbuf_kib in (("trn1", 192), ("trn2", 224), ("trn3", 256)):
        out = rmsnorm.run((x, x[0]), {}, target=target, timing=False)
        assert out.machine.sbuf.peak_bytes <= sbuf_kib * 1024
        out = flash_attention.run((q, q, q), {}, target=target, timing=False)
        assert out.machine.psum.peak_bytes <= 8 * 2048


# --- torch in, torch out ----------------------------------------------------------------------------
def test_torch_tensors_round_trip():
    import torch
    x = torch.randn(130, 300, dtype=torch.bfloat16)
    out = softmax(x)
    assert isinstance(out, torch.Tensor) and out.dtype == torch.bfloat16
    expected = torch.softmax(x.float(), dim=-1)
    # one bf16 rounding of the output: 2^-8 relative
    assert torch.all((out.float() - expected).abs() <= 2 ** -8 * expected.abs() + 1e-7)
