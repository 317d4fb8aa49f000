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
