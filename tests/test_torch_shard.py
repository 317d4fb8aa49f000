"""Tensor parallelism (trnlab.torch.shard): the sharded built-in decoders match eager PyTorch, each rank
holds 1/TP of the split matrices, the collective time is collective_cost's (launch="graph") for the graph's
collectives, the smallest TP that fits, and the CLI's argument checks. Oracles: eager PyTorch, hand counts from the
model configs, trnlab.isa.collectives.collective_cost called independently."""
import functools
import math

import pytest

torch = pytest.importorskip("torch")

import trnlab.torch as tt  # noqa: E402
from trnlab.hw.systems import get_system  # noqa: E402
from trnlab.isa.collectives import collective_cost  # noqa: E402
from trnlab.torch import capture, models, shard  # noqa: E402
from trnlab.torch.report import BOUNDS  # noqa: E402

SEQ = 16


@functools.lru_cache(maxsize=None)
def compiled(name, tp, dtype=torch.float32, system=None):
    m = models.build(name)
    ids = models.example_ids(m.cfg, 1, SEQ)
    return m, ids, tt.compile(m, (ids,), dtype=dtype, tp=tp, system=system, name=name)


@pytest.mark.parametrize("name", ["llama-tiny", "gpt2-tiny"])
@pytest.mark.parametrize("tp", [2, 4])
def test_sharded_decoder_matches_eager_fp32(name, tp):
    m, ids, fn = compiled(name, tp)
    with torch.no_grad():
        ref = m(ids)
    got = fn.last_run.outputs
    assert got.shape == ref.shape
    assert float((got - ref).abs().max()) <= BOUNDS["float32"] * float(ref.abs().max())
    r = fn.report
    assert r.numerics_ok and r.ranks == tp and r.simulated_ranks == tp and len(r.rank_latency_us) == tp


def test_sharded_llama_bf16_within_the_bf16_bound():
    m, ids, fn = compiled("llama-tiny", 2, torch.bfloat16)
    with torch.no_grad():
        ref = m(ids)
    got = fn.last_run.outputs.float()
    assert float((got - ref).abs().max()) <= BOUNDS["bfloat16"] * float(ref.abs().max())
    assert fn.report.numerics_ok


def test_each_rank_holds_one_tp_th_of_the_split_matrices():
    """llama-tiny at TP 4: hidden 256, 4 heads of 64, 2 KV heads (fewer than the 4 ranks: each rank keeps
    the KV head of its query head), intermediate 512, vocab 512."""
    tp, cfg = 4, models.config("llama-tiny")
    m = models.build("llama-tiny")
    ids = models.example_ids(cfg, 1, SEQ)
    ep = capture.export(m, (ids,), torch.float32)
    plan = shard.shard(ep, tp)
    h, d, i, v = cfg.hidden, cfg.head_dim, cfg.intermediate, cfg.vocab
    want = {"blocks.0.q_proj.weight": (h // tp, h), "blocks.0.k_proj.weight": (d, h),
            "blocks.0.v_proj.weight": (d, h), "blocks.0.o_proj.weight": (h, h // tp),
            "blocks.0.gate_proj.weight": (i // tp, h), "blocks.0.up_proj.weight": (i // tp, h),
            "blocks.0.down_proj.weight": (h, i // tp), "embed.weight": (v // tp, h),
            "lm_head.weight": (v // tp, h), "blocks.0.attn_norm.weight": (h,)}
    per_layer = 2 * (h // tp) * h + 2 * d * h + 3 * (i // tp) * h + 2 * h
    hand = cfg.layers * per_layer + 2 * (v // tp) * h + h
    for rank in range(tp):
        state = shard.rank_export(plan, ep, rank).state_dict
        for key, shape in want.items():
            assert tuple(state[key].shape) == shape, (rank, key)
        assert sum(t.numel() for t in state.values()) == hand
        full = dict(m.named_parameters())
        q = full["blocks.0.q_proj.weight"]
        assert torch.equal(state["blocks.0.q_proj.weight"], q[rank * h // tp:(rank + 1) * h // tp])
        kv_head = rank * cfg.kv_heads // tp
        k = full["blocks.0.k_proj.weight"]
        assert torch.equal(state["blocks.0.k_proj.weight"], k[kv_head * d:(kv_head + 1) * d])
        o = full["blocks.0.o_proj.weight"]
        assert torch.equal(state["blocks.0.o_proj.weight"], o[:, rank * h // tp:(rank + 1) * h // tp])


def test_collective_time_is_collective_cost_of_the_graphs_collectives():
    """Per decoder layer an all-reduce after o_proj and after down_proj, one after the vocab-parallel
    embedding, one all-gather of the logits; sizes are those of the fp32 activations; each is a node of the
    compiled graph (launch="graph"). Every one feeds the next op (a residual add, the output), so none is
    hidden by compute: the critical path holds all of them."""
    tp, cfg = 4, models.config("llama-tiny")
    _, _, fn = compiled("llama-tiny", tp)
    r = fn.report
    system = get_system("trn2.48xlarge-lnc1")
    reduce = collective_cost("all-reduce", SEQ * cfg.hidden * 4, tp, system, launch="graph").latency_s
    gather = collective_cost("all-gather", SEQ * cfg.vocab * 4, tp, system, launch="graph").latency_s
    want_us = ((2 * cfg.layers + 1) * reduce + gather) * 1e6
    assert r.system == "trn2.48xlarge-lnc1"
    assert [(c["op"], c["latency_s"]) for c in r.collectives] == \
        [("all-reduce", reduce)] * (2 * cfg.layers + 1) + [("all-gather", gather)]
    assert math.isclose(r.collectives_total_us, want_us, rel_tol=1e-9)
    assert math.isclose(r.collectives_us, want_us, rel_tol=1e-6)
    ends = [run.machine.scheduler.end * 1e6 for run in fn.last_run.runs]
    assert r.rank_latency_us == pytest.approx(ends, rel=1e-12) and r.latency_s * 1e6 == pytest.approx(max(ends))
    assert all(math.isclose(a, c + r.collectives_us) for a, c in zip(r.rank_latency_us, r.rank_compute_us))
    assert r.to_dict()["collectives_us"] == r.collectives_us


@pytest.mark.parametrize("name", ["llama-tiny", "gpt2-tiny"])
def test_sequence_parallel_matches_eager_with_reduce_scatter_and_all_gather(name):
    """Megatron sequence parallelism at TP 2: per layer two reduce-scatters of the [S, hidden] partial sums
    (plus one after the embedding) and two all-gathers of the sequence into the column-parallel linears
    (plus one before lm_head), then the all-gather of the logits; no all-reduce."""
    tp, cfg = 2, models.config(name)
    m = models.build(name)
    ids = models.example_ids(cfg, 1, SEQ)
    fn = tt.compile(m, (ids,), dtype=torch.float32, tp=tp, sequence_parallel=True)
    with torch.no_grad():
        ref = m(ids)
    got = fn.last_run.outputs
    assert float((got - ref).abs().max()) <= BOUNDS["float32"] * float(ref.abs().max())
    ops = [(c["op"], c["bytes"]) for c in fn.report.collectives]
    act = SEQ * cfg.hidden * 4
    n = 2 * cfg.layers + 1
    assert sorted(ops) == sorted([("reduce-scatter", act)] * n + [("all-gather", act)] * n
                                 + [("all-gather", SEQ * cfg.vocab * 4)])
    system = get_system("trn2.48xlarge-lnc1")
    want = sum(collective_cost(op, b, tp, system, launch="graph").latency_s for op, b in ops) * 1e6
    assert math.isclose(fn.report.collectives_total_us, want, rel_tol=1e-9)
    assert 0 < fn.report.collectives_us <= fn.report.collectives_total_us * (1 + 1e-9)


@pytest.mark.parametrize("name", ["hf-llama", "hf-gpt2"])
def test_transformers_decoders_shard_without_fallback_gathers(name):
    """The same rewrite on transformers' graphs: Llama's repeat_kv (expand of the KV heads) and causal mask,
    GPT-2's Conv1D (addmm with a [in, out] weight, fused q|k|v through a view): Megatron's collectives only
    (one all-reduce per row-parallel linear and the embedding, the logits' all-gather)."""
    pytest.importorskip("transformers")
    from trnlab.torch import hf
    m = hf.LogitsOnly(hf.build(name))
    ids = torch.randint(0, hf.vocab(m.model), (1, SEQ), generator=torch.Generator().manual_seed(1))
    fn = tt.compile(m, (ids,), dtype=torch.float32, tp=2)
    with torch.no_grad():
        ref = m(ids)
    got = fn.last_run.outputs
    assert float((got - ref).abs().max()) <= BOUNDS["float32"] * float(ref.abs().max())
    assert not [n for n in fn.report.sharding if "no split rule" in n]
    layers = m.model.config.num_hidden_layers
    assert sorted(c["op"] for c in fn.report.collectives) == ["all-gather"] + ["all-reduce"] * (2 * layers + 1)


def test_timing_only_simulates_one_rank():
    m = models.build("llama-tiny", meta=True)
    ids = models.example_ids(m.cfg, 1, SEQ).to("meta")
    fn = tt.compile(m, (ids,), tp=4, numerics=False, name="llama-tiny")
    r = fn.report
    assert r.simulated_ranks == 1 and len(r.rank_latency_us) == 4 and r.collectives_us > 0


def test_smallest_tp_that_fits_llama_3_8b_on_trn2():
    """Llama-3-8B in bf16: 8.03 G parameters x 2 B = 16.1 GB of weights against 12 GiB of HBM per
    NeuronCore (96 GiB per trn2 chip / 8): one core is too small, two are enough (8.0 GB each plus the
    replicated norms and the activations of a 128-token prefill)."""
    cfg = models.config("llama-3-8b")
    weights = cfg.params() * 2
    capacity = get_system("trn2.48xlarge-lnc1").hbm_bytes_per_rank
    assert capacity == 96 * 2**30 // 8
    hand = next(t for t in range(1, 33) if cfg.heads % t == 0 and weights / t < capacity)
    assert hand == 2
    m = models.build("llama-3-8b", meta=True)
    ep = capture.export(m, (models.example_ids(cfg, 1, 128).to("meta"),), torch.bfloat16)
    tp, w, a = shard.smallest_tp(ep, capacity, name="llama-3-8b", max_tp=8)
    assert tp == hand
    assert abs(w - weights / 2) < 0.01 * weights / 2 and w + a <= capacity


@pytest.mark.parametrize("args, needles", [
    (["--tp", "0"], ["--tp", ">= 1", "0"]),
    (["--tp", "3"], ["--tp 3", "4 attention heads", "1, 2, 4"]),
    (["--tp", "2", "--system", "no-such"], ["system", "'no-such'", "trn2.48xlarge"]),
    (["--tp", "200"], ["--tp 200", "128 ranks"]),
])
def test_cli_refuses_bad_tp_and_system(args, needles, monkeypatch):
    from typer.testing import CliRunner

    from trnlab.cli import app

    def boom(*a, **k):
        raise AssertionError("a simulation started before the arguments were checked")
    monkeypatch.setattr("trnlab.torch.cli.compile_builtin", boom)
    res = CliRunner().invoke(app, ["model", "llama-tiny", *args])
    assert res.exit_code == 2
    text = res.output.strip()
    assert len(text.splitlines()) == 1 and "Traceback" not in text
    for needle in needles:
        assert needle in text


def test_library_refuses_tp_not_dividing_heads():
    from trnlab.errors import OptionError
    m = models.build("llama-tiny")
    with pytest.raises(OptionError, match="tp=3 does not divide the 4"):
        tt.compile(m, (models.example_ids(m.cfg, 1, SEQ),), tp=3, dtype=torch.float32)


def test_a_model_too_big_for_one_rank_is_refused_naming_the_smallest_tp():
    """A what-if trn2 with 4 MiB of HBM per NeuronCore: llama-tiny in fp32 needs 5.4 MB of weights on one
    core (1.34 M parameters), 2.9 MB per rank at TP 2 (hand count: per layer q and o 128x256 each, one KV
    head of 64x256 for k and v, gate/up/down 256x256 each, two norms; embedding and lm_head 256x256 each)."""
    from trnlab.errors import HbmCapacityError
    from trnlab.hw import TRN2
    system = get_system("trn2.48xlarge-lnc1")
    small = system.replace(chip=TRN2.replace(hbm_bytes=32 * 2**20))
    assert small.hbm_bytes_per_rank == 4 * 2**20
    cfg = models.config("llama-tiny")
    per_rank_tp2 = (cfg.layers * (2 * 128 * 256 + 2 * 64 * 256 + 3 * 256 * 256 + 2 * 256) + 2 * 256 * 256 + 256) * 4
    assert per_rank_tp2 < 4 * 2**20 < cfg.params() * 4
    m = models.build("llama-tiny")
    ids = models.example_ids(cfg, 1, SEQ)
    with pytest.raises(HbmCapacityError, match="the smallest TP that fits is 2"):
        tt.compile(m, (ids,), dtype=torch.float32, tp=1, system=small)
    fn = tt.compile(m, (ids,), dtype=torch.float32, tp=2, system=small, numerics=False)
    assert fn.report.min_tp == 2 and fn.report.hbm_capacity_bytes == 4 * 2**20
    assert per_rank_tp2 <= fn.report.weights_bytes < per_rank_tp2 + 64 * 1024    # + the RoPE tables


def test_a_vocabulary_not_divisible_by_tp_is_padded():
    """Vocabulary 509 at TP 4: each rank holds ceil(509 / 4) = 128 rows of the embedding / lm_head, the last
    rank's 3 extra rows zeros (Megatron pads the vocabulary the same way); the logits come back 509 wide."""
    import dataclasses
    cfg = dataclasses.replace(models.config("gpt2-tiny"), vocab=509)     # tied embedding and lm_head
    m = models.Decoder(cfg)
    models._init(m, 0)
    m.eval()
    ids = models.example_ids(cfg, 1, SEQ)
    fn = tt.compile(m, (ids,), dtype=torch.float32, tp=4)
    with torch.no_grad():
        ref = m(ids)
    got = fn.last_run.outputs
    assert got.shape == ref.shape == (1, SEQ, 509)
    assert float((got - ref).abs().max()) <= BOUNDS["float32"] * float(ref.abs().max())
    table = m.embed.weight
    last = shard.rank_export(fn.plan, fn.ep, 3).state_dict["lm_head.weight"]
    assert last.shape == (128, cfg.hidden)
    assert torch.equal(last[:125], table[384:]) and not last[125:].any()


def test_decode_step_splits_the_kv_caches_by_heads():
    """One decode step of llama-tiny at TP 4 against a KV cache: the caches (2 KV heads) are split like the
    new keys/values, each rank holding the one KV head its query head uses (64 of 2 x 64 per position),
    the updated caches are put together on the host (no collective), and everything matches eager."""
    tp = 4
    m = models.build("llama-tiny")
    step = models.DecodeStep(m)
    inputs = models.decode_inputs(m.cfg, 1, 32, 16)
    fn = tt.compile(step, inputs, dtype=torch.float32, tp=tp)
    with torch.no_grad():
        ref = step(*inputs)
    got = fn.last_run.outputs
    for g, r in zip(got, ref):
        assert g.shape == r.shape and float((g - r).abs().max()) <= BOUNDS["float32"] * float(r.abs().max())
    for rank in range(tp):
        p = fn.programs[rank]
        cache = next(n for n in p.info.user_inputs if n.name == "caches_0")
        assert tuple(cache.meta["val"].shape) == (1, 1, 32, m.cfg.head_dim)
    assert [c["op"] for c in fn.report.collectives].count("all-gather") == 1      # the logits only
