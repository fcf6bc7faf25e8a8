"""Which colours and shapes a model confuses: one large-shape prompt per colour, shape, position and background.

    python -m toy.confusion models/toy-sd --guidance 3     # 270 prompts, DPM-Solver++ 20 steps, seed 0

Prints the accuracy per attribute, then colour and shape confusion tables (rows: named, columns: drawn).
"""

from __future__ import annotations

import argparse
import itertools
from collections import Counter

import numpy as np
import torch

from helpers.models import load_components
from helpers.sampling import generate
from toy import world


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("model", nargs="?", default="bundled")
    parser.add_argument("--guidance", type=float, default=3.0)
    parser.add_argument("--threads", type=int, default=2)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    components = load_components(args.model, device="cpu", dtype=torch.float32)
    combos = list(itertools.product(world.BACKGROUNDS, world.COLORS, world.SHAPES, world.POSITIONS))
    prompts = [f"a large {color} {shape} {position} on a {bg} background" for bg, color, shape, position in combos]
    out = generate(components, prompts, seed=0, scheduler="dpm++", num_inference_steps=20, guidance_scale=args.guidance)
    hits: Counter = Counter()
    colors: Counter = Counter()
    shapes: Counter = Counter()
    for prompt, (_, color, shape, _), image in zip(prompts, combos, out.images):
        seen = world.read_scene(np.asarray(image))["shapes"][0]
        colors[color, seen["color"]] += 1
        shapes[shape, seen["shape"]] += 1
        hits.update(key for key, ok in world.score(prompt, np.asarray(image)).items() if ok)
    print(
        f"{len(prompts)} prompts, guidance {args.guidance}: "
        + ", ".join(
            f"{k} {100 * hits[k] / len(prompts):.1f}%" for k in ("color", "shape", "size", "position", "background")
        )
    )
    for name, table, labels in (("colour", colors, list(world.COLORS)), ("shape", shapes, list(world.SHAPES))):
        print(f"\n{name:>8s} | " + " ".join(f"{label[:6]:>6s}" for label in labels) + "   none")
        for want in labels:
            print(f"{want:>8s} | " + " ".join(f"{table[want, got]:6d}" for got in labels) + f" {table[want, None]:6d}")


if __name__ == "__main__":
    main()
