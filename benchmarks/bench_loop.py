"""The hand-written loop (`generate`) versus diffusers' StableDiffusionPipeline on identical components.

Both run the same prompt, seed, size, steps and scheduler, in rounds after a warm-up of each, with threads
pinned; a round runs the two back to back, ours first in odd rounds and diffusers first in even ones
(A B B A ...), so neither always follows the other. Prints each median and the ratio ours/diffusers per
scheduler, both as the ratio of the medians and as the median of each round's own ratio with its 95%
interval (a round's two runs are back to back, so a machine whose speed drifts over seconds slows both
alike; see timing.py); with --json, writes the figures to a file.

    python -m benchmarks.bench_loop                                   # bundled model, 20 steps, every scheduler
    python -m benchmarks.bench_loop --sd15 --steps 2 --rounds 6 --schedulers pndm   # SD v1.5 architecture, 512x512
    python -m benchmarks.bench_loop --compile default --channels-last --pytorch-convolutions   # both optimised alike

With --compile / --channels-last / --pytorch-convolutions the optimisation is applied to the shared components
(`helpers.speed.apply_fast_path`) before diffusers' pipeline is built from them, so the library runs the very same
compiled U-Net and VAE as the hand-written loop: a like-for-like comparison under that optimisation.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import torch

from benchmarks.timing import MIN_ROUNDS, seconds, summarize
from helpers.models import SCHEDULERS, load_components
from helpers.reference import diffusers_pipeline, sd15_random_components
from helpers.sampling import generate
from helpers.seeding import make_generator


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sd15", action="store_true", help="SD v1.5's architecture with random weights, 512x512")
    parser.add_argument("--steps", type=int, default=20)
    parser.add_argument("--rounds", type=int, default=15, help=f"at least {MIN_ROUNDS}, for the 95%% interval")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--schedulers", nargs="+", default=list(SCHEDULERS), choices=list(SCHEDULERS))
    parser.add_argument("--json", type=Path, help="write the figures here")
    parser.add_argument("--compile", default=None, help="torch.compile mode for the shared U-Net and VAE decoder")
    parser.add_argument("--channels-last", action="store_true", help="channels_last memory layout, shared")
    parser.add_argument(
        "--pytorch-convolutions", action="store_true", help="PyTorch's convolutions instead of oneDNN's (CPU)"
    )
    args = parser.parse_args()
    if args.rounds < MIN_ROUNDS:
        parser.error(
            f"--rounds must be at least {MIN_ROUNDS} for a 95% interval of the paired ratio, got {args.rounds}"
        )
    torch.set_num_threads(args.threads)
    bundled = load_components("bundled", device="cpu", dtype=torch.float32) if not args.sd15 else None
    components = sd15_random_components() if args.sd15 else bundled
    optimised = dict(channels_last=args.channels_last, fuse_qkv=False, compile_mode=args.compile)
    if args.compile or args.channels_last or args.pytorch_convolutions:
        from helpers.speed import apply_fast_path

        apply_fast_path(components, **optimised, onednn=not args.pytorch_convolutions)
    size = 512 if args.sd15 else 64
    prompt = "a photograph of an astronaut riding a horse" if args.sd15 else "a large red circle on the left"
    kwargs = dict(prompt=prompt, height=size, width=size, num_inference_steps=args.steps, guidance_scale=7.5)
    print(f"{components.reason}, {size}x{size}, {args.steps} steps, {args.threads} threads, {args.rounds} rounds")
    header = f"{'scheduler':10s} {'ours (s)':>9s} {'diffusers (s)':>13s} {'ratio of medians':>16s}"
    print(header + f" {'paired ratio [95% interval]':>28s}")
    results = {"model": components.reason, "size": size, "steps": args.steps, "rounds": args.rounds, "schedulers": {}}
    results["optimisation"] = optimised | {"pytorch_convolutions": args.pytorch_convolutions}
    print(f"applied to both: {results['optimisation']}")
    for name in args.schedulers:
        pipe = diffusers_pipeline(components, name)

        def ours() -> None:
            generate(components, **kwargs, seed=0, scheduler=name)  # noqa: B023

        def theirs() -> None:
            pipe(**kwargs, generator=make_generator(0), output_type="np")  # noqa: B023

        times: dict[str, list[float]] = {"ours": [], "diffusers": []}
        with torch.no_grad():
            ours(), theirs()  # warm-up
            for r in range(args.rounds):
                order = (("ours", ours), ("diffusers", theirs))
                for key, fn in order if r % 2 == 0 else order[::-1]:
                    times[key].append(seconds(fn))
        row = summarize(times["ours"], times["diffusers"])
        results["schedulers"][name] = row | {"ours_s": times["ours"], "diffusers_s": times["diffusers"]}
        interval = f"{row['paired_ratio']:.3f} [{row['paired_ratio_low']:.3f}, {row['paired_ratio_high']:.3f}]"
        print(
            f"{name:10s} {row['ours_median_s']:9.4f} {row['theirs_median_s']:13.4f} {row['ratio_of_medians']:16.3f}"
            f" {interval:>28s}",
            flush=True,
        )
    if len(args.schedulers) > 1:  # every round of every scheduler: the loop's own cost is the same for all
        ours_all = [t for row in results["schedulers"].values() for t in row["ours_s"]]
        theirs_all = [t for row in results["schedulers"].values() for t in row["diffusers_s"]]
        row = summarize(ours_all, theirs_all)
        results["all_schedulers"] = {k: v for k, v in row.items() if k.startswith("paired")}
        interval = f"{row['paired_ratio']:.3f} [{row['paired_ratio_low']:.3f}, {row['paired_ratio_high']:.3f}]"
        print(f"{'all':10s} {'':9s} {'':13s} {'':16s} {interval:>28s}")
    if args.json:
        args.json.write_text(json.dumps(results, indent=2) + "\n")
        print(f"wrote {args.json}")


if __name__ == "__main__":
    main()
