"""`trnlab collective OP`: a simulated nccom-test (SDK tools/neuron-sys-tools/nccom-test.rst,
https://github.com/aws-neuron/aws-neuron-sdk/blob/master/tools/neuron-sys-tools/nccom-test.rst).

Same options, defaults (-b 32M -e 32M -d uint8) and table: sizes from -b to -e multiplied by -f or stepped by
-i (default (max-min)/10), one row each with size, count, type, time, algorithm bandwidth and bus bandwidth,
plus the algorithm (nccom-test prints it with --show-algorithm). -r defaults to all the system's ranks.
--release picks a runtime release whose fixed costs were measured apart (collectives.RELEASES).
alltoallv takes nccom-test's --variable-size-op-metadata JSON (per-rank send counts and displacements; without it
the buffer is split evenly, as alltoall); its size column adds the metadata words, as the doc's example does. Like nccom-test, "GB/s" is GiB/s (2^30 bytes per second), sizes are
binary (1KB = 1024 B) and a size is rounded down to whole elements (whole elements per rank for the
collectives that split the buffer between ranks, as nccl-tests does).
"""
from __future__ import annotations

import json
import re
from dataclasses import dataclass

import numpy as np

from trnlab.errors import CollectiveError, TargetError

# nccom-test's operation names and ours
OP_NAMES = {"all-reduce": "all-reduce", "all_reduce": "all-reduce", "allr": "all-reduce",
            "all-gather": "all-gather", "all_gather": "all-gather", "allg": "all-gather",
            "reduce-scatter": "reduce-scatter", "reduce_scatter": "reduce-scatter", "redsct": "reduce-scatter",
            "all-to-all": "all-to-all", "all_to_all": "all-to-all", "alltoall": "all-to-all",
            "all-to-allv": "all-to-allv", "all_to_allv": "all-to-allv", "alltoallv": "all-to-allv",
            "permute": "permute", "send-recv": "send-recv", "send_recv": "send-recv", "sendrecv": "send-recv"}
DATATYPES = {"int8": 1, "uint8": 1, "fp8": 1, "int16": 2, "uint16": 2, "fp16": 2, "bf16": 2,
             "int32": 4, "uint32": 4, "fp32": 4, "int64": 8, "uint64": 8, "fp64": 8}
_SPLITS = ("all-gather", "reduce-scatter", "all-to-all", "all-to-allv")     # buffer divided between the ranks
_METADATA = "--variable-size-op-metadata"
_UNITS = {"": 1, "b": 1, "k": 1024, "kb": 1024, "kib": 1024, "m": 1024 ** 2, "mb": 1024 ** 2, "mib": 1024 ** 2,
          "g": 1024 ** 3, "gb": 1024 ** 3, "gib": 1024 ** 3}
GIB = 1024 ** 3
MAX_ROWS = 10_000


@dataclass(frozen=True)
class Sweep:
    op: str
    system: object          # SystemSpec (nodes applied)
    ranks: int
    sizes: tuple
    datatype: str
    pairs: "tuple | None" = None     # a permute's (source, target) ranks
    release: "str | None" = None     # runtime release whose fixed costs to use (None: the fit rows')
    counts: "tuple | None" = None    # an all-to-allv's send counts, n x n elements (None: even parts)
    displs: "tuple | None" = None    # and its send displacements, n x n elements


def _bad(option: str, value, valid: str):
    return CollectiveError(f"{option} {value!r} is not valid; valid values: {valid}")


def parse_bytes(option: str, text: str) -> int:
    match = re.fullmatch(r"\s*(\d+)\s*([a-zA-Z]*)\s*", str(text))
    if not match or match.group(2).lower() not in _UNITS:
        raise _bad(option, text, "a whole number of bytes with an optional unit K, KB, M, MB, G, GB (binary)")
    return int(match.group(1)) * _UNITS[match.group(2).lower()]


def _parse_int(option: str, text, low: int, high: int) -> int:
    try:
        value = int(str(text).strip())
    except ValueError:
        value = None
    if value is None or not low <= value <= high:
        raise _bad(option, text, f"an integer in {low}..{high}")
    return value


def parse_pairs(path: str, ranks: int) -> tuple:
    """nccom-test's --custom-src-target-pairs file: {"src_target_pairs": [[[src, dst], ...]]}."""
    option = "--custom-src-target-pairs"
    try:
        with open(path) as f:
            data = json.load(f)
        pairs = tuple((int(s), int(d)) for group in data["src_target_pairs"] for s, d in group)
    except (OSError, ValueError, KeyError, TypeError) as exc:
        raise _bad(option, path, f'a readable JSON file {{"src_target_pairs": [[[src, dst], ...]]}} ({exc})') from None
    for s_, d_ in pairs:
        if not (0 <= s_ < ranks and 0 <= d_ < ranks):
            raise _bad(option, path, f"pairs of ranks in 0..{ranks - 1}; it has {[s_, d_]}")
    return pairs


def parse_metadata(path: str, ranks: int) -> tuple:
    """nccom-test's --variable-size-op-metadata file for alltoallv: {"metadata": [{"send_counts": [...],
    "send_displs": [...], "recv_counts": [...], "recv_displs": [...]}, ...]}, one entry for every rank or one
    per rank, each array one element count per rank; receive metadata optional but, when given, matching the
    send metadata. Returns (counts, displs), n x n tuples (row i: rank i's)."""
    def bad(why):
        return _bad(_METADATA, path, f"a JSON file {{\"metadata\": [{{\"send_counts\": [...], \"send_displs\": "
                                     f"[...], \"recv_counts\": [...], \"recv_displs\": [...]}}]}} ({why})")
    try:
        with open(path) as f:
            entries = json.load(f)["metadata"]
        entries = [{k: [int(v) for v in e.get(k) or []] for k in ("send_counts", "send_displs", "recv_counts",
                                                                   "recv_displs")} for e in entries]
    except (OSError, ValueError, KeyError, TypeError, AttributeError) as exc:
        raise bad(exc) from None
    if len(entries) not in (1, ranks):
        raise bad(f"1 entry for every rank or {ranks}, one per rank; it has {len(entries)}")
    entries = entries * ranks if len(entries) == 1 else entries
    for r, e in enumerate(entries):
        for key, values in e.items():
            if (values or key == "send_counts") and (len(values) != ranks or min(values) < 0):
                raise bad(f"entry {r}: {key} must be {ranks} integers >= 0 (one per rank), got {values}")
    counts = tuple(tuple(e["send_counts"]) for e in entries)
    for j, e in enumerate(entries):
        for i, got in enumerate(e["recv_counts"]):
            if got != counts[i][j]:
                raise bad(f"entry {j}: recv_counts[{i}] = {got} but rank {i} sends {counts[i][j]} to rank {j}")
    displs = tuple(tuple(e["send_displs"]) if e["send_displs"] else
                   tuple(int(x) for x in np.cumsum((0,) + row[:-1])) for e, row in zip(entries, counts))
    return counts, displs


def _check_metadata(path: str, counts: tuple, displs: tuple, sizes: tuple, itemsize: int) -> None:
    """Every rank's parts lie in its send buffer at the smallest size of the sweep."""
    elements = min(sizes) // itemsize if sizes else 0
    for i, (row, at) in enumerate(zip(counts, displs)):
        for j, (c, d) in enumerate(zip(row, at)):
            if d + c > elements:
                raise _bad(_METADATA, path, f"parts inside the {elements}-element send buffer of -b/--minbytes; "
                                            f"rank {i}'s part for rank {j} is elements {d}..{d + c - 1}")


def parse(op: str, system: str, nodes, ranks, minbytes, maxbytes, stepfactor, datatype, stepbytes=None,
          pairs_file=None, release=None, metadata_file=None) -> Sweep:
    """Every option checked; a bad one raises CollectiveError naming the option, the value, the valid values."""
    from trnlab.hw.systems import cluster, get_system, system_names
    if op not in OP_NAMES:
        raise _bad("OP", op, ", ".join(OP_NAMES))
    try:
        base = get_system(system)
    except TargetError:
        raise _bad("--system", system, ", ".join(system_names())) from None
    n = _parse_int("--nodes", nodes, 1, 100_000)
    spec = cluster(base, n)
    r = spec.ranks if ranks is None else _parse_int("-r/--ranks", ranks, 2, spec.ranks)
    if r % n:
        raise _bad("-r/--ranks", ranks, f"a multiple of --nodes ({n}): ranks are spread evenly over the nodes")
    if datatype not in DATATYPES:
        raise _bad("-d/--datatype", datatype, ", ".join(DATATYPES))
    lo = parse_bytes("-b/--minbytes", minbytes)
    hi = parse_bytes("-e/--maxbytes", maxbytes)
    if hi < lo:
        raise _bad("-e/--maxbytes", maxbytes, f"a size >= -b/--minbytes ({lo} bytes)")
    if stepfactor is not None and stepbytes is not None:
        raise _bad("-i/--stepbytes", stepbytes, "nothing when -f/--stepfactor is given (one or the other)")
    if stepfactor is not None:
        f = _parse_int("-f/--stepfactor", stepfactor, 2, 1 << 30)
        if lo == 0:
            raise _bad("-b/--minbytes", minbytes, "a size >= 1 with -f/--stepfactor")
        sizes = _geometric(lo, hi, f)
    else:
        step = parse_bytes("-i/--stepbytes", stepbytes) if stepbytes is not None else max(1, (hi - lo) // 10)
        if step < 1:
            raise _bad("-i/--stepbytes", stepbytes, "a size >= 1")
        sizes = _arithmetic(lo, hi, step)
    pairs = None
    if pairs_file is not None:
        if OP_NAMES[op] != "permute":
            raise _bad("--custom-src-target-pairs", pairs_file, "a file only with the permute operation")
        pairs = parse_pairs(pairs_file, r)
    counts = displs = None
    if metadata_file is not None:
        if OP_NAMES[op] != "all-to-allv":
            raise _bad(_METADATA, metadata_file, "a file only with the alltoallv operation")
        counts, displs = parse_metadata(metadata_file, r)
        _check_metadata(metadata_file, counts, displs, sizes, DATATYPES[datatype])
    from trnlab.isa.collectives import RELEASES
    if release is not None and release not in RELEASES:
        raise _bad("--release", release, ", ".join(RELEASES))
    return Sweep(op=OP_NAMES[op], system=spec, ranks=r, sizes=sizes, datatype=datatype, pairs=pairs,
                 release=release, counts=counts, displs=displs)


def _geometric(lo: int, hi: int, factor: int) -> tuple:
    out, size = [], lo
    while size <= hi and len(out) < MAX_ROWS:
        out.append(size)
        size *= factor
    return tuple(out)


def _arithmetic(lo: int, hi: int, step: int) -> tuple:
    count = min(MAX_ROWS, (hi - lo) // step + 1)
    return tuple(lo + k * step for k in range(count))


def rows(sweep: Sweep) -> list:
    from trnlab.isa.collectives import collective_cost
    itemsize = DATATYPES[sweep.datatype]
    unit = itemsize * (sweep.ranks if sweep.op in _SPLITS else 1)
    out = []
    for size in sweep.sizes:
        nbytes = size // unit * unit + metadata_bytes(sweep)
        cost = collective_cost(sweep.op, nbytes, sweep.ranks, sweep.system, pairs=sweep.pairs, itemsize=itemsize,
                               release=sweep.release, counts=sweep.counts)
        out.append({"bytes": nbytes, "count": nbytes // itemsize, "type": sweep.datatype,
                    "latency_us": round(cost.latency_us, 3),
                    "algbw_gbs": round(cost.algbw_bytes_per_s / GIB, 3),
                    "busbw_gbs": round(cost.busbw_bytes_per_s / GIB, 3), "algorithm": cost.algorithm})
    return out


def metadata_bytes(sweep: Sweep) -> int:
    """nccom-test counts an alltoallv's metadata in its size: its example prints 1,048,608 B for -b 1MB over 2
    ranks, 1 MiB + 4 arrays (send/recv counts and displacements) x 2 ranks x 4 B [inferred: uint32 words]."""
    return 4 * sweep.ranks * 4 if sweep.op == "all-to-allv" else 0


def collective_command(op, *, system, nodes, ranks, minbytes, maxbytes, stepfactor, datatype,
                       json_out: bool, stepbytes=None, pairs_file=None, release=None, metadata_file=None) -> int:
    sweep = parse(op, system, nodes, ranks, minbytes, maxbytes, stepfactor, datatype, stepbytes, pairs_file,
                  release, metadata_file)
    table = rows(sweep)
    if json_out:
        print(json.dumps(table, indent=2))
        return 0
    _print_table(sweep, table)
    return 0


def _print_table(sweep: Sweep, table: list) -> None:
    from rich.table import Table

    from trnlab.console import make_console
    s = sweep.system
    runtime = f", runtime {sweep.release}" if sweep.release else ""
    title = (f"trnlab collective {sweep.op}: {sweep.ranks} ranks on {s.nodes} x {s.name} "
             f"({s.ranks_per_instance} ranks per instance{runtime}, simulated)")
    t = Table(title=title)
    for col in ("size(B)", "count(elems)", "type", "time(us)", "algbw(GB/s)", "busbw(GB/s)", "algorithm"):
        t.add_column(col, justify="left" if col in ("type", "algorithm") else "right")
    for r in table:
        t.add_row(str(r["bytes"]), str(r["count"]), r["type"], f"{r['latency_us']:.2f}", f"{r['algbw_gbs']:.2f}",
                  f"{r['busbw_gbs']:.2f}", r["algorithm"])
    console = make_console()
    console.print(t)
    avg = float(np.mean([r["busbw_gbs"] for r in table])) if table else 0.0
    console.print(f"Avg bus bandwidth: {avg:.4f} GB/s  (GB/s = GiB/s as in nccom-test; model constants: "
                  f"docs/calibration.md, Collectives)")
