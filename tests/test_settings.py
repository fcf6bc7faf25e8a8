"""GenerationSettings is the one place the settings live: generate, img2img, the PNG chunks and batch agree with it."""

from __future__ import annotations

import dataclasses
import inspect
import json

import numpy as np
import pytest
from diffusers import StableDiffusionImg2ImgPipeline
from PIL import Image

from helpers import pnginfo
from helpers.models import Components
from helpers.reference import diffusers_pipeline
from helpers.sampling import generate, img2img
from helpers.seeding import make_generator
from helpers.settings import GenerationSettings

FIELDS = {field.name: field.default for field in dataclasses.fields(GenerationSettings)}


def test_a_new_setting_is_one_field(tiny: Components, monkeypatch, tmp_path):
    """Adding a setting is adding a field to GenerationSettings: generate and img2img take it as a keyword, the PNG
    records it and reads it back, with no other change. (What the setting does is then up to the loop.)"""
    from helpers import sampling

    extended = dataclasses.make_dataclass(
        "Extended", [("clip_skip", int, dataclasses.field(default=0))], bases=(GenerationSettings,), frozen=True
    )
    monkeypatch.setattr(sampling, "GenerationSettings", extended)
    seen = []
    real_prepare = sampling.prepare
    monkeypatch.setattr(sampling, "prepare", lambda c, s, *a: seen.append(s) or real_prepare(c, s, *a))
    generate(tiny, "a red circle", num_inference_steps=2, seed=1, clip_skip=2)
    img2img(tiny, np.zeros((32, 32, 3), np.uint8), "a red circle", 0.5, num_inference_steps=2, seed=1, clip_skip=3)
    assert [s.clip_skip for s in seen] == [2, 3]
    settings = dataclasses.replace(seen[0], prompt="a red circle")
    path = pnginfo.save_png(
        Image.new("RGB", (8, 8)), tmp_path / "a.png", "x\nSteps: 1", pnginfo.exact_parameters(settings, "m")
    )
    assert extended.from_keywords(pnginfo.read_parameters(path)) == settings


def test_a_keyword_that_is_no_setting_is_named():
    with pytest.raises(TypeError, match="generate.*'num_inference_step'.*num_inference_steps"):
        generate(None, "a red circle", num_inference_step=3)  # refused before the model is touched
    with pytest.raises(TypeError, match="img2img.*height"):
        img2img(None, np.zeros((8, 8, 3), np.uint8), "a", height=8)


def test_generate_and_img2img_default_to_sd15s_settings():
    assert (FIELDS["scheduler"], FIELDS["num_inference_steps"], FIELDS["guidance_scale"]) == ("pndm", 50, 7.5)
    for function in (generate, img2img):
        names = set(inspect.signature(function).parameters)
        assert not names & (set(FIELDS) - {"prompt"}), "settings are GenerationSettings' fields, not keywords here"


def test_the_exact_png_chunk_holds_every_setting_of_one_picture(tmp_path):
    settings = GenerationSettings(
        " two  spaces", "Negative prompt: x", 48, 64, 7, 7.123456789, seed=2**63, scheduler="ddim"
    )
    exact = json.loads(pnginfo.exact_parameters(settings, "m"))
    assert set(exact) == set(FIELDS) - {"num_images_per_prompt"} | {"model"}
    path = pnginfo.save_png(Image.new("RGB", (8, 8)), tmp_path / "a.png", "x\nSteps: 1", json.dumps(exact))
    assert GenerationSettings.from_keywords(pnginfo.read_parameters(path)) == settings


def test_numpy_scalars_are_written_as_numbers():
    settings = GenerationSettings("a", None, np.int64(64), 64, np.int32(5), np.float32(2.5), seed=np.uint64(7))
    exact = json.loads(pnginfo.exact_parameters(settings, "m"))
    assert (exact["height"], exact["num_inference_steps"], exact["guidance_scale"], exact["seed"]) == (64, 5, 2.5, 7)


@pytest.mark.parametrize(
    "change, field",
    [
        (dict(prompt=["a", "b"]), "prompt"),
        (dict(negative_prompt=["x"]), "negative_prompt"),
        (dict(seed=None), "seed"),
        (dict(height=None), "height"),
        (dict(num_images_per_prompt=2), "num_images_per_prompt"),
    ],
)
def test_a_png_refuses_settings_of_more_than_one_picture(change, field):
    settings = dataclasses.replace(GenerationSettings("a", height=64, width=64, seed=1), **change)
    with pytest.raises(ValueError, match=field):
        pnginfo.format_parameters(settings, "m")


def test_keywords_apply_changes_and_leave_fields_out():
    settings = GenerationSettings("a red circle", height=64, width=48, seed=3)
    keywords = settings.keywords(without=("height", "width"), scheduler="euler")
    expected = FIELDS | dict(prompt="a red circle", seed=3, scheduler="euler")
    assert keywords == {key: value for key, value in expected.items() if key not in ("height", "width")}
    assert keywords["seed"] == 3 and settings.scheduler == "pndm"  # the value itself is unchanged (frozen)
    with pytest.raises(dataclasses.FrozenInstanceError):
        settings.seed = 4  # type: ignore[misc]


def test_sized_fills_only_what_is_missing():
    settings = GenerationSettings("a", height=None, width=0).sized(sample_size=8, vae_scale_factor=8)
    assert (settings.height, settings.width) == (64, 0)  # 0 stays, for check to refuse
    with pytest.raises(ValueError, match="width"):
        settings.check(vae_scale_factor=8)


def test_generate_takes_a_settings_value(tiny: Components):
    settings = GenerationSettings("a red circle", num_inference_steps=3, seed=5, scheduler="euler", height=32, width=32)
    by_value = generate(tiny, **settings.keywords())
    by_keywords = generate(tiny, "a red circle", num_inference_steps=3, seed=5, scheduler="euler", height=32, width=32)
    assert np.array_equal(by_value.pixels, by_keywords.pixels)


def test_img2img_makes_several_images_per_prompt_as_diffusers_does(tiny: Components):
    picture = Image.fromarray((np.random.default_rng(0).random((32, 48, 3)) * 255).astype(np.uint8))
    kwargs = dict(prompt=["a red circle", "a blue square"], num_inference_steps=4, num_images_per_prompt=2)
    ours = img2img(tiny, picture, strength=0.75, seed=3, scheduler="dpm++", **kwargs)
    pipe = diffusers_pipeline(tiny, "dpm++", StableDiffusionImg2ImgPipeline)
    theirs = pipe(image=picture, strength=0.75, generator=make_generator(3), output_type="np", **kwargs).images
    assert ours.pixels.shape == (4, 32, 48, 3)
    assert np.abs(ours.pixels - theirs).max() == 0.0
