"""Peak GPU memory and time of the memory options, SD v1.5's architecture (random weights), fp16, 512x512.

python -m benchmarks.bench_memory --json benchmarks/memory_results.json
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import torch

from benchmarks import timing
from benchmarks.bench_gpu import build
from helpers.sampling import generate
from helpers.speed import apply_memory_savers

OPTIONS = {
    "none (fp16, SDPA)": {},
    "attention slicing": {"attention_slicing": True},
    "VAE slicing + tiling": {"vae_slicing": True, "vae_tiling": True},
    "model CPU offload": {"cpu_offload": True},
    "all of them": {"attention_slicing": True, "vae_slicing": True, "vae_tiling": True, "cpu_offload": True},
}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--json", type=Path, default=Path(__file__).parent / "memory_results.json")
    parser.add_argument("--steps", type=int, default=20)
    args = parser.parse_args()
    rows = []
    for label, options in OPTIONS.items():
        components = build(False, torch.device("cuda"), torch.float16)
        apply_memory_savers(components, **options)
        kwargs = dict(
            prompt="an astronaut", height=512, width=512, num_inference_steps=args.steps, seed=0, scheduler="dpm++"
        )
        generate(components, **kwargs)  # warm-up
        torch.cuda.synchronize()
        torch.cuda.reset_peak_memory_stats()
        seconds = timing.seconds(lambda c=components, k=kwargs: generate(c, **k), torch.device("cuda"))
        rows.append(
            {
                "option": label,
                "seconds": seconds,
                "peak_gib": torch.cuda.max_memory_allocated() / 2**30,
            }
        )
        print(f"{label:24s} {rows[-1]['seconds']:6.2f} s/image  peak {rows[-1]['peak_gib']:.2f} GiB", flush=True)
        del components
        torch.cuda.empty_cache()
    args.json.write_text(
        json.dumps({"device": torch.cuda.get_device_name(), "steps": args.steps, "rows": rows}, indent=2) + "\n"
    )


if __name__ == "__main__":
    main()
