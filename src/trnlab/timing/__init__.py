"""The clock: engine-concurrent scheduling of the instruction stream (see scheduler.py)."""

__all__ = ["Scheduler"]


def __getattr__(name: str):
    # Lazy: the ISA imports trnlab.timing.costs (its DMA model), and the scheduler imports the ISA.
    if name == "Scheduler":
        from trnlab.timing.scheduler import Scheduler
        return Scheduler
    raise AttributeError(f"module 'trnlab.timing' has no attribute {name!r}")
