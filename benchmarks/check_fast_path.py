"""How far the GPU fast path's pixels move from the plain loop's (compilation reorders float work).

SD v1.5's architecture with random weights, fp16, 512x512, DPM-Solver++ 20 steps: the plain loop's image,
then the same seed after `apply_fast_path` (fused QKV, channels_last, torch.compile with CUDA graphs).

    python benchmarks/check_fast_path.py
"""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench_gpu import build  # noqa: E402

from helpers.sampling import generate  # noqa: E402
from helpers.speed import apply_fast_path  # noqa: E402


def main() -> None:
    components = build(False, torch.device("cuda"), torch.float16)
    kwargs = dict(prompt="a photograph of an astronaut riding a horse", height=512, width=512, num_inference_steps=20)
    kwargs |= dict(guidance_scale=7.5, seed=0, scheduler="dpm++")
    plain = generate(components, **kwargs).pixels
    again = generate(components, **kwargs).pixels
    apply_fast_path(components, channels_last=True, fuse_qkv=True, compile_mode="reduce-overhead")
    generate(components, **kwargs)  # compile and capture
    fast = generate(components, **kwargs).pixels
    print(f"plain loop twice: max |diff| {np.abs(plain - again).max():.2e}")
    diff = np.abs(plain - fast)
    print(
        f"fast path vs plain: max |diff| {diff.max():.4f}, mean {diff.mean():.5f} (pixels in [0, 1]), "
        f"finite: {np.isfinite(fast).all()}"
    )


if __name__ == "__main__":
    main()
