"""Profiler outputs: Chrome trace validity, summary numbers against the scheduler, HTML report."""
import base64
import inspect
import json
from html.parser import HTMLParser

import ml_dtypes
import numpy as np
import pytest

import trnlab.nki as nki
import trnlab.nki.isa as nisa
import trnlab.nki.language as nl
from trnlab.profile import chrome_trace, from_run, profile_run, report_html, summarize


@nki.jit
def add_kernel(a, b):
    out = nl.ndarray(a.shape, dtype=a.dtype, buffer=nl.shared_hbm)
    for i in nl.affine_range(a.shape[0] // 128):
        at = nl.ndarray((128, a.shape[1]), dtype=a.dtype, buffer=nl.sbuf)
        bt = nl.ndarray((128, a.shape[1]), dtype=a.dtype, buffer=nl.sbuf)
        nisa.dma_copy(dst=at, src=a[i * 128:(i + 1) * 128, :])
        nisa.dma_copy(dst=bt, src=b[i * 128:(i + 1) * 128, :])
        ct = nl.ndarray((128, a.shape[1]), dtype=a.dtype, buffer=nl.sbuf)
        nisa.tensor_tensor(dst=ct, data1=at, data2=bt, op=nl.add)
        nisa.dma_copy(dst=out[i * 128:(i + 1) * 128, :], src=ct)
    return out


@nki.jit
def one_matmul(lhsT, rhs):
    """One [128,128] x [128,512] matmul: two loads, nc_matmul, PSUM->SBUF copy, store."""
    out = nl.ndarray((128, 512), dtype=nl.float32, buffer=nl.shared_hbm)
    lt = nl.ndarray((128, 128), dtype=lhsT.dtype, buffer=nl.sbuf)
    rt = nl.ndarray((128, 512), dtype=rhs.dtype, buffer=nl.sbuf)
    nisa.dma_copy(dst=lt, src=lhsT)
    nisa.dma_copy(dst=rt, src=rhs)
    ps = nl.ndarray((128, 512), dtype=nl.float32, buffer=nl.psum)
    nisa.nc_matmul(dst=ps, stationary=lt, moving=rt)
    ot = nl.ndarray((128, 512), dtype=nl.float32, buffer=nl.sbuf)
    nisa.tensor_copy(dst=ot, src=ps)
    nisa.dma_copy(dst=out, src=ot)
    return out


def kernel_line(kernel, fragment):
    """The file line number of the first line of kernel's source containing fragment."""
    lines, first = inspect.getsourcelines(kernel.fn)
    return first + next(i for i, line in enumerate(lines) if fragment in line)


def run_matmul(dtype, target="trn2"):
    rng = np.random.default_rng(0)
    a = rng.standard_normal((128, 128)).astype(dtype)
    b = rng.standard_normal((128, 512)).astype(dtype)
    run = one_matmul.run((a, b), {}, target=target, trace=True)
    ref = a.astype(np.float32).T @ b.astype(np.float32)
    np.testing.assert_allclose(run.outputs, ref, rtol=1e-4, atol=1e-3)  # fp32 PSUM accumulation
    return run


@pytest.fixture(scope="module")
def add_run():
    rng = np.random.default_rng(1)
    a = rng.random((512, 256), dtype=np.float32)
    b = rng.random((512, 256), dtype=np.float32)
    run = add_kernel.run((a, b), {}, target="trn2", trace=True)
    np.testing.assert_array_equal(run.outputs, a + b)
    return run


# --- trace -----------------------------------------------------------------------------------------

def test_trace_is_valid_chrome_trace_json(add_run):
    trace = json.loads(json.dumps(chrome_trace(add_run)))
    assert trace["displayTimeUnit"] == "ns"
    events = trace["traceEvents"]
    slices = [e for e in events if e["ph"] == "X"]
    names = {e["tid"]: e["args"]["name"] for e in events if e["ph"] == "M" and e["name"] == "thread_name"}
    assert any(e["ph"] == "M" and e["name"] == "process_name" for e in events)
    assert len(slices) == len(add_run.machine.scheduler.records)      # a DMA: one slice per queue used
    for e in slices:
        assert {"ph", "ts", "dur", "pid", "tid", "name"} <= set(e)
        assert e["tid"] in names, "every slice's thread is named by a metadata event"
        assert e["dur"] >= 0 and e["ts"] >= 0


def test_one_track_per_engine_and_used_dma_queue(add_run):
    trace = chrome_trace(add_run)
    named = [e["args"]["name"] for e in trace["traceEvents"] if e["ph"] == "M" and e["name"] == "thread_name"]
    used = {r.track for r in add_run.machine.scheduler.records}
    assert len(named) == len(set(named)), "one thread per track"
    assert {"tensor", "vector", "scalar", "gpsimd"} <= set(named)
    dma_used = {t for t in used if t.startswith("dma.q")}
    assert dma_used == {f"dma.q{i}" for i in range(16)}      # 128-partition DMAs use all 16 queues
    assert {t for t in named if t.startswith("dma")} == dma_used
    track_of = {e["tid"]: e["args"]["name"] for e in trace["traceEvents"]
                if e["ph"] == "M" and e["name"] == "thread_name"}
    slices = [e for e in trace["traceEvents"] if e["ph"] == "X"]
    for rec, e in zip(add_run.machine.scheduler.records, slices):
        assert track_of[e["tid"]] == rec.track
        assert (e["name"] == "dma_copy") == (e["cat"] == "dma")


def test_slices_carry_source_line_shapes_and_microseconds(add_run):
    records = add_run.machine.scheduler.records
    slices = [e for e in chrome_trace(add_run)["traceEvents"] if e["ph"] == "X"]
    for rec, e in zip(records, slices):
        assert e["name"] == rec.name
        assert e["args"]["loc"].startswith(__file__ + ":")            # kernel file:line
        assert e["ts"] == pytest.approx(rec.start * 1e6, rel=1e-12)    # seconds -> microseconds
        assert e["dur"] == pytest.approx((rec.end - rec.start) * 1e6, rel=1e-12)
        assert e["args"]["bytes"] == rec.nbytes
    add = next(e for e in slices if e["name"] == "tensor_tensor")
    assert add["args"]["api"] == "nisa.tensor_tensor"
    assert add["args"]["shapes"] == [[128, 256]] * 3
    assert add["args"]["dtypes"] == ["float32"] * 3
    first_dma = [e for rec, e in zip(records, slices) if rec.index == records[0].index]
    assert sum(e["args"]["bytes"] for e in first_dma) == 128 * 256 * 4  # its pieces add up to the tile


# --- summary ---------------------------------------------------------------------------------------

ADD_TRN2_S = 16.412714097496707e-6      # predicted latency of add_kernel on [512, 256] fp32, trn2 (a literal;
                                        # 17.079 us with the ISA's two-input Vector rate 2N; fitted 1.375N on trn2:
                                        # 4 adds x 160 cycles less at 0.96 GHz = 0.667 us)


def test_summary_matches_hand_computed_costs(add_run):
    s = summarize(add_run)
    sched = add_run.machine.scheduler
    assert s["total_s"] == pytest.approx(ADD_TRN2_S, rel=1e-9)
    # Vector: 4 tensor_tensor of [128, 256] fp32, both inputs in SBUF, not bf16: max(64, c N) with the
    # fitted two-input rate c = 1.375 on trn2 (ISA: 2) = 352 cycles at the trn2 Vector clock of 0.96 GHz
    assert s["engines"]["vector"]["busy_s"] == pytest.approx(4 * 1.375 * 256 / 0.96e9, rel=1e-9)
    for track in ("tensor", "scalar", "gpsimd"):
        assert s["engines"][track]["busy_s"] == 0.0
    # each of the 12 DMAs of a [128, 256] fp32 tile puts 8 partitions x 1 KiB on each of the 16 queues;
    # a queue moves 23 B/ns (trn2) x the fitted efficiency 0.44 x c / (c + 128) for c = 1 KiB rows
    queue_busy = 12 * 8 * 1024 / (23e9 * 0.44 * 1024 / (1024 + 128))
    assert len(s["dma"]["queues"]) == 16
    for q, v in s["dma"]["queues"].items():
        assert v["busy_s"] == pytest.approx(queue_busy, rel=1e-9)
        assert v["utilization"] == pytest.approx(queue_busy / ADD_TRN2_S, rel=1e-9)
    assert s["engines"]["vector"]["instructions"] == 4
    assert s["instructions"]["by_opcode"] == {"dma/dma_copy": 12, "vector/tensor_tensor": 4}   # instructions
    assert s["dma"]["queue_transfers"] == 12 * 16          # each DMA on all 16 queues (instructions, not pieces)
    assert s["instructions"]["total"] == 12 + 4                              # 3 DMAs and 1 add per row tile
    assert s["dma"]["bytes"] == 12 * 128 * 256 * 4 == add_run.machine.stats.dma_bytes
    assert s["dma"]["achieved_bytes_per_s"] == pytest.approx(s["dma"]["bytes"] / sched.end, rel=1e-12)
    # MBU = DMA bytes / (HBM bandwidth per core x time); trn2: 2.9 TB/s / 8 cores
    assert s["mbu"] == pytest.approx(s["dma"]["bytes"] / (2.9e12 / 8 * sched.end), rel=1e-12)
    assert s["mfu"] == 0.0 and s["arithmetic_intensity"] == 0.0      # no matmuls
    top = s["top_instructions"]
    assert top[0]["time_s"] >= top[-1]["time_s"]
    assert sum(g["count"] for g in top) == len({r.index for r in sched.records}) == 16   # instructions
    assert all(g["loc"].startswith(__file__ + ":") for g in top)
    # the critical path by hand: the first a load (fixed ~1.3 us + q), then per row tile the b load's bytes
    # queued behind the a load (q), the add (352 + 60 Vector cycles) and the store (1.3 us + q)
    q = 8 * 1024 / (23e9 * 0.44 * 1024 / (1024 + 128))
    add_s = (1.375 * 256 + 60) / 0.96e9
    want = {("src=a[", 1, 1.3e-6 + q), ("src=b[", 4, 4 * q), ("nisa.tensor_tensor", 4, 4 * add_s),
            ("dst=out[", 4, 4 * (1.3e-6 + q))}
    got = {int(g["loc"].rsplit(":", 1)[1]): (g["count"], g["time_s"]) for g in s["critical_path"]}
    assert len(got) == len(want)
    for fragment, count, seconds in want:
        c, t = got[kernel_line(add_kernel, fragment)]
        assert c == count and t == pytest.approx(seconds, rel=1e-9), fragment
    assert sum(t for _, _, t in want) == pytest.approx(ADD_TRN2_S, rel=1e-9)
    assert all(g["loc"].startswith(__file__ + ":") for g in s["critical_path"])


def test_mfu_single_bf16_matmul_by_hand():
    run = run_matmul(ml_dtypes.bfloat16)
    s = summarize(run)
    t = run.machine.scheduler.end
    flops = 2 * 128 * 128 * 512
    assert s["matmul_flops"] == flops
    # MFU = matmul FLOPs / (128 x 128 PEs x 2 x 2.4 GHz x time)  (trn2 bf16 peak 78.6 TFLOP/s)
    assert s["mfu"] == pytest.approx(flops / (128 * 128 * 2 * 2.4e9 * t), rel=1e-12)
    assert 0 < s["mfu"] < 1
    # a cold trn2 PE runs at 50% (power throttle): 512 moving columns at 2.4 GHz x 0.5
    assert s["engines"]["tensor"]["busy_s"] == pytest.approx(512 / (2.4e9 * 0.5), rel=1e-9)
    assert t == pytest.approx(6.581887351778657e-6, rel=1e-9)       # predicted latency (a literal)
    assert s["arithmetic_intensity"] == pytest.approx(flops / ((128 * 128 + 128 * 512) * 2 + 128 * 512 * 4))


def test_mfu_fp32_matmul_uses_fp32_peak():
    run = run_matmul(np.float32)
    s = summarize(run)
    t = run.machine.scheduler.end
    # fp32 matmul runs at 1/4 of the bf16 rate: peak 128 x 128 x 2 x 2.4 GHz / 4 (20 TFLOPS, NC-v3 page)
    assert s["mfu"] == pytest.approx(2 * 128 * 128 * 512 / (128 * 128 * 2 * 2.4e9 / 4 * t), rel=1e-12)
    assert s["bf16_equivalent_flops"] == 4 * s["matmul_flops"]      # profiler weighting: fp32 x4


def test_summary_without_trace_uses_run_stats():
    rng = np.random.default_rng(0)
    a = rng.random((128, 128), dtype=np.float32).astype(ml_dtypes.bfloat16)
    b = rng.random((128, 512), dtype=np.float32).astype(ml_dtypes.bfloat16)
    run = one_matmul.run((a, b), {}, target="trn1")
    s = summarize(run)
    assert not s["traced"] and s["top_instructions"] == []
    # trn1 bf16 peak: 128 x 128 x 2 x 2.8 GHz
    assert s["mfu"] == pytest.approx(2 * 128 * 128 * 512 / (128 * 128 * 2 * 2.8e9 * run.machine.scheduler.end))
    assert s["instructions"]["total"] == 5


# --- report ----------------------------------------------------------------------------------------

class _Collector(HTMLParser):
    def __init__(self):
        super().__init__()
        self.images, self.tables, self.open = [], 0, []

    def handle_starttag(self, tag, attrs):
        if tag == "img":
            self.images.append(dict(attrs))
        elif tag == "table":
            self.tables += 1
        if tag not in ("img", "meta"):
            self.open.append(tag)

    def handle_endtag(self, tag):
        assert self.open and self.open[-1] == tag, f"unbalanced </{tag}>"
        self.open.pop()


def test_report_html_embeds_png_images_and_tables():
    run = run_matmul(ml_dtypes.bfloat16)
    page = report_html(run)
    parser = _Collector()
    parser.feed(page)
    assert parser.open == []
    assert [img["alt"] for img in parser.images] == ["timeline", "roofline"]
    for img in parser.images:
        assert img["src"].startswith("data:image/png;base64,")
        png = base64.b64decode(img["src"].split(",", 1)[1])
        assert png[:8] == b"\x89PNG\r\n\x1a\n" and len(png) > 5000
    assert parser.tables >= 4
    assert "nc_matmul" in page and "test_profile_outputs.py:" in page
    assert "http" not in page.split("<body>")[1].replace("https://ui.perfetto.dev", "")  # self-contained


def test_profile_run_writes_three_files(tmp_path, add_run):
    s = profile_run(add_run, tmp_path, name="add", quiet=True)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["report.html", "summary.json", "trace.json"]
    assert json.loads((tmp_path / "summary.json").read_text())["kernel"] == "add" == s["kernel"]
    assert json.loads((tmp_path / "trace.json").read_text())["traceEvents"]
    assert from_run(add_run).name == "add_kernel"
