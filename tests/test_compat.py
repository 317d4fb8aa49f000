"""Tests of trnlab.compat."""
import textwrap

import trnlab.nki.ntensor as ntensor
from trnlab.compat import run_script, target_of


KERNEL = textwrap.dedent("""
    import numpy as np
    import nki
    import nki.language as nl

    @nki.jit
    def k(a):
        out = nl.ndarray(a.shape, dtype=a.dtype, buffer=nl.shared_hbm)
        t = nl.load(a)
        nl.store(out, t)
        return out

    k(np.ones((256, 64), np.float32))
""")


def test_run_reports_rule_break_without_traceback(tmp_path, capsys):
    script = tmp_path / "p256.py"
    script.write_text(KERNEL)
    assert run_script(str(script)) == 1
    err = capsys.readouterr().err
    assert "Traceback" not in err
    assert "PartitionError" in err and "256" in err and "128" in err
    assert f"{script}:9" in err             # the nl.load line of the kernel


def test_run_script_exception_traceback_starts_at_script(tmp_path, capsys):
    script = tmp_path / "raises.py"
    script.write_text("def f():\n    raise ValueError('user bug here')\nf()\n")
    assert run_script(str(script)) == 1
    err = capsys.readouterr().err
    assert "ValueError: user bug here" in err and "raises.py\", line 2" in err
    assert "runpy" not in err and "trnlab/compat" not in err


def test_compat_maps_nki_tensor():
    assert target_of("nki.tensor") == "trnlab.nki.ntensor"
    from trnlab.compat import install, installed, uninstall
    before = installed()
    install(force=True)
    try:
        import nki.tensor as nt
        assert nt is ntensor
        from trnlab.nki.tensor import NkiTensor        # the NkiTensor module stays importable
        assert NkiTensor.__name__ == "NkiTensor"
    finally:
        uninstall()
        if before:
            install()
