"""The toy world: captions, drawing, and reading a picture back (the evaluation's measuring stick)."""

from __future__ import annotations

import numpy as np
import pytest
from scipy.ndimage import gaussian_filter

from toy import world


def test_reading_back_a_drawn_scene_recovers_every_attribute():
    rng = np.random.default_rng(1)
    for _ in range(300):
        scene = world.sample_scene(rng, split="all")
        image = world.render(scene, rng)
        assert all(world.score(world.caption(scene), image).values())


def test_reading_back_survives_a_blurred_outline():
    """Generated pictures have soft edges (the VAE decodes 8x8 latents): a blur of one pixel must not change
    what is read, and a caption naming another shape must still fail."""
    rng = np.random.default_rng(3)
    for _ in range(300):
        scene = world.sample_scene(rng, split="all")
        image = gaussian_filter(world.render(scene, rng).astype(np.float32), sigma=(1.0, 1.0, 0))
        image = image.round().clip(0, 255).astype(np.uint8)
        assert all(world.score(world.caption(scene), image).values()), world.caption(scene)
        if len(scene.shapes) == 1:
            other = world.with_attributes(scene, shape=next(s for s in world.SHAPES if s != scene.shapes[0].shape))
            assert not world.score(world.caption(other), image)["shape"], world.caption(other)


def test_a_wrong_caption_is_caught():
    rng = np.random.default_rng(2)
    scene = world.Scene((world.Shape("red", "circle", "large", "on the left"),), "white")
    image = world.render(scene, rng)
    result = world.score("a small blue square on the right on a black background", image)
    assert result == {"background": False, "color": False, "shape": False, "size": False, "position": False}


@pytest.mark.parametrize(
    "text, expected",
    [
        (
            "a red circle",
            {"background": None, "shapes": [{"color": "red", "shape": "circle", "size": None, "position": None}]},
        ),
        (
            "a small green triangle at the top on a gray background",
            {
                "background": "gray",
                "shapes": [{"color": "green", "shape": "triangle", "size": "small", "position": "at the top"}],
            },
        ),
    ],
)
def test_parse_caption(text, expected):
    assert world.parse_caption(text) == expected


def test_two_shape_caption_puts_the_first_on_the_left():
    parsed = world.parse_caption("a blue square and a yellow triangle")
    assert [s["position"] for s in parsed["shapes"]] == ["on the left", "on the right"]
    assert [s["color"] for s in parsed["shapes"]] == ["blue", "yellow"]


def test_training_split_never_draws_held_out_combinations():
    rng = np.random.default_rng(3)
    seen = {(s.color, s.shape, s.position) for _ in range(3000) for s in world.sample_scene(rng).shapes}
    assert not seen & world.HELD_OUT
    assert len(seen) > 60  # the rest of the grammar is covered


def test_captions_leave_attributes_out_but_never_the_shape():
    rng = np.random.default_rng(4)
    scene = world.Scene((world.Shape("purple", "square", "small", "in the center"),), "black")
    captions = {world.caption(scene, rng) for _ in range(200)}
    assert "a purple square in the center on a black background" in captions
    for word in ("small", "purple", "in the center", "black"):
        assert any(word not in c for c in captions)
    assert all("square" in c for c in captions)
