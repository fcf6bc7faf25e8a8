"""Seeds and random noise, the diffusers way: drawn on the CPU, then moved to the device.

A CPU ``torch.Generator`` gives the same numbers on every machine, so a seed names the same
starting noise, and so the same image, whether the U-Net then runs on a CPU, CUDA or MPS.
The noise is always drawn in float32 and then cast: PyTorch's CPU sampler can draw a different
sequence when asked for float16 or bfloat16 directly (seen with torch 2.11 on an x86 machine for
every shape, and with torch 2.13 for some), which would make the same seed a different picture in
half precision.
"""

from __future__ import annotations

import numpy as np
import torch

MAX_SEED = 2**64 - 1  # the largest seed torch.Generator.manual_seed accepts


def check_seed(seed: object) -> int:
    """The seed as an int in [0, MAX_SEED] (numpy ints too): a TypeError for a non-int, else a ValueError."""
    if isinstance(seed, bool) or not isinstance(seed, (int, np.integer)):
        raise TypeError(f"seed must be a non-negative int, got {type(seed).__name__} {seed!r}")
    if not 0 <= int(seed) <= MAX_SEED:
        raise ValueError(f"seed must be a non-negative int of at most 64 bits (0 .. 2**64 - 1), got {seed!r}")
    return int(seed)


def make_generator(seed: int) -> torch.Generator:
    """A CPU generator seeded with `seed`."""
    return torch.Generator("cpu").manual_seed(check_seed(seed))


def cpu_noise(
    shape: tuple[int, ...], generator: torch.Generator, device: torch.device | str, dtype: torch.dtype
) -> torch.Tensor:
    """Standard normal noise drawn in float32 from a CPU generator, then cast to `dtype` on `device`."""
    return torch.randn(shape, generator=generator, device="cpu", dtype=torch.float32).to(device, dtype)
