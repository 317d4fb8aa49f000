"""What-if of the SBUF spill model on AWS's fused-Mamba v2 kernel at seq_len 7168 and 8192 (trn1), the two
calibration rows that spill (docs/calibration.md, "Session 6"). Each of the three spill rules is toggled
in this process only:
  A  a reloaded tile takes a free address (off: back to its old bytes, even where live tiles sit now)
  B  victims by use distance per byte of DMA the eviction adds (off: plain furthest next use)
  C  spill DMAs at the compiled-graph DMA efficiency, SpillCopy (off: the NKI tile loads' DmaCopy rate)

Usage: python benchmarks/mamba_spill_whatif.py [--channels 512] [--models 0,A,B,C,AB,AC,BC,ABC]
The kernel is run on `channels` of the 4096 channels and its time scaled (the channel tiles are
independent and identical).
"""
from __future__ import annotations

import argparse
import warnings

from trnlab.bench import calibrate
from trnlab.core import machine, memory
from trnlab.isa import instructions

_reload, _order = memory.OnChipMemory.reload, memory.OnChipMemory._victim_order


def _reload_at_old_address(self, alloc, pinned):
    b0 = alloc.b0
    victims = _reload(self, alloc, pinned)
    if not alloc.spilled:
        alloc.b0 = b0
    return victims


def _furthest_next_use(self):
    if self.next_use is None:
        return _order(self)
    never = float("inf")

    def key(a):
        away = self.next_use(a)
        return (-(never if away is None else away), a.seq)
    return key


def use(model: str) -> None:
    memory.OnChipMemory.reload = _reload if "A" in model else _reload_at_old_address
    memory.OnChipMemory._victim_order = _order if "B" in model else _furthest_next_use
    machine.register_spill_copy(instructions.SpillCopy if "C" in model else instructions.DmaCopy)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--channels", type=int, default=512)
    ap.add_argument("--models", default="0,A,B,C,AB,AC,BC,ABC")
    args = ap.parse_args()
    warnings.simplefilter("ignore")
    scale = 4096 / args.channels
    try:
        for model in args.models.split(","):
            use(model)
            for seq in (7168, 8192):
                point = next(p for p in calibrate.POINTS if p.name == f"mamba_v2_seq{seq}_c4096")
                run = calibrate.predict_run(point, shape=(seq, args.channels))
                us = run.device_latency_s * 1e6 * scale
                print(f"{model:4s} seq {seq}: {us / 1e3:7.2f} ms, error {us / point.measured_us - 1:+.1%}, "
                      f"spill {run.machine.stats.spill_bytes * scale / 1e9:.2f} GB", flush=True)
    finally:
        use("ABC")


if __name__ == "__main__":
    main()
