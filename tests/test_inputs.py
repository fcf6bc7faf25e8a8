"""Bad input fails before any model work, with an error that names the parameter and what is allowed."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from helpers.models import Components, load_components
from helpers.sampling import generate

GOOD = dict(prompt="a red circle", height=64, width=64, num_inference_steps=2, seed=0, scheduler="ddim")


class Untouchable(torch.nn.Module):
    """A stand-in model that fails the test if anything calls it."""

    def __init__(self, config):
        super().__init__()
        self.config = config

    def forward(self, *args, **kwargs):
        raise AssertionError("model work was done before the input was rejected")


@pytest.fixture
def untouchable(tiny: Components) -> Components:
    """The tiny model's configs, with networks that may not be run."""
    return Components(
        tiny.tokenizer,
        Untouchable(tiny.text_encoder.config),
        tiny.unet,
        Untouchable(tiny.vae.config),
        tiny.scheduler_config,
        tiny.source,
    )


@pytest.mark.parametrize(
    "change, error, words",
    [
        (dict(prompt=42), TypeError, ["prompt", "str or a list of str"]),
        (dict(prompt=["ok", 3]), TypeError, ["prompt", "list of str"]),
        (dict(prompt=[]), ValueError, ["prompt", "empty list"]),
        (dict(prompt=["a", "b"], negative_prompt=["x"]), ValueError, ["negative_prompt", "1 entries", "2"]),
        (dict(negative_prompt=5), TypeError, ["negative_prompt", "str"]),
        (dict(height=60), ValueError, ["height", "multiple of the VAE scale factor 8"]),
        (dict(width=0), ValueError, ["width", "between 1 and 4096"]),
        (dict(width=64.0), TypeError, ["width", "must be an int", "float"]),
        (dict(height=2**20, width=2**20), ValueError, ["height", "between 1 and 4096"]),
        (dict(height=True), TypeError, ["height", "int", "bool"]),
        (dict(num_inference_steps=0), ValueError, ["num_inference_steps", "between 1 and 999"]),
        (dict(num_inference_steps=1000), ValueError, ["num_inference_steps", "between 1 and 999"]),
        (dict(num_inference_steps=1001, scheduler="pndm"), ValueError, ["num_inference_steps", "999"]),
        (dict(num_inference_steps=2.5), TypeError, ["num_inference_steps", "int"]),
        (dict(guidance_scale=float("nan")), ValueError, ["guidance_scale", "finite number >= 0"]),
        (dict(guidance_scale=float("inf")), ValueError, ["guidance_scale", "finite number >= 0"]),
        (dict(guidance_scale=-1.0), ValueError, ["guidance_scale", ">= 0"]),
        (dict(guidance_scale="7.5"), TypeError, ["guidance_scale", "number", "str"]),
        (dict(guidance_scale=True), TypeError, ["guidance_scale", "number", "bool"]),
        (dict(scheduler="karras"), ValueError, ["scheduler", "'ddim'", "'dpm++'", "'heun'", "'lms'", "'pndm'"]),
        (dict(scheduler=["pndm"]), TypeError, ["scheduler", "must be a str", "list"]),
        (dict(seed="42"), TypeError, ["seed", "non-negative int", "str"]),
        (dict(seed=-1), ValueError, ["seed", "non-negative int"]),
        (dict(seed=2**64), ValueError, ["seed", "2**64 - 1"]),
        (dict(seed=1.5), TypeError, ["seed", "int", "float"]),
        (dict(callback=5), TypeError, ["callback", "callable", "int"]),
        (dict(num_images_per_prompt=10**9), ValueError, ["num_images_per_prompt", "at most 256"]),
        (dict(num_images_per_prompt=np.float64(2)), TypeError, ["num_images_per_prompt", "int"]),
        (dict(num_images_per_prompt=0), ValueError, ["num_images_per_prompt", ">= 1"]),
        (dict(prompt=["a"] * 200, num_images_per_prompt=2), ValueError, ["num_images_per_prompt", "400 images"]),
        (dict(generator=torch.Generator().manual_seed(1)), ValueError, ["seed or generator"]),
        (dict(seed=None, generator=7), TypeError, ["generator", "torch.Generator"]),
    ],
)
def test_bad_input_is_refused_before_model_work(untouchable: Components, change: dict, error: type, words: list[str]):
    with pytest.raises(error) as caught:
        generate(untouchable, **{**GOOD, **change})
    for word in words:
        assert word in str(caught.value)


def test_good_input_reaches_the_model(untouchable: Components):
    """The stand-in does catch model work, so the refusals above are real."""
    with pytest.raises(AssertionError, match="model work"):
        generate(untouchable, **GOOD)


@pytest.mark.parametrize(
    "change",
    [
        dict(guidance_scale=np.float32(7.5)),
        dict(guidance_scale=np.float64(7.5)),
        dict(guidance_scale=np.int64(7)),
        dict(guidance_scale=7),
        dict(seed=np.int64(3)),
        dict(seed=2**64 - 1),
        dict(height=np.int32(64), width=np.int64(48)),
        dict(num_inference_steps=np.int64(3)),
        dict(num_inference_steps=999),
        dict(num_images_per_prompt=np.int8(2)),
    ],
)
def test_numpy_scalars_and_bounds_are_accepted(untouchable: Components, change: dict):
    """The other half of the table: values of the right kind, numpy's included, reach the model."""
    with pytest.raises(AssertionError, match="model work"):
        generate(untouchable, **{**GOOD, **change})


def test_overflowing_guidance_is_an_error_not_a_black_image():
    """guidance_scale=1e30 makes the bundled model's latents overflow; the pixels were NaN, saved as a black PNG.
    (1e20 did with an older model; the one shipped now stays finite there and overflows from 1e22.)"""
    bundled = load_components("bundled", device="cpu", dtype=torch.float32)
    kwargs = dict(prompt="a red circle", num_inference_steps=4, seed=0, scheduler="ddim")
    with pytest.raises(FloatingPointError, match="guidance_scale=1e\\+30"):
        generate(bundled, **kwargs, guidance_scale=1e30)
    assert np.isfinite(generate(bundled, **kwargs, guidance_scale=7.5).pixels).all()


@pytest.mark.parametrize("scheduler", ["pndm", "lms", "heun", "dpm++", "euler", "euler_a", "ddim", "unipc"])
def test_every_scheduler_works_at_the_step_ceiling(scheduler: str):
    """At num_inference_steps = num_train_timesteps - 1 (the most GenerationSettings.check allows) each scheduler
    visits distinct timesteps and its update stays finite; one more step breaks PNDM, DDIM, DPM-Solver++ or UniPC."""
    import warnings

    from helpers.models import SD15_SCHEDULER, make_scheduler
    from helpers.sampling import step_kwargs

    sched = make_scheduler(scheduler, SD15_SCHEDULER)
    sched.set_timesteps(SD15_SCHEDULER["num_train_timesteps"] - 1)
    distinct = len(set(sched.timesteps.tolist()))
    assert distinct == SD15_SCHEDULER["num_train_timesteps"] - 1
    generator = torch.Generator().manual_seed(0)
    x = torch.randn(1, 4, 8, 8, generator=generator) * sched.init_noise_sigma
    extra = step_kwargs(sched, generator)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        for t in sched.timesteps:
            eps = torch.randn(1, 4, 8, 8, generator=generator)
            x = sched.step(eps, t, sched.scale_model_input(x, t), **extra).prev_sample
    assert torch.isfinite(x).all()
