"""Section Z: does a VAE's ceiling swing from step to step at the end of its training? Trains the first stage's VAE
(`toy.train --color-range 2.0 --vae-steps 2800 --vae-bf16 --vae-adamw for-loop`, seed 0, as `toy.vae_probe --bf16`)
and reads toy.vae_probe's ceilings on snapshots of its last steps and on exponential moving averages of its weights.

    python -m toy.logs.vae_snapshots_Z > toy/logs/vae_snapshots_Z.txt
    python -m toy.logs.vae_snapshots_Z --seed 1 > toy/logs/vae_snapshots_Z_seed1.txt   # toy.train --seed 1's VAE
    python -m toy.logs.vae_snapshots_Z --vae-steps 3600 > toy/logs/vae_snapshots_Z_3600.txt   # a longer VAE stage
"""

from __future__ import annotations

import argparse
import copy
import dataclasses
import time

import numpy as np
import torch
from diffusers import AutoencoderKL

from toy import train
from toy.vae_probe import report

SNAPSHOTS = (1400, 2000, 2200, 2400, 2500, 2600, 2700, 2750)
EMA_DECAYS = (0.99, 0.998)
VAE_STEPS = 2800


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seed", type=int, default=0, help="as toy.train's: pictures, first weights, noise")
    parser.add_argument("--vae-steps", type=int, default=VAE_STEPS, help="VAE steps (snapshots every 200 past 3,000)")
    args = parser.parse_args()
    torch.set_num_threads(2)
    cfg = dataclasses.replace(train.Config(), color_range=2.0, vae_steps=args.vae_steps, vae_bf16=True, seed=args.seed)
    snapshot_steps = (*SNAPSHOTS, *range(3000, cfg.vae_steps, 200))
    torch.manual_seed(cfg.seed)
    started = time.time()
    images = train.make_dataset(cfg, np.random.default_rng(cfg.seed))[1]
    log: list[dict] = []
    snapshots: dict[str, dict[str, torch.Tensor]] = {}
    averages: dict[float, list[torch.Tensor]] = {}

    def after_step(step: int, vae: AutoencoderKL) -> None:
        weights = [p.detach() for p in vae.parameters()]
        for decay in EMA_DECAYS:  # a fixed decay from the first step (toy.train's U-Net EMA warms its decay up)
            if decay not in averages:
                averages[decay] = [w.clone() for w in weights]
            else:
                torch._foreach_lerp_(averages[decay], weights, 1 - decay)
        if step in snapshot_steps:
            snapshots[f"step {step}"] = copy.deepcopy(vae.state_dict())

    vae = train.train_vae(cfg, images, log, after_step)
    print(f"trained {cfg.vae_steps} VAE steps in {(time.time() - started) / 60:.1f} minutes", flush=True)
    snapshots[f"step {cfg.vae_steps - 1} (the VAE toy.train saves)"] = copy.deepcopy(vae.state_dict())
    names = [name for name, _ in vae.named_parameters()]
    for decay, weights in averages.items():
        snapshots[f"EMA {decay}"] = {**snapshots[f"step {cfg.vae_steps - 1} (the VAE toy.train saves)"],
                                     **dict(zip(names, weights, strict=True))}  # fmt: skip
    run = {"stages": [{"config": dataclasses.asdict(cfg)}], "log": log}
    for name, state in snapshots.items():
        vae.load_state_dict(state)
        vae.to(torch.float16).to(torch.float32)  # rounded as the saved model is
        print(f"\n== {name}", flush=True)
        report(vae.eval(), run)


if __name__ == "__main__":
    main()
