"""Train only the VAE stage of `toy.train` and measure its ceiling, to choose a VAE before a full run (EXPERIMENTS M).

The VAE learns the pictures of the first stage's world (`--color-range`, as `toy.train`'s) for `--vae-steps`, then
`toy.evaluate`'s VAE ceiling reads back its reconstructions of drawn scenes, each colour inside its name. About 6.5
minutes per 1,400 steps on 2 CPU cores; nothing is saved.

    python -m toy.vae_probe --color-range 2.0 --vae-steps 2800
    python -m toy.vae_probe --color-range 2.0 --vae-steps 2800 --bf16   # toy.train --vae-bf16's VAE (EXPERIMENTS T)
"""

from __future__ import annotations

import argparse
import dataclasses
import time
from types import SimpleNamespace

import numpy as np
import torch

from toy import train
from toy.evaluate import vae_ceiling, vae_world


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--color-range", type=float, help="as toy.train's, 0 to 2 (default: toy.train's)")
    parser.add_argument("--vae-steps", type=int, help="VAE steps (default: toy.train's)")
    parser.add_argument("--bf16", action="store_true", help="bfloat16 autocast, as toy.train's --vae-bf16")
    parser.add_argument("--smoke", action="store_true", help="toy.train's tiny config, for tests")
    parser.add_argument("--threads", type=int, default=2)
    args = parser.parse_args()
    if args.color_range is not None and not 0 <= args.color_range <= 2:
        parser.error(f"--color-range must be between 0 and 2, got {args.color_range}")
    if args.vae_steps is not None and args.vae_steps < 1:
        parser.error(f"--vae-steps must be at least 1, got {args.vae_steps}")
    torch.set_num_threads(args.threads)

    base = train.SMOKE if args.smoke else train.Config()
    changes = {"color_range": args.color_range, "vae_steps": args.vae_steps, "vae_bf16": args.bf16 or None}
    cfg = dataclasses.replace(base, **{key: value for key, value in changes.items() if value is not None})
    torch.manual_seed(cfg.seed)  # as toy.train's first stage, so the same options give the same VAE
    started = time.time()
    images = train.make_dataset(cfg, np.random.default_rng(cfg.seed))[1]
    vae = train.train_vae(cfg, images, []).to(torch.float16).to(torch.float32)  # rounded as the saved model is
    minutes = (time.time() - started) / 60
    world_options = vae_world(dataclasses.asdict(cfg))
    # the ceiling reads components.vae only; encoding and decoding, it scales by the same factor both ways
    ceiling = vae_ceiling(SimpleNamespace(vae=vae), np.random.default_rng(5), world_options)
    precision = "bfloat16 autocast" if cfg.vae_bf16 else "float32"
    print(f"VAE at --color-range {cfg.color_range:g}, {cfg.vae_steps} steps, {precision} ({minutes:.1f} minutes);")
    print(f"ceiling on {world_options}, percent:")
    print(", ".join(f"{key} {value:.1f}" for key, value in ceiling.items()))


if __name__ == "__main__":
    main()
