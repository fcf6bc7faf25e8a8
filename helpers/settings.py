"""`GenerationSettings`: what one call of `generate` is asked for, with its defaults and its rules, in one place.

`generate` and `img2img` take every field as a keyword (as diffusers' pipelines take theirs) and build a
`GenerationSettings`; `helpers.batch`, the PNG chunks (`helpers.pnginfo`) and the notebook pass the value itself
around. Adding a setting: a field here and its rule in `check`; nothing else changes for it to be accepted,
checked, recorded in PNGs and read back (tests/test_settings.py::test_a_new_setting_is_one_field).
"""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass

import numpy as np

from helpers.models import check_scheduler_name
from helpers.seeding import check_seed

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
    seed                   None (drawn at random) or int, 0 .. 2**64 - 1 (what torch.Generator.manual_seed accepts)
    scheduler              str, a registered name
    prompt_weighting       bool
    callback               None or a callable (a keyword of generate, not a setting)
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


def _prompt_list(prompt: object) -> list[str]:
    if isinstance(prompt, str):
        return [prompt]
    if isinstance(prompt, list) and all(isinstance(p, str) for p in prompt):
        if not prompt:
            raise ValueError("prompt must not be an empty list")
        return prompt
    raise TypeError(f"prompt must be a str or a list of str, got {type(prompt).__name__}")


def _negative_list(negative_prompt: object, count: int) -> list[str] | None:
    if negative_prompt is None:
        return None
    if isinstance(negative_prompt, str):
        return [negative_prompt] * count
    if isinstance(negative_prompt, list) and all(isinstance(p, str) for p in negative_prompt):
        if len(negative_prompt) != count:
            raise ValueError(
                f"negative_prompt has {len(negative_prompt)} entries but prompt has {count}: "
                "give one negative prompt per prompt, or a single str for all"
            )
        return negative_prompt
    raise TypeError(f"negative_prompt must be None, a str or a list of str, got {type(negative_prompt).__name__}")


@dataclass(frozen=True)
class GenerationSettings:
    """The settings of one text-to-image call; the defaults are Stable Diffusion v1.5's (PNDM, 50 steps, 7.5)."""

    prompt: str | list[str]
    negative_prompt: str | list[str] | None = None
    height: int | None = None  # None: the U-Net's sample size times the VAE scale factor (512 for SD v1.5)
    width: int | None = None
    num_inference_steps: int = 50
    guidance_scale: float = 7.5
    num_images_per_prompt: int = 1
    seed: int | None = None  # None: drawn at random (and reported on the result)
    scheduler: str = "pndm"
    prompt_weighting: bool = True  # read (emphasis:1.2), BREAK and long prompts as AUTOMATIC1111 does

    def sized(self, sample_size: int, vae_scale_factor: int) -> GenerationSettings:
        """A copy with height and width filled in from the model where they are None (0 stays 0, to be refused)."""
        side = sample_size * vae_scale_factor
        height = side if self.height is None else self.height
        width = side if self.width is None else self.width
        return dataclasses.replace(self, height=height, width=width)

    def check(self, vae_scale_factor: int, num_train_timesteps: int = 1000) -> tuple[list[str], list[str] | None]:
        """Validate every field before any model work (the rules: INPUT_RULES); the prompts and negatives as lists.

        Height and width must be filled in first (`sized`).
        """
        prompts = _prompt_list(self.prompt)
        negatives = _negative_list(self.negative_prompt, len(prompts))
        for name in ("height", "width"):
            side = check_int(name, getattr(self, name), 1, MAX_SIDE)
            if side % vae_scale_factor:
                raise ValueError(
                    f"{name} must be a positive multiple of the VAE scale factor {vae_scale_factor}, got {side}"
                )
        # Every registered scheduler works up to num_train_timesteps - 1 steps; at num_train_timesteps PNDM and DDIM
        # index past the schedule and DPM-Solver++ and UniPC return NaN, and beyond it PNDM repeats timestep 1.
        check_int("num_inference_steps", self.num_inference_steps, 1, num_train_timesteps - 1)
        check_number("guidance_scale", self.guidance_scale, 0.0)
        per_prompt = check_int("num_images_per_prompt", self.num_images_per_prompt, 1)
        if len(prompts) * per_prompt > MAX_IMAGES:
            raise ValueError(
                f"num_images_per_prompt={per_prompt} with {len(prompts)} prompt(s) asks for "
                f"{len(prompts) * per_prompt} images; at most {MAX_IMAGES} per call"
            )
        if self.seed is not None:
            check_seed(self.seed)
        check_scheduler_name(self.scheduler)
        if not isinstance(self.prompt_weighting, bool):
            raise TypeError(f"prompt_weighting must be True or False, got {type(self.prompt_weighting).__name__}")
        return prompts, negatives

    def keywords(self, without: tuple[str, ...] = (), **changes: object) -> dict:
        """The settings as `generate` keywords, with `changes` applied and the fields in `without` left out."""
        values = dataclasses.asdict(dataclasses.replace(self, **changes))
        return {key: value for key, value in values.items() if key not in without}

    @classmethod
    def from_keywords(cls, keywords: dict) -> GenerationSettings:
        """The settings among a dict of keywords (e.g. what `pnginfo.read_parameters` returns); other keys ignored."""
        names = {field.name for field in dataclasses.fields(cls)}
        return cls(**{key: value for key, value in keywords.items() if key in names})
