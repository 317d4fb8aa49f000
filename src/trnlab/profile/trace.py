"""Chrome trace-event JSON (opens in ui.perfetto.dev and chrome://tracing).

Format: {"traceEvents": [...], "displayTimeUnit": "ns"}; "X" complete events with ts/dur in
microseconds; "M" metadata events name the process (the NeuronCore; one per rank of a multi-rank launch) and one
thread per track: the four compute engines, every DMA queue the run used, the collective unit ("cc").
"""
from __future__ import annotations

import dataclasses
import json
from pathlib import Path

from trnlab.profile.outputs import write_text_atomic
from trnlab.profile.source import ENGINES, ProfileData, from_run, track_order

_EVENT_CORE = {"name", "track", "start", "end", "loc", "api", "operands", "flops", "nbytes"}
PID = 1
US = 1e6    # seconds -> microseconds


def track_ids(data: ProfileData) -> dict[str, int]:
    """track name -> tid: engines 1..4, then used DMA queues and any other track in order."""
    tracks = set(ENGINES) | {e.track for e in data.events} | {t for t, b in data.busy.items() if b > 0}
    return {t: i + 1 for i, t in enumerate(sorted(tracks, key=track_order))}


def slice_args(event) -> dict:
    operands = event.operands
    args = {"api": event.api, "loc": event.loc, "operands": event.detail,
            "shapes": [list(o.shape) for o in operands], "dtypes": [o.dtype for o in operands],
            "flops": event.flops, "bytes": event.nbytes, "duration_ns": (event.end - event.start) * 1e9}
    if event.nbytes and event.end > event.start:
        args["GB_per_s"] = event.nbytes / (event.end - event.start) / 1e9
    for f in dataclasses.fields(event) if dataclasses.is_dataclass(event) else ():
        value = getattr(event, f.name)        # fields the timing model may add later (stall, queue, ...)
        if f.name not in _EVENT_CORE and isinstance(value, (str, int, float, bool, type(None))):
            args[f.name] = value
    return args


def chrome_trace(obj) -> dict:
    """The trace as a dict; obj is ProfileData, a KernelRun, a Machine or a Kernel. A multi-rank launch has one
    process per rank (pid = rank + 1), each with its engines, DMA queues and collective ("cc") track."""
    data = obj if isinstance(obj, ProfileData) else from_run(obj)
    parts = [_process(r, PID + i, f"rank {i}: ") for i, r in enumerate(data.ranks)] or [_process(data, PID, "")]
    return {"traceEvents": [e for part in parts for e in part], "displayTimeUnit": "ns",
            "otherData": {"kernel": data.name, "target": data.chip.name, "total_us": data.total_s * US,
                          **({"ranks": len(data.ranks)} if data.ranks else {})}}


def _process(data: ProfileData, pid: int, prefix: str) -> list:
    """One NeuronCore's metadata and slices (prefix: "rank r: " in a multi-rank trace)."""
    tids = track_ids(data)
    meta = [{"ph": "M", "pid": pid, "tid": 0, "name": "process_name",
             "args": {"name": f"{prefix}{data.name} on {data.chip.name} NeuronCore"}}]
    if prefix:
        meta.append({"ph": "M", "pid": pid, "tid": 0, "name": "process_sort_index", "args": {"sort_index": pid}})
    for track, tid in tids.items():
        meta.append({"ph": "M", "pid": pid, "tid": tid, "name": "thread_name", "args": {"name": track}})
        meta.append({"ph": "M", "pid": pid, "tid": tid, "name": "thread_sort_index", "args": {"sort_index": tid}})
    slices = [{"ph": "X", "pid": pid, "tid": tids[e.track], "name": e.name, "cat": e.track.split(".")[0],
               "ts": e.start * US, "dur": (e.end - e.start) * US, "args": slice_args(e)}
              for e in data.events]
    return meta + slices


def write_trace(obj, path) -> Path:
    return write_text_atomic(path, json.dumps(chrome_trace(obj)))
