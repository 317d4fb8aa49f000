"""Test-session settings.

Two xdist workers share 2 cores: one BLAS thread per worker avoids oversubscription, which made a
128x128x512 numpy matmul take ~40 ms instead of ~0.4 ms. Set before numpy is first imported."""
import os

os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")
os.environ.setdefault("OMP_NUM_THREADS", "1")
os.environ.setdefault("MKL_NUM_THREADS", "1")

# Hypothesis: 25 examples per property in CI; `python -m pytest --hypothesis-profile=deep` runs 400.
from hypothesis import HealthCheck, settings  # noqa: E402

for _name, _examples in (("ci", 25), ("deep", 400)):
    settings.register_profile(_name, max_examples=_examples, deadline=None,
                              suppress_health_check=[HealthCheck.too_slow])
settings.load_profile("ci")


# No skips: CI installs every extra (torch, transformers, hypothesis), so a skipped test can only hide a
# missing module or kernel of our own. A skip is reported as a failure naming its reason.
import pytest  # noqa: E402


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item, call):
    outcome = yield
    report = outcome.get_result()
    if report.skipped and not hasattr(report, "wasxfail"):
        report.outcome = "failed"
        report.longrepr = f"skipped tests are not allowed (tests/conftest.py): {report.longrepr}"


@pytest.hookimpl(hookwrapper=True)
def pytest_make_collect_report(collector):
    outcome = yield
    report = outcome.get_result()
    if report.skipped:
        report.outcome = "failed"
        report.longrepr = f"skipped test modules are not allowed (tests/conftest.py): {report.longrepr}"


@pytest.fixture(autouse=True, scope="module")
def _fresh_dynamo_per_module():
    """torch.compile's caches and recompile counts are per process and count every model of a class
    (trnlab.torch.train.RECOMPILE_LIMIT): without a reset a module's captures depend on which modules ran
    before it in the same worker. Reset after each module that used torch._dynamo (never imported here)."""
    import sys
    yield
    dynamo = sys.modules.get("torch._dynamo")
    if dynamo is not None:
        dynamo.reset()
