"""Probe: one training step of the U-Net stage (U-Net and text encoder, the recipe's loss and AdamW, oneDNN) in the
settings sections V and W of toy/EXPERIMENTS.md weigh for #14's hour: the shipped recipe's (8 attention heads, batch
64, PyTorch's for-loop AdamW), batch 32 and 48, 2 heads, and 2 heads with the fused AdamW kernel. With `--ema` each
step also updates the weights' EMA as toy.train does, and four settings follow: 2 heads, fused AdamW and the EMA's
foreach update, then that with narrower U-Nets (`toy.train --unet-channels`). Every setting in turn in each round,
with the median paired ratio to the shipped one's and its 95% interval (timing.py). Speed only: what each setting
trains is measured by training runs. Output of session 21's run (no EMA): `benchmarks/probe_unet_step.txt`; of
session 22's (with it): `benchmarks/probe_unet_step_ema.txt`.

    python -m benchmarks.probe_unet_step --rounds 12 --out benchmarks/probe_unet_step.json
    python -m benchmarks.probe_unet_step --rounds 12 --ema --out benchmarks/probe_unet_step_ema.json
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import platform
from pathlib import Path

import numpy as np
import torch

from benchmarks.bench_train import unet_step_fn
from benchmarks.timing import MIN_ROUNDS, seconds, summarize
from toy import train

HERE = Path(__file__).resolve().parent
SHIPPED = train.Config()
SETTINGS = {
    "shipped: 8 heads, batch 64": SHIPPED,
    "batch 32": dataclasses.replace(SHIPPED, unet_batch=32),
    "batch 48": dataclasses.replace(SHIPPED, unet_batch=48),
    "2 heads": dataclasses.replace(SHIPPED, unet_heads=2),
    "2 heads, fused AdamW": dataclasses.replace(SHIPPED, unet_heads=2, fused_adamw=True),
}
FASTEST = dataclasses.replace(SHIPPED, unet_heads=2, fused_adamw=True, ema_foreach=True)
WITH_EMA = {
    "2 heads, fused AdamW, foreach EMA": FASTEST,
    **{
        f"the same, widths {widths}": dataclasses.replace(FASTEST, unet_channels=widths)
        for widths in ((48, 64, 64), (32, 96, 96), (32, 64, 64))
    },
}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=12, help=f"timed steps per setting (at least {MIN_ROUNDS})")
    parser.add_argument("--ema", action="store_true", help="each step also updates the weights' EMA, as in training")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--out", type=Path, default=HERE / "probe_unet_step.json")
    args = parser.parse_args()
    if args.rounds < MIN_ROUNDS:
        parser.error(f"--rounds must be at least {MIN_ROUNDS} for a 95% interval, got {args.rounds}")
    torch.set_num_threads(args.threads)
    settings = {**SETTINGS, **WITH_EMA} if args.ema else SETTINGS
    steps = {name: unet_step_fn(cfg, native=False, ema=args.ema) for name, cfg in settings.items()}
    first = {name: step() for name, step in steps.items()}  # also the warm-up
    times: dict[str, list[float]] = {name: [] for name in steps}
    for _ in range(args.rounds):
        for name, step in steps.items():
            times[name].append(seconds(step))
    base = next(iter(settings))
    ratios = {name: summarize(times[name], times[base]) for name in settings if name != base}
    print(f"{base}: {np.median(times[base]):.3f} s per step")
    for name, ratio in ratios.items():
        batch = settings[name].unet_batch
        print(
            f"  {name}: {np.median(times[name]):.3f} s per step, {1000 * np.median(times[name]) / batch:.2f} ms per "
            f"picture; paired ratio {ratio['paired_ratio']:.3f} (95% interval {ratio['paired_ratio_low']:.3f} to "
            f"{ratio['paired_ratio_high']:.3f})"
        )
    results = {
        "command": f"python -m benchmarks.probe_unet_step --rounds {args.rounds} --threads {args.threads}"
        + (" --ema" if args.ema else ""),
        "ema": args.ema,
        "machine": {
            "cpu": platform.processor() or platform.machine(),
            "threads": args.threads,
            "torch": torch.__version__,
        },
        "settings": {name: dataclasses.asdict(cfg) for name, cfg in settings.items()},
        "first_step_loss": first,
        "seconds": times,
        "paired_ratio": ratios,
    }
    args.out.write_text(json.dumps(results, indent=2) + "\n")
    print(f"written: {args.out}")


if __name__ == "__main__":
    main()
