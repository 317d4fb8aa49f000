"""`trnlab profile`: built-in kernels, scripts (every run captured), the runtime observer hook."""
import json
import textwrap

import numpy as np
from typer.testing import CliRunner

from trnlab import runtime
from trnlab.cli import app
from trnlab.profile import registry

SCRIPT = textwrap.dedent('''
    import sys
    import numpy as np
    import trnlab.nki as nki
    import trnlab.nki.isa as nisa
    import trnlab.nki.language as nl

    @nki.jit
    def double(x):
        out = nl.ndarray(x.shape, dtype=x.dtype, buffer=nl.shared_hbm)
        t = nl.ndarray(x.shape, dtype=x.dtype, buffer=nl.sbuf)
        nisa.dma_copy(dst=t, src=x)
        u = nl.ndarray(x.shape, dtype=x.dtype, buffer=nl.sbuf)
        nisa.tensor_tensor(dst=u, data1=t, data2=t, op=nl.add)
        nisa.dma_copy(dst=out, src=u)
        return out

    x = np.ones((128, 64), np.float32)
    for _ in range(int(sys.argv[1])):
        assert np.array_equal(double(x), 2 * x)
''')


def invoke(*args):
    result = CliRunner().invoke(app, ["profile", *args])
    return result.exit_code, " ".join(result.output.split())     # rich wraps at 80 columns


def test_script_captures_every_run(tmp_path):
    script = tmp_path / "two_runs.py"
    script.write_text(SCRIPT)
    out = tmp_path / "prof"
    code, output = invoke(str(script), "--target", "trn1", "--out", str(out), "2")
    assert code == 0, output
    assert "double" in output and "MFU" in output
    runs = json.loads((out / "runs.json").read_text())
    assert [r["kernel"] for r in runs] == ["double", "double"]
    for sub in ("00_double", "01_double", "."):
        assert {"trace.json", "summary.json", "report.html"} <= {p.name for p in (out / sub).iterdir()}
    summary = json.loads((out / "summary.json").read_text())
    assert summary["target"] == "trn1"                      # --target reaches the script's kernels
    assert summary["instructions"]["by_opcode"] == {"dma/dma_copy": 2, "vector/tensor_tensor": 1}
    trace = json.loads((out / "trace.json").read_text())
    locs = [e["args"]["loc"] for e in trace["traceEvents"] if e["ph"] == "X"]
    assert locs and all(loc.startswith(f"{script}:") for loc in locs)
    assert runtime.observers == [] and runtime.forced == {}   # hook removed afterwards


def test_script_timing_only_profiles_despite_failed_checks(tmp_path):
    script = tmp_path / "checks.py"
    script.write_text(SCRIPT)
    code, output = invoke(str(script), "--out", str(tmp_path / "p"), "--timing-only", "1")
    assert code == 0, output
    assert "AssertionError" in output and "--timing-only" in output
    assert json.loads((tmp_path / "p" / "summary.json").read_text())["instructions"]["total"] == 3


def test_script_without_kernels_fails_clearly(tmp_path):
    script = tmp_path / "nothing.py"
    script.write_text("print('hello')\n")
    code, output = invoke(str(script), "--out", str(tmp_path / "p"))
    assert code == 1 and "ran no kernel" in output


def test_builtin_kernel_by_name(tmp_path, monkeypatch):
    """A registry entry (kernel, factory) is run traced on its example inputs."""
    import trnlab.nki as nki
    import trnlab.nki.isa as nisa
    import trnlab.nki.language as nl

    @nki.jit
    def copy(x):
        out = nl.ndarray(x.shape, dtype=x.dtype, buffer=nl.shared_hbm)
        t = nl.ndarray(x.shape, dtype=x.dtype, buffer=nl.sbuf)
        nisa.dma_copy(dst=t, src=x)
        nisa.dma_copy(dst=out, src=t)
        return out

    spec = registry.KernelSpec("copy", copy, lambda rng: (rng.random((128, 256), dtype=np.float32),))
    monkeypatch.setattr(registry, "discover", lambda: ({"copy": spec}, {}))
    code, output = invoke("copy", "--target", "trn3", "--out", str(tmp_path))
    assert code == 0, output
    summary = json.loads((tmp_path / "summary.json").read_text())
    assert summary["kernel"] == "copy" and summary["target"] == "trn3"
    assert summary["dma"]["bytes"] == 2 * 128 * 256 * 4
    assert (tmp_path / "report.html").read_text().count("data:image/png;base64,") == 2


def test_unknown_kernel_names_what_exists(tmp_path):
    code, output = invoke("no_such_kernel", "--out", str(tmp_path))
    assert code == 2
    assert "no built-in kernel named 'no_such_kernel'" in output and "available" in output


def test_registry_finds_shipped_kernels():
    specs, _ = registry.discover()
    assert "add" in specs, sorted(specs)
    args, kwargs = specs["add"].inputs(seed=0)
    assert [a.shape for a in args] == [(512, 2048), (512, 2048)] and kwargs == {}
    again, _ = specs["add"].inputs(seed=0)
    np.testing.assert_array_equal(args[0], again[0])            # a seed gives the same inputs


def test_builtin_add_end_to_end(tmp_path):
    assert "add" in registry.discover()[0]
    code, output = invoke("add", "--out", str(tmp_path))
    assert code == 0, output
    summary = json.loads((tmp_path / "summary.json").read_text())
    assert summary["instructions"]["by_engine"]["vector"] >= 1 and summary["mfu"] == 0.0
    # example inputs: two [512, 2048] fp32 arrays; an add reads each once and writes the sum once
    assert summary["dma"]["bytes"] == 3 * 512 * 2048 * 4


def test_run_kernel_observers_and_forced_options():
    import trnlab.nki as nki
    import trnlab.nki.isa as nisa
    import trnlab.nki.language as nl

    @nki.jit
    def touch(x):
        t = nl.ndarray(x.shape, dtype=x.dtype, buffer=nl.sbuf)
        nisa.dma_copy(dst=t, src=x)
        return None

    seen = []
    runtime.observers.append(seen.append)
    runtime.forced.update(trace=True, target="trn1")
    try:
        touch(np.zeros((4, 8), np.float32))
    finally:
        runtime.observers.remove(seen.append)
        runtime.forced.clear()
    assert len(seen) == 1 and seen[0].name == "touch"
    assert seen[0].machine.chip.name == "trn1" and len(seen[0].machine.scheduler.records) == 1
    touch(np.zeros((4, 8), np.float32))
    assert len(seen) == 1 and touch.last_run.machine.scheduler.records is None


def test_collector_keeps_latest_snapshot_of_a_shared_machine():
    import trnlab.nki as nki
    import trnlab.nki.isa as nisa
    import trnlab.nki.language as nl
    from trnlab.core.machine import Machine
    from trnlab.nki.tensor import NkiTensor
    from trnlab.profile.cli import _collector
    from trnlab.runtime import timing_model

    def load(x):
        t = nl.ndarray(x.shape, dtype=x.dtype, buffer=nl.sbuf)
        nisa.dma_copy(dst=t, src=x)

    captured = []
    runtime.observers.append(observe := _collector(captured))
    try:
        shared = Machine("trn2", scheduler=timing_model(trace=True), tensor_class=NkiTensor)
        x = np.zeros((8, 8), np.float32)
        for _ in range(3):
            runtime.run_kernel(load, (x,), {}, machine=shared, tensor_class=NkiTensor)
        nki.jit(load).run((x,), {}, trace=True)     # a fresh machine: a second profile
    finally:
        runtime.observers.remove(observe)
    assert [len(p.events) for p in captured] == [3, 1]


def test_profile_bad_target_is_one_line(tmp_path, capsys):
    """`trnlab profile add --target trn9` used to dump a rich traceback (TargetError escaped)."""
    from trnlab.profile.cli import profile_command
    assert profile_command("add", [], target="trn9", out=str(tmp_path / "p")) == 2
    text = " ".join(capsys.readouterr().out.split())
    assert "Traceback" not in text
    assert "unknown target 'trn9'" in text and "trn2" in text
