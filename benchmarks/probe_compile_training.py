"""Probe: one training step of the recipe's U-Net and VAE, eager against torch.compile'd (Inductor), in alternating
rounds (2 threads, 8 rounds; the compile is paid by the first step). Speed only: the compiled U-Net's gradients are
wrong (`check_compile_gradients.py`), so the speed buys nothing. Output of session 19's run:
`benchmarks/probe_compile_training.txt`.

    PYTHONPATH=. python benchmarks/probe_compile_training.py unet vae
"""

import sys
import time

import numpy as np
import torch

from benchmarks import bench_train
from toy import train

torch.set_num_threads(2)
cfg = train.Config()
which = sys.argv[1:] or ["unet", "vae"]
build_unet, build_vae = train.build_unet, train.build_vae


def compiled(build):
    def build_compiled(*args, **kwargs):
        model = build(*args, **kwargs)
        if hasattr(model, "encode"):  # the VAE's step calls encode and decode, not forward
            model.encode, model.decode = torch.compile(model.encode), torch.compile(model.decode)
        else:
            model.forward = torch.compile(model.forward)
        return model

    return build_compiled


for name, make in (("unet", bench_train.unet_step_fn), ("vae", bench_train.vae_step_fn)):
    if name not in which:
        continue
    eager = make(cfg, False)
    train.build_unet, train.build_vae = compiled(build_unet), compiled(build_vae)
    comp = make(cfg, False)
    train.build_unet, train.build_vae = build_unet, build_vae
    t0 = time.perf_counter()
    loss_eager = eager()
    time_eager = time.perf_counter() - t0
    t0 = time.perf_counter()
    loss_compiled = comp()
    time_compiled = time.perf_counter() - t0
    print(
        f"{name} first step eager {time_eager:.1f}s compiled {time_compiled:.1f}s; "
        f"losses {loss_eager:.7f} {loss_compiled:.7f}"
    )
    for _ in range(2):
        comp()
    times = {"eager": [], "compiled": []}
    for _ in range(8):
        for key, step in (("eager", eager), ("compiled", comp)):
            t0 = time.perf_counter()
            step()
            times[key].append(time.perf_counter() - t0)
    med = {key: float(np.median(value)) for key, value in times.items()}
    print(
        f"{name} median s eager {med['eager']:.3f} compiled {med['compiled']:.3f} "
        f"ratio {med['compiled'] / med['eager']:.2f}"
    )
