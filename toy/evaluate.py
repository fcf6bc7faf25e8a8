"""Measure how well the bundled model follows its prompts, from the pixels it draws.

Each generated picture is read back by `toy.world.read_scene` (background from the border, the shape's
mask, its mean colour, how much of its bounding box it fills, its size and centre) and compared with
what the prompt named. Prompts come from the training split and from the held-out split (colour-shape-
position combinations never drawn in training).

    python -m toy.evaluate            # writes toy/RESULTS.md and toy/samples_*.png
"""

from __future__ import annotations

import argparse
import itertools
import json
import time
from collections import defaultdict
from pathlib import Path

import numpy as np
import torch

from helpers.models import SCHEDULERS, Components, load_components
from helpers.plotting import image_grid
from helpers.sampling import decode, generate, to_numpy
from toy import world
from toy.train import to_tensor

HERE = Path(__file__).resolve().parent


def single_prompts(split: str, rng: np.random.Generator, repeats: int) -> list[str]:
    """Fully specified one-shape prompts for every colour-shape-position combination of a split."""
    combos = [
        c
        for c in itertools.product(world.COLORS, world.SHAPES, world.POSITIONS)
        if (c in world.HELD_OUT) == (split == "held-out")
    ]
    prompts = []
    for _ in range(repeats):
        for color, shape, position in combos:
            size, background = rng.choice(list(world.SIZES)), rng.choice(list(world.BACKGROUNDS))
            prompts.append(f"a {size} {color} {shape} {position} on a {background} background")
    return prompts


def two_shape_prompts(rng: np.random.Generator, n: int) -> list[str]:
    out = []
    for _ in range(n):
        (c1, c2), (s1, s2) = rng.choice(list(world.COLORS), 2, replace=False), rng.choice(world.SHAPES, 2)
        out.append(f"a {c1} {s1} and a {c2} {s2} on a {rng.choice(list(world.BACKGROUNDS))} background")
    return out


def accuracy(components: Components, prompts: list[str], seed: int, **kwargs) -> tuple[dict[str, float], list, float]:
    """Per-attribute accuracy (percent) over the prompts, the images, and seconds per image."""
    started = time.perf_counter()
    out = generate(components, prompts, seed=seed, **kwargs)
    per_image = (time.perf_counter() - started) / len(prompts)
    hits: dict[str, list[bool]] = defaultdict(list)
    for prompt, image in zip(prompts, out.images):
        for key, ok in world.score(prompt, np.asarray(image)).items():
            hits[key].append(ok)
    return {k: 100.0 * float(np.mean(v)) for k, v in hits.items()}, out.images, per_image


@torch.no_grad()
def vae_ceiling(components: Components, rng: np.random.Generator) -> dict[str, float]:
    """Accuracy of VAE reconstructions of drawn one-shape scenes: the best any U-Net can reach through this VAE."""
    scenes = [
        world.Scene((world.Shape(c, s, z, p),), b)
        for c, s, z, p, b in itertools.product(
            world.COLORS, world.SHAPES, world.SIZES, world.POSITIONS, world.BACKGROUNDS
        )
    ]
    images = np.stack([world.render(scene, rng) for scene in scenes])
    vae = components.vae
    latents = vae.encode(to_tensor(images)).latent_dist.mode() * vae.config.scaling_factor
    decoded = (to_numpy(decode(components, latents)) * 255).round().astype(np.uint8)
    hits: dict[str, list[bool]] = defaultdict(list)
    for scene, image in zip(scenes, decoded):
        for key, ok in world.score(world.caption(scene), image).items():
            hits[key].append(ok)
    return {k: 100.0 * float(np.mean(v)) for k, v in hits.items()}


def table(rows: list[tuple[str, dict[str, float], float]], keys: list[str]) -> list[str]:
    lines = ["| setting | " + " | ".join(keys) + " | s/image |", "|---" * (len(keys) + 2) + "|"]
    for name, acc, sec in rows:
        seconds = f"{sec:.3f}" if np.isfinite(sec) else "-"
        lines.append(f"| {name} | " + " | ".join(f"{acc.get(k, float('nan')):.1f}" for k in keys) + f" | {seconds} |")
    return lines


def main() -> None:
    parser = argparse.ArgumentParser(description="Measure the bundled model's prompt adherence.")
    parser.add_argument("--model", default="bundled")
    parser.add_argument("--repeats", type=int, default=2, help="prompts per colour-shape-position combination")
    parser.add_argument("--out", type=Path, default=HERE / "RESULTS.md")
    parser.add_argument("--threads", type=int, default=2)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    components = load_components(args.model, device="cpu", dtype=torch.float32)
    rng = np.random.default_rng(0)
    train, held = single_prompts("train", rng, args.repeats), single_prompts("held-out", rng, args.repeats * 4)
    pairs = two_shape_prompts(rng, 60)
    keys = ["color", "shape", "size", "position", "background"]

    lines = [
        "# Bundled model: prompt adherence, measured from the pixels",
        "",
        f"Command: `python -m toy.evaluate --repeats {args.repeats}` (CPU, {args.threads} threads). "
        f"{len(train)} training-split and {len(held)} held-out one-shape prompts, every attribute named; "
        f"{len(pairs)} two-shape prompts. Accuracy in percent.",
        "",
    ]
    log = json.loads((Path(components.source) / "training_log.json").read_text())
    lines += [f"Training: {log['summary']['minutes']} minutes on 2 CPU cores in {len(log['stages'])} stage(s):"]
    lines += [f"`{st['command']}` ({st['minutes']} min)" for st in log["stages"]]
    tried = "Training runs that were tried and not shipped, and a colour confusion table"
    lines += ["", f"{tried}: [EXPERIMENTS.md](EXPERIMENTS.md)."]
    lines += ["", "## The VAE alone: drawn scenes, encoded and decoded, read back", ""]
    lines += [
        "Every colour x shape x size x position x background once (540 pictures). No prompt is involved: this is",
        "the ceiling the VAE sets on what the U-Net's pictures can score.",
        "",
    ]
    lines += table([("VAE reconstruction", vae_ceiling(components, np.random.default_rng(5)), float("nan"))], keys)
    lines += ["", "## DPM-Solver++, 20 steps, by guidance scale", ""]
    rows = []
    for guidance in (1.0, 3.0, 7.5):
        for split, prompts in (("train", train), ("held-out", held)):
            acc, images, sec = accuracy(
                components, prompts, seed=1, num_inference_steps=20, guidance_scale=guidance, scheduler="dpm++"
            )
            rows.append((f"guidance {guidance}, {split}", acc, sec))
            if split == "held-out":
                fig = image_grid(images[:16], [p.replace(" background", "") for p in prompts[:16]], cols=8, size=1.6)
                fig.savefig(HERE / f"samples_held_out_guidance_{guidance}.png", dpi=80)
            print(rows[-1])
    lines += table(rows, keys)
    by = {name: acc for name, acc, _ in rows}
    best = max((1.0, 3.0, 7.5), key=lambda g: np.mean(list(by[f"guidance {g}, train"].values())))
    train_acc, held_acc = by[f"guidance {best}, train"], by[f"guidance {best}, held-out"]
    goals = [
        ("colour >= 97%", train_acc["color"] >= 97),
        ("shape >= 90%", train_acc["shape"] >= 90),
        ("position >= 90%", train_acc["position"] >= 90),
        ("held-out within 10 points of training", all(train_acc[k] - held_acc[k] <= 10 for k in keys)),
        (
            "guidance 1.0 worse than 7.5",
            np.mean(list(by["guidance 1.0, train"].values())) < np.mean(list(by["guidance 7.5, train"].values())),
        ),
    ]
    lines += [
        "",
        f"Goals, at the best guidance scale ({best}): "
        + "; ".join(f"{g}: {'met' if ok else 'NOT met'}" for g, ok in goals),
    ]

    lines += ["", "## Two shapes (first named on the left), DPM-Solver++ 20 steps, guidance 7.5", ""]
    acc, images, sec = accuracy(
        components, pairs, seed=2, num_inference_steps=20, guidance_scale=7.5, scheduler="dpm++"
    )
    lines += table([("two shapes", acc, sec)], ["color", "shape", "background"])
    image_grid(images[:12], [p.replace(" background", "") for p in pairs[:12]], cols=6, size=2.0).savefig(
        HERE / "samples_two_shapes.png", dpi=80
    )

    lines += ["", "## Every scheduler at its usual step count, guidance 7.5, training split", ""]
    rows = []
    for name, entry in SCHEDULERS.items():
        steps = entry.usual_steps
        acc, _, sec = accuracy(
            components, train, seed=3, num_inference_steps=steps, guidance_scale=7.5, scheduler=name
        )
        rows.append((f"{name}, {steps} steps", acc, sec))
        print(rows[-1])
    lines += table(rows, keys)
    args.out.write_text("\n".join(lines) + "\n")
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
