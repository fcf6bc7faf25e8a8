"""`generate(...)`: the hand-written text-to-image loop that the notebook builds cell by cell.

The steps follow diffusers' ``StableDiffusionPipeline.__call__`` one for one, so that, on the
same components, seed and scheduler, both give the same pixels:
    1. check inputs   2. encode the prompt   3. timesteps   4. initial latents
    5. denoising loop with classifier-free guidance   6. VAE decode
"""

from __future__ import annotations

import inspect
import math
import random
import time
import warnings
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
import torch
from diffusers.schedulers.scheduling_utils import SchedulerMixin
from PIL import Image

from helpers.models import Components, check_scheduler_name, make_scheduler
from helpers.prompts import encode_weighted, is_plain
from helpers.seeding import check_seed, cpu_noise, make_generator


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


# Ceilings that stop absurd requests before they reach the allocator (SD v1.5 is trained at 512, SDXL at 1024).
MAX_SIDE = 4096  # pixels, for height and width
MAX_IMAGES = 256  # images per call: len(prompt) * num_images_per_prompt

INPUT_RULES = """Every parameter follows one table: a wrong *type* is a TypeError, a wrong *value* a ValueError,
and both name the parameter. Python and numpy scalars of the right kind are accepted; bool is not a number.

    prompt                 str or non-empty list of str
    negative_prompt        None, str, or list of str as long as prompt
    height, width          int, a multiple of the VAE scale factor, 1 .. MAX_SIDE
    num_inference_steps    int, 1 .. num_train_timesteps - 1 (999 for SD's schedule)
    guidance_scale         int or float, finite, >= 0
    num_images_per_prompt  int >= 1, with len(prompt) * num_images_per_prompt <= MAX_IMAGES
    seed                   int, 0 .. 2**64 - 1 (what torch.Generator.manual_seed accepts)
    scheduler              str, a registered name
    callback               None or a callable
    prompt_weighting       bool
"""


def check_int(name: str, value: object, low: int, high: int | None = None) -> int:
    """`value` as an int within [low, high]; TypeError for a non-int (bool included), ValueError when out of range."""
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)):
        raise TypeError(f"{name} must be an int, got {type(value).__name__} {value!r}")
    value = int(value)
    if value < low or (high is not None and value > high):
        allowed = f">= {low}" if high is None else f"between {low} and {high}"
        raise ValueError(f"{name} must be an int {allowed}, got {value!r}")
    return value


def check_number(name: str, value: object, low: float) -> float:
    """`value` as a finite float >= low; TypeError for a non-number (bool and str included), ValueError otherwise."""
    if isinstance(value, bool) or not isinstance(value, (int, float, np.integer, np.floating)):
        raise TypeError(f"{name} must be a number (int or float), got {type(value).__name__} {value!r}")
    value = float(value)
    if not math.isfinite(value) or value < low:
        raise ValueError(f"{name} must be a finite number >= {low:g}, got {value!r}")
    return value


def check_inputs(
    prompt: object,
    negative_prompt: object,
    height: object,
    width: object,
    num_inference_steps: object,
    guidance_scale: object,
    num_images_per_prompt: object,
    scheduler: object,
    vae_scale_factor: int,
    num_train_timesteps: int = 1000,
    callback: object = None,
    prompt_weighting: object = True,
) -> tuple[list[str], list[str] | None]:
    """Validate everything before any model work (the rules: INPUT_RULES); returns prompts and negatives as lists."""
    if isinstance(prompt, str):
        prompts = [prompt]
    elif isinstance(prompt, list) and all(isinstance(p, str) for p in prompt):
        if not prompt:
            raise ValueError("prompt must not be an empty list")
        prompts = prompt
    else:
        raise TypeError(f"prompt must be a str or a list of str, got {type(prompt).__name__}")
    negatives = None
    if isinstance(negative_prompt, str):
        negatives = [negative_prompt] * len(prompts)
    elif isinstance(negative_prompt, list) and all(isinstance(p, str) for p in negative_prompt):
        if len(negative_prompt) != len(prompts):
            raise ValueError(
                f"negative_prompt has {len(negative_prompt)} entries but prompt has {len(prompts)}: "
                "give one negative prompt per prompt, or a single str for all"
            )
        negatives = negative_prompt
    elif negative_prompt is not None:
        raise TypeError(f"negative_prompt must be None, a str or a list of str, got {type(negative_prompt).__name__}")
    for name, value in (("height", height), ("width", width)):
        side = check_int(name, value, 1, MAX_SIDE)
        if side % vae_scale_factor:
            raise ValueError(
                f"{name} must be a positive multiple of the VAE scale factor {vae_scale_factor}, got {side}"
            )
    # Every registered scheduler works up to num_train_timesteps - 1 steps; at num_train_timesteps PNDM and DDIM
    # index past the schedule and DPM-Solver++ and UniPC return NaN, and beyond it PNDM repeats timestep 1.
    check_int("num_inference_steps", num_inference_steps, 1, num_train_timesteps - 1)
    check_number("guidance_scale", guidance_scale, 0.0)
    per_prompt = check_int("num_images_per_prompt", num_images_per_prompt, 1)
    if len(prompts) * per_prompt > MAX_IMAGES:
        raise ValueError(
            f"num_images_per_prompt={per_prompt} with {len(prompts)} prompt(s) asks for {len(prompts) * per_prompt} "
            f"images; at most {MAX_IMAGES} per call"
        )
    check_scheduler_name(scheduler)
    if callback is not None and not callable(callback):
        raise TypeError(f"callback must be None or a callable taking a Step, got {type(callback).__name__}")
    if not isinstance(prompt_weighting, bool):
        raise TypeError(f"prompt_weighting must be True or False, got {type(prompt_weighting).__name__}")
    return prompts, negatives


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
    return (image / 2 + 0.5).clamp(0, 1)


def to_numpy(pixels: torch.Tensor) -> np.ndarray:
    """(N, 3, H, W) tensor in [0, 1] -> (N, H, W, 3) float32 array."""
    return pixels.cpu().permute(0, 2, 3, 1).float().numpy()


def to_pil(pixels: np.ndarray) -> list[Image.Image]:
    """(N, H, W, 3) floats in [0, 1] -> PIL images, rounded as diffusers rounds them."""
    return [Image.fromarray(p) for p in (pixels * 255).round().astype("uint8")]


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


@torch.inference_mode()
def generate(
    components: Components,
    prompt: str | list[str],
    negative_prompt: str | list[str] | None = None,
    height: int | None = None,
    width: int | None = None,
    num_inference_steps: int = 50,
    guidance_scale: float = 7.5,
    num_images_per_prompt: int = 1,
    seed: int | None = None,
    generator: torch.Generator | None = None,
    scheduler: str = "pndm",
    callback: StepCallback | None = None,
    progress: bool = False,
    prompt_weighting: bool = True,
) -> Generation:
    """Text to image with the hand-written loop. `callback(step)` runs after each scheduler step.

    `prompt_weighting` (default on) reads prompts as AUTOMATIC1111 does: `(word:1.3)`, `((word))`, `[word]`,
    `BREAK`, and any length (chunks of 75 tokens); off, they are cut at 77 tokens as in diffusers.

    Runs under torch.inference_mode (no_grad without autograd's version counting, so each small op costs less;
    diffusers' pipeline uses no_grad). The returned latents are inference tensors: read them, copy before
    changing them in place.
    """
    # 0. Default height and width from the U-Net's sample size
    f = components.vae_scale_factor
    height = components.unet.config.sample_size * f if height is None else height
    width = components.unet.config.sample_size * f if width is None else width
    # 1. Check inputs, before any model work
    prompts, negatives = check_inputs(
        prompt, negative_prompt, height, width, num_inference_steps, guidance_scale, num_images_per_prompt,
        scheduler, f, components.scheduler_config["num_train_timesteps"], callback, prompt_weighting,
    )  # fmt: skip
    seed, generator = resolve_generator(seed, generator)
    started = time.perf_counter()
    # 2. Encode the prompt; guidance <= 1 skips the unconditional pass, as diffusers does
    embeds = prompt_embeddings(
        components, prompts, negatives, num_images_per_prompt, guidance_scale > 1, prompt_weighting
    )
    # 3. Timesteps from a fresh scheduler configured from the model's own config
    sched = make_scheduler(scheduler, components.scheduler_config)
    sched.set_timesteps(num_inference_steps, device=components.device)
    # 4. Initial latents from the CPU generator
    batch = len(prompts) * num_images_per_prompt
    latents = initial_latents(components, batch, height, width, generator, sched.init_noise_sigma)
    # 5. Denoising loop
    latents = denoise(
        components, sched, sched.timesteps, latents, embeds, guidance_scale, generator, callback, progress
    )
    # 6. Decode with the VAE
    pixels = check_finite(to_numpy(decode(components, latents, generator)), guidance_scale)
    return Generation(to_pil(pixels), pixels, latents, seed, len(sched.timesteps), time.perf_counter() - started)


def image_to_tensor(image: Image.Image | np.ndarray) -> torch.Tensor:
    """An RGB picture (PIL or uint8 array) -> (1, 3, H, W) float tensor in [-1, 1], as diffusers preprocesses it."""
    array = np.array(image.convert("RGB") if isinstance(image, Image.Image) else image).astype(np.float32) / 255.0
    return 2.0 * torch.from_numpy(array[None].transpose(0, 3, 1, 2)) - 1.0


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
    negative_prompt: str | list[str] | None = None,
    num_inference_steps: int = 50,
    guidance_scale: float = 7.5,
    seed: int | None = None,
    generator: torch.Generator | None = None,
    scheduler: str = "pndm",
    callback: StepCallback | None = None,
    prompt_weighting: bool = True,
) -> Generation:
    """Image to image by hand: encode the picture, noise it to `strength`, run the remaining steps.

    strength 1.0 starts from (almost) pure noise; 0.0 returns the encoded picture untouched. Mirrors
    diffusers' StableDiffusionImg2ImgPipeline step for step.
    """
    width, height = image.size if isinstance(image, Image.Image) else (image.shape[1], image.shape[0])
    prompts, negatives = check_inputs(
        prompt, negative_prompt, height, width, num_inference_steps, guidance_scale, 1, scheduler,
        components.vae_scale_factor, components.scheduler_config["num_train_timesteps"], callback, prompt_weighting,
    )  # fmt: skip
    if check_number("strength", strength, 0.0) > 1:
        raise ValueError(f"strength must be a number between 0 and 1, got {strength!r}")
    seed, generator = resolve_generator(seed, generator)
    started = time.perf_counter()
    embeds = prompt_embeddings(components, prompts, negatives, 1, guidance_scale > 1, prompt_weighting)
    sched = make_scheduler(scheduler, components.scheduler_config)
    sched.set_timesteps(num_inference_steps, device=components.device)
    # Skip the first (1 - strength) of the steps: start part-way down the noise schedule
    t_start = num_inference_steps - min(int(num_inference_steps * strength), num_inference_steps)
    timesteps = sched.timesteps[t_start * sched.order :]
    if hasattr(sched, "set_begin_index"):
        sched.set_begin_index(t_start * sched.order)
    clean = encode_image(components, image, generator)
    clean = torch.cat([clean] * len(prompts)) if len(prompts) > 1 else clean  # as diffusers (keeps its memory layout)
    noise = cpu_noise(tuple(clean.shape), generator, components.device, components.dtype)
    latents = sched.add_noise(clean, noise, timesteps[:1].repeat(len(prompts))) if len(timesteps) else clean
    latents = denoise(components, sched, timesteps, latents, embeds, guidance_scale, generator, callback)
    pixels = check_finite(to_numpy(decode(components, latents, generator)), guidance_scale)
    return Generation(to_pil(pixels), pixels, latents, seed, len(timesteps), time.perf_counter() - started)


def slerp(a: torch.Tensor, b: torch.Tensor, t: float) -> torch.Tensor:
    """Spherical interpolation: keeps the norm of Gaussian noise, where a straight line would shrink it."""
    a_flat, b_flat = a.flatten().double(), b.flatten().double()
    cos = torch.dot(a_flat, b_flat) / (a_flat.norm() * b_flat.norm())
    omega = torch.arccos(cos.clamp(-1, 1))
    if omega.abs() < 1e-6:  # (anti)parallel: a straight line is as good
        return torch.lerp(a, b, t)
    out = (torch.sin((1 - t) * omega) * a.double() + torch.sin(t * omega) * b.double()) / torch.sin(omega)
    return out.to(a.dtype)
