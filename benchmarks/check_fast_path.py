"""How far half precision and the GPU fast path move the pixels, and what bf16 costs or saves.

SD v1.5's architecture with random weights, 512x512, DPM-Solver++ 20 steps, guidance 7.5, one seed:
1. the plain loop in float32 (TF32 off): the reference image;
2. the plain loop in float16 and in bfloat16 (weights cast from the same float32 copy), each run twice;
3. each half-precision copy with `apply_fast_path` (fused QKV, channels_last, torch.compile with CUDA graphs).
Prints, for each, seconds per image, peak memory and the largest and mean pixel difference from the
float32 image (and, for the fast path, from the same precision's plain loop), and for each precision the
relative error of one U-Net call against float32 on the same input; writes the figures as JSON.

A 20-step trajectory can amplify tiny per-call differences (random weights are no denoiser, so nothing pulls
two nearby trajectories together); `--bundled` runs the same checks on the trained bundled model (64x64).

    python -m benchmarks.check_fast_path --json benchmarks/fast_path_results.json   # on a CUDA machine
    python -m benchmarks.check_fast_path --bundled --json benchmarks/fast_path_bundled.json
    python -m benchmarks.check_fast_path --toy                                      # CPU smoke test, tiny sizes
"""

from __future__ import annotations

import argparse
import copy
import json
import statistics
import time
from pathlib import Path

import numpy as np
import torch

from benchmarks.bench_gpu import build
from benchmarks.timing import timed_call
from helpers.models import Components, load_components
from helpers.sampling import generate
from helpers.speed import apply_fast_path

ROOT = Path(__file__).resolve().parent.parent


def models(components: Components) -> tuple[torch.nn.Module, ...]:
    """The three weighted models."""
    return components.text_encoder, components.unet, components.vae


def relative_error(approx: torch.Tensor, exact: torch.Tensor) -> float:
    """||approx - exact|| / ||exact||, in float32 on the CPU."""
    exact = exact.float().cpu()
    return float((approx.float().cpu() - exact).norm() / exact.norm())


def cast(components: Components, device: torch.device, dtype: torch.dtype) -> Components:
    """A copy of the components on `device` with every model's weights in `dtype`."""
    copied = copy.deepcopy(components)
    for model in models(copied):
        model.to(device=device, dtype=dtype)
    return copied


@torch.inference_mode()
def unet_call_error(reference: Components, half: Components, size: int) -> float:
    """Relative error ||half - fp32|| / ||fp32|| of one guided U-Net call (batch 2) on the same random input."""
    f, unet = reference.vae_scale_factor, reference.unet
    generator = torch.Generator().manual_seed(0)
    latents = torch.randn(2, unet.config.in_channels, size // f, size // f, generator=generator)
    text = torch.randn(2, reference.tokenizer.model_max_length, unet.config.cross_attention_dim, generator=generator)
    exact = unet(latents.to(reference.device), 500, encoder_hidden_states=text.to(reference.device)).sample
    device, dtype = half.device, half.unet.dtype
    approx = half.unet(latents.to(device, dtype), 500, encoder_hidden_states=text.to(device, dtype)).sample
    return relative_error(approx, exact)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--toy", action="store_true", help="CPU, 2 steps, tiny model unless --bundled: a smoke test")
    parser.add_argument("--json", type=Path, default=ROOT / "benchmarks" / "fast_path_results.json")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--bundled", action="store_true", help="the trained bundled model (64x64) instead of SD v1.5")
    parser.add_argument("--no-fast-path", action="store_true", help="skip the compiled rows")
    parser.add_argument("--budget", type=float, default=300.0, help="seconds; fast-path rows are skipped past it")
    args = parser.parse_args()
    started = time.perf_counter()
    device = torch.device("cpu" if args.toy else "cuda")
    torch.backends.cuda.matmul.allow_tf32 = False  # a float32 reference in true float32
    torch.backends.cudnn.allow_tf32 = False
    size, steps = 64 if args.toy or args.bundled else 512, 2 if args.toy else 20
    kwargs = dict(prompt="a photograph of an astronaut riding a horse", height=size, width=size)
    kwargs |= dict(num_inference_steps=steps, guidance_scale=7.5, seed=0, scheduler="dpm++")
    results: dict = {"device": torch.cuda.get_device_name() if device.type == "cuda" else "cpu"}
    results |= {"torch": torch.__version__, "date": time.strftime("%Y-%m-%d"), "size": size, "steps": steps, "rows": []}

    def run(
        name: str, components: Components, reference: np.ndarray | None = None, plain: np.ndarray | None = None
    ) -> np.ndarray:
        """Time one setting, print and record its row, and return its pixels."""
        if device.type == "cuda":
            torch.cuda.reset_peak_memory_stats()
        first, first_call = timed_call(lambda: generate(components, **kwargs).pixels, device)
        times = []
        for _ in range(args.repeats):
            pixels, seconds = timed_call(lambda: generate(components, **kwargs).pixels, device)
            times.append(seconds)
        row = {
            "name": name,
            "first_call_s": first_call,
            "seconds_per_image": statistics.median(times),
            "peak_mem_gib": torch.cuda.max_memory_allocated() / 2**30 if device.type == "cuda" else None,
            "finite": bool(np.isfinite(pixels).all()),
            "max_diff_between_calls": float(np.abs(pixels - first).max()),
        }
        reference = pixels if reference is None else reference
        row["max_diff_vs_fp32"] = float(np.abs(pixels - reference).max())
        row["mean_diff_vs_fp32"] = float(np.abs(pixels - reference).mean())
        if plain is not None:
            row["max_diff_vs_plain"] = float(np.abs(pixels - plain).max())
            row["mean_diff_vs_plain"] = float(np.abs(pixels - plain).mean())
        results["rows"].append(row)
        mem = f"{row['peak_mem_gib']:.2f} GiB" if row["peak_mem_gib"] is not None else "n/a"
        vs_plain = f", vs plain {row['max_diff_vs_plain']:.4f}" if plain is not None else ""
        print(
            f"{name:38s} {row['seconds_per_image']:7.3f} s/image (first call {first_call:6.1f} s) peak {mem} "
            f"max|diff| vs fp32 {row['max_diff_vs_fp32']:.4f} (mean {row['mean_diff_vs_fp32']:.5f}){vs_plain}; "
            f"between calls {row['max_diff_between_calls']:.1e}; finite {row['finite']}",
            flush=True,
        )
        return pixels

    halves = (torch.bfloat16,) if args.toy else (torch.float16, torch.bfloat16)  # the CPU has no fast fp16 convs
    if args.bundled:
        fp32 = load_components("bundled", device, torch.float32)
    else:
        fp32 = build(args.toy, device, torch.float32)
    reference = run("plain loop, float32", fp32)
    results["unet_call_relative_error"] = {}
    for dtype in halves:
        error = unet_call_error(fp32, cast(fp32, device, dtype), size)
        results["unet_call_relative_error"][str(dtype)] = error
        print(f"one U-Net call, {dtype} vs float32: relative error {error:.2e}", flush=True)
    for model in models(fp32):  # kept on the CPU, so each peak below counts one copy of the weights
        model.to("cpu")
    plain = {}
    for dtype in halves:
        plain[dtype] = run(f"plain loop, {dtype}", cast(fp32, device, dtype), reference)
        if device.type == "cuda":
            torch.cuda.empty_cache()
    for dtype in () if args.no_fast_path else halves:
        if time.perf_counter() - started > args.budget:
            print(f"fast path, {dtype}: skipped, past the {args.budget:.0f} s budget", flush=True)
            continue
        compile_mode = "default" if args.toy else "reduce-overhead"
        fast = apply_fast_path(cast(fp32, device, dtype), channels_last=True, fuse_qkv=True, compile_mode=compile_mode)
        run(f"fast path, {dtype}", fast, reference, plain[dtype])
        del fast
        if device.type == "cuda":
            torch.cuda.empty_cache()

    results["total_seconds"] = time.perf_counter() - started
    args.json.parent.mkdir(parents=True, exist_ok=True)
    args.json.write_text(json.dumps(results, indent=2) + "\n")
    print(f"wrote {args.json} after {results['total_seconds']:.0f} s", flush=True)


if __name__ == "__main__":
    main()
