"""Output folders hold exactly one finished run: files are written atomically, a run is staged in a hidden
folder and swapped into --out, an interrupted run leaves the previous one intact; a multi-kernel profile
has an index.html; slices on every trace track are disjoint or nested (Perfetto's rule)."""
import json
import subprocess
import sys
import textwrap
from html.parser import HTMLParser
from pathlib import Path

import numpy as np
from typer.testing import CliRunner

from trnlab.cli import app
from trnlab.profile.outputs import MARKER

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
        nisa.tensor_tensor(dst=t, data1=t, data2=t, op=nl.add)
        nisa.dma_copy(dst=out, src=t)
        return out

    @nki.jit
    def triple(x):
        out = nl.ndarray(x.shape, dtype=x.dtype, buffer=nl.shared_hbm)
        t = nl.ndarray(x.shape, dtype=x.dtype, buffer=nl.sbuf)
        nisa.dma_copy(dst=t, src=x)
        nisa.tensor_scalar(dst=t, data=t, op0=nl.multiply, operand0=3.0)
        nisa.dma_copy(dst=out, src=t)
        return out

    x = np.ones((128, 64), np.float32)
    for name in sys.argv[1:]:
        k = {"double": double, "triple": triple}[name]
        k(x)
''')


def profile(tmp_path, out, *kernels):
    script = tmp_path / "script.py"
    script.write_text(SCRIPT)
    result = CliRunner().invoke(app, ["profile", str(script), "--out", str(out), *kernels])
    return result


def tree(folder: Path) -> dict:
    return {str(p.relative_to(folder)): p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()}


def leftovers(folder: Path) -> list:
    return [p.name for p in folder.parent.iterdir() if p.name.startswith(f".{folder.name}.")]


def test_second_run_replaces_the_first_whole(tmp_path):
    out = tmp_path / "prof"
    assert profile(tmp_path, out, "double", "triple").exit_code == 0
    assert (out / "runs.json").is_file() and (out / "01_triple").is_dir()
    result = profile(tmp_path, out, "triple")
    assert result.exit_code == 0, result.output
    files = set(tree(out))
    assert files == {"trace.json", "summary.json", "report.html", MARKER}    # nothing left of the first run
    assert json.loads((out / MARKER).read_text())["files"] == sorted(files - {MARKER})
    assert json.loads((out / "summary.json").read_text())["kernel"] == "triple"
    assert leftovers(out) == []


def test_interrupted_run_leaves_the_previous_one_intact(tmp_path, monkeypatch):
    out = tmp_path / "prof"
    assert profile(tmp_path, out, "double").exit_code == 0
    before = tree(out)

    def interrupted(*args, **kwargs):
        raise KeyboardInterrupt            # what SIGINT raises, here while the report is being written
    monkeypatch.setattr("trnlab.profile.report_html", interrupted, raising=False)
    monkeypatch.setattr("trnlab.profile.report.report_html", interrupted)
    result = profile(tmp_path, out, "triple")
    assert result.exit_code != 0
    assert tree(out) == before              # no new trace beside the old report
    assert leftovers(out) == []             # the staging folder was removed


def test_killed_writer_never_leaves_a_partial_file(tmp_path):
    """SIGKILL after the temporary file is written but before it is renamed: the old file is intact."""
    path = tmp_path / "trace.json"
    path.write_text('{"old": true}')
    code = textwrap.dedent(f'''
        import os, signal
        import numpy as np
        import trnlab.nki as nki, trnlab.nki.isa as nisa, trnlab.nki.language as nl
        from trnlab.profile import trace

        @nki.jit
        def copy(x):
            out = nl.ndarray(x.shape, dtype=x.dtype, buffer=nl.shared_hbm)
            nisa.dma_copy(dst=out, src=x)
            return out
        copy(np.ones((128, 8), np.float32))
        os.replace = lambda *a: os.kill(os.getpid(), signal.SIGKILL)
        trace.write_trace(copy.last_run, {str(path)!r})
    ''')
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300)
    assert proc.returncode == -9, proc.stderr
    assert path.read_text() == '{"old": true}'


def test_refused_folder_is_checked_before_the_run(tmp_path):
    out = tmp_path / "mine"
    out.mkdir()
    (out / "notes.txt").write_text("mine")
    result = profile(tmp_path, out, "double")
    assert result.exit_code == 2 and "not a trnlab output" in result.output
    assert tree(out) == {"notes.txt": b"mine"}


class Links(HTMLParser):
    def __init__(self):
        super().__init__()
        self.hrefs = []

    def handle_starttag(self, tag, attrs):
        if tag == "a":
            self.hrefs.append(dict(attrs)["href"])


def test_multi_kernel_profile_has_an_index_linking_each_report(tmp_path):
    out = tmp_path / "prof"
    assert profile(tmp_path, out, "double", "triple", "double").exit_code == 0
    parser = Links()
    parser.feed((out / "index.html").read_text())
    reports = [h for h in parser.hrefs if h.endswith("/report.html")]
    assert reports == ["00_double/report.html", "01_triple/report.html", "02_double/report.html"]
    for href in parser.hrefs:
        assert (out / href).is_file(), href
    kernels = [json.loads((out / h.replace("report.html", "summary.json")).read_text())["kernel"] for h in reports]
    assert kernels == ["double", "triple", "double"]


def overlapping_not_nested(events) -> list:
    """Pairs of complete events on one track that overlap without one containing the other."""
    bad = []
    by_tid = {}
    for e in events:
        if e["ph"] == "X":
            by_tid.setdefault(e["tid"], []).append(e)
    eps = 1e-6                                                   # microseconds: float rounding of ts + dur
    for tid, evs in by_tid.items():
        s = np.array([e["ts"] for e in evs])
        t = s + np.array([e["dur"] for e in evs])
        overlap = (s[:, None] < t[None, :] - eps) & (s[None, :] < t[:, None] - eps)
        i_in_j = (s[:, None] >= s[None, :] - eps) & (t[:, None] <= t[None, :] + eps)
        nested = i_in_j | i_in_j.T
        for i, j in zip(*np.nonzero(overlap & ~nested)):
            bad.append((tid, evs[i]["name"], evs[j]["name"]))
    return bad


def test_kernel_trace_tracks_nest(tmp_path):
    out = tmp_path / "prof"
    assert CliRunner().invoke(app, ["profile", "add", "--out", str(out)]).exit_code == 0
    assert overlapping_not_nested(json.loads((out / "trace.json").read_text())["traceEvents"]) == []


def test_model_trace_op_slices_nest(tmp_path):
    out = tmp_path / "model"
    result = CliRunner().invoke(app, ["model", "llama-tiny", "--seq", "32", "--out", str(out)])
    assert result.exit_code == 0, result.output
    events = json.loads((out / "trace.json").read_text())["traceEvents"]
    op_tids = {e["tid"] for e in events if e.get("cat") == "op"}
    assert op_tids                                           # the model ops are in the trace
    assert overlapping_not_nested(events) == []
    names = {e["args"]["name"] for e in events if e["ph"] == "M" and e["name"] == "thread_name"
             and e["tid"] in op_tids}
    assert all(n.startswith("model ops") for n in names)


def test_output_of_an_older_trnlab_is_replaced_not_refused(tmp_path):
    out = tmp_path / "old"
    (out / "00_double").mkdir(parents=True)
    for name in ("trace.json", "summary.json", "report.html", "runs.json"):
        (out / name).write_text("{}")
    (out / "00_double" / "trace.json").write_text("{}")
    assert profile(tmp_path, out, "double").exit_code == 0
    assert set(tree(out)) == {"trace.json", "summary.json", "report.html", MARKER}


def test_concurrent_runs_into_one_folder_leave_exactly_one_run(tmp_path):
    import threading

    from trnlab.profile.outputs import staged_dir
    out = tmp_path / "shared"
    barrier = threading.Barrier(4)
    errors = []

    def writer(tag):
        try:
            with staged_dir(out, {"tag": tag}) as tmp:
                for i in range(5):
                    (tmp / f"{tag}_{i}.txt").write_text(tag)
                barrier.wait(timeout=60)          # all four swap at the same moment
        except Exception as exc:                  # pragma: no cover - reported below
            errors.append(exc)
    threads = [threading.Thread(target=writer, args=(t,)) for t in "abcd"]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert errors == []
    files = tree(out)
    tags = {name[0] for name in files if name != MARKER}
    assert len(tags) == 1                          # one run, never a mix
    tag = tags.pop()
    assert set(files) == {f"{tag}_{i}.txt" for i in range(5)} | {MARKER}
    assert json.loads(files[MARKER])["tag"] == tag
    assert leftovers(out) == []


def test_default_output_folders_of_commands_do_not_contain_each_other():
    import typer
    group = typer.main.get_command(app)
    defaults = {name: Path(next(p.default for p in cmd.params if p.name == "out"))
                for name, cmd in group.commands.items() if name in ("profile", "demo")}
    a, b = defaults["profile"], defaults["demo"]
    assert a not in b.parents and b not in a.parents and a != b     # one would replace the other's run
