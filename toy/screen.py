"""A one-minute screen of a model at Stable Diffusion's defaults, for comparing training runs (toy/EXPERIMENTS.md, J).

`make evaluate`'s 164 one-shape training prompts (its seed for those rows) with PNDM, K-LMS and DPM-Solver++, and
its 240 two-shape prompts and its 75 prompts that leave attributes open (four pictures each) with DPM-Solver++ and
PNDM (another starting noise than its own for these), all at guidance 7.5 and 20 steps; accuracy in percent.

    python -m toy.screen MODEL_FOLDER [--schedulers pndm,lms,dpm++] [--timestep-spacing trailing] [--more-pairs 240]

`--more-pairs N` adds N two-shape prompts of the same form drawn from another seed than `make evaluate`'s, with the same
two schedulers: a second sample, since 60 prompts and one seed moved PNDM's two-shape score by 13 points
(EXPERIMENTS.md, N and O; `make evaluate` had 60 two-shape prompts until then).

`--timestep-spacing` gives every scheduler the same grid (SD v1.5's scheduler file names none, so each takes its own
default: "leading" for PNDM and DDIM, "linspace" for K-LMS, Heun and the Euler ones), to see what a grid does.
"""

from __future__ import annotations

import argparse
import dataclasses

import numpy as np
import torch

from helpers.models import Components, load_components
from helpers.schedulers import SCHEDULERS
from toy.evaluate import ROWS_SEED, open_prompts, pooled_accuracy, prompt_sets, two_shape_prompts

SPACINGS = ("leading", "linspace", "trailing")
MORE_PAIRS_SEED = 1  # make evaluate draws its prompts from seed 0
OPEN_SEEDS = (ROWS_SEED, 13, 14, 15)  # four pictures of each open prompt; none of make evaluate's (5 to 8)


def with_spacing(components: Components, spacing: str | None) -> Components:
    """The same components with every scheduler built on the given timestep spacing (None: each its own default)."""
    if spacing is None:
        return components
    if spacing not in SPACINGS:
        raise ValueError(f"timestep_spacing must be one of {', '.join(SPACINGS)}, got {spacing!r}")
    config = {**components.scheduler_config, "timestep_spacing": spacing}
    return dataclasses.replace(components, scheduler_config=config)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("model", help="a model folder in diffusers' layout")
    parser.add_argument("--schedulers", default="pndm,lms,dpm++", help="comma-separated, for the one-shape prompts")
    parser.add_argument("--timestep-spacing", choices=SPACINGS, help="one grid for every scheduler (default: its own)")
    parser.add_argument("--more-pairs", type=int, default=0, help="extra two-shape prompts, from another seed")
    parser.add_argument("--threads", type=int, default=2)
    args = parser.parse_args()
    if args.more_pairs < 0:
        parser.error(f"--more-pairs must be 0 or more, got {args.more_pairs}")
    schedulers = args.schedulers.split(",")
    for name in schedulers:
        if name not in SCHEDULERS:
            parser.error(f"--schedulers: unknown scheduler {name!r}; choose from {', '.join(SCHEDULERS)}")
    torch.set_num_threads(args.threads)
    components = with_spacing(load_components(args.model, device="cpu", dtype=torch.float32), args.timestep_spacing)
    train, _, pairs = prompt_sets()
    settings = {"num_inference_steps": 20, "guidance_scale": 7.5}
    runs = [("one shape", name, train) for name in schedulers] + [("two shapes", n, pairs) for n in ("dpm++", "pndm")]
    runs += [("open prompts", n, open_prompts()) for n in ("dpm++", "pndm")]
    if args.more_pairs:
        more = two_shape_prompts(np.random.default_rng(MORE_PAIRS_SEED), args.more_pairs)
        runs += [(f"{args.more_pairs} more two shapes", n, more) for n in ("dpm++", "pndm")]
    for kind, name, prompts in runs:
        seeds = OPEN_SEEDS if kind == "open prompts" else (ROWS_SEED,)
        acc, _, _ = pooled_accuracy(components, prompts, seeds, scheduler=name, **settings)
        grid = f" ({args.timestep_spacing})" if args.timestep_spacing else ""
        scores = " ".join(f"{k} {v:.1f}" for k, v in sorted(acc.items()))
        print(f"{args.model} {name}{grid} {kind}: {scores}", flush=True)


if __name__ == "__main__":
    main()
