"""Seeds and random noise, the diffusers way: drawn on the CPU, then moved to the device.

A CPU ``torch.Generator`` gives the same numbers on every machine, so a seed names the same
starting noise, and so the same image, whether the U-Net then runs on a CPU, CUDA or MPS.
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
    """Standard normal noise drawn from a CPU generator, then moved to `device`."""
    return torch.randn(shape, generator=generator, device="cpu", dtype=dtype).to(device)
