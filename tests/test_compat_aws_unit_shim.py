"""What AWS's nki-samples scripts and unit tests need from `trnlab run` / `trnlab pytest` beyond the nki
modules: stand-ins for framework-only imports, one-line hints for missing extras, and current-front-end
names their kernels use (NKIObject keyword construction, nl.invert)."""
import sys
import textwrap
from dataclasses import dataclass

import numpy as np
import pytest

import trnlab.compat as compat
from trnlab.errors import NkiValidationError


@pytest.fixture
def shim():
    compat.uninstall()
    yield compat
    compat.uninstall()


def _script(tmp_path, body: str) -> str:
    path = tmp_path / "script.py"
    path.write_text(textwrap.dedent(body))
    return str(path)


def test_framework_only_imports_work_and_fail_only_when_used(shim, tmp_path, capsys):
    path = _script(tmp_path, """
        import numpy as np
        import torch_xla
        import torch_xla.core.xla_model as xm
        from torch_xla.core import xla_model
        import torch_neuronx
        from neuronxcc import nki
        import neuronxcc.nki.language as nl

        @nki.jit
        def double(a):
            out = nl.ndarray(a.shape, dtype=a.dtype, buffer=nl.shared_hbm)
            nl.store(out, nl.load(a) * 2.0)
            return out

        print("kernel", nki.simulate_kernel(double, np.ones((4, 4), np.float32))[0, 0])
        device = xm.xla_device()
        print("not reached")
    """)
    assert shim.run_script(path) == 1
    out, err = capsys.readouterr()
    assert "kernel 2.0" in out and "not reached" not in out
    assert err.strip().count("\n") == 0 and "Traceback" not in err
    assert err.startswith("FrameworkUnavailableError: `torch_xla.core.xla_model.xla_device` was used")
    assert "script.py:17" in err          # the line of xm.xla_device()


def test_other_neuronxcc_modules_are_stand_ins_too(shim, tmp_path, capsys):
    path = _script(tmp_path, """
        from neuronxcc.starfish.penguin.targets import codegen
        codegen.something(1)
    """)
    assert shim.run_script(path) == 1
    assert "`neuronxcc.starfish.penguin.targets.codegen.something` was used" in capsys.readouterr().err


def test_installed_libraries_probing_for_a_framework_still_find_it_absent(shim):
    shim.install()
    probe = "import importlib.util\nfound = importlib.util.find_spec('torch_xla') is not None\n"
    for filename, expected in (("/opt/venv/lib/python3.11/site-packages/lib/probe.py", False),
                               ("/home/user/my_kernel_script.py", True)):
        scope = {}
        exec(compile(probe, filename, "exec"), scope)
        assert scope["found"] is expected, filename


def test_script_missing_an_optional_extra_gets_one_line_naming_it(shim, tmp_path, capsys, monkeypatch):
    monkeypatch.setitem(sys.modules, "transformers", None)     # as if the hf extra were not installed
    path = _script(tmp_path, """
        import transformers
    """)
    assert shim.run_script(path) == 1
    err = capsys.readouterr().err
    assert err.strip() == ("trnlab run: `transformers` is not installed; install trnlab's `hf` extra: "
                           "pip install 'trnlab[hf]'")


def test_pytest_not_installed_names_the_test_extra(shim, monkeypatch, capsys):
    monkeypatch.setitem(sys.modules, "pytest", None)
    assert shim.run_pytest(["-q"]) == 2
    err = capsys.readouterr().err
    assert "pip install 'trnlab[test]'" in err and "Traceback" not in err


def test_other_import_errors_keep_their_traceback(shim, tmp_path, capsys):
    path = _script(tmp_path, "import a_module_nobody_ships\n")
    assert shim.run_script(path) == 1
    err = capsys.readouterr().err
    assert "Traceback" in err and "a_module_nobody_ships" in err


# --- current front end names AWS kernels use -----------------------------------------------------
def test_nkiobject_dataclass_with_unannotated_attributes_takes_keywords():
    import trnlab.nki.language as nl

    @dataclass
    class Params(nl.NKIObject):
        offset = None
        count = 4
        scale: float = 1.0

    p = Params(offset=3, count=7, scale=0.5)
    assert (p.offset, p.count, p.scale) == (3, 7, 0.5)
    assert Params().count == 4 and Params(scale=2.0).offset is None
    with pytest.raises(NkiValidationError, match=r"unknown keyword argument\(s\) \['sizes'\]"):
        Params(sizes=2)


def test_invert_is_an_operator_of_the_current_front_end():
    import trnlab.nki as nki
    import trnlab.nki.isa as nisa
    import trnlab.nki.language as nl

    @nki.jit
    def k(a):
        out = nl.ndarray(a.shape, dtype=a.dtype, buffer=nl.shared_hbm)
        x = nl.ndarray(a.shape, dtype=a.dtype, buffer=nl.sbuf)
        nisa.dma_copy(dst=x, src=a)
        nisa.tensor_scalar(dst=x, data=x, op0=nl.invert, operand0=0, engine=nisa.vector_engine)
        nisa.dma_copy(dst=out, src=x)
        return out
    a = np.arange(-256, 256, dtype=np.int32).reshape(128, 4)
    np.testing.assert_array_equal(nki.simulate(k)(a), np.invert(a))
