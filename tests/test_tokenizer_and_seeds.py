"""The CLIP tokenizer's known answer, and seeds: same seed, same pixels; another seed, other pixels."""

from __future__ import annotations

import warnings

import numpy as np
import pytest
import torch
from transformers import CLIPTokenizer

from helpers.models import Components
from helpers.sampling import generate, tokenize
from helpers.seeding import cpu_noise, make_generator
from toy.train import TOKENIZER_DIR


def test_tokenizer_known_answer():
    tokenizer = CLIPTokenizer.from_pretrained(TOKENIZER_DIR)
    assert len(tokenizer) == 49408 and tokenizer.model_max_length == 77
    ids = tokenizer("a photograph of an astronaut riding a horse").input_ids
    assert ids == [49406, 320, 8853, 539, 550, 18376, 6765, 320, 4558, 49407]


def test_long_prompt_warns_and_names_the_dropped_text(tiny: Components):
    with pytest.warns(UserWarning, match="longer than 77 tokens; this part was dropped: 'a red circle .*the very end'"):
        ids = tokenize(tiny.tokenizer, ["a red circle " * 30 + "the very end"])
    assert ids.shape == (1, 77)


def test_short_prompt_does_not_warn(tiny: Components):
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        tokenize(tiny.tokenizer, ["a red circle"])


@pytest.mark.parametrize("scheduler", ["dpm++", "euler_a"])
def test_same_seed_same_pixels_other_seed_other_pixels(tiny: Components, scheduler: str):
    kwargs = dict(prompt="a red circle", num_inference_steps=3, scheduler=scheduler)
    first, again, other = (generate(tiny, **kwargs, seed=s).pixels for s in (5, 5, 6))
    assert np.array_equal(first, again)
    assert np.abs(first - other).max() > 0.01


def test_num_images_per_prompt(tiny: Components):
    out = generate(tiny, ["a", "b"], num_inference_steps=2, num_images_per_prompt=3, seed=0, scheduler="ddim")
    assert out.pixels.shape[0] == 6 and len(out.images) == 6
    assert out.unet_calls == 2 and out.seed == 0


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16])
@pytest.mark.parametrize("shape", [(1, 4, 8, 8), (2, 4, 64, 64), (3, 7)])
def test_half_precision_noise_is_the_float32_noise_rounded(dtype: torch.dtype, shape: tuple[int, ...]):
    """A seed names the same starting noise in every precision (torch.randn in float16 can draw another sequence)."""
    full = cpu_noise(shape, make_generator(1), "cpu", torch.float32)
    half = cpu_noise(shape, make_generator(1), "cpu", dtype)
    assert half.dtype == dtype and half.shape == shape
    assert torch.equal(half, full.to(dtype))
