"""Bad kernel arguments and bad new tensors get typed errors naming the argument/tensor, the limit and the
value (trnlab.core.inputs, applied in runtime argument conversion and Machine.new_hbm/new_onchip)."""
import numpy as np
import pytest

import trnlab.nki as nki
import trnlab.nki.isa as nisa
import trnlab.nki.language as nl
from trnlab.core import inputs
from trnlab.errors import (DtypeError, HbmCapacityError, HostMemoryError, KernelArgumentError, ShapeError,
                           TrnlabError)

HERE = "test_core_inputs.py:"


@nki.jit
def copy_kernel(a):
    out = nl.ndarray(a.shape, dtype=a.dtype, buffer=nl.shared_hbm)
    t = nl.ndarray(a.shape, dtype=a.dtype, buffer=nl.sbuf)
    nisa.dma_copy(dst=t, src=a)
    nisa.dma_copy(dst=out, src=t)
    return out


def alloc_kernel(shape, dtype=np.float32, buffer=None):
    @nki.jit
    def k(a):
        return nl.ndarray(shape, dtype=dtype, buffer=buffer if buffer is not None else nl.shared_hbm)
    return k


A = np.arange(128 * 4, dtype=np.float32).reshape(128, 4)


# --- kernel arguments -------------------------------------------------------------------------------
@pytest.mark.parametrize("shape", [(0, 4), (128, 0)])
def test_zero_size_argument(shape):
    with pytest.raises(ShapeError) as err:
        nki.simulate(copy_kernel)(np.ones(shape, np.float32))
    msg = str(err.value)
    assert "kernel argument 'a'" in msg and str(list(shape)) in msg and ">= 1" in msg and HERE in msg


@pytest.mark.parametrize("value, kind", [("hello", "str"), ([1.0, 2.0], "list")])
def test_string_or_list_used_as_tensor(value, kind):
    with pytest.raises(KernelArgumentError) as err:
        nki.simulate(copy_kernel)(value)
    msg = str(err.value)
    assert isinstance(err.value, TrnlabError)
    assert f"kernel argument 'a' is a {kind}" in msg and repr(value) in msg and "not a tensor" in msg
    assert HERE in msg          # the kernel line that used it as a tensor


def test_string_static_argument_still_works():
    @nki.jit
    def k(a, op):
        t = nl.load(a)
        nisa.activation(dst=t, op=getattr(nl, op), data=t)
        out = nl.ndarray(a.shape, dtype=a.dtype, buffer=nl.shared_hbm)
        nl.store(out, t)
        return out

    x = np.linspace(-2, 2, 512, dtype=np.float32).reshape(128, 4)
    np.testing.assert_allclose(nki.simulate(k)(x, "exp"), np.exp(x.astype(np.float64)), rtol=1e-5)


def test_list_of_arrays_is_a_list_of_tensors():
    @nki.jit
    def k(xs):
        acc = nl.load(xs[0])
        for x in xs[1:]:
            nisa.tensor_tensor(dst=acc, data1=acc, data2=nl.load(x), op=nl.add)
        out = nl.ndarray(acc.shape, dtype=acc.dtype, buffer=nl.shared_hbm)
        nl.store(out, acc)
        return out

    xs = [A, 2 * A, 3 * A]
    np.testing.assert_array_equal(nki.simulate(k)(xs), 6 * A)
    with pytest.raises(KernelArgumentError, match="'xs' is a list mixing arrays with other values"):
        nki.simulate(k)([A, 3.0])
    with pytest.raises(KernelArgumentError, match=r"kernel argument 'a' is a list \(2 HBM tensors"):
        nki.simulate(copy_kernel)([A, A])


@pytest.mark.parametrize("dtype", [np.float64, np.int64, np.uint64, np.complex64])
def test_unsupported_argument_dtypes_are_refused_not_narrowed(dtype):
    with pytest.raises(DtypeError) as err:
        nki.simulate(copy_kernel)(A.astype(dtype))
    msg = str(err.value)
    assert "kernel argument 'a'" in msg and np.dtype(dtype).name in msg and "float32" in msg and HERE in msg


def test_supported_32_bit_argument_is_bit_exact():
    x = np.array([[2**31 - 1, -(2**31), 7, 0]] * 128, np.int32)
    np.testing.assert_array_equal(nki.simulate(copy_kernel)(x), x)


# --- new tensors ----------------------------------------------------------------------------------
@pytest.mark.parametrize("buffer", [None, nl.sbuf])
def test_negative_shape(buffer):
    with pytest.raises(ShapeError) as err:
        nki.simulate(alloc_kernel((-1, 4), buffer=buffer))(A)
    msg = str(err.value)
    assert "nl.ndarray" in msg and "[-1, 4]" in msg and ">= 1, got -1" in msg and HERE in msg


def test_zero_and_fractional_dims():
    with pytest.raises(ShapeError, match=r"\[128, 0\].*zero-size"):
        nki.simulate(alloc_kernel((128, 0), buffer=nl.sbuf))(A)
    with pytest.raises(ShapeError, match=r"dimension 128.5 is a float, not an int"):
        nki.simulate(alloc_kernel((128.5, 4), buffer=nl.sbuf))(A)
    with pytest.raises(ShapeError, match=r"dimension 2.0 is a float, not an int \(use // for integer division\)"):
        nki.simulate(alloc_kernel((128, 4 / 2), buffer=nl.sbuf))(A)


@pytest.mark.parametrize("shape", [(2**40, 2**20), (2**40, 2**40)])
def test_hbm_allocation_beyond_device_memory(shape):
    with pytest.raises(HbmCapacityError) as err:
        nki.simulate(alloc_kernel(shape))(A)
    e = err.value
    assert e.required >= shape[0] * shape[1] * 4 > e.limit       # exact bytes: no int64 wrap-around
    assert str(shape[0] * shape[1] * 4) in str(e) and HERE in str(e)


def test_hbm_allocation_beyond_host_memory(monkeypatch):
    monkeypatch.setattr(inputs, "host_available_bytes", lambda: 1 << 20)
    kernel = alloc_kernel((1024, 1024))             # 4 MiB: fits the device, not this (pretend) host
    with pytest.raises(HostMemoryError) as err:
        nki.simulate(kernel)(A)
    assert err.value.required == 4 << 20 and err.value.limit == 1 << 20
    assert "[1024, 1024]" in str(err.value) and HERE in str(err.value)
    nki.simulate(kernel, numerics=False)(A)          # timing-only runs hold no host copy


@pytest.mark.parametrize("dtype", [np.float64, np.int64, np.complex64, "float128"])
def test_ndarray_unsupported_dtypes(dtype):
    with pytest.raises(DtypeError) as err:
        nki.simulate(alloc_kernel((128, 4), dtype=dtype, buffer=nl.sbuf))(A)
    assert "nl.ndarray" in str(err.value) and HERE in str(err.value)


def test_shared_constant_narrows_64_bit_only_when_exact():
    def constant_kernel(c):      # a host constant baked into the kernel (not a kernel argument)
        @nki.jit
        def k(a):
            t = nl.shared_constant(c)
            out = nl.ndarray(t.shape, dtype=t.dtype, buffer=nl.shared_hbm)
            nisa.dma_copy(dst=out, src=t)
            return out
        return k

    exact = np.array([[0.5, -2.0, 1024.0, 3.0]] * 2)            # float64, every value is a float32
    got = nki.simulate(constant_kernel(exact))(A)
    assert got.dtype == np.float32 and np.array_equal(got, exact)
    with pytest.raises(DtypeError, match="float64 and its values do not fit float32 exactly"):
        nki.simulate(constant_kernel(np.array([[1 / 3, 0.1]] * 2)))(A)
    with pytest.raises(DtypeError, match="int64 and its values do not fit int32 exactly"):
        nki.simulate(constant_kernel(np.array([[2**40, 1]] * 2)))(A)


def test_beta1_shares_the_checks():
    from trnlab import nki_beta1 as b1
    import trnlab.nki_beta1.language as bl

    def k(a):
        return bl.ndarray((-3, 4), dtype=bl.float32, buffer=bl.shared_hbm)

    with pytest.raises(ShapeError, match=r"\[-3, 4\]"):
        b1.simulate_kernel(k, A)
    with pytest.raises(DtypeError, match="kernel argument 'a'.*float64"):
        b1.simulate_kernel(k, A.astype(np.float64))


# --- indexing (core.tensor / frontend.indexing) ------------------------------------------------------
def index_kernel(index):
    @nki.jit
    def k(a):
        t = nl.ndarray(a.shape, dtype=a.dtype, buffer=nl.sbuf)
        nisa.dma_copy(dst=t, src=a)
        v = index(t)
        out = nl.ndarray(v.shape, dtype=a.dtype, buffer=nl.shared_hbm)
        nisa.dma_copy(dst=out, src=v)
        return out
    return k


@pytest.mark.parametrize("index, pattern", [
    (lambda t: t[:, nl.ds(0, 2.5)], r"nl\.ds: size must be an int >= 1, got 2\.5"),
    (lambda t: t[:, nl.ds(0, -2)], r"nl\.ds: size must be an int >= 1, got -2"),
    (lambda t: t[:, nl.ds(1.5, 2)], r"nl\.ds: start must be an int, got 1\.5"),
    (lambda t: t[:, 1.5], r"index 1\.5 \(float\) .* must be an int"),
    (lambda t: t[:, "a"], r"index 'a' \(str\) .* must be an int"),
    (lambda t: t[:, 1.0:3], r"slice start 1\.0 \(float\) .* must be an int"),
    (lambda t: t[:, 2:2], r"empty slice \[2:2\] on dim 1"),
    (lambda t: t.slice(1, 0.5, 3), r"slice start 0\.5 \(float\) .* must be an int"),
])
def test_bad_indices_are_refused_not_truncated(index, pattern):
    with pytest.raises(ShapeError, match=pattern) as err:
        nki.simulate(index_kernel(index))(A)
    assert HERE in str(err.value)


def test_integer_like_indices_still_work():
    got = nki.simulate(index_kernel(lambda t: t[:, np.int32(1):np.int64(3)]))(A)
    np.testing.assert_array_equal(got, A[:, 1:3])
    got = nki.simulate(index_kernel(lambda t: t[:, nl.ds(np.int64(2), 2)]))(A)
    np.testing.assert_array_equal(got, A[:, 2:4])


# --- ISA operands that are plainly not tensors --------------------------------------------------------
@pytest.mark.parametrize("src, shown", [("hello", "str 'hello'"), (3.0, "float 3.0"), (None, "NoneType None"),
                                        (np.ones((128, 4), np.float32), "host numpy array")])
def test_dma_operand_that_is_not_a_tensor(src, shown):
    @nki.jit
    def k(a):
        t = nl.ndarray(a.shape, dtype=a.dtype, buffer=nl.sbuf)
        nisa.dma_copy(dst=t, src=src)
        return a

    with pytest.raises(ShapeError) as err:
        nki.simulate(k)(A)
    msg = str(err.value)
    assert "nisa.dma_copy: operand 'src' must be a tensor" in msg and shown in msg and HERE in msg


def test_host_call_that_does_not_bind_to_the_kernel():
    with pytest.raises(KernelArgumentError) as err:
        nki.simulate(copy_kernel)(A, bb=3)
    msg = str(err.value)
    assert "copy_kernel(a)" in msg and "'bb'" in msg and HERE in msg
    with pytest.raises(KernelArgumentError, match=r"copy_kernel\(a\): missing a required argument: 'a'"):
        nki.simulate(copy_kernel)()
