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
