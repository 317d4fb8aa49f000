"""Speed of the collective model: an nccom-test-style sweep (issue 11's benchmark; goal < 10 s wall).

    PYTHONPATH=src python benchmarks/collective_speed.py

all-reduce, 64 ranks on 2 x trn2.48xlarge (LNC=2; as nccom-test's -r 64 -N 2: 32 ranks per instance, so the
all-reduce is hierarchical over EFA), sizes 8 B to 1 GiB by factor 2, through the same code as
`trnlab collective allr --system trn2.48xlarge -N 2 -r 64 -b 8 -e 1G -f 2 --json`; also all 128 ranks.
The import of trnlab is timed separately (once per process).
"""
from __future__ import annotations

import time

T0 = time.perf_counter()
from trnlab.bench.nccom_test import parse, rows  # noqa: E402
import trnlab.isa.collectives  # noqa: E402,F401
IMPORT_S = time.perf_counter() - T0


def sweep(ranks: int) -> tuple:
    t0 = time.perf_counter()
    table = rows(parse("all-reduce", "trn2.48xlarge", 2, ranks, "8", "1G", "2", "fp32"))
    return time.perf_counter() - t0, table


def main():
    print(f"import trnlab: {IMPORT_S:.2f} s")
    for ranks in (64, 128):
        wall, table = sweep(ranks)
        last = table[-1]
        print(f"all-reduce, {ranks} ranks on 2 x trn2.48xlarge, 8 B..1 GiB x2 ({len(table)} sizes): {wall:.3f} s wall "
              f"({'OK' if wall < 10 else 'OVER'} the 10 s goal); 1 GiB: {last['latency_us']:.0f} us, "
              f"busbw {last['busbw_gbs']:.1f} GB/s, {last['algorithm']}")


if __name__ == "__main__":
    main()
