"""Data parallelism for inference: `trnlab.torch.compile(model, inputs, dp=N[, tp=M, system=...])`.

N replicas of the model serve N slices of the batch (dim 0 of every tensor input), each replica on its own
NeuronCore, or on its own TP group of M cores (trnlab.torch.shard), so the call uses N x M ranks of the
system. Replicas share nothing and exchange nothing in a forward pass (no collective), so the call takes as
long as one replica on its slice. The replicas run the same graph on same-shaped slices: one compiled
replica runs every slice in turn (numerics: each slice is computed and checked against eager PyTorch; timing
only: one slice is simulated, its time is every replica's) and the outputs are concatenated along dim 0.
On the command line: `trnlab model NAME --dp N [--tp M] [--system NAME]` (trnlab.torch.cli).
Data parallelism for training (gradient all-reduce, ZeRO-1) is trnlab.torch.data_parallel
(`trnlab train --dp N`).
"""
from __future__ import annotations

from dataclasses import dataclass, field

import torch

from trnlab.errors import OptionError


def check_ranks(dp: int, tp: int, system) -> None:
    """dp replicas of tp ranks each must fit the system's ranks (OptionError naming both and the limit)."""
    if dp * tp > system.ranks:
        raise OptionError(f"dp={dp} x tp={tp} = {dp * tp} ranks exceeds the {system.ranks} ranks of {system.name}")


def batch_size(args: tuple, kwargs: dict, dp: int, name: str) -> int:
    """The batch (dim 0) every tensor input shares; it must split into dp equal slices."""
    sizes = {where: t.shape[0] for where, t in _tensors(args, kwargs) if t.dim() >= 1}
    if not sizes:
        raise OptionError(f"{name}: dp={dp} splits the batch (dim 0 of the tensor inputs), but no input is a "
                          f"tensor with a batch dim")
    if len(set(sizes.values())) > 1:
        listed = ", ".join(f"{where} {b}" for where, b in sizes.items())
        raise OptionError(f"{name}: dp={dp} splits dim 0 of every tensor input, but their sizes differ: {listed}")
    batch = next(iter(sizes.values()))
    if batch % dp:
        raise OptionError(f"{name}: dp={dp} does not divide the batch of {batch} (dim 0 of the inputs)")
    return batch


def _tensors(args: tuple, kwargs: dict):
    for i, a in enumerate(args):
        if isinstance(a, torch.Tensor):
            yield f"input {i}", a
    for k, v in kwargs.items():
        if isinstance(v, torch.Tensor):
            yield f"input {k!r}", v


def _slice(value, r: int, part: int):
    if isinstance(value, torch.Tensor) and value.dim() >= 1:
        return value[r * part:(r + 1) * part]
    return value


def _concat(outputs: list):
    first = outputs[0]
    if isinstance(first, torch.Tensor):
        return torch.cat(outputs, dim=0) if first.dim() >= 1 else first
    if isinstance(first, (tuple, list)):
        return type(first)(_concat([o[i] for o in outputs]) for i in range(len(first)))
    return first


@dataclass
class DataParallelReport:
    """The report of a data-parallel call: `replica` is one replica's Report (a ShardedReport with tp > 1);
    the call's latency is a replica's, its tokens and throughput are dp times a replica's. A decode report
    set on the replica (`replica.decode`, one replica's steps on its batch slice) reads back as `decode`,
    a DataParallelReport of dp such replicas."""
    replica: object
    dp: int
    tp: int
    system: str
    numerics_per_replica: list = field(default_factory=list)

    @property
    def ranks(self) -> int:
        return self.dp * self.tp

    @property
    def model(self) -> str:
        return self.replica.model

    @property
    def target(self) -> str:
        return self.replica.target

    @property
    def phase(self) -> str:
        return self.replica.phase

    @property
    def mfu(self) -> float:
        return self.replica.mfu          # dp x the FLOPs on dp x the cores in a replica's time

    @property
    def numerics(self) -> list:
        """Every replica's checks against eager PyTorch, replica after replica."""
        return [c for checks in self.numerics_per_replica for c in (checks or ())]

    @property
    def decode(self):
        d = getattr(self.replica, "decode", None)
        return None if d is None else DataParallelReport(d, self.dp, self.tp, self.system, [d.numerics])

    @property
    def latency_s(self) -> float:
        return self.replica.latency_s

    @property
    def tokens(self) -> int:
        return self.dp * self.replica.tokens

    @property
    def tokens_per_s(self) -> float:
        return self.dp * self.replica.tokens_per_s

    @property
    def usd_per_million_tokens(self) -> float:
        return self.replica.usd_per_million_tokens      # dp x the cores for dp x the tokens

    @property
    def collectives_us(self) -> float:
        return getattr(self.replica, "collectives_us", 0.0)

    @property
    def rank_latency_us(self) -> list:
        per = getattr(self.replica, "rank_latency_us", None) or [self.replica.latency_s * 1e6]
        return [t for _ in range(self.dp) for t in per]

    @property
    def numerics_ok(self) -> bool:
        return all(c.ok for c in self.numerics)

    def to_dict(self) -> dict:
        from dataclasses import asdict
        d = self.replica.to_dict()
        d.update({"dp": self.dp, "tp": self.tp, "ranks": self.ranks, "system": self.system,
                  "numerics_ok": self.numerics_ok,
                  "numerics_per_replica": [[asdict(c) for c in checks or ()] for checks in self.numerics_per_replica],
                  "latency_us": self.latency_s * 1e6, "tokens": self.tokens, "tokens_per_s": self.tokens_per_s,
                  "collectives_us": self.collectives_us, "rank_latency_us": self.rank_latency_us,
                  "decode": None if self.decode is None else self.decode.to_dict()})
        return d

    def to_json(self, **kw) -> str:
        """Strict JSON, as Report.to_json (a non-finite number is written as its string)."""
        from trnlab.torch.report import strict_json
        return strict_json(self.to_dict(), **kw)

    def describe(self) -> str:
        d = self.decode
        steps = (f"; decode {d.latency_s * 1e6:,.1f} us per step, {d.tokens_per_s:,.0f} tokens/s in all"
                 if d is not None else "")
        return (f"Data parallelism: {self.dp} replicas x TP {self.tp} = {self.ranks} ranks on {self.system}; "
                f"each replica runs 1/{self.dp} of the batch in {self.latency_s * 1e6:,.1f} us; "
                f"{self.tokens_per_s:,.0f} tokens/s in all{steps}")

    def print(self, console=None, top: int = 15) -> None:
        from rich.console import Console
        console = console or Console()
        self.replica.print(console, top)
        console.print(self.describe() + " (the tables above are one replica's)")

    def __str__(self) -> str:
        from trnlab.torch.report import printed_text
        return printed_text(self.print)


class DataParallelModel:
    """dp replicas of a compiled model (CompiledModel, or ShardedModel with tp > 1), each on 1/dp of the batch."""

    def __init__(self, model, example_inputs, *, dp: int, tp=None, system=None, target=None, **options):
        from trnlab.torch.shard import check_tp, positive_int, resolve_system
        self.dp = positive_int("dp", dp)
        self.name = options.get("name") or type(model).__name__
        args = (example_inputs,) if isinstance(example_inputs, torch.Tensor) else tuple(example_inputs)
        kwargs = dict(options.pop("example_kwargs", None) or {})
        self.system = resolve_system(system, target)
        self.tp = 1 if tp is None else check_tp(tp, self.system)
        check_ranks(self.dp, self.tp, self.system)
        self.part = batch_size(args, kwargs, self.dp, self.name) // self.dp
        self.numerics = options.get("numerics", True)
        first = tuple(_slice(a, 0, self.part) for a in args)
        first_kw = {k: _slice(v, 0, self.part) for k, v in kwargs.items()}
        if tp is not None or system is not None:
            from trnlab.torch.shard import ShardedModel
            self.replica = ShardedModel(model, first, tp=self.tp, system=self.system, example_kwargs=first_kw,
                                        **options)
        else:
            from trnlab.torch.api import CompiledModel
            self.replica = CompiledModel(model, first, target=target or self.system.chip.name,
                                         example_kwargs=first_kw, **options)
        self.report = None if self.replica.report is None else self._report([self.replica.report])   # run_example

    def _report(self, reports: list) -> DataParallelReport:
        return DataParallelReport(reports[-1], self.dp, self.tp, self.system.name,
                                  [getattr(r, "numerics", None) for r in reports])

    def __iter__(self):
        return iter((self, self.report))

    @property
    def last_run(self):
        """The last replica's run (the replicas run the same instructions on same-shaped slices)."""
        return self.replica.last_run

    def __call__(self, *inputs, progress=None, **kwargs):
        """Run every replica on its slice (`progress`, ticked once per op of each replica's run, is trnlab's
        own keyword, as for CompiledModel)."""
        part = batch_size(inputs, kwargs, self.dp, self.name) // self.dp
        runs = range(self.dp) if self.numerics else range(1)     # timing only: every replica is the same run
        outputs, reports = [], []
        for r in runs:
            outputs.append(self.replica(*(_slice(a, r, part) for a in inputs), progress=progress,
                                        **{k: _slice(v, r, part) for k, v in kwargs.items()}))
            reports.append(self.replica.report)
        if not self.numerics:
            outputs = outputs * self.dp
        self.report = self._report(reports)
        return _concat(outputs)


__all__ = ["DataParallelModel", "DataParallelReport", "batch_size", "check_ranks"]
