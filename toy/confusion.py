"""Which colours and shapes a model confuses: one large-shape prompt per colour, shape, position and background.

    python -m toy.confusion models/toy-sd --guidance 3     # 270 prompts, DPM-Solver++ 20 steps, seed 0
    python -m toy.confusion models/toy-sd --guidance 3 --prompts evaluate --seed 1   # make evaluate's 164
    python -m toy.confusion models/toy-sd --guidance 7.5 --prompts evaluate --seed 1 --scheduler pndm

Prints the accuracy per attribute, colour and shape confusion tables (rows: named, columns: drawn), and each
wrong colour with the size and background it was asked for. `--prompts evaluate` uses the training-split
prompts of `toy.evaluate` (small and large shapes); with `--seed 1` they are its "guidance 3.0, train" row.
"""

from __future__ import annotations

import argparse
import itertools
from collections import Counter

import numpy as np
import torch

from helpers.models import SCHEDULERS, load_components
from helpers.sampling import generate
from helpers.seeding import make_generator
from helpers.settings import MAX_IMAGES
from toy import world
from toy.evaluate import prompt_sets


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("model", nargs="?", default="bundled")
    parser.add_argument("--guidance", type=float, default=3.0)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--prompts", choices=("large", "evaluate"), default="large")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--scheduler", default="dpm++", choices=sorted(SCHEDULERS))
    parser.add_argument("--steps", type=int, default=20)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    components = load_components(args.model, device="cpu", dtype=torch.float32)
    if args.prompts == "evaluate":
        prompts = prompt_sets()[0]
    else:
        combos = itertools.product(world.BACKGROUNDS, world.COLORS, world.SHAPES, world.POSITIONS)
        prompts = [f"a large {color} {shape} {position} on a {bg} background" for bg, color, shape, position in combos]
    # one generator across calls of at most MAX_IMAGES: the same starting noise as one batch of every prompt
    generator = make_generator(args.seed)
    images = []
    for start in range(0, len(prompts), MAX_IMAGES):
        images += generate(
            components, prompts[start : start + MAX_IMAGES], generator=generator, scheduler=args.scheduler,
            num_inference_steps=args.steps, guidance_scale=args.guidance,
        ).images  # fmt: skip
    hits: Counter = Counter()
    colors: Counter = Counter()
    shapes: Counter = Counter()
    wrong: Counter = Counter()
    for prompt, image in zip(prompts, images):
        want, seen = world.parse_caption(prompt), world.read_scene(np.asarray(image))
        (named,), (drawn,) = want["shapes"], seen["shapes"]
        colors[named["color"], drawn["color"]] += 1
        shapes[named["shape"], drawn["shape"]] += 1
        if drawn["color"] != named["color"]:
            wrong[named["color"], drawn["color"], named["size"], want["background"]] += 1
        hits.update(key for key, ok in world.score(prompt, np.asarray(image)).items() if ok)
    print(
        f"{len(prompts)} prompts, {args.scheduler} {args.steps} steps, guidance {args.guidance}: "
        + ", ".join(
            f"{k} {100 * hits[k] / len(prompts):.1f}%" for k in ("color", "shape", "size", "position", "background")
        )
    )
    for name, table, labels in (("colour", colors, list(world.COLORS)), ("shape", shapes, list(world.SHAPES))):
        print(f"\n{name:>8s} | " + " ".join(f"{label[:6]:>6s}" for label in labels) + "   none")
        for want in labels:
            print(f"{want:>8s} | " + " ".join(f"{table[want, got]:6d}" for got in labels) + f" {table[want, None]:6d}")
    print("\nwrong colours (named -> drawn, size, background):")
    for (named, drawn, size, background), count in wrong.most_common():
        print(f"  {count} x {named} -> {drawn}, {size}, on {background}")


if __name__ == "__main__":
    main()
