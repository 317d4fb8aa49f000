"""The model path: PyTorch models compiled onto a simulated NeuronCore, checked, timed and priced.

    import trnlab.torch
    fn, report = trnlab.torch.compile(model, (ids,), target="trn2", dtype=torch.bfloat16)
    print(report)                                   # per-op table, latency, MFU, HBM, tokens/s, $/M tokens

    compiled = torch.compile(model, backend="trnlab", options={"target": "trn2", "dtype": "bf16"})

    loss = compiled(ids, labels=ids).loss; loss.backward()     # training: fw and bw graphs on the chip
    trnlab.torch.dynamo.last_training().backward               # the backward graph's Report

With grad enabled and parameters that require grad, the backend captures training (AOTAutograd,
trnlab.torch.train); under torch.no_grad() it runs the inference path.

Importing this package registers the "trnlab" dynamo backend. torch stays an optional extra:
`import trnlab` never imports torch.
"""
from __future__ import annotations

from trnlab.torch.api import CompiledModel, compile  # noqa: A004
from trnlab.torch.dynamo import register_backend, trnlab_backend
from trnlab.torch.lowering import LOWERINGS, covered_ops
from trnlab.torch.report import Report

register_backend()

__all__ = ["compile", "CompiledModel", "Report", "trnlab_backend", "LOWERINGS", "covered_ops"]
