"""Train the bundled model, Stable Diffusion in miniature, from scratch on the toy world.

The first command (stage) trains the VAE (AutoencoderKL, 64x64 images -> 4x8x8 latents, SD's scale factor 8) and
measures its latent scaling factor from the data, as SD's 0.18215 was measured, then trains the U-Net
(UNet2DConditionModel with cross-attention) together with a small CLIPTextModel, with epsilon prediction on SD
v1.5's own noise schedule and 10% empty captions for classifier-free guidance (later stages, `--resume`, go on
from it). The text encoder is trained, not frozen: SD freezes a CLIP encoder that already knows language; a
randomly initialised one knows nothing, and training it is what lets "red" mean red.

The shipped recipe's world lets each named colour cover a range so wide that neighbouring names overlap (`--color-range
2.0`: "red" is many reds, and a "red" may be as orange as orange itself, as colour words are in real captions), and one
colour word in ten is replaced by a random colour (`--caption-noise 0.1 --caption-noise-kinds color`, the default, so a
caption's colour is right about 92% of the time, as web captions are sometimes wrong). The overlapping world needs a VAE
trained on it for twice the default steps (`--vae-steps 2800`, under bfloat16 autocast with `--vae-bf16`), and the two
last stages train on mostly empty captions (`--empty-caption-prob 0.7`, 10% before them) and half, then three quarters,
two-shape pictures, the last with captions that name fewer attributes (`--caption-keep 0.6`), which steadies PNDM at
guidance 7.5 (toy/EXPERIMENTS.md, J to U). The shipped U-Net is narrower than the default (`--unet-channels 32,96,96`, 2
attention heads with `--unet-heads 2`) and trains with fused AdamW and a foreach EMA (`--fused-adamw --ema-foreach`, the
VAE keeping its for-loop AdamW with `--vae-adamw for-loop`): cheaper steps, so that 7,500 of them and the whole recipe
fit in an hour (sections V to AB). Its `--seed 1` draws a VAE that keeps two shapes apart: a narrow U-Net is only as
good on two shapes as the VAE under it (sections Y to AB). Options, off by default, that were measured and not shipped:
`--high-noise-share` draws that share of the timesteps from the noisier half of the schedule, `--min-snr-gamma` weights
the loss by Min-SNR (Hang et al. 2023), `--x0-weight-cap` weights the noisiest steps by 1/SNR, `--variation` varies
shades and lighting that no caption names, caption noise on the other kinds of word (`--caption-noise-kinds`; section
I), `--shape-range` lets circles and squares overlap as colour names do (section L); `--vae-color-range` gives the VAE
stage a colour range of its own (section M: worse, the U-Net needs the latent of a VAE that saw its own world), and
`--vae-target` reads the VAE's two-shape shape ceiling as it trains (at each multiple of `--vae-check-every` from half
way), ends the VAE stage at the first reading that reaches it, and with `--vae-draws 2` or more draws the VAE again when
it ends short (sections Z and AA: one recipe's VAEs end of two kinds). What the shipped recipe also keeps: an EMA window
short enough not to lag (0.995), a rate decaying to 2%, captions that name each optional attribute 85% of the time until
the last stage, and two short later stages at a fresh rate. The shipped model (`make train`, 59.6 minutes on session
27's 2 cores, section AB's run J; the minutes each stage took are in models/toy-sd/training_log.json and
toy/RESULTS.md):

    python -m toy.train --seed 1 --color-range 2.0 --vae-steps 2800 --vae-bf16 --vae-adamw for-loop --steps 7500 \
        --unet-heads 2 --unet-channels 32,96,96 --fused-adamw --ema-foreach   # the VAE, 7,500 U-Net steps
    python -m toy.train --resume models/toy-sd --steps 800 --lr 6e-4 --warmup 20 --color-range 2.0 \
        --empty-caption-prob 0.7 --two-shape-prob 0.5 --fused-adamw --ema-foreach   # 70% empty, half two shapes
    python -m toy.train --resume models/toy-sd --steps 800 --lr 6e-4 --warmup 20 --color-range 2.0 \
        --empty-caption-prob 0.7 --two-shape-prob 0.75 --caption-keep 0.6 --fused-adamw --ema-foreach   # name less
    python -m toy.train --smoke --out /tmp/toy-smoke   # a handful of steps on a tiny config

Everything is reproducible from --seed, bit for bit on one machine (another machine's rounding trains another
model: toy/EXPERIMENTS.md, section Q). Weights are saved as float16 safetensors (the folder stays under 15 MB) in
diffusers' layout, with the loss log beside them.
"""

from __future__ import annotations

import argparse
import copy
import dataclasses
import json
import math
import shutil
import sys
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import torch
import torch.nn.functional as F
from diffusers import AutoencoderKL, DDPMScheduler, PNDMScheduler, StableDiffusionPipeline, UNet2DConditionModel
from diffusers.image_processor import VaeImageProcessor
from diffusers.models.attention_processor import AttnProcessor
from diffusers.training_utils import EMAModel, compute_snr
from torch.optim.lr_scheduler import LambdaLR
from torch.optim.swa_utils import AveragedModel
from tqdm.auto import tqdm
from transformers import CLIPTextConfig, CLIPTextModel, CLIPTokenizer
from transformers.optimization import get_cosine_with_min_lr_schedule_with_warmup

from helpers.models import CLIP_TOKENIZER as TOKENIZER_DIR
from helpers.models import SD15_SCHEDULER
from toy import world

ROOT = Path(__file__).resolve().parent.parent


@dataclass
class Config:
    num_images: int = 24000
    two_shape_prob: float = 0.25  # share of training pictures with two shapes (world.sample_scene); EXPERIMENTS.md, O
    vae_channels: tuple[int, ...] = (16, 32, 64, 64)
    vae_steps: int = 1400
    vae_batch: int = 32
    vae_lr: float = 1e-3
    kl_weight: float = 1e-6
    text_hidden: int = 32
    text_layers: int = 2
    unet_channels: tuple[int, ...] = (48, 96, 96)
    unet_steps: int = 9000
    unet_batch: int = 64
    unet_lr: float = 1e-3
    warmup: int = 100
    ema_decay: float = 0.995  # a window of about 200 steps: a longer one lags behind a model still learning fast
    lr_floor: float = 0.02  # the cosine decays to this share of the base rate
    vae_bf16: bool = False  # the VAE stage's forward passes under bfloat16 autocast (weights stay float32); T
    unet_heads: int = 8  # attention heads in each U-Net attention layer (diffusers' attention_head_dim); V
    fused_adamw: bool = False  # PyTorch's fused AdamW kernel (the same update, other rounding, faster on the CPU); V
    ema_foreach: bool = False  # diffusers' EMA update in torch._foreach ops (the same average, other rounding); W
    average_last: int = 0  # save the equal average of the last this many steps' weights (SWA) instead of the EMA
    empty_caption_prob: float = 0.1
    caption_keep: float = 0.85  # each optional attribute is named with this probability
    min_snr_gamma: float = 0.0  # Min-SNR loss weighting (Hang et al. 2023); 0 is off, as in SD's training
    high_noise_share: float = 0.0  # extra share of timesteps drawn from the noisier half; 0 is uniform
    x0_weight_cap: float = 0.0  # weight noisy steps (SNR < 1) by 1/SNR, up to this cap; 0 is off
    caption_noise: float = 0.1  # chance that a named attribute is named wrong (world.caption); EXPERIMENTS.md, I and K
    caption_noise_kinds: tuple[str, ...] = ("color",)  # which kinds of attribute noise touches; J and K
    variation: float = 0.0  # unnamed shade and lighting variety in the pictures (world.render); EXPERIMENTS.md, I
    color_range: float = 0.9  # how much of the way to the next name each named colour covers (world.render); J
    shape_range: float = 0.0  # the same for the outlines of circles and squares (world.shape_exponent); L
    vae_color_range: float | None = None  # the VAE stage's own colour range (None: color_range); L, the end
    vae_fused_adamw: bool | None = None  # the VAE stage's own AdamW kernel (None: fused_adamw); --vae-from logs it
    vae_target: float = 0.0  # end the VAE stage once its two-shape shape ceiling reads this, percent; 0: no readings
    vae_check_every: int = 200  # read at the multiples of this from half way through the VAE stage, and at its end
    vae_draws: int = 1  # VAEs drawn at most when each ends short of vae_target (the best last reading is kept)
    seed: int = 0


# The first stage's VAE settings: what --vae-from takes over, with the VAE, from the model it names.
VAE_FIELDS = (
    "vae_channels",
    "vae_steps",
    "vae_batch",
    "vae_lr",
    "kl_weight",
    "vae_bf16",
    "vae_color_range",
    "vae_fused_adamw",
    "vae_target",
    "vae_check_every",
    "vae_draws",
)


def vae_fused_adamw(cfg: Config) -> bool:
    """Whether the VAE stage's AdamW runs the fused kernel: its own setting, or the stages' shared one."""
    return cfg.fused_adamw if cfg.vae_fused_adamw is None else cfg.vae_fused_adamw


SMOKE = Config(
    num_images=64,
    vae_channels=(8, 8, 8, 8),
    vae_steps=3,
    vae_batch=8,
    text_hidden=16,
    text_layers=1,
    unet_channels=(16, 16),
    unet_steps=3,
    unet_batch=8,
    warmup=1,
)


def stage_config(folder: Path, stage: int = -1) -> Config:
    """The Config one training stage of a saved model ran with, read from its training_log.json (the last by
    default): how that model's training pictures were drawn and captioned."""
    saved = json.loads((Path(folder) / "training_log.json").read_text())["stages"][stage]["config"]
    names = {field.name for field in dataclasses.fields(Config)}
    return Config(**{k: tuple(v) if isinstance(v, list) else v for k, v in saved.items() if k in names})


def build_vae(cfg: Config) -> AutoencoderKL:
    n = len(cfg.vae_channels)
    return AutoencoderKL(
        in_channels=3,
        out_channels=3,
        latent_channels=4,
        layers_per_block=1,
        down_block_types=("DownEncoderBlock2D",) * n,
        up_block_types=("UpDecoderBlock2D",) * n,
        block_out_channels=cfg.vae_channels,
        norm_num_groups=min(8, cfg.vae_channels[0]),
        sample_size=world.IMAGE_SIZE,
    )


def build_text_encoder(cfg: Config) -> CLIPTextModel:
    return CLIPTextModel(
        CLIPTextConfig(
            vocab_size=49408,
            max_position_embeddings=77,
            hidden_size=cfg.text_hidden,
            intermediate_size=4 * cfg.text_hidden,
            num_hidden_layers=cfg.text_layers,
            num_attention_heads=4,
            projection_dim=cfg.text_hidden,
            hidden_act="quick_gelu",
            bos_token_id=49406,
            eos_token_id=49407,
            pad_token_id=49407,
        )
    )


UNET_NORM_GROUPS = 16  # the U-Net's group norm: every width must split into this many groups


def build_unet(cfg: Config, latent_size: int) -> UNet2DConditionModel:
    n = len(cfg.unet_channels)
    return UNet2DConditionModel(
        sample_size=latent_size,
        in_channels=4,
        out_channels=4,
        layers_per_block=1,
        block_out_channels=cfg.unet_channels,
        down_block_types=("CrossAttnDownBlock2D",) * (n - 1) + ("DownBlock2D",),
        up_block_types=("UpBlock2D",) + ("CrossAttnUpBlock2D",) * (n - 1),
        cross_attention_dim=cfg.text_hidden,
        attention_head_dim=cfg.unet_heads,
        norm_num_groups=UNET_NORM_GROUPS,
    )


def lr_schedule(optimizer: torch.optim.Optimizer, total: int, warmup: int, floor: float) -> LambdaLR:
    """transformers' cosine schedule: a linear warm-up from 0, then a cosine decay to `floor` times the base rate."""
    return get_cosine_with_min_lr_schedule_with_warmup(optimizer, warmup, total, min_lr_rate=floor)


def sample_timesteps(cfg: Config, batch: int, num_train_timesteps: int, gen: torch.Generator) -> torch.Tensor:
    """Uniform timesteps, except that a share `high_noise_share` comes from the noisier half only."""
    t = torch.randint(0, num_train_timesteps, (batch,), generator=gen)
    high = torch.randint(num_train_timesteps // 2, num_train_timesteps, (batch,), generator=gen)
    pick_high = torch.rand(batch, generator=gen) < cfg.high_noise_share
    return torch.where(pick_high, high, t)


def loss_weights(cfg: Config, noise_scheduler: DDPMScheduler, t: torch.Tensor) -> torch.Tensor:
    """Per-sample weights of the epsilon loss (all ones when both options are off).

    Min-SNR-gamma: min(SNR, gamma) / SNR. x0 weighting: max(1, 1/SNR) capped at `x0_weight_cap`; the epsilon
    error is sqrt(SNR) times the error in the clean picture, so at high noise a wrong colour costs almost
    nothing, and 1/SNR makes it cost what it does in the picture.
    """
    snr = compute_snr(noise_scheduler, t)
    weights = torch.ones(len(t))
    if cfg.min_snr_gamma > 0:
        weights = weights * snr.clamp(max=cfg.min_snr_gamma) / snr
    if cfg.x0_weight_cap > 0:
        weights = weights * (1 / snr).clamp(min=1.0, max=max(1.0, cfg.x0_weight_cap))
    return weights


def make_dataset(cfg: Config, rng: np.random.Generator) -> tuple[list[world.Scene], np.ndarray]:
    scenes = [world.sample_scene(rng, two_shape_prob=cfg.two_shape_prob) for _ in range(cfg.num_images)]
    images = np.stack(
        [
            world.render(s, rng, cfg.variation, cfg.color_range, cfg.shape_range)
            for s in tqdm(scenes, desc="draw toy world")
        ]
    )
    return scenes, images


def to_tensor(images: np.ndarray) -> torch.Tensor:
    """uint8 (N, H, W, 3) -> float (N, 3, H, W) in [-1, 1], as SD's VAE expects (diffusers' own conversion)."""
    return VaeImageProcessor.normalize(VaeImageProcessor.numpy_to_pt(images.astype(np.float32) / 255.0))


def train_vae(
    cfg: Config,
    images: np.ndarray,
    log: list[dict],
    after_step: Callable[[int, AutoencoderKL], bool | None] | None = None,
) -> AutoencoderKL:
    """Train the VAE from scratch; with cfg.vae_bf16 its forward passes run under bfloat16 autocast, which the CPU's
    AMX units multiply (the loss, the weights and the optimiser stay float32). `after_step(step, vae)`, if given, is
    called after each update, for probes that read the VAE along its training (toy/logs/vae_snapshots_Z.py); when it
    returns True the stage ends there."""
    vae = build_vae(cfg)
    opt = torch.optim.AdamW(vae.parameters(), lr=cfg.vae_lr, weight_decay=0.0, fused=vae_fused_adamw(cfg) or None)
    schedule = lr_schedule(opt, cfg.vae_steps, cfg.warmup, floor=0.1)
    gen = np.random.default_rng(cfg.seed + 1)
    for step in (bar := tqdm(range(cfg.vae_steps), desc="VAE")):
        x = to_tensor(images[gen.integers(0, len(images), cfg.vae_batch)])
        with torch.autocast("cpu", dtype=torch.bfloat16, enabled=cfg.vae_bf16):
            posterior = vae.encode(x).latent_dist
            recon = vae.decode(posterior.sample()).sample
        mse = F.mse_loss(recon.float(), x)
        loss = mse + cfg.kl_weight * posterior.kl().float().mean()
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(vae.parameters(), 1.0)
        opt.step()
        schedule.step()
        bar.set_postfix(mse=f"{mse.item():.4f}")
        log.append({"stage": "vae", "step": step, "mse": round(mse.item(), 6)})
        if after_step is not None and after_step(step, vae):
            break
    return vae.eval()


def vae_reading(cfg: Config, vae: AutoencoderKL) -> dict[str, float]:
    """toy.evaluate's two-shape VAE ceiling (percent right per attribute on its 1,000 scenes, the same scenes each
    time) of the VAE as it would be saved (float16 weights), on the world the VAE trains on with each colour kept
    within its name (toy.evaluate.vae_world): what --vae-target reads."""
    from toy.evaluate import vae_ceiling_two_shapes, vae_world  # imported here: toy.evaluate imports this module

    saved = copy.deepcopy(vae).to(torch.float16).to(torch.float32).eval()
    return vae_ceiling_two_shapes(SimpleNamespace(vae=saved), np.random.default_rng(6), vae_world(asdict(cfg)))


def train_vae_to_target(
    cfg: Config,
    images: np.ndarray,
    log: list[dict],
    read: Callable[[Config, AutoencoderKL], dict[str, float]] = vae_reading,
) -> AutoencoderKL:
    """The first stage's VAE. With cfg.vae_target, its two-shape shape ceiling (`read`) is read at each multiple of
    cfg.vae_check_every from half way, and at the last step, and the stage ends at the first reading that reaches
    the target. VAEs of one recipe part early and end apart (toy/EXPERIMENTS.md, Z), so a VAE that ends short
    is drawn again, as the seed 1000 further on would draw it on the same pictures, up to cfg.vae_draws VAEs; then the
    best last reading is kept. Every reading is logged ("vae_reading" rows; the kept VAE's last one marked "kept"),
    and the kept VAE's steps are the "vae" rows."""
    if cfg.vae_target <= 0:
        return train_vae(cfg, images, log)
    best: tuple[AutoencoderKL, list[dict], dict] | None = None
    for draw in range(cfg.vae_draws):
        vae, rows, reading = train_vae_draw(cfg, draw, images, log, read)
        if best is None or reading["shape"] > best[2]["shape"]:
            best = (vae, rows, reading)
        if reading["shape"] >= cfg.vae_target:
            break
    assert best is not None
    vae, rows, reading = best
    if reading["shape"] < cfg.vae_target:
        print(f"no VAE of {cfg.vae_draws} reached the target {cfg.vae_target:g}; kept the best, {reading['shape']:.1f}")
    reading["kept"] = True
    log.extend(rows)
    return vae


def train_vae_draw(
    cfg: Config,
    draw: int,
    images: np.ndarray,
    log: list[dict],
    read: Callable[[Config, AutoencoderKL], dict[str, float]],
) -> tuple[AutoencoderKL, list[dict], dict]:
    """One VAE of train_vae_to_target: the seed's own for draw 0 (the readings draw no random numbers), else the
    VAE of the seed 1000 * draw further on. Returns it, its step rows and its last reading's row; the readings go to
    `log` as they are taken."""
    draw_cfg = dataclasses.replace(cfg, seed=cfg.seed + 1000 * draw)
    if draw:
        torch.manual_seed(draw_cfg.seed)
    rows: list[dict] = []
    readings: list[dict] = []

    def after_step(step: int, vae: AutoencoderKL) -> bool:
        if step + 1 < cfg.vae_steps and (step < cfg.vae_steps // 2 or step % cfg.vae_check_every):
            return False
        started = time.time()
        reading = {k: round(v, 2) for k, v in read(cfg, vae).items() if k in ("color", "shape")}  # as logged
        readings.append({"stage": "vae_reading", "draw": draw, "step": step, **reading})
        log.append(readings[-1])
        print(
            f"VAE draw {draw}, step {step}: two-shape ceiling colour {reading['color']:.1f}, shape "
            f"{reading['shape']:.1f} (target {cfg.vae_target:g}; read in {time.time() - started:.0f} s)"
        )
        return reading["shape"] >= cfg.vae_target

    return train_vae(draw_cfg, images, rows, after_step), rows, readings[-1]


@torch.no_grad()
def encode_all(vae: AutoencoderKL, images: np.ndarray, batch: int = 64) -> tuple[torch.Tensor, torch.Tensor]:
    """The VAE's posterior mean and standard deviation of every picture. Batches of 64 run about twice as fast
    here as 256 did, with the same numbers (tested)."""
    means, stds = [], []
    for i in tqdm(range(0, len(images), batch), desc="encode latents"):
        dist = vae.encode(to_tensor(images[i : i + batch])).latent_dist
        means.append(dist.mean)
        stds.append(dist.std)
    return torch.cat(means), torch.cat(stds)


class CaptionTokens:
    """Token ids of captions, each caption tokenized once: the same ids as one batched tokenizer call (tested).
    The shipped recipe's 9,100 steps of 64 ask for some 580,000 captions of about 3,300 kinds; this saves half a
    minute."""

    def __init__(self, tokenizer: CLIPTokenizer) -> None:
        self.tokenizer = tokenizer
        self.known: dict[str, list[int]] = {}

    def __call__(self, captions: list[str]) -> torch.Tensor:
        for caption in captions:
            if caption not in self.known:
                self.known[caption] = self.tokenizer(
                    caption, padding="max_length", max_length=self.tokenizer.model_max_length, truncation=True
                ).input_ids
        return torch.tensor([self.known[caption] for caption in captions])


def train_unet(
    cfg: Config,
    scenes: list[world.Scene],
    means: torch.Tensor,
    stds: torch.Tensor,
    scaling_factor: float,
    tokenizer: CLIPTokenizer,
    log: list[dict],
    start: tuple[UNet2DConditionModel, CLIPTextModel] | None = None,
) -> tuple[UNet2DConditionModel, CLIPTextModel]:
    """Train from scratch, or go on from `start` (a saved U-Net and text encoder)."""
    unet, text_encoder = start or (build_unet(cfg, means.shape[-1]), build_text_encoder(cfg))
    unet.train(), text_encoder.train()
    # The plain attention maths trains tiny heads (6 to 12 channels: 8 heads on widths 48, 96, 96) faster on the CPU
    # than the fused scaled-dot-product kernel, and the shipped 2 heads (16 to 48 channels) as fast; the weights are the
    # same either way, and the saved model keeps diffusers' default.
    unet.set_attn_processor(AttnProcessor())
    params = list(unet.parameters()) + list(text_encoder.parameters())
    opt = torch.optim.AdamW(params, lr=cfg.unet_lr, weight_decay=0.0, fused=cfg.fused_adamw or None)
    schedule = lr_schedule(opt, cfg.unet_steps, cfg.warmup, cfg.lr_floor)
    # The weights saved: diffusers' EMA, with its default warm-up (decay min(ema_decay, (1 + step) / (10 + step)) at
    # each step); or, with average_last, torch's equal average of the last steps' weights (stochastic weight averaging)
    ema = EMAModel(params, decay=cfg.ema_decay, foreach=cfg.ema_foreach)
    averages = [AveragedModel(model) for model in (unet, text_encoder)] if cfg.average_last else []
    noise_scheduler = DDPMScheduler.from_config(SD15_SCHEDULER)
    gen = torch.Generator().manual_seed(cfg.seed + 2)
    rng = np.random.default_rng(cfg.seed + 3)
    tokenize = CaptionTokens(tokenizer)
    for step in (bar := tqdm(range(cfg.unet_steps), desc="U-Net + text encoder")):
        idx = rng.integers(0, len(scenes), cfg.unet_batch)
        captions = [
            ""
            if rng.random() < cfg.empty_caption_prob
            else world.caption(scenes[i], rng, cfg.caption_keep, cfg.caption_noise, cfg.caption_noise_kinds)
            for i in idx
        ]
        ids = tokenize(captions)
        idx_t = torch.from_numpy(idx)
        latents = (means[idx_t] + stds[idx_t] * torch.randn(means[idx_t].shape, generator=gen)) * scaling_factor
        noise = torch.randn(latents.shape, generator=gen)
        t = sample_timesteps(cfg, len(idx), noise_scheduler.config.num_train_timesteps, gen)
        noisy = noise_scheduler.add_noise(latents, noise, t)
        pred = unet(noisy, t, text_encoder(ids)[0]).sample
        per_sample = F.mse_loss(pred, noise, reduction="none").mean(dim=(1, 2, 3))
        loss = (loss_weights(cfg, noise_scheduler, t) * per_sample).mean()
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(params, 1.0)
        opt.step()
        schedule.step()
        if not averages:
            ema.step(params)
        elif step >= cfg.unet_steps - cfg.average_last:
            for average, model in zip(averages, (unet, text_encoder)):
                average.update_parameters(model)
        bar.set_postfix(loss=f"{loss.item():.4f}")
        log.append(
            {"stage": "unet", "step": step, "loss": round(loss.item(), 6), "mse": round(per_sample.mean().item(), 6)}
        )
    for average, model in zip(averages, (unet, text_encoder)):
        model.load_state_dict(average.module.state_dict())
    if not averages:
        ema.copy_to(params)
    unet.set_default_attn_processor()
    return unet.eval(), text_encoder.eval()


def save_model(
    out: Path, vae: AutoencoderKL, text_encoder: CLIPTextModel, unet: UNet2DConditionModel, tokenizer: CLIPTokenizer
) -> None:
    """Save in diffusers' layout, float16 safetensors, with SD v1.5's scheduler config."""
    pipe = StableDiffusionPipeline(
        vae=vae,
        text_encoder=text_encoder,
        tokenizer=tokenizer,
        unet=unet,
        scheduler=PNDMScheduler.from_config(SD15_SCHEDULER),
        safety_checker=None,
        feature_extractor=None,
        requires_safety_checker=False,
    )
    pipe.to(torch.float16)
    pipe.save_pretrained(out, safe_serialization=True)
    pipe.to(torch.float32)
    # Ship the derived BPE files themselves (1.5 MB) rather than the 3.6 MB tokenizer.json.
    shutil.rmtree(out / "tokenizer")
    shutil.copytree(TOKENIZER_DIR, out / "tokenizer")
    # Stored as float16 for size; transformers reads "dtype" as the dtype to load in.
    text_config_path = out / "text_encoder" / "config.json"
    text_config = json.loads(text_config_path.read_text())
    text_config["dtype"] = "float32"
    text_config_path.write_text(json.dumps(text_config, indent=2, sort_keys=True) + "\n")
    # SD v1.5's scheduler file itself: saving the scheduler writes every default of PNDM's (timestep_spacing
    # "leading" among them), which other schedulers built from the file would then take over, where SD v1.5's
    # file leaves them to each scheduler's own default.
    (out / "scheduler" / "scheduler_config.json").write_text(json.dumps(SD15_SCHEDULER, indent=2) + "\n")
    for name in ("unet", "vae"):  # a resumed model's configs remember the folder they came from: not shipped
        config_path = out / name / "config.json"
        config = json.loads(config_path.read_text())
        if config.pop("_name_or_path", None) is not None:
            config_path.write_text(json.dumps(config, indent=2, sort_keys=True) + "\n")


def main() -> None:
    parser = argparse.ArgumentParser(description="Train the bundled toy Stable Diffusion model.")
    parser.add_argument("--out", type=Path, default=ROOT / "models" / "toy-sd")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--smoke", action="store_true", help="a handful of steps on a tiny config")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--resume", type=Path, help="go on training the U-Net and text encoder saved here")
    parser.add_argument(
        "--vae-from",
        type=Path,
        help="a first stage on the VAE saved here (its weights, scaling_factor and log): the VAE held fixed",
    )
    parser.add_argument("--steps", type=int, help="U-Net steps (with --resume: the extra steps)")
    parser.add_argument("--lr", type=float, help="U-Net learning rate")
    parser.add_argument("--vae-steps", type=int, help="VAE steps")
    parser.add_argument("--batch", type=int, help="U-Net batch size")
    parser.add_argument("--unet-heads", type=int, help="attention heads per U-Net attention layer (first stage only)")
    parser.add_argument(
        "--unet-channels",
        help=f"the U-Net's widths, level by level, comma-separated multiples of {UNET_NORM_GROUPS} (first stage only)",
    )
    parser.add_argument(
        "--fused-adamw", action="store_true", help="PyTorch's fused AdamW kernel (the same update, faster on the CPU)"
    )
    parser.add_argument(
        "--vae-adamw",
        choices=("for-loop", "fused"),
        help="the VAE stage's own AdamW kernel (first stage only; default: --fused-adamw's)",
    )
    parser.add_argument(
        "--ema-foreach", action="store_true", help="the EMA update in foreach ops (the same average to rounding)"
    )
    parser.add_argument("--high-noise-share", type=float, help="share of timesteps from the noisier half")
    parser.add_argument("--x0-weight-cap", type=float, help="weight noisy steps by 1/SNR up to this")
    parser.add_argument("--ema-decay", type=float, help="EMA decay of the saved U-Net and text encoder weights")
    parser.add_argument("--lr-floor", type=float, help="the share of the rate the cosine decays to")
    parser.add_argument(
        "--vae-bf16", action="store_true", help="the VAE stage under bfloat16 autocast (faster on CPUs with AMX)"
    )
    parser.add_argument(
        "--vae-target",
        type=float,
        help="end the VAE stage once its two-shape shape ceiling reads this percent (first stage only; 0: no readings)",
    )
    parser.add_argument("--vae-check-every", type=int, help="VAE steps between --vae-target's readings, from half way")
    parser.add_argument("--vae-draws", type=int, help="VAEs drawn at most while each ends short of --vae-target")
    parser.add_argument(
        "--average-last", type=int, help="save the equal average of the last N steps' weights (SWA), not the EMA"
    )
    parser.add_argument("--caption-keep", type=float, help="probability that a caption names each optional attribute")
    parser.add_argument(
        "--empty-caption-prob", type=float, help="share of empty captions, which train the unconditional prediction"
    )
    parser.add_argument("--two-shape-prob", type=float, help="share of training pictures with two shapes, 0 to 1")
    parser.add_argument("--warmup", type=int, help="learning-rate warm-up steps")
    parser.add_argument("--min-snr-gamma", type=float, help="Min-SNR loss weighting; 0 is off")
    parser.add_argument("--caption-noise", type=float, help="chance that a named attribute is named wrong, 0 to 1")
    parser.add_argument("--variation", type=float, help="unnamed shade and lighting variety, 0 to 1 (world.render)")
    parser.add_argument(
        "--caption-noise-kinds",
        help=f"comma-separated attributes --caption-noise touches ({','.join(world.ATTRIBUTES)})",
    )
    parser.add_argument(
        "--color-range",
        type=float,
        help="the share of the way to the next name a colour may vary, 0 to 2 (above 1, neighbouring names overlap)",
    )
    parser.add_argument(
        "--vae-color-range",
        type=float,
        help="the colour range of the pictures the VAE trains on (first stage only), 0 to 2 (default: --color-range's)",
    )
    parser.add_argument(
        "--shape-range",
        type=float,
        help="the share of the way to the circle/square boundary an outline may vary, 0 to 2 (above 1, they overlap)",
    )
    args = parser.parse_args()

    torch.set_num_threads(args.threads)
    # Each option's config field and allowed range, checked before any work; an option given replaces the config's
    # value (0 included), and the module's configs themselves are never changed.
    ranges = {
        "steps": ("unet_steps", 1, math.inf),
        "lr": ("unet_lr", 1e-12, math.inf),
        "vae_steps": ("vae_steps", 1, math.inf),
        "batch": ("unet_batch", 1, math.inf),
        "unet_heads": ("unet_heads", 1, math.inf),
        "high_noise_share": ("high_noise_share", 0.0, 1.0),
        "min_snr_gamma": ("min_snr_gamma", 0.0, math.inf),
        "x0_weight_cap": ("x0_weight_cap", 0.0, math.inf),
        "ema_decay": ("ema_decay", 0.0, 0.9999),
        "lr_floor": ("lr_floor", 0.0, 1.0),
        "average_last": ("average_last", 0, math.inf),
        "caption_keep": ("caption_keep", 0.0, 1.0),
        "empty_caption_prob": ("empty_caption_prob", 0.0, 1.0),
        "two_shape_prob": ("two_shape_prob", 0.0, 1.0),
        "caption_noise": ("caption_noise", 0.0, 1.0),
        "variation": ("variation", 0.0, 1.0),
        "color_range": ("color_range", 0.0, 2.0),
        "shape_range": ("shape_range", 0.0, 2.0),
        "vae_color_range": ("vae_color_range", 0.0, 2.0),
        "vae_target": ("vae_target", 0.0, 100.0),
        "vae_check_every": ("vae_check_every", 1, math.inf),
        "vae_draws": ("vae_draws", 1, math.inf),
        "warmup": ("warmup", 0, math.inf),
    }
    changes = {
        "seed": args.seed,
        "vae_bf16": args.vae_bf16,
        "fused_adamw": args.fused_adamw,
        "ema_foreach": args.ema_foreach,
    }
    for option, (field, low, high) in ranges.items():
        value = getattr(args, option)
        if value is None:
            continue
        if not low <= value <= high:
            parser.error(f"--{option.replace('_', '-')} must be between {low:g} and {high:g}, got {value}")
        changes[field] = value
    if args.caption_noise_kinds is not None:
        kinds = tuple(args.caption_noise_kinds.split(","))
        if not set(kinds) <= set(world.ATTRIBUTES):
            parser.error(
                f"--caption-noise-kinds must be a comma-separated subset of {','.join(world.ATTRIBUTES)}, "
                f"got {args.caption_noise_kinds!r}"
            )
        changes["caption_noise_kinds"] = kinds
    if args.unet_channels is not None:
        try:
            widths = tuple(int(width) for width in args.unet_channels.split(","))
        except ValueError:
            widths = ()
        if len(widths) < 2 or any(width <= 0 or width % UNET_NORM_GROUPS for width in widths):
            parser.error(
                f"--unet-channels must be two or more comma-separated positive multiples of {UNET_NORM_GROUPS} (the "
                f"U-Net's group norm has {UNET_NORM_GROUPS} groups), got {args.unet_channels!r}"
            )
        changes["unet_channels"] = widths
    if args.vae_adamw is not None:
        changes["vae_fused_adamw"] = args.vae_adamw == "fused"
    cfg = dataclasses.replace(SMOKE if args.smoke else Config(), **changes)
    if cfg.average_last > cfg.unet_steps:
        parser.error(f"--average-last must be at most the U-Net steps ({cfg.unet_steps}), got {cfg.average_last}")
    if any(channels % cfg.unet_heads for channels in cfg.unet_channels):
        parser.error(f"--unet-heads must divide every U-Net width {cfg.unet_channels}, got {cfg.unet_heads}")
    for flag, given in (("--unet-heads", args.unet_heads), ("--unet-channels", args.unet_channels)):
        if args.resume and given is not None:
            parser.error(f"{flag} builds a new U-Net; --resume {args.resume} goes on with the saved one")
    vae_options = {  # options of the VAE's own training (None: not given)
        "--vae-bf16": args.vae_bf16 or None,
        "--vae-adamw": args.vae_adamw,
        "--vae-target": args.vae_target,
        "--vae-check-every": args.vae_check_every,
        "--vae-draws": args.vae_draws,
    }
    for flag, given in vae_options.items():
        if args.resume and given is not None:
            parser.error(
                f"{flag} changes how the VAE is trained; --resume {args.resume} keeps the saved VAE and trains none"
            )
    if args.vae_from is not None:
        given_vae = {"--resume": args.resume, "--vae-steps": args.vae_steps, "--vae-color-range": args.vae_color_range}
        for flag, given in {**given_vae, **vae_options}.items():
            if given is not None:
                parser.error(f"--vae-from {args.vae_from} trains no VAE, so {flag} has nothing to do")
        if not (args.vae_from / "vae" / "config.json").is_file() or not (args.vae_from / "training_log.json").is_file():
            parser.error(f"--vae-from {args.vae_from}: no saved model there (vae/config.json and training_log.json)")
        source = stage_config(args.vae_from, 0)  # the VAE's own settings, so that the log describes it truly
        taken = {k: getattr(source, k) for k in VAE_FIELDS}  # a None there stood for the source's shared value
        if source.vae_color_range is None:
            taken["vae_color_range"] = source.color_range
        taken["vae_fused_adamw"] = vae_fused_adamw(source)
        cfg = dataclasses.replace(cfg, **taken)
    torch.manual_seed(cfg.seed)
    started = time.time()
    log: list[dict] = []
    stages: list[dict] = []
    if args.resume:
        stages = json.loads((args.resume / "training_log.json").read_text())["stages"]
        log = json.loads((args.resume / "training_log.json").read_text())["log"]

    scenes, images = make_dataset(cfg, np.random.default_rng(cfg.seed))
    if args.resume:  # the same data from the same seed, and the saved VAE
        vae = AutoencoderKL.from_pretrained(args.resume, subfolder="vae", torch_dtype=torch.float32)
        start = (
            UNet2DConditionModel.from_pretrained(args.resume, subfolder="unet", torch_dtype=torch.float32),
            CLIPTextModel.from_pretrained(args.resume, subfolder="text_encoder", dtype=torch.float32),
        )
        saved = start[0].config  # logged as trained
        cfg = dataclasses.replace(
            cfg, unet_heads=saved.attention_head_dim, unet_channels=tuple(saved.block_out_channels)
        )
    elif args.vae_from is not None:  # the saved VAE and its training log's rows: this model's VAE is that one
        vae, start = AutoencoderKL.from_pretrained(args.vae_from, subfolder="vae", torch_dtype=torch.float32), None
        source_log = json.loads((args.vae_from / "training_log.json").read_text())["log"]
        log = [row for row in source_log if row["stage"] in ("vae", "vae_reading")]
    else:  # with a colour range of its own, the VAE learns the same seed's scenes drawn at that range
        vae_images = images
        if cfg.vae_color_range not in (None, cfg.color_range):
            vae_cfg = dataclasses.replace(cfg, color_range=cfg.vae_color_range)
            vae_images = make_dataset(vae_cfg, np.random.default_rng(cfg.seed))[1]
        vae, start = train_vae_to_target(cfg, vae_images, log), None
        latent_std = encode_all(vae, images)[0].std()
        vae.register_to_config(scaling_factor=round(float(1.0 / latent_std), 5))
        print(f"VAE latent std {latent_std:.4f} -> scaling_factor {vae.config.scaling_factor}")
        # The U-Net learns the latents of the VAE as it is saved (float16 weights), as a later --resume stage and a
        # --vae-from run do: a stage trains on the same latents whether its VAE was trained here or loaded
        vae.to(torch.float16).to(torch.float32)
    means, stds = encode_all(vae, images)
    if start is None:  # the first weights of the U-Net and text encoder do not depend on how the VAE came here either
        torch.manual_seed(cfg.seed)

    tokenizer = CLIPTokenizer.from_pretrained(TOKENIZER_DIR)
    unet, text_encoder = train_unet(cfg, scenes, means, stds, vae.config.scaling_factor, tokenizer, log, start)

    save_model(args.out, vae, text_encoder, unet, tokenizer)
    minutes = (time.time() - started) / 60
    stages.append(
        {
            "command": " ".join(["python -m toy.train", *sys.argv[1:]]),
            "config": asdict(cfg),
            "minutes": round(minutes, 1),
        }
    )
    summary = {"scaling_factor": vae.config.scaling_factor, "minutes": round(sum(s["minutes"] for s in stages), 1)}
    (args.out / "training_log.json").write_text(json.dumps({"summary": summary, "stages": stages, "log": log}) + "\n")
    print(f"saved to {args.out} after {minutes:.1f} minutes")


if __name__ == "__main__":
    main()
