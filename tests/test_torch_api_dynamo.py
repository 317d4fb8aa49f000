"""The "trnlab" torch.compile backend: state updates and input signatures. Oracle: eager PyTorch."""
import pytest

torch = pytest.importorskip("torch")

import trnlab.torch  # noqa: E402,F401  (registers the backend)
from trnlab.errors import ModelInputError  # noqa: E402
from trnlab.torch.dynamo import trnlab_backend  # noqa: E402


class Counter(torch.nn.Module):
    def __init__(self):
        super().__init__()
        self.register_buffer("count", torch.zeros(1))
        self.lin = torch.nn.Linear(4, 4)

    def forward(self, x):
        self.count += 1
        return self.lin(x) * self.count


@pytest.mark.parametrize("check", [False, True])
def test_buffer_mutation_under_torch_compile_counts_like_eager(check):
    """Dynamo passes the buffer as a graph input the graph mutates; the count used to advance only
    through the numerics check's eager run on the caller's tensors (never with check=False)."""
    torch._dynamo.reset()
    torch.manual_seed(0)
    m, twin = Counter(), Counter()
    twin.load_state_dict(m.state_dict())
    compiled = torch.compile(m, backend="trnlab", options={"dtype": "fp32", "check": check})
    x = torch.randn(2, 4)
    for expected in (1.0, 2.0, 3.0):
        got = compiled(x)
        with torch.no_grad():
            ref = twin(x)
        assert float(m.count) == expected == float(twin.count)
        assert float((got - ref).abs().max()) <= 1e-3 * float(ref.abs().max())


class Affine(torch.nn.Module):
    def __init__(self):
        super().__init__()
        self.lin = torch.nn.Linear(8, 8)

    def forward(self, x, y):
        return self.lin(x) + y


def test_backend_never_reuses_a_graph_compiled_for_other_inputs():
    """The backend's callable compiles per input signature; a different count of inputs is refused."""
    torch.manual_seed(1)
    m = Affine()
    gm = torch.fx.symbolic_trace(m)
    x, y = torch.randn(2, 8), torch.randn(2, 8)
    run = trnlab_backend(gm, [x, y], options={"dtype": "fp32"})
    for rows in (2, 6, 2):
        x, y = torch.randn(rows, 8), torch.randn(rows, 8)
        (got,) = run(x, y)
        with torch.no_grad():
            ref = m(x, y)
        assert got.shape == ref.shape and float((got - ref).abs().max()) <= 1e-3 * float(ref.abs().max())
    with pytest.raises(ModelInputError, match="missing a required argument: 'y'"):
        run(x)
