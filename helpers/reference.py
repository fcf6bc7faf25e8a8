"""What the hand-written loop is compared with: diffusers' own pipeline on the same components, and SD v1.5's
architecture with random weights (for shapes, parameter counts and speed, which do not depend on the weights)."""

from __future__ import annotations

import torch
from diffusers import AutoencoderKL, UNet2DConditionModel
from transformers import CLIPTextModel, CLIPTokenizer

from helpers.models import CLIP_TOKENIZER, SD15_CONFIGS, SD15_SCHEDULER, Components, ModelSource
from helpers.schedulers import make_scheduler


def sd15_architecture(device: torch.device | str = "meta", dtype: torch.dtype = torch.float32):
    """SD v1.5's text encoder, U-Net and VAE built from their published configs, with random weights.

    On the "meta" device nothing is allocated: good for parameter counts and shapes.
    """
    from transformers import CLIPTextConfig

    with torch.device(device):
        text_encoder = CLIPTextModel(CLIPTextConfig.from_json_file(SD15_CONFIGS / "text_encoder_config.json"))
        unet = UNet2DConditionModel.from_config(UNet2DConditionModel.load_config(SD15_CONFIGS / "unet_config.json"))
        vae = AutoencoderKL.from_config(AutoencoderKL.load_config(SD15_CONFIGS / "vae_config.json"))
    if dtype != torch.float32:
        text_encoder, unet, vae = text_encoder.to(dtype), unet.to(dtype), vae.to(dtype)
    return text_encoder, unet, vae


def random_components(
    text_encoder: CLIPTextModel, unet: UNet2DConditionModel, vae: AutoencoderKL, name: str, reason: str
) -> Components:
    """Networks built in memory (random weights), with SD v1.5's tokenizer and scheduler config, as Components."""
    for model in (text_encoder, unet, vae):
        model.eval().requires_grad_(False)
    source = ModelSource(SD15_CONFIGS, "random", name, unet.device, unet.dtype, reason)
    tokenizer = CLIPTokenizer.from_pretrained(CLIP_TOKENIZER)
    return Components(tokenizer, text_encoder, unet, vae, dict(SD15_SCHEDULER), source)


def sd15_random_components(device: torch.device | str = "cpu", dtype: torch.dtype = torch.float32) -> Components:
    """SD v1.5's architecture with random weights, ready for the loop (speed does not depend on the weights)."""
    return random_components(*sd15_architecture(device, dtype), "sd15-random", "SD v1.5 architecture, random weights")


def diffusers_pipeline(components: Components, scheduler: str, pipeline_class=None):
    """diffusers' own pipeline (StableDiffusionPipeline by default) on the very same components."""
    from diffusers import StableDiffusionPipeline

    pipe = (pipeline_class or StableDiffusionPipeline)(
        vae=components.vae,
        text_encoder=components.text_encoder,
        tokenizer=components.tokenizer,
        unet=components.unet,
        scheduler=make_scheduler(scheduler, components.scheduler_config),
        safety_checker=None,
        feature_extractor=None,
        requires_safety_checker=False,
    )
    pipe.set_progress_bar_config(disable=True)
    return pipe
