"""The clock: engine-concurrent scheduling of the instruction stream (see scheduler.py)."""
from trnlab.timing.scheduler import Scheduler

__all__ = ["Scheduler"]
