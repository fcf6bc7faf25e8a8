"""Where a half-precision image parts from the float32 one: a diagnostic, stage by stage, on the bundled model.

For two prompts (DPM-Solver++ 20 steps, guidance 7.5, seed 0) prints the float32 image on DEVICE against the
float32 image on the CPU, then for each half precision: the image and final latents against float32, the
text encoder's output, a VAE decode of the same latents, and the seed's starting noise.

    python -m benchmarks.probe_precision cuda      # (or cpu: bfloat16 only)
"""

from __future__ import annotations

import sys

import numpy as np
import torch

import helpers.sampling as S
from benchmarks.check_fast_path import cast
from benchmarks.check_fast_path import relative_error as rel
from helpers.models import load_components


def main(device: str) -> None:
    torch.backends.cuda.matmul.allow_tf32 = False
    torch.backends.cudnn.allow_tf32 = False
    c32 = load_components("bundled", device, torch.float32)
    ccpu = load_components("bundled", "cpu", torch.float32)
    halves = [torch.float16, torch.bfloat16] if device == "cuda" else [torch.bfloat16]
    for prompt in ("a large red circle on the left", "a photograph of an astronaut riding a horse"):
        kw = dict(prompt=prompt, num_inference_steps=20, guidance_scale=7.5, seed=0, scheduler="dpm++")
        g32, gcpu = S.generate(c32, **kw), S.generate(ccpu, **kw)
        print(
            prompt,
            "| fp32 dev vs fp32 cpu: pixels max",
            np.abs(g32.pixels - gcpu.pixels).max(),
            "latents rel",
            rel(g32.latents, gcpu.latents),
        )
        e32 = S.encode_text(c32, [prompt])
        for dt in halves:
            h = cast(c32, c32.device, dt)
            g = S.generate(h, **kw)
            print(
                " ",
                dt,
                "pixels max",
                np.abs(g.pixels - g32.pixels).max(),
                "mean",
                np.abs(g.pixels - g32.pixels).mean(),
                "| latents rel",
                rel(g.latents, g32.latents),
                "| text rel",
                rel(S.encode_text(h, [prompt]), e32),
                "| decode rel",
                rel(S.decode(h, g32.latents.to(dt)), S.decode(c32, g32.latents)),
            )
            n32 = S.cpu_noise((1, 4, 8, 8), torch.Generator().manual_seed(0), device, torch.float32)
            nh = S.cpu_noise((1, 4, 8, 8), torch.Generator().manual_seed(0), device, dt)
            print("   noise rel", rel(nh, n32))


if __name__ == "__main__":
    main(sys.argv[1] if len(sys.argv) > 1 else "cpu")
