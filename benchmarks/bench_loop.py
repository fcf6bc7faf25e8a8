"""The hand-written loop (`generate`) versus diffusers' StableDiffusionPipeline on identical components.

Both run the same prompt, seed, size, steps and scheduler, alternately (A B A B ...) after a warm-up of
each, with threads pinned; prints each median and the ratio ours/diffusers per scheduler, both as the ratio
of the medians and as the median of each round's own ratio (a round's two runs are back to back, so a
machine whose speed drifts over seconds slows both alike).

    python benchmarks/bench_loop.py                                   # bundled model, 20 steps, every scheduler
    python benchmarks/bench_loop.py --sd15 --steps 2 --rounds 2 --schedulers pndm   # SD v1.5 architecture, 512x512
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from transformers import CLIPTokenizer  # noqa: E402

from helpers.models import (  # noqa: E402
    CLIP_TOKENIZER,
    SCHEDULERS,
    SD15_SCHEDULER,
    Components,
    diffusers_pipeline,
    load_components,
    sd15_architecture,
)
from helpers.sampling import generate  # noqa: E402
from helpers.seeding import make_generator  # noqa: E402


def sd15_components() -> Components:
    text_encoder, unet, vae = sd15_architecture("cpu")
    for m in (text_encoder, unet, vae):
        m.eval().requires_grad_(False)
    tokenizer = CLIPTokenizer.from_pretrained(CLIP_TOKENIZER)
    return Components(
        tokenizer, text_encoder, unet, vae, dict(SD15_SCHEDULER), "sd15-random", "SD v1.5, random weights"
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sd15", action="store_true", help="SD v1.5's architecture with random weights, 512x512")
    parser.add_argument("--steps", type=int, default=20)
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--schedulers", nargs="+", default=list(SCHEDULERS))
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    components = sd15_components() if args.sd15 else load_components("bundled", device="cpu", dtype=torch.float32)
    size = 512 if args.sd15 else 64
    prompt = "a photograph of an astronaut riding a horse" if args.sd15 else "a large red circle on the left"
    kwargs = dict(prompt=prompt, height=size, width=size, num_inference_steps=args.steps, guidance_scale=7.5)
    print(f"{components.reason}, {size}x{size}, {args.steps} steps, {args.threads} threads, {args.rounds} rounds")
    print(f"{'scheduler':10s} {'ours (s)':>10s} {'diffusers (s)':>14s} {'ours/diffusers':>15s} {'paired':>7s}")
    for name in args.schedulers:
        pipe = diffusers_pipeline(components, name)

        def ours() -> None:
            generate(components, **kwargs, seed=0, scheduler=name)  # noqa: B023

        def theirs() -> None:
            pipe(**kwargs, generator=make_generator(0), output_type="np")  # noqa: B023

        times: dict[str, list[float]] = {"ours": [], "diffusers": []}
        with torch.no_grad():
            ours(), theirs()  # warm-up
            for _ in range(args.rounds):
                for key, fn in (("ours", ours), ("diffusers", theirs)):
                    start = time.perf_counter()
                    fn()
                    times[key].append(time.perf_counter() - start)
        a, b = statistics.median(times["ours"]), statistics.median(times["diffusers"])
        paired = statistics.median(x / y for x, y in zip(times["ours"], times["diffusers"]))
        print(f"{name:10s} {a:10.4f} {b:14.4f} {a / b:15.3f} {paired:7.3f}", flush=True)


if __name__ == "__main__":
    main()
