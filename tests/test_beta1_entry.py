"""Beta 1 entry points (simulate_kernel, baremetal, benchmark, jit modes, trace) and the examples in
examples/beta1, run unmodified with `neuronxcc.nki` mapped onto trnlab.nki_beta1."""
import pathlib
import runpy
import sys
import types

import numpy as np
import pytest

import trnlab.nki_beta1 as nki
import trnlab.nki_beta1.language as nl
from trnlab.errors import NkiValidationError

EXAMPLES = sorted((pathlib.Path(__file__).parent.parent / "examples" / "beta1").glob("*.py"))


@nki.jit
def double(a):
    out = nl.ndarray(a.shape, dtype=a.dtype, buffer=nl.shared_hbm)
    nl.store(out, value=nl.multiply(nl.load(a), 2.0))
    return out


def test_simulate_kernel_numpy_in_numpy_out():
    a = np.arange(128 * 8, dtype=np.float32).reshape(128, 8)
    out = nki.simulate_kernel(double, a)
    assert isinstance(out, np.ndarray)
    np.testing.assert_array_equal(out, 2 * a)


def test_baremetal_decorator_and_jit_modes():
    a = np.ones((64, 4), np.float32)
    bm = nki.baremetal(double.fn)
    np.testing.assert_array_equal(bm(a), 2 * a)
    np.testing.assert_array_equal(nki.baremetal()(double)(a), 2 * a)
    for mode in ("simulation", "baremetal", "auto"):
        np.testing.assert_array_equal(nki.jit(double.fn, mode=mode)(a), 2 * a)


def test_benchmark_latency_comes_from_timing_model():
    a = np.ones((128, 512), np.float32)
    bench = nki.benchmark(warmup=2, iters=5)(double)
    np.testing.assert_array_equal(bench(a), 2 * a)
    lat = bench.benchmark_result.nc_latency
    # by hand (trn2): load and store of [128, 512] fp32 each cost the fixed ~1.3 us plus 8 partitions x 2 KiB
    # per queue at 23 B/ns x 0.44 x 2048 / (2048 + 128); between them the multiply, max(64, 512) cycles plus
    # the 60-cycle result latency on the engine where it finishes first (engine_balance): the Scalar Engine
    # at 1.2 GHz rather than Vector at 0.96 GHz (ties with GpSimd go to Scalar)
    dma_s = 1.3e-6 + 8 * 2048 / (23e9 * 0.44 * 2048 / (2048 + 128))
    # nc_latency is a device latency: plus the fixed launch time fitted by trnlab calibrate (10.4 us on trn2)
    end_us = (2 * dma_s + (512 + 60) / 1.2e9) * 1e6 + 10.4
    assert lat.get_latency_percentile(50) == pytest.approx(end_us, rel=1e-9)
    assert lat.get_latency_percentile(99) == lat.get_latency_percentile(0)
    jb = nki.jit(double.fn, mode="benchmark")
    jb(a)
    assert jb.benchmark_result.nc_latency.get_latency_percentile(90) == pytest.approx(end_us, rel=1e-9)


def test_benchmark_writes_files_at_the_save_names(tmp_path, monkeypatch):
    # AWS's mamba and layernorm scripts call nki.benchmark(f, save_neff_name='file.neff',
    # save_trace_name='profile.ntff') and then os.rename both files: they must exist
    import json
    import os
    monkeypatch.chdir(tmp_path)
    a = np.ones((128, 512), np.float32)
    nki.benchmark(double, save_neff_name="file.neff", save_trace_name="profile.ntff")(a)
    os.rename("file.neff", "v1.neff")
    os.rename("profile.ntff", "v1.ntff")
    listing = (tmp_path / "v1.neff").read_text()
    assert "NOT a NEFF" in listing.splitlines()[0]
    body = [ln.split("\t") for ln in listing.splitlines() if not ln.startswith("#")]
    # the kernel is a load, one multiply, a store: three instructions, in issue order
    assert [(row[2], row[3], row[4]) for row in body] == [("dma", "dma_copy", "nl.load"),
                                                          ("scalar", "tensor_scalar", "nl.multiply"),
                                                          ("dma", "dma_copy", "nl.store")]
    trace = json.loads((tmp_path / "v1.ntff").read_text())
    slices = [e for e in trace["traceEvents"] if e["ph"] == "X"]
    assert {e["cat"] for e in slices} >= {"scalar", "dma"}
    lat = nki.benchmark(double)
    lat(a)                                           # no save names: nothing written
    assert sorted(p.name for p in tmp_path.iterdir()) == ["v1.neff", "v1.ntff"]


def test_profile_decorates_and_refuses_a_relative_working_directory():
    # nki.profile now decorates (tests/test_beta1_aws_unit_gaps.py runs it); AWS requires an absolute path
    assert callable(nki.profile(working_directory="/tmp"))
    with pytest.raises(NkiValidationError, match="absolute path"):
        nki.profile(working_directory="tmp")


def test_sub_kernel_and_device_print(capsys):
    @nki.trace
    def scale(t, s):
        return nl.multiply(t, s)

    @nki.jit
    def k(a):
        out = nl.ndarray(a.shape, dtype=a.dtype, buffer=nl.shared_hbm)
        t = scale(nl.load(a), 3.0)
        nl.device_print("t =", t)
        nl.store(out, value=t)
        return out
    a = np.ones((2, 3), np.float32)
    np.testing.assert_array_equal(nki.simulate_kernel(k, a), 3 * a)
    assert "t = [[3. 3. 3.]" in capsys.readouterr().out


def test_shared_hbm_output_is_shared_by_grid_programs():
    @nki.jit
    def k(a):
        out = nl.ndarray(a.shape, dtype=a.dtype, buffer=nl.shared_hbm)
        i = nl.program_id(0)
        i_p, i_f = nl.arange(32)[:, None], nl.arange(8)[None, :]
        nl.store(out[i * 32 + i_p, i_f], value=nl.add(nl.load(a[i * 32 + i_p, i_f]), i))
        return out
    a = np.zeros((128, 8), np.float32)
    np.testing.assert_array_equal(nki.simulate_kernel(k[4], a), np.repeat(np.arange(4.0), 32)[:, None] + a)


@pytest.fixture
def neuronxcc_modules(monkeypatch):
    """Map neuronxcc.nki.* onto trnlab.nki_beta1 (what trnlab.compat does for `trnlab run`)."""
    pkg = types.ModuleType("neuronxcc")
    pkg.__path__ = []
    pkg.nki = nki
    monkeypatch.setitem(sys.modules, "neuronxcc", pkg)
    monkeypatch.setitem(sys.modules, "neuronxcc.nki", nki)
    for sub in ("language", "isa", "typing", "compiler"):
        monkeypatch.setitem(sys.modules, f"neuronxcc.nki.{sub}", getattr(nki, sub))


@pytest.mark.parametrize("path", EXAMPLES, ids=[p.stem for p in EXAMPLES])
def test_examples_run_unmodified(path, neuronxcc_modules, capsys):
    runpy.run_path(str(path), run_name="__main__")          # each example asserts against numpy
    assert "matches numpy" in capsys.readouterr().out


def test_examples_exist():
    assert len(EXAMPLES) >= 2


@nki.jit
def _halves(a):
    """Each program of a 2-program launch doubles its half of the rows into one shared_hbm output."""
    out = nl.ndarray(a.shape, dtype=a.dtype, buffer=nl.shared_hbm)
    half = a.shape[0] // 2
    r0 = nl.program_id(axis=0) * half
    nl.store(out[r0:r0 + half, :], value=nl.multiply(nl.load(a[r0:r0 + half, :]), 2.0))
    return out


@pytest.mark.parametrize("threads", [False, True])
def test_shared_hbm_is_one_tensor_for_every_program(threads):
    # LNC=2 as two physical cores (threads, one machine each) or in order on one machine: either way the
    # programs write the same shared_hbm tensor, so the output holds both halves
    a = np.arange(256 * 4, dtype=np.float32).reshape(256, 4)
    k = _halves[2]
    k.options["lnc_threads"] = threads
    np.testing.assert_array_equal(k.run((a,), {}).outputs, 2 * a)
