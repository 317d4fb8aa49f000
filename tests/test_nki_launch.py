"""Kernel launch of the current front end: nki.jit options, nki.simulate, grids/LNC2, numpy and torch I/O."""
import numpy as np
import pytest
import torch

import trnlab.nki as nki
import trnlab.nki.isa as nisa
import trnlab.nki.language as nl
from test_nki_harness import rand


def double(x):
    out = nl.ndarray(x.shape, dtype=x.dtype, buffer=nl.shared_hbm)
    t = nl.load(x)
    nl.store(out, nl.multiply(t, 2.0))
    return out


def test_simulate_plain_function_and_jit_kernel():
    a = rand(32, 16)
    np.testing.assert_array_equal(nki.simulate(double)(a), a * 2)
    k = nki.jit(double)
    np.testing.assert_array_equal(nki.simulate(k)(a), a * 2)
    assert k.last_run is not None and k.last_run.machine.stats.instructions["tensor_scalar"] == 1
    np.testing.assert_array_equal(k(a), a * 2)            # a direct call also runs on the simulator


def test_jit_mode_is_ignored_and_platform_target_warns():
    k = nki.jit(mode="torchxla")(double)
    a = rand(8, 8)
    np.testing.assert_array_equal(nki.simulate(k)(a), a * 2)
    # removed in NKI 0.3 but used by Beta 2 kernels: a warning, and the kernel runs on that target
    with pytest.warns(UserWarning, match="NEURON_PLATFORM_TARGET_OVERRIDE"):
        k2 = nki.jit(platform_target="trn1")(double)
    np.testing.assert_array_equal(k2(a), a * 2)
    assert k2.last_run.machine.chip.name == "trn1"


def test_torch_in_torch_out():
    a = torch.randn(16, 8, dtype=torch.bfloat16)
    out = nki.simulate(double)(a)
    assert isinstance(out, torch.Tensor) and out.dtype == torch.bfloat16
    assert torch.equal(out, a * 2)


def test_mutated_numpy_input_is_written_back():
    @nki.jit
    def in_place(x):
        t = nl.load(x)
        nl.store(x, nl.add(t, 1.0))
    a = rand(8, 4)
    expected = a + 1
    nki.simulate(in_place)(a)
    np.testing.assert_array_equal(a, expected)


def test_lnc2_programs_share_shared_hbm():
    @nki.jit
    def halves(x):
        out = nl.ndarray(x.shape, dtype=x.dtype, buffer=nl.shared_hbm)
        pid, n = nl.program_id(0), nl.num_programs(0)
        rows = x.shape[0] // n
        t = nl.load(x[nl.ds(pid * rows, rows), :])
        nl.store(out[nl.ds(pid * rows, rows), :], nl.add(t, float(pid + 1)))
        return out
    a = rand(64, 8)
    out = nki.simulate(halves[2])(a)
    np.testing.assert_array_equal(out[:32], a[:32] + 1)      # written by program 0
    np.testing.assert_array_equal(out[32:], a[32:] + 2)      # written by program 1
    assert halves[2].grid == (2,)


def test_spmd_grid_program_ids():
    seen = []

    @nki.jit
    def k(x):
        seen.append((nl.program_id(0), nl.program_id(1), nl.num_programs(), nl.program_ndim()))
        return x
    nki.simulate(k[2, 3])(rand(1, 1))
    assert seen == [(i, j, 6, 2) for i in range(2) for j in range(3)]


def test_target_override_from_environment(monkeypatch):
    versions = []

    @nki.jit
    def k(x):
        versions.append(int(nisa.get_nc_version()))
        return x
    monkeypatch.setenv("NEURON_PLATFORM_TARGET_OVERRIDE", "trn1")
    nki.simulate(k)(rand(1, 1))
    monkeypatch.setenv("NEURON_PLATFORM_TARGET_OVERRIDE", "gen4")
    nki.simulate(k)(rand(1, 1))
    assert versions == [2, 4]


def test_typing_annotations_and_beta1_only_entry_points():
    import trnlab.nki.typing as nt

    @nki.jit
    def k(x: nt.tensor[8, 8]):
        return double(x)
    a = rand(8, 8)
    np.testing.assert_array_equal(nki.simulate(k)(a), a * 2)
    for name in ("baremetal", "benchmark", "profile", "simulate_kernel"):
        with pytest.raises(NotImplementedError, match="Beta 1"):
            getattr(nki, name)(k)
