"""GPU benchmark: SD v1.5's architecture (random weights) at 512x512, diffusers' default fp16 pipeline
versus the hand-written loop, plain and with the fast path, in one run.

Random weights time exactly like the real ones (same shapes, same kernels), so no download is needed.
Prints seconds per image, denoising steps per second, peak memory and the fraction of the compute floor
(FLOPs counted with torch.utils.flop_counter, peak from a large bf16 matmul on the same device), and
writes the figures as JSON.

    python -m benchmarks.bench_gpu --json benchmarks/gpu_results.json      # on a CUDA machine
    python -m benchmarks.bench_gpu --toy                                   # CPU smoke test, tiny sizes
"""

from __future__ import annotations

import argparse
import json
import platform
import statistics
import time
from pathlib import Path

import torch
from torch.utils.flop_counter import FlopCounterMode

from benchmarks.timing import timed_call
from helpers.models import Components, make_scheduler
from helpers.reference import diffusers_pipeline, random_components, sd15_random_components
from helpers.sampling import generate
from helpers.speed import apply_fast_path

ROOT = Path(__file__).resolve().parent.parent


def timed(fn, device: torch.device, repeats: int) -> list[float]:
    """Seconds for each of `repeats` calls after one warm-up call."""
    fn()
    return [timed_call(fn, device)[1] for _ in range(repeats)]


def matmul_peak(device: torch.device, n: int) -> float:
    """Measured FLOP/s of an n x n x n bf16 matmul (mean of 10 after 3 warm-ups)."""
    a = torch.randn(n, n, device=device, dtype=torch.bfloat16)
    b = torch.randn(n, n, device=device, dtype=torch.bfloat16)
    for _ in range(3):
        a @ b
    _, seconds = timed_call(lambda: [a @ b for _ in range(10)], device)
    return 10 * 2 * n**3 / seconds


def count_flops(components: Components, size: int) -> tuple[int, int]:
    """FLOPs of one guided U-Net call (batch 2) and of one VAE decode, at size x size pixels."""
    f = components.vae_scale_factor
    latents = torch.randn(2, 4, size // f, size // f, device=components.device, dtype=components.dtype)
    text = torch.randn(
        2, 77, components.unet.config.cross_attention_dim, device=components.device, dtype=components.dtype
    )
    with torch.no_grad():
        with FlopCounterMode(display=False) as unet_counter:
            components.unet(latents, 500, encoder_hidden_states=text)
        with FlopCounterMode(display=False) as vae_counter:
            components.vae.decode(latents[:1])
    return unet_counter.get_total_flops(), vae_counter.get_total_flops()


def build(toy: bool, device: torch.device, dtype: torch.dtype) -> Components:
    if not toy:
        return sd15_random_components(device, dtype)
    from toy import train

    cfg = train.SMOKE
    networks = [m.to(device=device, dtype=dtype) for m in (train.build_text_encoder(cfg), train.build_unet(cfg, 8))]
    vae = train.build_vae(cfg).to(device=device, dtype=dtype)
    return random_components(*networks, vae, "toy-random", "the smoke test's tiny networks, random weights")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--toy", action="store_true", help="tiny model on the CPU: a smoke test of this script")
    parser.add_argument("--json", type=Path, default=ROOT / "benchmarks" / "gpu_results.json")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--budget", type=float, default=420.0, help="seconds; later variants are skipped past it")
    args = parser.parse_args()
    started = time.perf_counter()
    device = torch.device("cpu" if args.toy else "cuda")
    dtype = torch.float32 if args.toy else torch.float16
    size = 64 if args.toy else 512
    step_counts = (2, 1) if args.toy else (50, 20)
    torch.backends.cuda.matmul.allow_tf32 = True
    torch.backends.cudnn.allow_tf32 = True
    components = build(args.toy, device, dtype)

    results: dict = {
        "device": torch.cuda.get_device_name() if device.type == "cuda" else platform.processor() or "cpu",
        "torch": torch.__version__,
        "size": size,
        "dtype": str(dtype),
        "guidance_scale": 7.5,
        "batch": 1,
        "date": time.strftime("%Y-%m-%d"),
        "variants": [],
    }
    unet_flops, vae_flops = count_flops(components, size)
    results["flops"] = {"unet_guided_step": unet_flops, "vae_decode": vae_flops}
    results["matmul_peak_flops"] = matmul_peak(device, 512 if args.toy else 8192)
    print(
        f"device {results['device']}: U-Net step (batch 2) {unet_flops / 1e12:.3f} TFLOP, "
        f"VAE decode {vae_flops / 1e12:.3f} TFLOP, "
        f"bf16 matmul peak {results['matmul_peak_flops'] / 1e12:.0f} TFLOP/s",
        flush=True,
    )

    prompt = "a photograph of an astronaut riding a horse"
    f = components.vae_scale_factor
    decode_latents = torch.randn(1, 4, size // f, size // f, device=device, dtype=dtype)

    def record(name: str, run, steps: int) -> None:
        if time.perf_counter() - started > args.budget:
            print(f"{name}: skipped, past the {args.budget:.0f} s budget", flush=True)
            return
        try:
            if device.type == "cuda":
                torch.cuda.reset_peak_memory_stats()
            times = timed(lambda: run(steps), device, args.repeats)
            decode = statistics.median(
                timed(
                    lambda: components.vae.decode(decode_latents / components.vae.config.scaling_factor),
                    device,
                    args.repeats,
                )
            )
        except Exception as err:  # a variant that fails is reported, not fatal
            print(f"{name}: FAILED {type(err).__name__}: {err}"[:400], flush=True)
            results["variants"].append({"name": name, "steps": steps, "error": f"{type(err).__name__}: {err}"[:400]})
            return
        seconds = statistics.median(times)
        floor = (steps * unet_flops + vae_flops) / results["matmul_peak_flops"]
        row = {
            "name": name,
            "steps": steps,
            "seconds_per_image": seconds,
            "all_seconds": times,
            "denoising_steps_per_s": steps / max(seconds - decode, 1e-9),
            "vae_decode_s": decode,
            "peak_mem_gib": torch.cuda.max_memory_allocated() / 2**30 if device.type == "cuda" else None,
            "fraction_of_floor": floor / seconds,
        }
        results["variants"].append(row)
        mem = f"{row['peak_mem_gib']:.2f} GiB" if row["peak_mem_gib"] is not None else "n/a"
        print(
            f"{name:48s} {steps:3d} steps {seconds:7.3f} s/image {row['denoising_steps_per_s']:7.1f} steps/s "
            f"peak {mem}  {100 * row['fraction_of_floor']:.1f}% of floor",
            flush=True,
        )

    with torch.no_grad():
        pipe = diffusers_pipeline(components, "pndm")

        def diffusers_run(steps: int, scheduler: str = "pndm") -> None:
            pipe.scheduler = make_scheduler(scheduler, components.scheduler_config)
            pipe(
                prompt,
                height=size,
                width=size,
                num_inference_steps=steps,
                guidance_scale=7.5,
                generator=torch.Generator().manual_seed(0),
                output_type="np",
            )

        def ours_run(steps: int, scheduler: str = "pndm") -> None:
            generate(
                components,
                prompt,
                height=size,
                width=size,
                num_inference_steps=steps,
                guidance_scale=7.5,
                seed=0,
                scheduler=scheduler,
            )

        for steps in step_counts:
            record("diffusers default fp16 pipeline (PNDM)", diffusers_run, steps)
            record("ours, same settings (PNDM)", ours_run, steps)
        apply_fast_path(components, channels_last=True, fuse_qkv=True, compile_mode=None)
        for steps in step_counts:
            record("ours + channels_last + fused QKV", ours_run, steps)
        if not args.toy:
            apply_fast_path(components, channels_last=False, fuse_qkv=False, compile_mode="default")
            for steps in step_counts:
                record("ours + torch.compile (Inductor)", ours_run, steps)
            record("ours + torch.compile, DPM-Solver++", lambda s: ours_run(s, "dpm++"), step_counts[1])
            # CUDA graphs: a fresh copy, compiled with mode="reduce-overhead", replays each U-Net call as one graph
            del pipe
            components = build(args.toy, device, dtype)
            torch.cuda.empty_cache()
            apply_fast_path(components, channels_last=True, fuse_qkv=True, compile_mode="reduce-overhead")
            for steps in step_counts:
                record("ours + compile + CUDA graphs", ours_run, steps)
            record("ours + compile + CUDA graphs, DPM-Solver++", lambda s: ours_run(s, "dpm++"), step_counts[1])

    results["total_seconds"] = time.perf_counter() - started
    args.json.parent.mkdir(parents=True, exist_ok=True)
    args.json.write_text(json.dumps(results, indent=2) + "\n")
    print(f"wrote {args.json} after {results['total_seconds']:.0f} s")


if __name__ == "__main__":
    main()
