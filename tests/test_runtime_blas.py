"""Running on the simulator limits OpenBLAS to one thread only for the run; the host's count comes back."""
import numpy as np
import pytest

torch = pytest.importorskip("torch")

from trnlab.torch import blas  # noqa: E402


@pytest.fixture
def three_threads():
    libs = blas._libraries()
    if not libs:
        pytest.skip("no OpenBLAS loaded by numpy")
    before = [get() for get, _ in libs]
    for _, put in libs:
        put(3)
    yield
    for (_, put), n in zip(libs, before):
        put(n)


def test_blas_threads_scopes_and_restores(three_threads):
    with blas.blas_threads(1):
        assert blas.thread_counts() == [1] * len(blas.thread_counts())
        with blas.blas_threads(1):
            pass
        assert set(blas.thread_counts()) == {1}      # an inner run's exit does not restore early
    assert set(blas.thread_counts()) == {3}


def test_restored_after_an_error(three_threads):
    with pytest.raises(ZeroDivisionError):
        with blas.blas_threads(1):
            1 / 0
    assert set(blas.thread_counts()) == {3}


def test_compiled_model_run_leaves_the_process_blas_setting_alone(three_threads):
    import trnlab.torch as tt
    model = torch.nn.Linear(16, 8)
    x = torch.randn(4, 16)
    seen = []
    compiled = tt.compile(model, (x,), target="trn2", dtype=torch.float32)
    compiled(x, progress=lambda *a, **k: seen.append(set(blas.thread_counts())))
    assert seen and all(s == {1} for s in seen)      # single-threaded while simulating
    assert set(blas.thread_counts()) == {3}          # and the host's setting afterwards
    assert np.isfinite(compiled(x).detach().numpy()).all()
