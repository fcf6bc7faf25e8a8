"""The everyday CPU path: one 20-step DPM-Solver++ image with the bundled model, eager and with the fast path.

Prints where the time of one image goes (text encoder, one U-Net call at batch 2, VAE decode), then the
median time of one whole image (`generate`, 64x64, guidance 7.5) for each setting, after a warm-up that
also pays for any compilation (reported apart), and how far its pixels are from the eager image's (all
settings keep the maths; compiled kernels may round differently). Writes the figures to a JSON file.

    python benchmarks/bench_cpu.py                     # every setting, 2 threads, writes benchmarks/cpu_results.json
    python benchmarks/bench_cpu.py --settings eager    # just the eager baseline
"""

from __future__ import annotations

import argparse
import json
import platform
import statistics
import sys
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from helpers.models import Components, load_components  # noqa: E402
from helpers.sampling import encode_text, generate  # noqa: E402
from helpers.speed import apply_fast_path  # noqa: E402

HERE = Path(__file__).resolve().parent
PROMPT = "a large blue circle on the left on a white background"
SETTINGS: dict[str, dict] = {
    "eager": {"channels_last": False, "fuse_qkv": False},
    "eager, fused QKV": {"channels_last": False, "fuse_qkv": True},
    "torch.compile": {"channels_last": False, "fuse_qkv": True, "compile_mode": "default"},
    "torch.compile, frozen weights": {
        "channels_last": False,
        "fuse_qkv": True,
        "compile_mode": "default",
        "freeze": True,
    },
}


def median_seconds(fn: Callable[[], object], repeats: int) -> float:
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return statistics.median(times)


@torch.no_grad()
def breakdown(components: Components, repeats: int) -> dict[str, float]:
    """Milliseconds for each model call of one guided image."""
    embeds = torch.cat([encode_text(components, [""]), encode_text(components, [PROMPT])])
    size = components.unet.config.sample_size
    latents = torch.randn(2, components.unet.config.in_channels, size, size)
    t = torch.tensor(500)
    calls = {
        "text encoder (one prompt)": lambda: encode_text(components, [PROMPT]),
        "U-Net (batch 2)": lambda: components.unet(latents, t, encoder_hidden_states=embeds),
        "VAE decode": lambda: components.vae.decode(latents[:1]),
    }
    for fn in calls.values():
        fn()
    return {name: 1000 * median_seconds(fn, repeats) for name, fn in calls.items()}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--repeats", type=int, default=7)
    parser.add_argument("--settings", nargs="+", default=list(SETTINGS), choices=list(SETTINGS))
    parser.add_argument("--out", type=Path, default=HERE / "cpu_results.json")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    print(f"torch {torch.__version__}, {platform.processor() or platform.machine()}, {args.threads} threads")

    results: dict = {"threads": args.threads, "torch": torch.__version__, "prompt": PROMPT, "settings": {}}
    results["breakdown_ms"] = breakdown(load_components("bundled", device="cpu", dtype=torch.float32), 20)
    for name, ms in results["breakdown_ms"].items():
        print(f"{name:28s} {ms:7.2f} ms")

    reference = None
    for name in args.settings:
        torch._dynamo.reset()
        components = apply_fast_path(load_components("bundled", device="cpu", dtype=torch.float32), **SETTINGS[name])

        def image() -> np.ndarray:
            kwargs = dict(num_inference_steps=20, guidance_scale=7.5, seed=0, scheduler="dpm++")
            return generate(components, PROMPT, **kwargs).pixels  # noqa: B023

        warmup = median_seconds(image, 1)
        seconds = median_seconds(image, args.repeats)
        pixels = image()
        reference = pixels if reference is None else reference
        diff = float(np.abs(pixels - reference).max())
        results["settings"][name] = {
            "seconds_per_image": round(seconds, 4),
            "first_call_seconds": round(warmup, 1),
            "max_pixel_difference_from_first_setting": diff,
        }
        print(
            f"{name:32s} {seconds:.3f} s per image (first call {warmup:.1f} s), max pixel diff {diff:.2e}", flush=True
        )
    args.out.write_text(json.dumps(results, indent=2) + "\n")
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
