"""Review: user errors in `trnlab run` are one typed line, not a traceback dump; exit code non-zero."""
import textwrap

from trnlab.compat import run_script

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


RUNTIME_DS = textwrap.dedent("""
    import numpy as np
    import nki
    import nki.isa as nisa
    import nki.language as nl

    @nki.jit
    def k(a, idx):
        out = nl.ndarray((128, 16), dtype=a.dtype, buffer=nl.shared_hbm)
        i = nl.ndarray((1, 1), dtype=nl.uint32, buffer=nl.sbuf)
        nisa.dma_copy(dst=i, src=idx)
        t = nl.ndarray((128, 16), dtype=a.dtype, buffer=nl.sbuf)
        nisa.dma_copy(dst=t, src=a[:, nl.ds(i, 16)])
        nisa.dma_copy(dst=out, src=t)
        return out

    k(np.zeros((128, 64), np.float32), np.array([[8]], np.uint32))
""")


def test_runtime_ds_start_is_named_not_a_typeerror(tmp_path, capsys):
    """nl.ds(start=<runtime tensor>, size) is documented NKI; trnlab does not model it and must say so
    (it used to die with a bare TypeError from int() inside trnlab)."""
    script = tmp_path / "rtds.py"
    script.write_text(RUNTIME_DS)
    assert run_script(str(script)) == 1
    err = capsys.readouterr().err
    assert "Traceback" not in err
    assert "NotImplementedError: nl.ds" in err and "runtime start" in err and f"{script}:13" in err


def test_ds_static_start_still_accepts_numpy_ints():
    import numpy as np
    import trnlab.nki.language as nl
    d = nl.ds(np.int64(3), 4)
    assert d.as_slice() == slice(3, 7, 1)


def test_profile_bad_target_is_one_line(tmp_path, capsys):
    """`trnlab profile add --target trn9` used to dump a rich traceback (TargetError escaped)."""
    from trnlab.profile.cli import profile_command
    assert profile_command("add", [], target="trn9", out=str(tmp_path / "p")) == 2
    text = " ".join(capsys.readouterr().out.split())
    assert "Traceback" not in text
    assert "unknown target 'trn9'" in text and "trn2" in text
