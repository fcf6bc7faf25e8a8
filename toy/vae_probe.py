"""Train only the VAE stage of `toy.train` and measure its ceiling, to choose a VAE before a full run (EXPERIMENTS M).

The VAE learns the pictures of the first stage's world (`--color-range`, as `toy.train`'s) for `--vae-steps`, then
`toy.evaluate`'s VAE ceilings read back its reconstructions of drawn scenes, each colour inside its name (one shape,
and two shapes side by side, where VAEs of one recipe differ most: EXPERIMENTS T). About 6.5
minutes per 1,400 steps on 2 CPU cores; nothing is saved.

    python -m toy.vae_probe --color-range 2.0 --vae-steps 2800
    python -m toy.vae_probe --color-range 2.0 --vae-steps 2800 --bf16 --seed 1   # toy.train --vae-bf16 --seed 1's VAE
    python -m toy.vae_probe --model models/toy-sd   # a saved model's VAE, measured alike (about a minute)
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import time
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import torch
from diffusers import AutoencoderKL

from toy import train
from toy.evaluate import vae_ceiling, vae_ceiling_two_shapes, vae_training_line, vae_world


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--color-range", type=float, help="as toy.train's, 0 to 2 (default: toy.train's)")
    parser.add_argument("--vae-steps", type=int, help="VAE steps (default: toy.train's)")
    parser.add_argument("--seed", type=int, help="as toy.train's: the pictures, the initial weights, the noise")
    parser.add_argument("--bf16", action="store_true", help="bfloat16 autocast, as toy.train's --vae-bf16")
    parser.add_argument("--smoke", action="store_true", help="toy.train's tiny config, for tests")
    parser.add_argument(
        "--model", type=Path, help="measure this saved model's VAE (its log says how it was trained); trains none"
    )
    parser.add_argument("--threads", type=int, default=2)
    args = parser.parse_args()
    if args.color_range is not None and not 0 <= args.color_range <= 2:
        parser.error(f"--color-range must be between 0 and 2, got {args.color_range}")
    if args.vae_steps is not None and args.vae_steps < 1:
        parser.error(f"--vae-steps must be at least 1, got {args.vae_steps}")
    trains = {"--color-range": args.color_range, "--vae-steps": args.vae_steps, "--seed": args.seed}
    trains.update({"--bf16": args.bf16 or None, "--smoke": args.smoke or None})
    if args.model is not None and any(value is not None for value in trains.values()):
        given = ", ".join(flag for flag, value in trains.items() if value is not None)
        parser.error(f"--model measures a saved VAE, so the training options ({given}) would do nothing")
    if args.model is not None and not (args.model / "training_log.json").is_file():
        parser.error(f"--model {args.model}: no training_log.json there (a model saved by toy.train is needed)")
    torch.set_num_threads(args.threads)
    if args.model is not None:
        log = json.loads((args.model / "training_log.json").read_text())
        vae = AutoencoderKL.from_pretrained(args.model, subfolder="vae", torch_dtype=torch.float32).eval()
        print(f"The VAE of {args.model} (seed {log['stages'][0]['config']['seed']}).")
        report(vae, log)
        return

    base = train.SMOKE if args.smoke else train.Config()
    changes = {
        "color_range": args.color_range,
        "vae_steps": args.vae_steps,
        "vae_bf16": args.bf16 or None,
        "seed": args.seed,
    }
    cfg = dataclasses.replace(base, **{key: value for key, value in changes.items() if value is not None})
    torch.manual_seed(cfg.seed)  # as toy.train's first stage, so the same options give the same VAE
    started = time.time()
    images = train.make_dataset(cfg, np.random.default_rng(cfg.seed))[1]
    log: list[dict] = []
    vae = train.train_vae(cfg, images, log).to(torch.float16).to(torch.float32)  # rounded as the saved model is
    minutes = (time.time() - started) / 60
    print(f"VAE at --color-range {cfg.color_range:g}, seed {cfg.seed} ({minutes:.1f} minutes).")
    report(vae, {"stages": [{"config": dataclasses.asdict(cfg)}], "log": log})


def report(vae: AutoencoderKL, log: dict) -> None:
    """Print where the VAE's training ended and its ceilings, one shape and two, on its own world (toy.evaluate's
    measures; the ceilings read only components.vae, and scale by the same factor both ways)."""
    world_options = vae_world(log["stages"][0]["config"])
    ceiling = vae_ceiling(SimpleNamespace(vae=vae), np.random.default_rng(5), world_options)
    two_shapes = vae_ceiling_two_shapes(SimpleNamespace(vae=vae), np.random.default_rng(6), world_options)
    print(vae_training_line(log))
    print(f"Ceiling on {world_options}, percent:")
    for name, accuracy in (("one shape", ceiling), ("two shapes", two_shapes)):
        print(f"{name}: " + ", ".join(f"{key} {value:.1f}" for key, value in accuracy.items()))


if __name__ == "__main__":
    main()
