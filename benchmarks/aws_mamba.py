"""Time AWS's own fused-Mamba tutorial kernels (imported unmodified) on trnlab, trn1, as `trnlab calibrate` times
our rewrites of them (bench.published.mamba_v1/v2/v3), to check that the rewrites time the same.

    python benchmarks/aws_mamba.py /path/to/mamba_nki_kernels.py v2 512 4096 [--compiler pe_broadcast=0]

The kernel file is aws-neuron-sdk@3eaf01ad general/nki/examples/fused_mamba/mamba_nki_kernels.py (not
vendored here). Inputs as in the tutorial's perf mode: batch 1, state 16, fp32 ones (A = -1). Prints the
predicted device latency (simulated time plus the chip's kernel_launch_s, as calibrate reports it).
"""
import importlib.util
import sys

import numpy as np


def main(path: str, version: str, seq: int, channels: int, switches: str) -> None:
    import trnlab.compat
    from trnlab.core.compiler import CompilerModel, using
    trnlab.compat.install()                  # `import neuronxcc.nki` in the kernel file -> trnlab.nki_beta1
    spec = importlib.util.spec_from_file_location("mamba_nki_kernels", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    ones = np.ones((1, channels, seq), np.float32)
    bc = np.ones((1, 16, seq), np.float32)
    args = (ones, ones.copy(), -np.ones((channels, 16), np.float32), bc, bc.copy())
    with using(CompilerModel.parse(switches)):
        run = getattr(module, f"mamba_{version}").run(args, {}, target="trn1", numerics=False)
    print(f"AWS mamba_{version} seq_len={seq} channels={channels} trn1: {run.device_latency_s * 1e6:.1f} us")


if __name__ == "__main__":
    argv = sys.argv[1:]
    switches = ""
    if "--compiler" in argv:
        i = argv.index("--compiler")
        switches = argv[i + 1]
        del argv[i:i + 2]
    main(argv[0], argv[1], int(argv[2]), int(argv[3]), switches)
