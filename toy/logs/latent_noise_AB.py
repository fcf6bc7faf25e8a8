"""Section AB: what a VAE gives the U-Net to learn, beyond its round trip. For each saved model's VAE: the spread of its
latents and of its posterior's noise per channel (both times scaling_factor, the units the U-Net trains in), and
toy.evaluate's two-shape ceiling (its 1,000 scenes) decoded from the posterior's mode (the ceiling itself), from a
sample of the posterior (what toy.train's U-Net stage trains on), and from the mode plus Gaussian noise of 0.1, 0.2
and 0.3 in those units: how well the decoder keeps a shape when the latent it gets is off, as a U-Net's is.

    python -m toy.logs.latent_noise_AB models/toy-sd FOLDER ... > toy/logs/latent_noise_AB.txt
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import torch
from diffusers import AutoencoderKL

from helpers.sampling import decode
from toy import world
from toy.evaluate import TWO_SHAPE_CEILING_SCENES, read_back, vae_world
from toy.train import to_tensor

NOISE = (0.1, 0.2, 0.3)


@torch.no_grad()
def measure(folder: Path) -> None:
    """Print one VAE's latent spread and its two-shape ceilings, exact and with the latents disturbed."""
    log = json.loads((folder / "training_log.json").read_text())
    vae = AutoencoderKL.from_pretrained(folder, subfolder="vae", torch_dtype=torch.float32).eval()
    scale = vae.config.scaling_factor
    rng = np.random.default_rng(6)  # toy.evaluate's two-shape ceiling: the same scenes, drawn alike
    scenes = [world.sample_scene(rng, two_shape_prob=1.0) for _ in range(TWO_SHAPE_CEILING_SCENES)]
    images = np.stack([world.render(scene, rng, **vae_world(log["stages"][0]["config"])) for scene in scenes])
    posterior = vae.encode(to_tensor(images)).latent_dist
    mean, std = posterior.mean * scale, posterior.std * scale
    noise = torch.randn(mean.shape, generator=torch.Generator().manual_seed(0))

    def channels(values: torch.Tensor) -> str:
        return ", ".join(f"{float(v):.3f}" for v in values)

    print(f"{folder}: scaling_factor {scale}")
    print(f"  latents' spread per channel (std): {channels(mean.std(dim=(0, 2, 3)))}")
    print(f"  posterior noise per channel (mean std): {channels(std.mean(dim=(0, 2, 3)))}")
    latents = {"mode (the ceiling)": mean, "a posterior sample (what the U-Net trains on)": mean + std * noise}
    latents.update({f"mode + noise {sigma}": mean + sigma * noise for sigma in NOISE})
    for name, z in latents.items():
        accuracy = read_back(scenes, decode(SimpleNamespace(vae=vae), z))
        print(f"  {name}: " + ", ".join(f"{key} {value:.1f}" for key, value in accuracy.items()))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("models", type=Path, nargs="+", help="folders saved by toy.train")
    args = parser.parse_args()
    torch.set_num_threads(2)
    for folder in args.models:
        measure(folder)


if __name__ == "__main__":
    main()
