"""The toy world: 64x64 pictures of one or two simple shapes, their captions, and how to score them.

One module serves training (draw scenes, caption them) and evaluation (read a generated picture
back into colour, shape, size, position and background). Colours are the CSS named colours.

Grammar (every attribute but the shape may be left out; what is left out is drawn at random):
    one shape:  "a [small|large] [colour] <shape> [on the left|...] [on a <bg> background]"
    two shapes: "a [colour] <shape> and a [colour] <shape> [on a <bg> background]"
                (the first shape named stands on the left, the second on the right)
The empty prompt "" is the unconditional caption used for classifier-free guidance.
"""

from __future__ import annotations

import math
from collections.abc import Collection
from dataclasses import dataclass, replace
from functools import cache

import numpy as np

IMAGE_SIZE = 64
COLORS: dict[str, tuple[int, int, int]] = {
    "red": (255, 0, 0),
    "green": (0, 128, 0),
    "blue": (0, 0, 255),
    "yellow": (255, 255, 0),
    "purple": (128, 0, 128),
    "orange": (255, 165, 0),
}
BACKGROUNDS: dict[str, tuple[int, int, int]] = {
    "white": (255, 255, 255),
    "black": (0, 0, 0),
    "gray": (128, 128, 128),
}
SHAPES = ("circle", "square", "triangle")
SIZES = {"small": (7.0, 9.0), "large": (12.0, 14.0)}  # half-width in pixels
POSITIONS: dict[str, tuple[float, float]] = {  # centre (x, y) in pixels
    "on the left": (16.0, 32.0),
    "on the right": (48.0, 32.0),
    "at the top": (32.0, 16.0),
    "at the bottom": (32.0, 48.0),
    "in the center": (32.0, 32.0),
}
# Colour-shape-position combinations never drawn in training: the held-out split.
HELD_OUT: frozenset[tuple[str, str, str]] = frozenset(
    {
        ("red", "triangle", "on the left"),
        ("blue", "circle", "on the right"),
        ("green", "square", "at the top"),
        ("yellow", "triangle", "at the bottom"),
        ("purple", "square", "in the center"),
        ("orange", "circle", "on the left"),
        ("red", "square", "at the bottom"),
        ("blue", "triangle", "at the top"),
    }
)


@dataclass(frozen=True)
class Shape:
    color: str
    shape: str
    size: str
    position: str


@dataclass(frozen=True)
class Scene:
    shapes: tuple[Shape, ...]
    background: str


def sample_scene(rng: np.random.Generator, split: str = "train", two_shape_prob: float = 0.25) -> Scene:
    """A random scene; in the train split, no shape uses a held-out colour-shape-position combination."""
    background = str(rng.choice(list(BACKGROUNDS)))
    two = rng.random() < two_shape_prob
    positions = ["on the left", "on the right"] if two else [str(rng.choice(list(POSITIONS)))]
    shapes = []
    for position in positions:
        while True:
            shape = Shape(
                str(rng.choice(list(COLORS))),
                str(rng.choice(SHAPES)),
                str(rng.choice(list(SIZES))),
                position,
            )
            held = (shape.color, shape.shape, shape.position) in HELD_OUT
            if split != "train" or not held:
                break
        shapes.append(shape)
    return Scene(tuple(shapes), background)


ATTRIBUTES: dict[str, Collection[str]] = {
    "size": SIZES,
    "color": COLORS,
    "shape": SHAPES,
    "position": POSITIONS,
    "background": BACKGROUNDS,
}


def caption(
    scene: Scene,
    rng: np.random.Generator | None = None,
    keep: float = 0.7,
    noise: float = 0.0,
    noisy: Collection[str] = tuple(ATTRIBUTES),
) -> str:
    """The caption of a scene; with rng, each optional attribute is kept with probability `keep`.

    `noise` is the chance that a named attribute is named wrong (a random value of its kind, possibly the right
    one), as web captions often are; the shape's own word included. `noisy` lists the kinds of attribute
    (ATTRIBUTES' keys) that noise touches; rng is drawn from only for those.
    """

    def kept() -> bool:
        return rng is None or rng.random() < keep

    def said(value: str, kind: str) -> str:
        if rng is not None and noise and kind in noisy and rng.random() < noise:
            return str(rng.choice(list(ATTRIBUTES[kind])))
        return value

    def noun_phrase(s: Shape, with_size: bool) -> str:
        words = ["a"]
        if with_size and kept():
            words.append(said(s.size, "size"))
        if kept():
            words.append(said(s.color, "color"))
        words.append(said(s.shape, "shape"))
        return " ".join(words)

    if len(scene.shapes) == 1:
        s = scene.shapes[0]
        text = noun_phrase(s, with_size=True)
        if kept():
            text += " " + said(s.position, "position")
    else:
        text = " and ".join(noun_phrase(s, with_size=False) for s in scene.shapes)
    if kept():
        text += f" on a {said(scene.background, 'background')} background"
    return text


ROUND_SQUARE_SPLIT = 0.89  # measure_shape's split of box fill: a circle fills pi/4 of its box, a square all of it


def superellipse_fill(exponent: float) -> float:
    """The share of its box that |x|^n + |y|^n <= 1 fills: pi/4 at n = 2 (a circle), towards 1 as n grows (a square)."""
    return math.gamma(1 + 1 / exponent) ** 2 / math.gamma(1 + 2 / exponent)


EXPONENTS = np.geomspace(2.0, 400.0, 4000)
FILLS = np.array([superellipse_fill(n) for n in EXPONENTS])  # rising from pi/4 to 0.998


def shape_exponent(shape: str, rng: np.random.Generator, shape_range: float) -> float:
    """The superellipse exponent a circle or a square is drawn with, when names cover a range of outlines: its box
    fill is drawn uniformly from `shape_range` x the way from its own fill (pi/4 or 1) to ROUND_SQUARE_SPLIT: up to
    about 0.8 nearly every outline is read back as its name (the pixels round the fill a little; at 1, nine in ten),
    and above 1 a circle may come out square enough to be read as a square and the other way round, as "circle" and
    "square" blur in real captions."""
    own = math.pi / 4 if shape == "circle" else 1.0
    fill = own + (ROUND_SQUARE_SPLIT - own) * shape_range * rng.random()
    return float(np.interp(fill, FILLS, EXPONENTS))  # clipped to n = 2 .. 400 (400 is a square on these pixels)


def shape_mask(
    shape: str, cx: float, cy: float, half: float, size: int = IMAGE_SIZE, exponent: float | None = None
) -> np.ndarray:
    """Boolean mask of one shape centred at (cx, cy) with the given half-width; a circle or square given an
    `exponent` is the superellipse |dx|^n + |dy|^n <= half^n in its place (shape_exponent)."""
    y, x = np.mgrid[0:size, 0:size].astype(np.float32) + 0.5
    dx, dy = x - cx, y - cy
    if exponent is not None and shape in ("circle", "square"):
        with np.errstate(over="ignore"):
            u, v = np.abs(dx.astype(np.float64)) / half, np.abs(dy.astype(np.float64)) / half
            return u**exponent + v**exponent <= 1.0
    if shape == "circle":
        return dx**2 + dy**2 <= half**2
    if shape == "square":
        return (np.abs(dx) <= half) & (np.abs(dy) <= half)
    if shape == "triangle":  # pointing up, base at the bottom
        t = (dy + half) / (2 * half)  # 0 at the apex, 1 at the base
        return (t >= 0) & (t <= 1) & (np.abs(dx) <= half * t)
    raise ValueError(f"shape must be one of {SHAPES}, got {shape!r}")


def shade(rgb: tuple[int, int, int], rng: np.random.Generator, spread: float) -> np.ndarray:
    """A colour moved by up to `spread` on each channel at random (it stays nearest its own name for spread < 45)."""
    return np.asarray(rgb, np.float32) + rng.uniform(-spread, spread, 3).astype(np.float32)


def lighting(rng: np.random.Generator, amplitude: float, size: int = IMAGE_SIZE) -> np.ndarray:
    """A smooth random brightness field (H, W, 1): a 4x4 grid of values, interpolated; at most +-amplitude."""
    grid = rng.uniform(-amplitude, amplitude, (4, 4)).astype(np.float32)
    coords = np.linspace(0, 3, size, dtype=np.float32)
    i = np.minimum(coords.astype(int), 2)
    f = coords - i
    rows = grid[i] * (1 - f)[:, None] + grid[i + 1] * f[:, None]  # (size, 4)
    return (rows[:, i] * (1 - f) + rows[:, i + 1] * f)[..., None]


NAMED: dict[str, tuple[int, int, int]] = {**COLORS, **BACKGROUNDS}
MIN_CONTRAST = 80.0  # a shaded shape keeps at least this RGB distance from its shaded background


@cache
def shade_radius(name: str) -> float:
    """Half the RGB distance from a named colour (or background) to the nearest other one: within it, the nearest
    name is still its own, so a picture shaded this far is read back as the caption says."""
    rgb = np.asarray(NAMED[name], np.float32)
    return min(float(np.linalg.norm(rgb - np.asarray(v, np.float32))) for n, v in NAMED.items() if n != name) / 2


def shade_in_ball(name: str, rng: np.random.Generator, color_range: float) -> np.ndarray:
    """A colour drawn uniformly from the ball of radius `color_range` x shade_radius(name) around the named one
    (render clips the picture to 0..255 afterwards)."""
    direction = rng.normal(size=3)
    direction /= np.linalg.norm(direction)
    radius = color_range * shade_radius(name) * rng.random() ** (1 / 3)
    return (np.asarray(NAMED[name], np.float32) + radius * direction).astype(np.float32)


def render(
    scene: Scene, rng: np.random.Generator, variation: float = 0.0, color_range: float = 0.0, shape_range: float = 0.0
) -> np.ndarray:
    """Draw a scene as a uint8 array (H, W, 3); sizes and centres are jittered by rng.

    `variation` (0 to 1) adds what a caption never names, as real photographs have it: every colour's shade
    varies (up to 24 x variation per channel) and a smooth lighting field brightens or darkens the picture (up
    to 16 x variation). `color_range` (0 to 2) lets each named colour cover a range, as "red" does in real
    captions: the colour is drawn from the ball of radius color_range x shade_radius(name), so up to 1 it stays
    nearest its own name (above 1 neighbouring names overlap, as "red" and "orange" do in real captions, and a
    picture may be read back as the neighbour), and a shape's colour is drawn again until it stands MIN_CONTRAST
    from its background's (before clipping; after it, above the 60 that world.foreground needs). `shape_range` (0 to
    2) does the same for the outlines of circles and squares (shape_exponent: rounded squares, squarish circles;
    triangles stay as they are). With all three at 0 the pictures are drawn exactly as before, from the same rng
    draws.
    """
    image = np.empty((IMAGE_SIZE, IMAGE_SIZE, 3), np.float32)
    background = (
        shade_in_ball(scene.background, rng, color_range) if color_range else np.float32(BACKGROUNDS[scene.background])
    )
    image[:] = shade(background, rng, 24 * variation) if variation else background
    for s in scene.shapes:
        cx, cy = POSITIONS[s.position]
        if len(scene.shapes) == 1:
            cx, cy = cx + rng.uniform(-3, 3), cy + rng.uniform(-3, 3)
        else:
            cy = cy + rng.uniform(-6, 6)
        half = rng.uniform(*SIZES[s.size])
        if len(scene.shapes) > 1:
            half = min(half, 11.0)
        color = np.float32(COLORS[s.color])
        if color_range:
            color = shade_in_ball(s.color, rng, color_range)
            while np.linalg.norm(color - background) < MIN_CONTRAST:
                color = shade_in_ball(s.color, rng, color_range)
        exponent = shape_exponent(s.shape, rng, shape_range) if shape_range and s.shape != "triangle" else None
        image[shape_mask(s.shape, cx, cy, half, exponent=exponent)] = (
            shade(color, rng, 24 * variation) if variation else color
        )
    if variation:
        image += lighting(rng, 16 * variation)
    return np.clip(np.rint(image), 0, 255).astype(np.uint8)


def parse_caption(text: str) -> dict:
    """The attributes a caption names, as {'background': ..., 'shapes': [{...}, ...]} (None where left out)."""
    text = text.strip()
    background = None
    for name in BACKGROUNDS:
        suffix = f" on a {name} background"
        if text.endswith(suffix):
            background, text = name, text[: -len(suffix)]
    shapes = []
    for part in text.split(" and "):
        found = {"color": None, "shape": None, "size": None, "position": None}
        for pos in POSITIONS:
            if part.endswith(" " + pos):
                found["position"], part = pos, part[: -len(pos) - 1]
        for word in part.split():
            if word in COLORS:
                found["color"] = word
            elif word in SHAPES:
                found["shape"] = word
            elif word in SIZES:
                found["size"] = word
        shapes.append(found)
    if len(shapes) == 2:
        shapes[0]["position"], shapes[1]["position"] = "on the left", "on the right"
    return {"background": background, "shapes": shapes}


def nearest(rgb: np.ndarray, palette: dict[str, tuple[int, int, int]]) -> str:
    """The palette name closest to an RGB colour."""
    names = list(palette)
    dist = [np.sum((np.asarray(palette[n], np.float32) - rgb) ** 2) for n in names]
    return names[int(np.argmin(dist))]


def measure_shape(mask: np.ndarray, image: np.ndarray) -> dict:
    """Colour, shape, size and position read from the pixels under one shape's mask."""
    ys, xs = np.nonzero(mask)
    if len(xs) < 12:
        return {"color": None, "shape": None, "size": None, "position": None}
    color = nearest(image[mask].astype(np.float32).mean(0), COLORS)
    width, height = xs.max() - xs.min() + 1, ys.max() - ys.min() + 1
    fill = len(xs) / float(width * height)
    # a triangle (pointing up) has 3/4 of its area in the lower half of its box, a circle or square half:
    # split at 1.75 : 1, which a blurred outline does not move much. Then a square fills its box (1.0),
    # a circle pi/4 (0.79): split half-way between.
    middle = ys.min() + height / 2.0
    lower, upper = np.sum(ys + 0.5 > middle), np.sum(ys + 0.5 < middle)
    shape = "triangle" if lower > 1.75 * upper else "square" if fill > ROUND_SQUARE_SPLIT else "circle"
    cx, cy = (xs.min() + xs.max() + 1) / 2.0, (ys.min() + ys.max() + 1) / 2.0  # box centre
    half = max(width, height) / 2.0
    size = "small" if half < (SIZES["small"][1] + SIZES["large"][0]) / 2 else "large"
    position = min(POSITIONS, key=lambda p: (POSITIONS[p][0] - cx) ** 2 + (POSITIONS[p][1] - cy) ** 2)
    return {"color": color, "shape": shape, "size": size, "position": position}


def foreground(image: np.ndarray, region: np.ndarray | None = None) -> tuple[np.ndarray, str]:
    """The shape's pixels within `region` (default: all), and the background's name (read off the border).

    A pixel belongs to the shape when it is more than half-way from the background colour to the region's
    most distant colour (and at least 60 away): a soft, anti-aliased edge counts up to its middle, as the
    drawn outline would, so a blurred halo does not turn a triangle into a circle.
    """
    border = np.concatenate([image[0], image[-1], image[:, 0], image[:, -1]]).astype(np.float32)
    bg_rgb = np.median(border, axis=0)
    dist = np.sqrt(((image.astype(np.float32) - bg_rgb) ** 2).sum(-1))
    region = np.ones(dist.shape, bool) if region is None else region
    threshold = max(60.0, 0.5 * float(np.percentile(dist[region], 99)))
    return region & (dist > threshold), nearest(bg_rgb, BACKGROUNDS)


def read_scene(image: np.ndarray, num_shapes: int = 1) -> dict:
    """Read a picture back: background and, per shape (left to right when two), its attributes."""
    if num_shapes == 1:
        mask, background = foreground(image)
        return {"background": background, "shapes": [measure_shape(mask, image)]}
    left = np.zeros(image.shape[:2], bool)
    left[:, : IMAGE_SIZE // 2] = True
    (left_mask, background), (right_mask, _) = foreground(image, left), foreground(image, ~left)
    return {"background": background, "shapes": [measure_shape(left_mask, image), measure_shape(right_mask, image)]}


def score(text: str, image: np.ndarray) -> dict[str, bool]:
    """For each attribute a caption names, whether the picture shows it (keys like 'color', 'shape')."""
    wanted = parse_caption(text)
    seen = read_scene(image, num_shapes=len(wanted["shapes"]))
    result: dict[str, list[bool]] = {}
    if wanted["background"] is not None:
        result["background"] = [seen["background"] == wanted["background"]]
    for want, got in zip(wanted["shapes"], seen["shapes"]):
        for key in ("color", "shape", "size", "position"):
            if want[key] is not None and (len(wanted["shapes"]) == 1 or key != "position"):
                result.setdefault(key, []).append(got[key] == want[key])
    return {k: all(v) for k, v in result.items()}


def with_attributes(scene: Scene, **changes: str) -> Scene:
    """A copy of a one-shape scene with some shape attributes changed."""
    return Scene((replace(scene.shapes[0], **changes),), scene.background)
