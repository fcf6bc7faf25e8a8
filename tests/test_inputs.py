"""Bad input fails before any model work, with an error that names the parameter and what is allowed."""

from __future__ import annotations

import pytest
import torch

from helpers.models import Components
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
        tiny.reason,
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
        (dict(width=0), ValueError, ["width", "positive multiple"]),
        (dict(width=64.0), ValueError, ["width", "positive multiple"]),
        (dict(num_inference_steps=0), ValueError, ["num_inference_steps", ">= 1"]),
        (dict(num_inference_steps=2.5), ValueError, ["num_inference_steps", "int"]),
        (dict(guidance_scale=float("nan")), ValueError, ["guidance_scale", "finite number >= 0"]),
        (dict(guidance_scale=-1.0), ValueError, ["guidance_scale", ">= 0"]),
        (dict(guidance_scale="7.5"), TypeError, ["guidance_scale", "number"]),
        (dict(scheduler="karras"), ValueError, ["scheduler", "'ddim'", "'dpm++'", "'heun'", "'lms'", "'pndm'"]),
        (dict(seed="42"), ValueError, ["seed", "non-negative int"]),
        (dict(seed=-1), ValueError, ["seed", "non-negative int"]),
        (dict(seed=1.5), ValueError, ["seed", "int"]),
        (dict(num_images_per_prompt=0), ValueError, ["num_images_per_prompt", ">= 1"]),
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
