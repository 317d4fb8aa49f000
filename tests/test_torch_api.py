"""trnlab.torch.compile's CompiledModel called like the model: argument guards, new input signatures,
in-place state updates, and the user's objects left as they were. Oracle: eager PyTorch."""
import pytest

torch = pytest.importorskip("torch")

import trnlab.torch as tt  # noqa: E402
from trnlab.errors import ModelInputError, TrnlabError  # noqa: E402

FP32_BOUND = 1e-3      # trnlab.torch.report.BOUNDS["float32"], relative to the largest |output|


def close(got, ref, bound=FP32_BOUND):
    return got.shape == ref.shape and float((got - ref).abs().max()) <= bound * float(ref.abs().max())


def mlp():
    torch.manual_seed(0)
    return torch.nn.Sequential(torch.nn.Linear(64, 32), torch.nn.ReLU())


@pytest.mark.parametrize("batch", [4, 16])
def test_other_batch_size_recompiles_and_matches_eager(batch):
    """Compiled at batch 8: batch 4 used to return rows 4-7 of NaN, batch 16 an error in gemm.py."""
    m = mlp()
    fn = tt.compile(m, (torch.randn(8, 64),), dtype=torch.float32)
    x = torch.randn(batch, 64)
    got = fn(x)
    with torch.no_grad():
        ref = m(x)
    assert not torch.isnan(got).any() and close(got, ref)
    assert fn.report.numerics_ok and len(fn.variants) == 2


def test_same_signature_reuses_the_compiled_variant():
    fn = tt.compile(mlp(), (torch.randn(8, 64),), dtype=torch.float32)
    fn(torch.randn(8, 64))
    assert len(fn.variants) == 1


def test_extra_argument_is_refused_naming_the_signature():
    fn = tt.compile(mlp(), (torch.randn(8, 64),), dtype=torch.float32)
    x = torch.randn(8, 64)
    with pytest.raises(ModelInputError) as info:
        fn(x, x)
    msg = str(info.value)
    assert "too many positional arguments" in msg and "forward(input)" in msg
    assert "(float32[8, 64], float32[8, 64])" in msg


def test_missing_argument_is_named():
    fn = tt.compile(mlp(), (torch.randn(8, 64),), dtype=torch.float32)
    with pytest.raises(ModelInputError, match="missing a required argument: 'input'"):
        fn()


class TwoInputs(torch.nn.Module):
    def __init__(self):
        super().__init__()
        self.lin = torch.nn.Linear(16, 16)

    def forward(self, x, y, scale: float = 2.0):
        return self.lin(x) * scale + y


def test_unknown_keyword_is_named():
    x = torch.randn(4, 16)
    fn = tt.compile(TwoInputs(), (x, x), dtype=torch.float32)
    with pytest.raises(ModelInputError, match="unexpected keyword argument 'z'"):
        fn(x, x, z=x)


def test_keywords_and_new_python_values_give_eagers_result():
    """A Python scalar is baked into the exported graph: a new value needs its own variant (it used
    to be ignored), and y passed by keyword is the same call as y passed by position."""
    torch.manual_seed(1)
    m = TwoInputs()
    x, y = torch.randn(4, 16), torch.randn(4, 16)
    fn = tt.compile(m, (x, y), dtype=torch.float32)
    with torch.no_grad():
        assert close(fn(x, y=y), m(x, y))
        assert len(fn.variants) == 1
        assert close(fn(x, y, scale=3.0), m(x, y, scale=3.0))
    assert len(fn.variants) == 2


def test_model_input_error_is_a_trnlab_error():
    assert issubclass(ModelInputError, TrnlabError) and issubclass(ModelInputError, TypeError)


class Counter(torch.nn.Module):
    def __init__(self):
        super().__init__()
        self.register_buffer("count", torch.zeros(1))
        self.lin = torch.nn.Linear(4, 4)

    def forward(self, x):
        self.count += 1
        return self.lin(x) * self.count


def test_buffer_mutation_is_written_back_like_eager():
    """Eager counts 1, 2, 3; trnlab used to fold the buffer at capture and return 1, 1, 1."""
    torch.manual_seed(2)
    m, twin = Counter(), Counter()
    twin.load_state_dict(m.state_dict())
    x = torch.randn(2, 4)
    fn = tt.compile(m, (x,), dtype=torch.float32)
    assert float(m.count) == 0.0                          # compiling is not a call
    for expected in (1.0, 2.0, 3.0):
        got = fn(x)
        with torch.no_grad():
            ref = twin(x)
        assert float(m.count) == expected == float(twin.count)
        assert close(got, ref) and fn.report.numerics_ok   # the check ran eager on a copy


class InputMutation(torch.nn.Module):
    def forward(self, x):
        x.mul_(2)
        return x + 1


def test_input_mutation_follows_eager_but_not_at_compile():
    x = torch.arange(6, dtype=torch.float32).reshape(2, 3)
    original = x.clone()
    fn = tt.compile(InputMutation(), (x,), dtype=torch.float32)
    assert torch.equal(x, original)                       # neither compile nor its numerics check wrote to x
    out = fn(x)
    assert torch.equal(x, original * 2) and torch.equal(out, original * 2 + 1)


class WithDropout(torch.nn.Module):
    def __init__(self):
        super().__init__()
        self.lin = torch.nn.Linear(8, 8)
        self.drop = torch.nn.Dropout(0.5)
        self.register_buffer("offset", torch.full((8,), 0.5))

    def forward(self, x):
        return self.drop(self.lin(x)) + self.offset


def test_compile_leaves_the_users_objects_unchanged():
    torch.manual_seed(3)
    m = WithDropout()                                     # a fresh module is in training mode
    m.drop.eval()                                         # a per-submodule flag must survive too
    flags = {name: sub.training for name, sub in m.named_modules()}
    params = {k: (v, v.detach().clone()) for k, v in m.state_dict(keep_vars=True).items()}
    x = torch.randn(4, 8)
    x_copy = x.clone()
    fn = tt.compile(m, (x,))                              # bf16: the cast must happen on a copy
    fn(x)
    assert {name: sub.training for name, sub in m.named_modules()} == flags
    for k, v in m.state_dict(keep_vars=True).items():
        obj, value = params[k]
        assert v is obj and v.dtype == torch.float32 and torch.equal(v.detach(), value), k
    assert torch.equal(x, x_copy) and x.dtype == torch.float32


@pytest.mark.parametrize("dtype", [None, torch.bfloat16, torch.float32])
def test_fp32_model_returns_fp32(dtype):
    """The device computes in the compute dtype; outputs come back in the dtype eager returns."""
    m = mlp()
    kw = {} if dtype is None else {"dtype": dtype}
    fn = tt.compile(m, (torch.randn(8, 64),), **kw)
    assert fn(torch.randn(8, 64)).dtype == torch.float32 == fn.last_run.outputs.dtype


def test_bf16_model_returns_bf16():
    m = mlp().to(torch.bfloat16)
    fn = tt.compile(m, (torch.randn(8, 64, dtype=torch.bfloat16),))
    assert fn(torch.randn(8, 64, dtype=torch.bfloat16)).dtype == torch.bfloat16


class Raises(torch.nn.Module):
    def __init__(self):
        super().__init__()
        self.lin = torch.nn.Linear(4, 4)

    def forward(self, x):
        raise ValueError("model bug")


def test_training_flag_restored_when_capture_fails():
    m = Raises()
    with pytest.raises(Exception, match="model bug"):
        tt.compile(m, (torch.randn(2, 4),))
    assert m.training and m.lin.training


def test_one_tensor_as_example_inputs_and_keyword_examples():
    torch.manual_seed(4)
    m = TwoInputs()
    x, y = torch.randn(4, 16), torch.randn(4, 16)
    fn = tt.compile(m, (x,), dtype=torch.float32, example_kwargs={"y": y})
    with torch.no_grad():
        assert close(fn.last_run.outputs, m(x, y))
    single = tt.compile(mlp(), torch.randn(8, 64), dtype=torch.float32)   # used to be split into 8 rows
    assert single.report.numerics_ok and single.last_run.outputs.shape == (8, 32)


def test_other_input_dtype_gets_its_own_variant():
    torch.manual_seed(5)
    m = torch.nn.Sequential(torch.nn.Embedding(32, 16), torch.nn.Linear(16, 8))
    ids = torch.randint(0, 32, (2, 6))
    fn = tt.compile(m, (ids,), dtype=torch.float32)
    ids32 = torch.randint(0, 32, (2, 6), dtype=torch.int32)
    got = fn(ids32)
    with torch.no_grad():
        assert close(got, m(ids32))
    assert len(fn.variants) == 2 and fn.report.numerics_ok
