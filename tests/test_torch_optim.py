"""trnlab.torch.optim: AdamW / SGD / clip_grad_norm_ / accumulate_ on the simulated chip against eager
PyTorch (torch.optim.AdamW, torch.optim.SGD, torch.nn.utils.clip_grad_norm_), stochastic rounding's
reason to exist (tiny updates survive on average), and the step time against the HBM traffic bound."""
import numpy as np
import pytest

torch = pytest.importorskip("torch")

import trnlab.torch.optim as topt  # noqa: E402
from trnlab.errors import DtypeError, OptionError  # noqa: E402
from trnlab.hw import get_chip  # noqa: E402

SHAPES = [(1,), (127,), (129,), (300, 7), (1100, 500)]      # the last: a full [128, 4096] tile + remainders
# fp32: the same operations in the same order, an ulp or two apart; torch fuses some multiply-adds (fma),
# so where an update cancels the parameter the difference is an ulp of the operands, not of the result:
# errors are measured relative to the tensor's scale (max |value|)
RTOL, SCALE_TOL = 1e-6, 1e-6


def params(dtype=torch.float32, seed=0):
    g = torch.Generator().manual_seed(seed)
    return [torch.randn(s, generator=g).to(dtype).requires_grad_() for s in SHAPES]


def clone(ps, dtype=None):
    return [p.detach().clone().to(dtype or p.dtype).requires_grad_() for p in ps]


def set_grads(step, *groups, dtype=torch.float32, scale=1.0):
    g = torch.Generator().manual_seed(100 + step)
    grads = [(torch.randn(s, generator=g) * scale).to(dtype) for s in SHAPES]
    for ps in groups:
        for p, gr in zip(ps, grads):
            p.grad = gr.clone().to(p.dtype) if p.dtype == dtype else gr.clone().float()
    return grads


def close(a, b, rtol=RTOL, atol=None):
    b = b.detach().float().numpy()
    atol = SCALE_TOL * float(np.abs(b).max()) if atol is None else atol
    np.testing.assert_allclose(a.detach().float().numpy(), b, rtol=rtol, atol=atol)


def norm64(ps) -> float:
    return float(np.sqrt(sum(float((p.grad.double() ** 2).sum()) for p in ps)))


def test_adamw_fp32_matches_torch_over_5_steps():
    ref = params()
    mine = clone(ref)
    o_ref = torch.optim.AdamW(ref, lr=1e-2, betas=(0.9, 0.99), eps=1e-8, weight_decay=0.1)
    o_mine = topt.AdamW(mine, lr=1e-2, betas=(0.9, 0.99), eps=1e-8, weight_decay=0.1)
    for step in range(5):
        set_grads(step, ref, mine)
        o_ref.step()
        o_mine.step()
    for a, b in zip(mine, ref):
        close(a, b)
        close(o_mine.state[a]["exp_avg"], o_ref.state[b]["exp_avg"], rtol=1e-5)
        close(o_mine.state[a]["exp_avg_sq"], o_ref.state[b]["exp_avg_sq"], rtol=1e-5)
    assert o_mine.last_step.kind == "adamw" and o_mine.last_step.latency_s > 0
    assert o_mine.state_bytes() == {"master_weights": 0, "exp_avg": 4 * sum(p.numel() for p in ref),
                                    "exp_avg_sq": 4 * sum(p.numel() for p in ref),
                                    "total": 8 * sum(p.numel() for p in ref)}


@pytest.mark.parametrize("momentum,nesterov,wd", [(0.0, False, 0.0), (0.9, False, 0.1), (0.9, True, 0.01)])
def test_sgd_fp32_matches_torch_over_5_steps(momentum, nesterov, wd):
    ref = params(seed=1)
    mine = clone(ref)
    o_ref = torch.optim.SGD(ref, lr=0.05, momentum=momentum, weight_decay=wd, nesterov=nesterov)
    o_mine = topt.SGD(mine, lr=0.05, momentum=momentum, weight_decay=wd, nesterov=nesterov)
    for step in range(5):
        set_grads(step, ref, mine)
        o_ref.step()
        o_mine.step()
    for a, b in zip(mine, ref):
        close(a, b)
        if momentum:
            close(o_mine.state[a]["momentum_buffer"], o_ref.state[b]["momentum_buffer"], rtol=1e-5)


def test_param_groups_keep_their_own_hyper_parameters():
    ref = params(seed=8)
    mine = clone(ref)
    o_ref = torch.optim.AdamW([{"params": ref[:2]}, {"params": ref[2:], "lr": 0.1, "weight_decay": 0.0}], lr=1e-3)
    o_mine = topt.AdamW([{"params": mine[:2]}, {"params": mine[2:], "lr": 0.1, "weight_decay": 0.0}], lr=1e-3)
    for step in range(2):
        set_grads(step, ref, mine)
        o_ref.step()
        o_mine.step()
    for a, b in zip(mine, ref):
        close(a, b)


@pytest.mark.parametrize("kind", ["adamw", "sgd"])
def test_bf16_params_with_fp32_master_track_torch_fp32(kind):
    """The master follows torch's fp32 optimizer fed the same (bf16) gradients; the bf16 parameter is
    the master rounded to nearest even (ml_dtypes, via torch's own .to(bfloat16))."""
    mine = params(torch.bfloat16, seed=2)
    ref = clone(mine, torch.float32)
    if kind == "adamw":
        o_ref = torch.optim.AdamW(ref, lr=1e-2, weight_decay=0.1)
        o_mine = topt.AdamW(mine, lr=1e-2, weight_decay=0.1)
    else:
        o_ref = torch.optim.SGD(ref, lr=1e-2, momentum=0.9, weight_decay=0.1, nesterov=True)
        o_mine = topt.SGD(mine, lr=1e-2, momentum=0.9, weight_decay=0.1, nesterov=True)
    for step in range(5):
        set_grads(step, mine, ref, dtype=torch.bfloat16)
        o_ref.step()
        o_mine.step()
    for a, b in zip(mine, ref):
        master = o_mine.state[a]["master"]
        assert master.dtype == torch.float32 and a.dtype == torch.bfloat16
        close(master, b)
        assert torch.equal(a.detach(), master.to(torch.bfloat16))
    n = sum(p.numel() for p in mine)
    assert o_mine.state_bytes()["total"] == (12 if kind == "adamw" else 8) * n
    assert o_mine.state_bytes()["master_weights"] == 4 * n


def test_state_dict_round_trip_keeps_fp32_master_and_states():
    mine = params(torch.bfloat16, seed=6)[:3]
    opt = topt.AdamW(mine, lr=1e-2)
    for step in range(2):
        for p in mine:
            p.grad = torch.full(p.shape, 0.3 * (step + 1), dtype=torch.bfloat16)
        opt.step()
    other = topt.AdamW(clone(mine), lr=1e-2)
    other.load_state_dict(opt.state_dict())
    for a, b in zip(other.param_groups[0]["params"], mine):
        for k in ("master", "exp_avg", "exp_avg_sq"):
            assert other.state[a][k].dtype == torch.float32
            assert torch.equal(other.state[a][k], opt.state[b][k])
        assert other.state[a]["step"] == 2


@pytest.mark.parametrize("cls", [topt.SGD, topt.AdamW])
def test_stochastic_rounding_keeps_updates_below_half_an_ulp(cls):
    """bf16 params without master weights, steps of 1e-3 from 1.0 (SGD: lr * grad; AdamW with a constant
    gradient and no weight decay: lr * g / (|g| + eps)), where the bf16 gap is 2^-8 (below 1) or 2^-7:
    round to nearest even loses every update; stochastic rounding is unbiased, so the mean over 2,048
    parameters after 40 steps is 1 - 0.04 within 6 standard deviations (each step adds at most gap^2/4
    variance per parameter: sd of the mean <= sqrt(40/4) * 2^-7 / sqrt(2048))."""
    steps, lr, n = 40, 1e-3, 2048
    results = {}
    for sr in (False, True):
        p = torch.ones(n, dtype=torch.bfloat16, requires_grad=True)
        extra = {"weight_decay": 0.0} if cls is topt.AdamW else {}
        opt = cls([p], lr=lr, master_weights=False, stochastic_rounding=sr, seed=5, **extra)
        for _ in range(steps):
            p.grad = torch.ones(n, dtype=torch.bfloat16)
            opt.step()
        results[sr] = p.detach().float().numpy().astype(np.float64)
    assert (results[False] == 1.0).all()
    sd = np.sqrt(steps / 4) * 2.0 ** -7 / np.sqrt(n)
    assert abs(results[True].mean() - (1 - steps * lr)) < 6 * sd
    assert len(np.unique(results[True])) > 1


def test_stochastic_rounding_is_deterministic_per_seed_and_default_off():
    def run(sr, seed):
        p = torch.linspace(-1, 1, 300, dtype=torch.float32).to(torch.bfloat16).requires_grad_()
        opt = topt.AdamW([p], lr=1e-3, stochastic_rounding=sr, seed=seed)
        for step in range(2):
            p.grad = torch.full((300,), 0.5 - step, dtype=torch.bfloat16)
            opt.step()
        return p.detach().clone(), opt.state[p]["master"]
    (p1, m1), (p1b, _), (p2, _), (p_off, m_off) = run(True, 1), run(True, 1), run(True, 2), run(False, 0)
    assert torch.equal(p1, p1b) and not torch.equal(p1, p2)
    assert torch.equal(m1, m_off)                   # rounding the bf16 copy never feeds back into the master
    assert torch.equal(p_off, m_off.to(torch.bfloat16))
    assert not torch.equal(p1, p_off)
    # SR picks one of the master's two bf16 neighbours: within one bf16 gap (2^-7 relative)
    close(p1, m1, rtol=2.0 ** -7, atol=0)


def test_clip_grad_norm_matches_torch():
    """The norm is checked against float64 (torch's fp32 norm of 550,000 squares is itself ~4e-6 off);
    the clipped gradients against torch's, within that difference of the coefficients."""
    for scale, max_norm in ((3.0, 1.0), (0.01, 1.0)):          # clipped, and left alone (coef 1)
        ref, mine = params(seed=3), params(seed=3)
        set_grads(0, ref, mine, scale=scale)
        exact = norm64(ref)
        n_ref = torch.nn.utils.clip_grad_norm_(ref, max_norm)
        n_mine = topt.clip_grad_norm_(mine, max_norm)
        assert float(n_mine) == pytest.approx(exact, rel=1e-6)
        assert float(n_mine) == pytest.approx(float(n_ref), rel=1e-5)
        for a, b in zip(mine, ref):
            close(a.grad, b.grad, rtol=1e-5)


def test_adamw_with_max_grad_norm_matches_clip_then_step():
    ref = params(seed=4)
    mine = clone(ref)
    o_ref = torch.optim.AdamW(ref, lr=1e-2)
    o_mine = topt.AdamW(mine, lr=1e-2, max_grad_norm=0.5)
    for step in range(3):
        set_grads(step, ref, mine, scale=2.0)
        exact = norm64(ref)
        torch.nn.utils.clip_grad_norm_(ref, 0.5)
        o_ref.step()
        o_mine.step()
        assert o_mine.last_step.grad_norm == pytest.approx(exact, rel=1e-6)
    for a, b in zip(mine, ref):
        close(a, b, rtol=1e-5, atol=1e-6)


def test_accumulate_matches_summed_grads():
    accs = [torch.zeros(s) for s in SHAPES]
    ref = [torch.zeros(s) for s in SHAPES]
    for micro in range(3):
        grads = set_grads(micro, [], dtype=torch.bfloat16)
        rep = topt.accumulate_(accs, grads, return_report=True)
        for r, g in zip(ref, grads):
            r.add_(g.float())
    for a, r in zip(accs, ref):
        assert torch.equal(a, r)                    # fp32 adds in the same order: exact
    assert rep.kind == "accumulate" and rep.dma_bytes == sum(r.numel() for r in ref) * (4 + 4 + 2)


def test_step_time_between_hbm_bound_and_3x():
    """Timing-only AdamW step of N fp32 params: it moves 28 bytes per parameter (read p, g, m, v; write
    p, m, v), so its time is at least 28 N / (the NeuronCore's share of the chip's HBM bandwidth)."""
    n = 8 * 128 * 4096
    p = torch.empty(n, device="meta", requires_grad=True)
    opt = topt.AdamW([p], lr=1e-3, target="trn2", numerics=False)
    opt.step()
    chip = get_chip("trn2")
    bound = 28 * n / (chip.hbm_bytes_per_s / chip.cores_per_chip)
    rep = opt.last_step
    assert rep.dma_bytes == 28 * n and rep.mode == "timing-only"
    assert bound <= rep.latency_s <= 3 * bound
    assert rep.state_bytes == 8 * n


def test_timing_only_writes_nothing_and_bad_options_are_refused():
    p = torch.zeros(10, requires_grad=True)
    opt = topt.SGD([p], lr=1.0, numerics=False)
    p.grad = torch.ones(10)
    opt.step()
    assert torch.equal(p, torch.zeros(10)) and opt.last_step.mode == "timing-only"
    norm, rep = topt.clip_grad_norm_([p], 1.0, numerics=False, return_report=True)
    assert torch.isnan(norm) and rep.grad_norm is None and rep.latency_s > 0
    with pytest.raises(OptionError, match="dampening"):
        topt.SGD([p], lr=0.1, momentum=0.9, dampening=0.1)
    with pytest.raises(OptionError, match="beta2"):
        topt.AdamW([p], betas=(0.9, 1.0))
    q = torch.zeros(3, dtype=torch.float64, requires_grad=True)
    q.grad = torch.ones(3, dtype=torch.float64)
    with pytest.raises(DtypeError, match="float64"):
        topt.AdamW([q]).step()
