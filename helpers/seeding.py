"""Seeds and random noise, the diffusers way: drawn on the CPU, then moved to the device.

A CPU ``torch.Generator`` gives the same numbers on every machine, so a seed names the same
starting noise, and so the same image, whether the U-Net then runs on a CPU, CUDA or MPS.
The noise is always drawn in float32 and then cast: PyTorch's CPU sampler can draw a different
sequence when asked for float16 or bfloat16 directly (seen with torch 2.11 on an x86 machine for
every shape, and with torch 2.13 for some), which would make the same seed a different picture in
half precision.
"""

from __future__ import annotations

import torch


def check_seed(seed: object) -> int:
    """The seed, if it is a non-negative int; else a ValueError that names the parameter."""
    if isinstance(seed, bool) or not isinstance(seed, int) or seed < 0:
        raise ValueError(f"seed must be a non-negative int, got {seed!r}")
    return seed


def make_generator(seed: int) -> torch.Generator:
    """A CPU generator seeded with `seed`."""
    return torch.Generator("cpu").manual_seed(check_seed(seed))


def cpu_noise(
    shape: tuple[int, ...], generator: torch.Generator, device: torch.device | str, dtype: torch.dtype
) -> torch.Tensor:
    """Standard normal noise drawn in float32 from a CPU generator, then cast to `dtype` on `device`."""
    return torch.randn(shape, generator=generator, device="cpu", dtype=torch.float32).to(device, dtype)
