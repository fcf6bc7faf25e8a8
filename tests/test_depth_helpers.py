"""The helpers behind the tutorial's deeper sections, against known answers on tiny models."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from diffusers import StableDiffusionImg2ImgPipeline
from diffusers.models.attention_processor import Attention, AttnProcessor

from helpers.attention import CapturingProcessor, CrossAttentionStore, capture_cross_attention
from helpers.models import Components, make_scheduler
from helpers.reference import diffusers_pipeline
from helpers.sampling import Step, generate, img2img, predicted_x0, slerp
from helpers.seeding import make_generator


def test_slerp_known_answers():
    a, b = torch.tensor([1.0, 0.0]), torch.tensor([0.0, 1.0])
    assert torch.allclose(slerp(a, b, 0.0), a) and torch.allclose(slerp(a, b, 1.0), b)
    assert torch.allclose(slerp(a, b, 0.5), torch.tensor([1.0, 1.0]) / math.sqrt(2))
    g = torch.Generator().manual_seed(0)
    x, y = torch.randn(4, 8, 8, generator=g), torch.randn(4, 8, 8, generator=g)
    mid = slerp(x, y, 0.5)
    assert abs(mid.norm() - (x.norm() + y.norm()) / 2) < 0.05 * x.norm()  # the norm stays; a lerp loses ~30%
    assert torch.lerp(x, y, 0.5).norm() < 0.8 * x.norm()
    assert torch.equal(slerp(x, x, 0.3), x)


@pytest.mark.parametrize("scheduler", ["pndm", "euler_a", "dpm++"])
@pytest.mark.parametrize("strength", [0.5, 1.0])
def test_img2img_equals_diffusers_img2img_pipeline(tiny: Components, scheduler: str, strength: float):
    rng = np.random.default_rng(0)
    image = (rng.random((64, 48, 3)) * 255).astype(np.uint8)
    from PIL import Image

    picture = Image.fromarray(image)
    kwargs = dict(prompt="a red circle", negative_prompt="blue", num_inference_steps=6, guidance_scale=7.5)
    ours = img2img(tiny, picture, strength=strength, seed=3, scheduler=scheduler, **kwargs)
    pipe = diffusers_pipeline(tiny, scheduler, StableDiffusionImg2ImgPipeline)
    theirs = pipe(image=picture, strength=strength, generator=make_generator(3), output_type="np", **kwargs).images
    assert 0 < ours.unet_calls <= 7  # PNDM visits one timestep twice
    assert np.abs(ours.pixels - theirs).max() == 0.0


def test_img2img_refuses_bad_strength(tiny: Components):
    with pytest.raises(ValueError, match="strength must be a number between 0 and 1"):
        img2img(tiny, np.zeros((64, 64, 3), np.uint8), "a red circle", strength=1.5)


def test_predicted_x0_recovers_the_clean_latent_from_exact_noise():
    """Noise a known x0 with each scheduler's own `add_noise` (its own sigma at its own, possibly fractional,
    timestep); with the true noise as the prediction, x0 comes back."""
    x0, eps = torch.randn(1, 4, 8, 8), torch.randn(1, 4, 8, 8)
    from helpers.models import SD15_SCHEDULER

    for name in ("ddim", "euler", "lms", "heun", "dpm++", "unipc"):
        sched = make_scheduler(name, SD15_SCHEDULER)
        sched.set_timesteps(20)  # Euler's, K-LMS's and Heun's 20 timesteps fall between the training ones
        t = sched.timesteps[3]
        sample = sched.add_noise(x0, eps, t.reshape(1))
        step = Step(3, t, sample, eps, sample, sched)
        assert torch.allclose(predicted_x0(step), x0, atol=1e-4), (name, float(t))


def test_capturing_processor_finds_the_attended_token():
    """A one-head layer whose keys make token 2 match every query: its map must peak at token 2."""
    attn = Attention(query_dim=4, cross_attention_dim=4, heads=1, dim_head=4, processor=AttnProcessor())
    with torch.no_grad():
        attn.to_q.weight.copy_(torch.eye(4))
        attn.to_k.weight.copy_(torch.eye(4))
    store = CrossAttentionStore()
    attn.set_processor(CapturingProcessor(AttnProcessor(), store))
    text = torch.zeros(1, 5, 4)
    text[0, 2] = 10.0
    pixels = torch.ones(1, 16, 4)
    plain = AttnProcessor()(attn, pixels, text)
    captured = attn(pixels, encoder_hidden_states=text)
    assert torch.equal(plain, captured)
    maps = store.token_maps(4, 4, guided=False)
    assert maps.shape == (1, 5, 4, 4)
    assert (maps.argmax(dim=1) == 2).all()
    assert torch.allclose(maps.sum(dim=1), torch.ones(1, 4, 4), atol=1e-5)


def test_capture_leaves_the_image_unchanged_and_records_every_cross_attention(tiny: Components):
    kwargs = dict(prompt="a red circle", num_inference_steps=3, seed=1, scheduler="ddim")
    plain = generate(tiny, **kwargs)
    layers = sum(name.endswith("attn2.processor") for name in tiny.unet.attn_processors)
    with capture_cross_attention(tiny.unet) as store:
        captured = generate(tiny, **kwargs)
    assert np.array_equal(plain.pixels, captured.pixels)
    assert len(store.maps) == layers * 3 > 0
    maps = store.token_maps(64, 64, guided=True)
    assert maps.shape == (1, tiny.tokenizer.model_max_length, 64, 64)
    assert torch.allclose(maps.sum(dim=1), torch.ones(1, 64, 64), atol=1e-4)
    assert not any(isinstance(p, CapturingProcessor) for p in tiny.unet.attn_processors.values())


class OverflowingVAE(torch.nn.Module):
    """Decodes to NaN in float16 and to a known picture in float32, like an SD VAE that overflows in half precision."""

    def __init__(self, config):
        super().__init__()
        self.config = config
        self.weight = torch.nn.Parameter(torch.ones(1, dtype=torch.float16))

    def decode(self, latents, return_dict=False, generator=None):
        if self.weight.dtype == torch.float16:
            return (torch.full((latents.shape[0], 3, 8, 8), float("nan"), dtype=torch.float16),)
        return (torch.zeros(latents.shape[0], 3, 8, 8),)


def test_fp16_nan_decode_falls_back_to_fp32(tiny: Components):
    from dataclasses import replace

    from helpers.sampling import decode

    guarded = replace(tiny, vae=OverflowingVAE(tiny.vae.config))
    with pytest.warns(UserWarning, match="decoding again in float32"):
        pixels = decode(guarded, torch.zeros(1, 4, 1, 1, dtype=torch.float16))
    assert torch.equal(pixels, torch.full((1, 3, 8, 8), 0.5))
    assert guarded.vae.weight.dtype == torch.float16  # given back as it was
