"""Peak GPU memory and time of the memory options, SD v1.5's architecture (random weights), fp16, 512x512.

python benchmarks/bench_memory.py --json benchmarks/memory_results.json
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench_gpu import build  # noqa: E402

from helpers.sampling import generate  # noqa: E402
from helpers.speed import apply_memory_savers  # noqa: E402

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
        start = time.perf_counter()
        generate(components, **kwargs)
        torch.cuda.synchronize()
        rows.append(
            {
                "option": label,
                "seconds": time.perf_counter() - start,
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
