"""Time AWS's own rmsnorm_quant kernel (nki-samples, imported unmodified) on trnlab at LNC=2, trn2.

    trnlab run --target trn2 benchmarks/aws_rmsnorm_quant.py /path/to/nki-samples/src 2048 8192 [--numerics]

The kernel (nki-samples@1ee7f1d src/nki_samples/reference/rmsnorm_quant) imports three names from
neuronxcc compiler internals that trnlab's shim does not provide; two are unused by the kernel
(local_tile, TileIndex: an annotation) and one is a dtype size (sizeinbytes). This driver registers
stand-ins for them, then launches rmsnorm_quant_kernel[2] with each program on its own physical
NeuronCore (LNC=2) and prints the slower core's simulated time (no launch time added; see
docs/calibration.md). With --numerics it also checks the output against numpy.
"""
import sys
import types

import ml_dtypes
import numpy as np


def _stand_ins() -> None:
    for name in ("neuronxcc.nki.compiler.backends", "neuronxcc.nki.compiler.backends.neuron",
                 "neuronxcc.nki.compiler.backends.neuron.tensor", "neuronxcc.nki.compiler.backends.neuron.indexing"):
        sys.modules[name] = types.ModuleType(name)
    sys.modules["neuronxcc.nki.compiler.backends.neuron.tensor"].local_tile = None
    sys.modules["neuronxcc.nki.compiler.backends.neuron.indexing"].TileIndex = object
    constants = sys.modules["neuronxcc.nki.language.constants"] = types.ModuleType("neuronxcc.nki.language.constants")
    constants.sizeinbytes = lambda dtype: np.dtype(dtype).itemsize


def main(src: str, s: int, h: int, numerics: bool) -> None:
    import neuronxcc.nki  # noqa: F401  (the shim's package, before the stand-ins below it)
    _stand_ins()
    sys.path.insert(0, src)
    from nki_samples.reference.rmsnorm_quant.rmsnorm_quant import RmsNormQuantKernelArgs, rmsnorm_quant_kernel
    rng = np.random.default_rng(0)
    hidden = rng.standard_normal((1, s, h)).astype(ml_dtypes.bfloat16)
    gamma = rng.standard_normal((1, h)).astype(ml_dtypes.bfloat16)
    kernel = rmsnorm_quant_kernel[2]
    kernel.options["lnc_threads"] = True
    run = kernel.run((hidden, gamma, RmsNormQuantKernelArgs(lower_bound=0.0)), {}, target="trn2", numerics=numerics)
    print(f"rmsnorm_quant S={s} H={h} LNC=2 trn2: {run.machine.scheduler.end * 1e6:.1f} us (slower core)")
    if numerics:
        x = hidden.astype(np.float32)[0]
        norm = x / np.sqrt(np.mean(x * x, -1, keepdims=True) + 1e-6) * gamma.astype(np.float32)
        q = run.outputs[0, :, :h].astype(np.float32)
        deq = run.outputs[0, :, h:].copy().view(np.float32)
        print(f"max |q * scale - reference| / max |reference| = {np.max(np.abs(q * deq - norm)) / np.max(np.abs(norm)):.4f}")


if __name__ == "__main__":
    main(sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), "--numerics" in sys.argv)
