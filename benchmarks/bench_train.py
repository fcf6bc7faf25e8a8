"""Training speed on the CPU: one optimiser step of each of `make train`'s two networks, in three settings.

The bundled model's convolutions are small (8x8 latents for the U-Net, 64x64 pictures for the VAE), and for
inference PyTorch's own kernels on channels_last tensors beat oneDNN's (`bench_cpu.py`). This asks the same of
training: one step of the U-Net stage (U-Net and text encoder, batch 64, the recipe's loss and AdamW) and one of the
VAE stage (batch 32), each timed with oneDNN (PyTorch's default), with channels_last and oneDNN off, and with oneDNN
under bfloat16 autocast (the forward pass in bfloat16, which the CPU's AMX units multiply; weights and optimiser in
float32), the settings in turn in every round, so that a slow spell of the machine falls on all. Prints each
setting's median seconds per step and its median paired ratio to oneDNN's with a 95% interval (timing.py), and the
difference between its loss and oneDNN's after the same first step from the same weights (other kernels, same maths;
bfloat16 rounds more). Writes a JSON file.

    python -m benchmarks.bench_train                    # the shipped recipe's sizes, 2 threads
    python -m benchmarks.bench_train --smoke --rounds 6 --out /tmp/train.json   # the smoke config (tests)
"""

from __future__ import annotations

import argparse
import json
import platform
from collections.abc import Callable
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from diffusers import DDPMScheduler
from diffusers.models.attention_processor import AttnProcessor
from diffusers.training_utils import EMAModel
from transformers import CLIPTokenizer

from benchmarks.timing import MIN_ROUNDS, seconds, summarize
from helpers.models import CLIP_TOKENIZER, SD15_SCHEDULER
from toy import train, world

HERE = Path(__file__).resolve().parent
# name -> (PyTorch's own kernels on channels_last tensors, bfloat16 autocast); the first is the baseline
SETTINGS = {
    "oneDNN": (False, False),
    "channels_last, PyTorch convolutions": (True, False),
    "oneDNN, bfloat16 autocast": (False, True),
}


def in_precision(step: Callable[[], float], bf16: bool) -> Callable[[], float]:
    """The whole step under bfloat16 autocast: the forward pass's matrix maths in bfloat16, the backward pass in the
    dtypes the forward pass chose, the weights and the optimiser in float32."""

    def run() -> float:
        with torch.autocast("cpu", dtype=torch.bfloat16, enabled=bf16):
            return step()

    return run


def unet_step_fn(cfg: train.Config, native: bool, seed: int = 0, ema: bool = False) -> Callable[[], float]:
    """One optimiser step of the U-Net stage on fixed inputs (a fresh model from the seed), as a call; with `ema`,
    also the step's update of the weights' EMA, as toy.train does it."""
    latent_size = world.IMAGE_SIZE // 2 ** (len(cfg.vae_channels) - 1)  # the VAE's scale factor, as in training
    torch.manual_seed(seed)
    unet, text_encoder = train.build_unet(cfg, latent_size), train.build_text_encoder(cfg)
    unet.train(), text_encoder.train()
    unet.set_attn_processor(AttnProcessor())  # as toy.train trains it
    if native:
        unet.to(memory_format=torch.channels_last)
    params = list(unet.parameters()) + list(text_encoder.parameters())
    opt = torch.optim.AdamW(params, lr=cfg.unet_lr, weight_decay=0.0, fused=cfg.fused_adamw or None)
    average = EMAModel(params, decay=cfg.ema_decay, foreach=cfg.ema_foreach) if ema else None
    rng, gen = np.random.default_rng(seed), torch.Generator().manual_seed(seed)
    scenes = [world.sample_scene(rng) for _ in range(cfg.unet_batch)]
    captions = [world.caption(s, rng, cfg.caption_keep) for s in scenes]
    tokenizer = CLIPTokenizer.from_pretrained(CLIP_TOKENIZER)
    ids = tokenizer(
        captions, padding="max_length", max_length=tokenizer.model_max_length, truncation=True, return_tensors="pt"
    ).input_ids
    latents = torch.randn((cfg.unet_batch, unet.config.in_channels, latent_size, latent_size), generator=gen)
    noise = torch.randn(latents.shape, generator=gen)
    scheduler = DDPMScheduler.from_config(SD15_SCHEDULER)
    t = torch.randint(0, scheduler.config.num_train_timesteps, (cfg.unet_batch,), generator=gen)
    noisy = scheduler.add_noise(latents, noise, t)
    if native:
        noisy = noisy.contiguous(memory_format=torch.channels_last)

    def step() -> float:
        torch.backends.mkldnn.enabled = not native
        loss = F.mse_loss(unet(noisy, t, text_encoder(ids)[0]).sample, noise)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(params, 1.0)
        opt.step()
        if average is not None:
            average.step(params)
        return loss.item()

    return step


def vae_step_fn(cfg: train.Config, native: bool, seed: int = 0) -> Callable[[], float]:
    """One optimiser step of the VAE stage on a fixed batch of drawn pictures (a fresh VAE from the seed)."""
    torch.manual_seed(seed)
    vae = train.build_vae(cfg).train()
    if native:
        vae.to(memory_format=torch.channels_last)
    opt = torch.optim.AdamW(vae.parameters(), lr=cfg.vae_lr, weight_decay=0.0, fused=train.vae_fused_adamw(cfg) or None)
    rng = np.random.default_rng(seed)
    pictures = np.stack(
        [world.render(world.sample_scene(rng), rng, 0.0, cfg.color_range) for _ in range(cfg.vae_batch)]
    )
    x = train.to_tensor(pictures)
    if native:
        x = x.contiguous(memory_format=torch.channels_last)

    def step() -> float:
        torch.backends.mkldnn.enabled = not native
        posterior = vae.encode(x).latent_dist
        recon = vae.decode(posterior.sample(torch.Generator().manual_seed(seed))).sample
        loss = F.mse_loss(recon, x) + cfg.kl_weight * posterior.kl().mean()
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(vae.parameters(), 1.0)
        opt.step()
        return loss.item()

    return step


def measure(make: Callable[[train.Config, bool], Callable[[], float]], cfg: train.Config, rounds: int) -> dict:
    """Every setting from the same weights: the first step's losses, then `rounds` timed steps each, in turn."""
    steps = {name: in_precision(make(cfg, native), bf16) for name, (native, bf16) in SETTINGS.items()}
    first = {name: step() for name, step in steps.items()}  # also the warm-up
    times: dict[str, list[float]] = {name: [] for name in steps}
    for _ in range(rounds):
        for name, step in steps.items():
            times[name].append(seconds(step))
    torch.backends.mkldnn.enabled = True
    base, *others = SETTINGS
    return {
        "first_step_loss": first,
        "first_step_loss_difference": {name: abs(first[name] - first[base]) for name in others},
        "seconds": times,
        "median_s": {name: float(np.median(t)) for name, t in times.items()},
        "paired_ratio": {name: summarize(times[name], times[base]) for name in others},
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=12, help=f"timed steps per setting (at least {MIN_ROUNDS})")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--smoke", action="store_true", help="the smoke config's tiny networks")
    parser.add_argument("--out", type=Path, default=HERE / "train_results.json")
    args = parser.parse_args()
    if args.rounds < MIN_ROUNDS:
        parser.error(f"--rounds must be at least {MIN_ROUNDS} for a 95% interval, got {args.rounds}")
    torch.set_num_threads(args.threads)
    cfg = train.SMOKE if args.smoke else train.Config()
    results = {
        "command": "python -m benchmarks.bench_train "
        + " ".join([f"--rounds {args.rounds}", f"--threads {args.threads}", *(["--smoke"] if args.smoke else [])]),
        "machine": {
            "cpu": platform.processor() or platform.machine(),
            "threads": args.threads,
            "torch": torch.__version__,
        },
        "config": {
            "unet_channels": cfg.unet_channels,
            "unet_batch": cfg.unet_batch,
            "vae_channels": cfg.vae_channels,
            "vae_batch": cfg.vae_batch,
        },
        "stages": {"unet": measure(unet_step_fn, cfg, args.rounds), "vae": measure(vae_step_fn, cfg, args.rounds)},
    }
    for stage, row in results["stages"].items():
        print(f"{stage}: oneDNN {row['median_s']['oneDNN']:.3f} s per step")
        for name, ratio in row["paired_ratio"].items():
            print(
                f"  {name}: {row['median_s'][name]:.3f} s; paired ratio {ratio['paired_ratio']:.3f} "
                f"(95% interval {ratio['paired_ratio_low']:.3f} to {ratio['paired_ratio_high']:.3f}); "
                f"first-step loss difference {row['first_step_loss_difference'][name]:.1e}"
            )
    args.out.write_text(json.dumps(results, indent=2) + "\n")
    print(f"written: {args.out}")


if __name__ == "__main__":
    main()
