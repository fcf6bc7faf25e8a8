"""Which shapes a scheduler gets wrong on two-shape prompts, and what it draws instead (toy/EXPERIMENTS.md, O).

    python -m toy.pair_misses models/toy-sd     # make evaluate's 240 two-shape prompts, PNDM and DPM-Solver++

Prints, per scheduler at guidance 7.5 and 20 steps, how often each named shape (480 in all: two per prompt) is read
back as that shape, each miss as "named -> read", and the squares' misses by the size they were drawn at.
"""

from __future__ import annotations

import argparse
from collections import Counter

import numpy as np
import torch

from helpers.models import SCHEDULERS, load_components
from helpers.sampling import generate
from toy import world
from toy.evaluate import prompt_sets


def named_and_read(prompt: str, image) -> list[tuple[dict, dict]]:
    """For each of the two shapes a prompt names, left then right: its named attributes and those read back."""
    wanted = world.parse_caption(prompt)["shapes"]
    if len(wanted) != 2:
        raise ValueError(f"prompt must name two shapes, got {prompt!r}")
    return list(zip(wanted, world.read_scene(np.asarray(image), num_shapes=2)["shapes"]))


def shape_reads(prompt: str, image) -> list[tuple[str, str | None]]:
    """(named, read back) for each of the two shapes a prompt names, left then right."""
    return [(want["shape"], got["shape"]) for want, got in named_and_read(prompt, image)]


def misses_by_drawn_size(prompts: list[str], images: list, shape: str) -> dict[str, tuple[int, int]]:
    """For one named shape: per size it was drawn at (as read back), (missed, drawn). Two-shape prompts name no
    size, so the size is the model's choice."""
    drawn, missed = Counter(), Counter()
    for prompt, image in zip(prompts, images):
        for want, got in named_and_read(prompt, image):
            if want["shape"] == shape:
                drawn[got["size"]] += 1
                missed[got["size"]] += got["shape"] != shape
    return {size: (missed[size], n) for size, n in drawn.items()}


def shape_misses(prompts: list[str], images: list) -> tuple[Counter, Counter, Counter]:
    """Over the shapes two-shape prompts name: how many of each shape were named, how many of those were read back
    right, and each miss as (named, read)."""
    named, right, misses = Counter(), Counter(), Counter()
    for prompt, image in zip(prompts, images):
        for want, got in shape_reads(prompt, image):
            named[want] += 1
            if got == want:
                right[want] += 1
            else:
                misses[(want, got)] += 1
    return named, right, misses


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("model", nargs="?", default="bundled")
    parser.add_argument("--schedulers", default="pndm,dpm++", help="comma-separated")
    parser.add_argument("--seed", type=int, default=2, help="starting noise (make evaluate's two-shape rows: 2)")
    parser.add_argument("--threads", type=int, default=2)
    args = parser.parse_args()
    schedulers = args.schedulers.split(",")
    for name in schedulers:
        if name not in SCHEDULERS:
            parser.error(f"--schedulers: unknown scheduler {name!r}; choose from {', '.join(SCHEDULERS)}")
    torch.set_num_threads(args.threads)
    components = load_components(args.model, device="cpu", dtype=torch.float32)
    pairs = prompt_sets()[2]
    for name in schedulers:
        images = generate(
            components, pairs, seed=args.seed, num_inference_steps=20, guidance_scale=7.5, scheduler=name
        ).images
        named, right, misses = shape_misses(pairs, images)
        shapes = ", ".join(f"{s} {100 * right[s] / n:.0f}% of {n}" for s, n in sorted(named.items()))
        print(f"{name}, seed {args.seed}: shape read right: {shapes}")
        print("  misses (named -> read): " + ", ".join(f"{a} -> {b}: {k}" for (a, b), k in misses.most_common()))
        sizes = misses_by_drawn_size(pairs, images, "square")
        print("  squares by the size drawn: " + ", ".join(f"{z}: {m} missed of {n}" for z, (m, n) in sizes.items()))


if __name__ == "__main__":
    main()
