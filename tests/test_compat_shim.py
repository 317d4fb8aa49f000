"""The nki / neuronxcc drop-in shim: module aliases, no shadowing of real packages, `trnlab run`,
`trnlab pytest`."""
import os
import subprocess
import sys
import textwrap

import pytest

import trnlab.compat as compat

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
EXAMPLES = os.path.join(ROOT, "examples", "nki_current")


@pytest.fixture
def shim():
    compat.uninstall()
    yield compat
    compat.uninstall()


def test_aliases_are_the_trnlab_modules(shim):
    assert shim.install() == ["neuronxcc", "nki"]
    import nki
    import nki.collectives
    import nki.compiler
    import nki.isa as nisa
    import nki.isa.constants
    import nki.language as nl
    import nki.typing as nt
    import trnlab.nki
    assert nki is trnlab.nki and nl is trnlab.nki.language and nt is trnlab.nki.typing
    assert nisa.constants.oob_mode.skip is nisa.oob_mode.skip
    assert nki.__spec__.name == "trnlab.nki"               # the real module keeps its own spec
    with pytest.raises(NotImplementedError, match="collective_permute_implicit"):
        nki.collectives.collective_permute_implicit()
    assert nki.compiler.CompileConfig(dead_code_elim=True).dead_code_elim


def test_neuronxcc_maps_to_beta1_lazily(shim):
    shim.install()
    assert shim.target_of("neuronxcc.nki.language") == "trnlab.nki_beta1.language"
    import neuronxcc
    assert neuronxcc.__path__ == []
    from neuronxcc import nki as b1
    import trnlab.nki_beta1
    assert b1 is trnlab.nki_beta1


def test_uninstall_forgets_aliases(shim):
    shim.install()
    import nki  # noqa: F401
    shim.uninstall()
    assert "nki" not in sys.modules and shim.installed() == []
    with pytest.raises(ImportError):
        import nki  # noqa: F401,F811


def test_never_shadows_a_real_package_unless_forced(shim, tmp_path, monkeypatch):
    pkg = tmp_path / "nki"
    pkg.mkdir()
    (pkg / "__init__.py").write_text("REAL = True\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    assert shim.install() == ["neuronxcc"]
    import nki
    assert getattr(nki, "REAL", False)
    shim.uninstall()
    sys.modules.pop("nki", None)
    monkeypatch.setenv("TRNLAB_FORCE_COMPAT", "1")
    assert shim.install() == ["neuronxcc", "nki"]
    import nki as forced
    assert not hasattr(forced, "REAL")
    shim.uninstall()
    sys.modules.pop("nki", None)


def test_run_script_sets_argv_and_returns_status(shim, tmp_path, capsys):
    script = tmp_path / "s.py"
    script.write_text(textwrap.dedent("""
        import sys, os
        import nki.language as nl
        print("argv", sys.argv[1:], os.environ.get("NEURON_PLATFORM_TARGET_OVERRIDE"), nl.tile_size.pmax)
        sys.exit(int(sys.argv[1]))
    """))
    assert shim.run_script(str(script), ["3"], target="trn1") == 3
    assert "argv ['3'] trn1 128" in capsys.readouterr().out
    assert "NEURON_PLATFORM_TARGET_OVERRIDE" not in os.environ or os.environ["NEURON_PLATFORM_TARGET_OVERRIDE"] != "trn1"
    bad = tmp_path / "bad.py"
    bad.write_text("raise RuntimeError('boom')\n")
    assert shim.run_script(str(bad)) == 1
    assert shim.run_script(str(tmp_path / "missing.py")) == 2


def _trnlab(*args, cwd=ROOT, timeout=300):
    env = {k: v for k, v in os.environ.items() if k not in ("NEURON_PLATFORM_TARGET_OVERRIDE", "PYTEST_XDIST_WORKER")}
    return subprocess.run([sys.executable, "-m", "trnlab.cli", *args], cwd=cwd, env=env, capture_output=True,
                          text=True, timeout=timeout)


@pytest.mark.parametrize("example", ["tensor_add.py", "softmax.py", "matmul_lnc2.py"])
def test_trnlab_run_examples(example):
    r = _trnlab("run", os.path.join(EXAMPLES, example))
    assert r.returncode == 0, r.stdout + r.stderr
    assert "PASS" in r.stdout


def test_trnlab_pytest_third_party_suite(tmp_path):
    (tmp_path / "test_user_kernel.py").write_text(textwrap.dedent("""
        import numpy as np
        import nki
        import nki.isa as nisa
        import nki.language as nl

        @nki.jit
        def scale(x):
            out = nl.ndarray(x.shape, dtype=x.dtype, buffer=nl.shared_hbm)
            t = nl.ndarray(x.shape, dtype=x.dtype, buffer=nl.sbuf)
            nisa.dma_copy(dst=t, src=x)
            nisa.tensor_scalar(dst=t, data=t, op0=nl.multiply, operand0=3.0)
            nisa.dma_copy(dst=out, src=t)
            return out

        def test_scale():
            x = np.arange(128 * 4, dtype=np.float32).reshape(128, 4)
            assert np.array_equal(nki.simulate(scale)(x), 3 * x)

        def test_target():
            assert nisa.get_nc_version() == nisa.nc_version.gen2
    """))
    r = _trnlab("pytest", "--target", "trn1", str(tmp_path / "test_user_kernel.py"), "-q", "-p", "no:cacheprovider",
                "-o", "addopts=", cwd=str(tmp_path))
    assert r.returncode == 0, r.stdout + r.stderr
    assert "2 passed" in r.stdout
