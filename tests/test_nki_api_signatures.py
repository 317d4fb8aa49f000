"""Calls of the current NKI front end are checked against AWS's signatures (nki.isa / nki.language
reference): no catch-all **kwargs swallows a misspelt keyword."""
import inspect

import numpy as np
import pytest

import trnlab.nki as nki
import trnlab.nki.isa as nisa
import trnlab.nki.language as nl
from trnlab.errors import ApiArgumentError, TrnlabError

# Public callables that may take **kwargs, each with the reason.
VAR_KEYWORD_ALLOWED = {
    "nki.jit": "AWS's nki.jit(fn=None, **kwargs) forwards compiler options",
    "nki.baremetal": "Beta 1 only: raises NotImplementedError for any call",
    "nki.benchmark": "Beta 1 only: raises NotImplementedError for any call",
    "nki.profile": "Beta 1 only: raises NotImplementedError for any call",
    "nki.simulate_kernel": "Beta 1 only: raises NotImplementedError for any call",
    "nl.fori_loop": "not modelled: raises NotImplementedError for any call",
    "nl.while_loop": "not modelled: raises NotImplementedError for any call",
}


def _public_callables():
    for prefix, module in (("nki", nki), ("nisa", nisa), ("nl", nl)):
        for name, value in vars(module).items():
            if name.startswith("_") or inspect.isclass(value) or inspect.ismodule(value) or not callable(value):
                continue
            if getattr(value, "__module__", "").startswith("numpy"):
                continue
            yield f"{prefix}.{name}", value


def test_every_public_function_has_no_catch_all_kwargs():
    seen, offenders = 0, []
    for api, fn in _public_callables():
        seen += 1
        params = inspect.signature(fn).parameters.values()
        if any(p.kind is p.VAR_KEYWORD for p in params) and api not in VAR_KEYWORD_ALLOWED:
            offenders.append(api)
    assert seen > 100          # nisa.* + nl.* functions and the nl.<op> tile functions
    assert offenders == []


def test_aws_parameter_lists_of_a_few_apis():
    # Parameter names and order from AWS's nki.isa / nki.language API reference.
    assert list(inspect.signature(nisa.activation).parameters)[:8] == [
        "dst", "op", "data", "bias", "scale", "reduce_op", "reduce_res", "reduce_cmd"]
    assert list(inspect.signature(nisa.tensor_scalar).parameters) == [
        "dst", "data", "op0", "operand0", "reverse0", "op1", "operand1", "reverse1", "engine", "name"]
    assert list(inspect.signature(nl.add).parameters) == ["x", "y", "dtype"]
    assert list(inspect.signature(nl.sum).parameters) == ["x", "axis", "dtype", "keepdims"]
    assert list(inspect.signature(nl.device_print).parameters) == ["print_prefix", "tensor"]


def _act_kernel(**extra):
    @nki.jit
    def k(a):
        out = nl.ndarray(a.shape, dtype=a.dtype, buffer=nl.shared_hbm)
        t = nl.ndarray(a.shape, dtype=a.dtype, buffer=nl.sbuf)
        nisa.dma_copy(dst=t, src=a)
        nisa.activation(dst=t, op=nl.exp, data=t, **extra)
        nisa.dma_copy(dst=out, src=t)
        return out
    return k


def test_misspelt_keyword_is_an_error_naming_api_keyword_and_line():
    a = np.linspace(-1, 1, 128 * 4, dtype=np.float32).reshape(128, 4)
    with pytest.raises(ApiArgumentError) as err:
        nki.simulate(_act_kernel(sclae=2.0))(a)
    msg = str(err.value)
    assert isinstance(err.value, TypeError) and isinstance(err.value, TrnlabError)
    assert "nisa.activation" in msg and "'sclae'" in msg and "did you mean 'scale'" in msg
    assert "dst, op, data, bias, scale" in msg and "test_nki_api_signatures.py:" in msg


def test_correctly_spelt_scale_is_applied():
    a = np.linspace(-1, 1, 128 * 4, dtype=np.float32).reshape(128, 4)
    out = nki.simulate(_act_kernel(scale=2.0))(a)
    np.testing.assert_allclose(out, np.exp(2.0 * a.astype(np.float64)), rtol=1e-5)


def test_tile_function_keyword_typo_and_extra_positional():
    @nki.jit
    def k(a, which):
        t = nl.load(a)
        if which == "typo":
            nl.exp(t, dtyp=nl.bfloat16)
        else:
            nl.add(t, t, nl.float32, 3)
        return a

    a = np.ones((128, 4), np.float32)
    with pytest.raises(ApiArgumentError, match=r"nl\.exp: unexpected keyword argument 'dtyp' \(did you mean 'dtype'"):
        nki.simulate(k)(a, "typo")
    with pytest.raises(ApiArgumentError, match=r"nl\.add: too many positional arguments.*valid parameters: \(x, y, dtype\)"):
        nki.simulate(k)(a, "extra")


def test_language_function_unknown_keyword():
    @nki.jit
    def k(a):
        return nl.ndarray(a.shape, dtype=a.dtype, buffer=nl.shared_hbm, nmae="out")

    with pytest.raises(ApiArgumentError, match=r"nl\.ndarray: unexpected keyword argument 'nmae' \(did you mean 'name'"):
        nki.simulate(k)(np.ones((128, 4), np.float32))


def test_type_error_raised_inside_an_api_is_not_rewritten():
    # A DtypeError (a TypeError) from a well-formed call must come through unchanged.
    from trnlab.errors import DtypeError

    @nki.jit
    def k(a):
        t = nl.ndarray(a.shape, dtype="not-a-dtype", buffer=nl.sbuf)
        return t

    with pytest.raises(DtypeError):
        nki.simulate(k)(np.ones((128, 4), np.float32))


def test_tensor_copy_dtype_of_awss_matmul_tutorial():
    # nki-samples tutorials/matrix_multiplication passes dtype=dst.dtype to nisa.tensor_copy.
    def kernel(copy_dtype):
        @nki.jit
        def k(a):
            t = nl.load(a)
            r = nl.ndarray(a.shape, dtype=nl.bfloat16, buffer=nl.sbuf)
            nisa.tensor_copy(dst=r, src=t, dtype=copy_dtype)
            out = nl.ndarray(a.shape, dtype=nl.bfloat16, buffer=nl.shared_hbm)
            nl.store(out, r)
            return out
        return k

    a = np.linspace(-3, 3, 512, dtype=np.float32).reshape(128, 4)
    out = nki.simulate(kernel(nl.bfloat16))(a)
    np.testing.assert_array_equal(out.astype(np.float32), a.astype(nl.bfloat16).astype(np.float32))
    from trnlab.errors import DtypeError
    with pytest.raises(DtypeError, match=r"dtype=float16 differs from dst .*test_nki_api_signatures.py:"):
        nki.simulate(kernel(nl.float16))(a)
