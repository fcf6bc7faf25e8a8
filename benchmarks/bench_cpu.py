"""The everyday CPU path: one 20-step DPM-Solver++ image with the bundled model, eager and with the fast path.

Prints where the time of one image goes (text encoder, one U-Net call at batch 2, VAE decode). Then it
prepares every setting (a warm-up call pays for any compilation, reported apart) and times one whole image
(`generate`, 64x64, guidance 7.5) per setting in each round, the settings in turn, so that a slow spell of
the machine falls on all of them alike. Prints each setting's median and, against the first setting in the
same rounds (its median then is printed too), the median paired ratio with its 95% interval (timing.py), and
how far its pixels are from the first setting's (all settings keep the maths; other kernels may round
differently). Writes a JSON file.

    python -m benchmarks.bench_cpu                     # every setting, 2 threads, writes benchmarks/cpu_results.json
    python -m benchmarks.bench_cpu --settings eager "eager, channels_last, PyTorch convolutions"
"""

from __future__ import annotations

import argparse
import json
import platform
from collections.abc import Callable
from pathlib import Path

import numpy as np
import torch

from benchmarks.timing import MIN_ROUNDS, median_seconds, seconds, summarize, timed_call
from helpers.models import Components, load_components
from helpers.sampling import encode_text, generate
from helpers.speed import apply_fast_path

HERE = Path(__file__).resolve().parent
PROMPT = "a large blue circle on the left on a white background"
SETTINGS: dict[str, dict] = {
    "eager": {"channels_last": False, "fuse_qkv": False},
    "eager, fused QKV": {"channels_last": False, "fuse_qkv": True},
    "eager, channels_last, PyTorch convolutions": {"channels_last": True, "fuse_qkv": False, "onednn": False},
    "torch.compile": {"channels_last": False, "fuse_qkv": True, "compile_mode": "default"},
    "torch.compile, channels_last, PyTorch convolutions": {
        "channels_last": True,
        "fuse_qkv": True,
        "compile_mode": "default",
        "onednn": False,
    },
    "torch.compile, frozen weights": {
        "channels_last": False,
        "fuse_qkv": True,
        "compile_mode": "default",
        "freeze": True,
    },
}


def use(name: str) -> None:
    """Set the process-wide state a setting needs before its images (oneDNN on or off)."""
    torch.backends.mkldnn.enabled = SETTINGS[name].get("onednn", True)


def prepare(name: str) -> tuple[Callable[[], np.ndarray], float, np.ndarray]:
    """The bundled model with a setting applied, as a call that makes one image; its first call's seconds and
    pixels (taken now: a compiled setting's later calls may follow another setting's torch._dynamo.reset())."""
    use(name)
    components = apply_fast_path(load_components("bundled", device="cpu", dtype=torch.float32), **SETTINGS[name])

    def image() -> np.ndarray:
        kwargs = dict(num_inference_steps=20, guidance_scale=7.5, seed=0, scheduler="dpm++")
        return generate(components, PROMPT, **kwargs).pixels

    pixels, first_call = timed_call(image)
    return image, first_call, pixels


def take_turns(images: dict[str, Callable[[], np.ndarray]], rounds: int) -> dict[str, list[float]]:
    """Seconds per image for each setting, one image of each in every round."""
    times: dict[str, list[float]] = {name: [] for name in images}
    for _ in range(rounds):
        for name, image in images.items():
            use(name)
            times[name].append(seconds(image))
    return times


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
    parser.add_argument("--rounds", type=int, default=15, help=f"at least {MIN_ROUNDS}, for the 95%% interval")
    parser.add_argument("--settings", nargs="+", default=list(SETTINGS), choices=list(SETTINGS))
    parser.add_argument("--out", type=Path, default=HERE / "cpu_results.json")
    args = parser.parse_args()
    if args.rounds < MIN_ROUNDS:
        parser.error(
            f"--rounds must be at least {MIN_ROUNDS} for a 95% interval of the paired ratio, got {args.rounds}"
        )
    torch.set_num_threads(args.threads)
    print(f"torch {torch.__version__}, {platform.processor() or platform.machine()}, {args.threads} threads")

    results: dict = {"threads": args.threads, "torch": torch.__version__, "prompt": PROMPT, "rounds": args.rounds}
    results["breakdown_ms"] = breakdown(load_components("bundled", device="cpu", dtype=torch.float32), 20)
    for name, ms in results["breakdown_ms"].items():
        print(f"{name:28s} {ms:7.2f} ms")

    first = args.settings[0]
    if "compile_mode" in SETTINGS[first]:
        parser.error(f"--settings: the first setting is the baseline and must not compile, got {first!r}")
    # The eager settings take turns in one group. Each compiled setting gets a group of its own with the baseline,
    # after torch._dynamo.reset(): compiled U-Nets of the same shape would otherwise share one compiled graph.
    eager = [name for name in args.settings if "compile_mode" not in SETTINGS[name]]
    groups = [eager] + [[first, name] for name in args.settings if name not in eager]
    images: dict[str, Callable[[], np.ndarray]] = {}
    first_call: dict[str, float] = {}
    pixels: dict[str, np.ndarray] = {}
    times: dict[str, list[float]] = {}
    baseline: dict[str, list[float]] = {}  # the first setting's times in the same rounds
    for group in groups:
        torch._dynamo.reset()
        for name in group:
            if name not in images:
                images[name], first_call[name], pixels[name] = prepare(name)
        rounds = take_turns({name: images[name] for name in group}, args.rounds)
        for name in group:
            if name not in times:  # the baseline's own times are those of the first group
                times[name], baseline[name] = rounds[name], rounds[first]

    results["settings"] = {}
    columns = f"{'median':>8s} {first + ' then':>11s} {'first call':>10s}  {'paired ratio [95%]':>22s}"
    print(f"{'setting':52s} {columns}  max diff")
    for name in images:
        diff = float(np.abs(pixels[name] - pixels[first]).max())
        row = summarize(times[name], baseline[name])
        results["settings"][name] = {
            "seconds_per_image": round(row["ours_median_s"], 4),
            "first_setting_seconds_per_image_in_the_same_rounds": round(row["theirs_median_s"], 4),
            "first_call_seconds": round(first_call[name], 1),
            "paired_ratio_to_first_setting": round(row["paired_ratio"], 3),
            "paired_ratio_95_interval": [round(row["paired_ratio_low"], 3), round(row["paired_ratio_high"], 3)],
            "max_pixel_difference_from_first_setting": diff,
            "seconds": [round(t, 4) for t in times[name]],
        }
        interval = f"{row['paired_ratio']:.3f} [{row['paired_ratio_low']:.3f}, {row['paired_ratio_high']:.3f}]"
        then = f"{row['theirs_median_s']:10.3f}s"
        print(f"{name:52s} {row['ours_median_s']:7.3f}s {then} {first_call[name]:9.1f}s  {interval:>22s}  {diff:.1e}")
    args.out.write_text(json.dumps(results, indent=2) + "\n")
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
