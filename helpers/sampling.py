"""`generate(...)`: the hand-written text-to-image loop that the notebook builds cell by cell.

The steps follow diffusers' ``StableDiffusionPipeline.__call__`` one for one, so that, on the
same components, seed and scheduler, both give the same pixels:
    1. check inputs   2. encode the prompt   3. timesteps   4. initial latents
    5. denoising loop with classifier-free guidance   6. VAE decode
"""

from __future__ import annotations

import dataclasses
import inspect
import random
import time
import warnings
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
from diffusers.image_processor import VaeImageProcessor
from diffusers.schedulers.scheduling_utils import SchedulerMixin
from PIL import Image

from helpers.models import Components, make_scheduler
from helpers.prompts import encode_weighted, is_plain
from helpers.seeding import check_seed, cpu_noise, make_generator
from helpers.settings import GenerationSettings, check_number


@dataclass
class Step:
    """What the per-step callback sees."""

    index: int
    timestep: torch.Tensor
    sample: torch.Tensor  # the latents this step started from
    noise_pred: torch.Tensor  # the guided noise prediction
    latents: torch.Tensor  # the latents after the scheduler's step
    scheduler: SchedulerMixin


StepCallback = Callable[[Step], None]


@dataclass
class Generation:
    """What `generate` returns: images, their float pixels, and how they were made."""

    images: list[Image.Image]
    pixels: np.ndarray  # (N, H, W, 3) float32 in [0, 1], as the pipeline's output_type="np"
    latents: torch.Tensor  # the final latents, before VAE decoding
    seed: int | None
    unet_calls: int
    seconds: float


def check_finite(pixels: np.ndarray, guidance_scale: float) -> np.ndarray:
    """The pixels, or a FloatingPointError: NaN or infinite values would be saved as a black picture."""
    if not np.isfinite(pixels).all():
        raise FloatingPointError(
            f"the decoded image has NaN or infinite pixels (guidance_scale={guidance_scale!r}): the latents overflowed."
            " Lower guidance_scale (Stable Diffusion is used at 1 to 15), or run in float32"
        )
    return pixels


def tokenize(tokenizer, prompts: list[str]) -> torch.Tensor:
    """Token ids padded to model_max_length; a prompt that is too long warns and names the dropped text."""
    max_length = tokenizer.model_max_length
    ids = tokenizer(
        prompts, padding="max_length", max_length=max_length, truncation=True, return_tensors="pt"
    ).input_ids
    for prompt in prompts:
        full = tokenizer(prompt, verbose=False).input_ids
        if len(full) > max_length:
            dropped = tokenizer.decode(full[max_length - 1 : -1])
            warnings.warn(
                f"prompt is longer than {max_length} tokens; this part was dropped: {dropped!r}", stacklevel=3
            )
    return ids


@torch.no_grad()
def encode_text(components: Components, prompts: list[str]) -> torch.Tensor:
    """CLIP's last hidden state for each prompt: (batch, model_max_length, hidden size)."""
    ids = tokenize(components.tokenizer, prompts).to(components.device)
    return components.text_encoder(ids)[0].to(components.text_encoder.dtype)


def prompt_embeddings(
    components: Components,
    prompts: list[str],
    negatives: list[str] | None,
    num_images_per_prompt: int,
    guided: bool,
    prompt_weighting: bool = True,
) -> torch.Tensor:
    """Text embeddings for the U-Net: [unconditional or negative; conditional] when guided.

    With `prompt_weighting`, prompts follow AUTOMATIC1111 (`helpers.prompts`: emphasis, BREAK, any length, in
    chunks of 77); a plain prompt that fits in 77 tokens still takes diffusers' path, so it gives diffusers' pixels.
    Without it, the prompt is read as diffusers reads it: cut at 77 tokens, brackets as plain text.
    """
    negatives = negatives or [""] * len(prompts)
    tokenizer = components.tokenizer
    texts = prompts + negatives if guided else prompts
    if prompt_weighting and not all(is_plain(tokenizer, text) for text in texts):
        groups = encode_weighted(tokenizer, components.text_encoder, [prompts, negatives] if guided else [prompts])
        embeds, uncond = groups[0], groups[-1]
    else:
        embeds = encode_text(components, prompts)
        uncond = encode_text(components, negatives) if guided else embeds
    embeds = embeds.repeat_interleave(num_images_per_prompt, dim=0)
    if not guided:
        return embeds
    return torch.cat([uncond.repeat_interleave(num_images_per_prompt, dim=0), embeds])


def initial_latents(
    components: Components, batch: int, height: int, width: int, generator: torch.Generator, init_noise_sigma: float
) -> torch.Tensor:
    """Gaussian latents from a CPU generator, scaled to the scheduler's starting noise level."""
    f = components.vae_scale_factor
    shape = (batch, components.unet.config.in_channels, height // f, width // f)
    return cpu_noise(shape, generator, components.device, components.dtype) * init_noise_sigma


def step_kwargs(scheduler, generator: torch.Generator) -> dict:
    """The extra arguments scheduler.step takes: the generator for ancestral samplers, eta=0 for DDIM."""
    accepted = inspect.signature(scheduler.step).parameters
    kwargs = {}
    if "eta" in accepted:
        kwargs["eta"] = 0.0
    if "generator" in accepted:
        kwargs["generator"] = generator
    return kwargs


@torch.no_grad()
def guided_noise(
    components: Components,
    scheduler,
    latents: torch.Tensor,
    t: torch.Tensor,
    embeds: torch.Tensor,
    guidance_scale: float,
) -> torch.Tensor:
    """One U-Net call (at batch 2 when guided) and classifier-free guidance."""
    guided = embeds.shape[0] == 2 * latents.shape[0]
    model_input = torch.cat([latents] * 2) if guided else latents
    model_input = scheduler.scale_model_input(model_input, t)
    noise = components.unet(model_input, t, encoder_hidden_states=embeds, return_dict=False)[0]
    if not guided:
        return noise
    uncond, cond = noise.chunk(2)
    return uncond + guidance_scale * (cond - uncond)


@torch.no_grad()
def decode(components: Components, latents: torch.Tensor, generator: torch.Generator | None = None) -> torch.Tensor:
    """VAE decode of (unscaled) latents to pixels in [0, 1], (N, 3, H, W).

    In half precision the VAE can overflow to NaN (a black image); then it decodes again in float32.
    """
    vae = components.vae
    image = vae.decode(latents / vae.config.scaling_factor, return_dict=False, generator=generator)[0]
    if image.dtype == torch.float16 and not torch.isfinite(image).all():
        warnings.warn("the float16 VAE decode gave NaN or inf; decoding again in float32", stacklevel=2)
        vae.to(torch.float32)
        try:
            image = vae.decode(latents.float() / vae.config.scaling_factor, return_dict=False, generator=generator)[0]
        finally:
            vae.to(torch.float16)
    return VaeImageProcessor.denormalize(image)  # [-1, 1] -> [0, 1]: (image / 2 + 0.5).clamp(0, 1)


def to_numpy(pixels: torch.Tensor) -> np.ndarray:
    """(N, 3, H, W) tensor in [0, 1] -> (N, H, W, 3) float32 array (diffusers' own conversion)."""
    return VaeImageProcessor.pt_to_numpy(pixels)


def to_pil(pixels: np.ndarray) -> list[Image.Image]:
    """(N, H, W, 3) floats in [0, 1] -> PIL images, rounded as diffusers rounds them (its own conversion)."""
    return VaeImageProcessor.numpy_to_pil(pixels)


def resolve_generator(seed: object, generator: object) -> tuple[int | None, torch.Generator]:
    """The seed (drawn at random when neither is given) and the CPU generator to use."""
    if seed is not None and generator is not None:
        raise ValueError("give seed or generator, not both")
    if generator is not None:
        if not isinstance(generator, torch.Generator):
            raise TypeError(f"generator must be a torch.Generator, got {type(generator).__name__}")
        return None, generator
    seed = check_seed(seed) if seed is not None else random.randrange(2**32)
    return seed, make_generator(seed)


def denoise(
    components: Components,
    scheduler: SchedulerMixin,
    timesteps: torch.Tensor,
    latents: torch.Tensor,
    embeds: torch.Tensor,
    guidance_scale: float,
    generator: torch.Generator,
    callback: StepCallback | None = None,
    progress: bool = False,
) -> torch.Tensor:
    """The denoising loop: iterate the timesteps (Heun evaluates twice per step), guide, step."""
    extra = step_kwargs(scheduler, generator)
    if progress:
        from tqdm.auto import tqdm

        timesteps = tqdm(timesteps, desc="denoising", leave=False)
    for i, t in enumerate(timesteps):
        noise_pred = guided_noise(components, scheduler, latents, t, embeds, guidance_scale)
        sample, latents = latents, scheduler.step(noise_pred, t, latents, **extra, return_dict=False)[0]
        if callback is not None:
            callback(Step(i, t, sample, noise_pred, latents, scheduler))
    return latents


def predicted_x0(step: Step) -> torch.Tensor:
    """The clean latents the noise prediction implies, at the step's timestep (epsilon prediction).

    DDPM-style schedulers keep x_t = sqrt(a) x0 + sqrt(1 - a) eps; sigma-style ones (Euler, K-LMS, Heun;
    init_noise_sigma > 1) keep x = x0 + sigma eps with sigma = sqrt((1 - a) / a), a = alphas_cumprod[t]. Their
    timesteps can fall between the training ones (SD v1.5's "linspace" grid: 946.42...), so sigma is interpolated
    between its neighbours, as those schedulers do.
    """
    alphas_cumprod = step.scheduler.alphas_cumprod
    if step.scheduler.init_noise_sigma > 1:
        train_sigmas = ((1 - alphas_cumprod) / alphas_cumprod) ** 0.5
        sigma = float(np.interp(float(step.timestep), np.arange(len(train_sigmas)), train_sigmas.numpy()))
        return step.sample - sigma * step.noise_pred
    a = alphas_cumprod[int(step.timestep)].to(step.sample.device, step.sample.dtype)
    return (step.sample - (1 - a) ** 0.5 * step.noise_pred) / a**0.5


@dataclass
class Prepared:
    """What text-to-image and image-to-image share before their loops: checked settings, generator, embeddings,
    a fresh scheduler with its timesteps set."""

    settings: GenerationSettings
    prompts: list[str]
    seed: int | None
    generator: torch.Generator
    embeds: torch.Tensor
    scheduler: SchedulerMixin


def prepare(
    components: Components,
    settings: GenerationSettings,
    generator: torch.Generator | None = None,
    callback: StepCallback | None = None,
) -> Prepared:
    """Steps 1 to 3 of the recipe: check inputs, encode the prompt, set the timesteps."""
    # 1. Check inputs, before any model work
    prompts, negatives = settings.check(components.vae_scale_factor, components.scheduler_config["num_train_timesteps"])
    if callback is not None and not callable(callback):
        raise TypeError(f"callback must be None or a callable taking a Step, got {type(callback).__name__}")
    seed, generator = resolve_generator(settings.seed, generator)
    # 2. Encode the prompt; guidance <= 1 skips the unconditional pass, as diffusers does
    embeds = prompt_embeddings(
        components, prompts, negatives, settings.num_images_per_prompt, settings.guidance_scale > 1,
        settings.prompt_weighting,
    )  # fmt: skip
    # 3. Timesteps from a fresh scheduler configured from the model's own config
    sched = make_scheduler(settings.scheduler, components.scheduler_config)
    sched.set_timesteps(settings.num_inference_steps, device=components.device)
    return Prepared(settings, prompts, seed, generator, embeds, sched)


def settings_from(function: str, keywords: dict) -> GenerationSettings:
    """A GenerationSettings from a call's keywords; a keyword that is not a setting is a TypeError naming it."""
    unknown = sorted(set(keywords) - {field.name for field in dataclasses.fields(GenerationSettings)})
    if unknown:
        raise TypeError(f"{function}() got unknown keyword(s) {', '.join(map(repr, unknown))}: {SETTINGS_HELP}")
    return GenerationSettings(**keywords)


SETTINGS_HELP = "the settings are " + ", ".join(field.name for field in dataclasses.fields(GenerationSettings))


@torch.inference_mode()
def generate(
    components: Components,
    prompt: str | list[str],
    *,
    generator: torch.Generator | None = None,
    callback: StepCallback | None = None,
    progress: bool = False,
    **settings: Any,
) -> Generation:
    """Text to image with the hand-written loop. `callback(step)` runs after each scheduler step.

    The keywords after the prompt are the fields of `GenerationSettings` (`helpers/settings.py`), with its defaults,
    SD v1.5's: negative_prompt=None, height and width from the model, num_inference_steps=50, guidance_scale=7.5,
    num_images_per_prompt=1, seed=None (random), scheduler="pndm", prompt_weighting=True (prompts read as
    AUTOMATIC1111 reads them: `(word:1.3)`, `[word]`, `BREAK`, any length; off, cut at 77 tokens as in diffusers).
    So a new setting is one field there, and `generate(components, **settings.keywords())` passes a settings value.

    Runs under torch.inference_mode (no_grad without autograd's version counting, so each small op costs less;
    diffusers' pipeline uses no_grad). The returned latents are inference tensors: read them, copy before
    changing them in place.
    """
    started = time.perf_counter()
    # 0. The settings, with height and width defaulting to the U-Net's sample size times the VAE scale factor
    settings = settings_from("generate", {"prompt": prompt, **settings})
    settings = settings.sized(components.unet.config.sample_size, components.vae_scale_factor)
    # 1.-3. Check inputs, encode the prompt, set the timesteps
    run = prepare(components, settings, generator, callback)
    sched = run.scheduler
    # 4. Initial latents from the CPU generator
    batch = len(run.prompts) * settings.num_images_per_prompt
    latents = initial_latents(components, batch, settings.height, settings.width, run.generator, sched.init_noise_sigma)
    # 5. Denoising loop
    guidance = settings.guidance_scale
    latents = denoise(
        components, sched, sched.timesteps, latents, run.embeds, guidance, run.generator, callback, progress
    )
    # 6. Decode with the VAE
    pixels = check_finite(to_numpy(decode(components, latents, run.generator)), guidance)
    return Generation(to_pil(pixels), pixels, latents, run.seed, len(sched.timesteps), time.perf_counter() - started)


def image_to_tensor(image: Image.Image | np.ndarray) -> torch.Tensor:
    """An RGB picture (PIL or uint8 array) -> (1, 3, H, W) float tensor in [-1, 1], by diffusers' own preprocessing
    (the size is kept: generate's checks already ask for multiples of the VAE scale factor)."""
    picture = image if isinstance(image, Image.Image) else Image.fromarray(np.asarray(image, np.uint8))
    return VaeImageProcessor(do_resize=False).preprocess(picture.convert("RGB"))


@torch.no_grad()
def encode_image(components: Components, image: Image.Image | np.ndarray, generator: torch.Generator) -> torch.Tensor:
    """VAE-encode a picture to scaled latents (a sample of the posterior, drawn from the CPU generator)."""
    pixels = image_to_tensor(image).to(components.device, components.dtype)
    return components.vae.encode(pixels).latent_dist.sample(generator) * components.vae.config.scaling_factor


@torch.inference_mode()
def img2img(
    components: Components,
    image: Image.Image | np.ndarray,
    prompt: str | list[str],
    strength: float = 0.8,
    *,
    generator: torch.Generator | None = None,
    callback: StepCallback | None = None,
    progress: bool = False,
    **settings: Any,
) -> Generation:
    """Image to image by hand: encode the picture, noise it to `strength`, run the remaining steps.

    strength 1.0 starts from (almost) pure noise; 0.0 returns the encoded picture untouched. Mirrors
    diffusers' StableDiffusionImg2ImgPipeline step for step. The other keywords are `generate`'s settings, but for
    height and width: the size is the picture's.
    """
    started = time.perf_counter()
    if "height" in settings or "width" in settings:
        raise TypeError("img2img() takes no height or width: the size is the picture's")
    width, height = image.size if isinstance(image, Image.Image) else (image.shape[1], image.shape[0])
    settings = settings_from("img2img", {"prompt": prompt, "height": height, "width": width, **settings})
    if check_number("strength", strength, 0.0) > 1:
        raise ValueError(f"strength must be a number between 0 and 1, got {strength!r}")
    run = prepare(components, settings, generator, callback)
    sched, steps = run.scheduler, settings.num_inference_steps
    # Skip the first (1 - strength) of the steps: start part-way down the noise schedule
    t_start = steps - min(int(steps * strength), steps)
    timesteps = sched.timesteps[t_start * sched.order :]
    if hasattr(sched, "set_begin_index"):
        sched.set_begin_index(t_start * sched.order)
    clean = encode_image(components, image, run.generator)
    batch = len(run.prompts) * settings.num_images_per_prompt
    clean = torch.cat([clean] * batch) if batch > 1 else clean  # as diffusers (keeps its memory layout)
    noise = cpu_noise(tuple(clean.shape), run.generator, components.device, components.dtype)
    latents = sched.add_noise(clean, noise, timesteps[:1].repeat(batch)) if len(timesteps) else clean
    guidance = settings.guidance_scale
    latents = denoise(components, sched, timesteps, latents, run.embeds, guidance, run.generator, callback, progress)
    pixels = check_finite(to_numpy(decode(components, latents, run.generator)), guidance)
    return Generation(to_pil(pixels), pixels, latents, run.seed, len(timesteps), time.perf_counter() - started)


def slerp(a: torch.Tensor, b: torch.Tensor, t: float) -> torch.Tensor:
    """Spherical interpolation: keeps the norm of Gaussian noise, where a straight line would shrink it."""
    a_flat, b_flat = a.flatten().double(), b.flatten().double()
    cos = torch.dot(a_flat, b_flat) / (a_flat.norm() * b_flat.norm())
    omega = torch.arccos(cos.clamp(-1, 1))
    if omega.abs() < 1e-6:  # (anti)parallel: a straight line is as good
        return torch.lerp(a, b, t)
    out = (torch.sin((1 - t) * omega) * a.double() + torch.sin(t * omega) * b.double()) / torch.sin(omega)
    return out.to(a.dtype)
