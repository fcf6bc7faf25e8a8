"""The first image of a fresh process on the compiled path: compiled from scratch, and from saved cache artefacts.

    python -m benchmarks.cold_start --json benchmarks/cold_start_cpu.json          # bundled model, CPU
    python -m benchmarks.cold_start --sd15 --device cuda --json benchmarks/cold_start_h100.json   # on a GPU

Every measurement is a fresh Python process with its own empty Inductor and Triton cache folders, so nothing is
found on disk by accident. In turn, `--rounds` times:
- eager: load the model, make one image (the reference);
- cold: load, `helpers.speed.apply_fast_path` (torch.compile), make one image (the compile happens here), then save
  `torch.compiler.save_cache_artifacts()` to a file: what a project would ship next to its model;
- from artefacts: a fresh process with empty caches, `torch.compiler.load_cache_artifacts(...)` of that file, then
  the same as cold;
- disk: a fresh process that finds the cache folders the cold run filled (a second launch on the same machine).
Each child reports seconds from its own start (before `import torch`) to the end of loading, and to the first image,
and its first image's pixels, so the three can be checked equal.
"""

from __future__ import annotations

import time

PROCESS_START = time.perf_counter()

import argparse  # noqa: E402
import json  # noqa: E402
import os  # noqa: E402
import statistics  # noqa: E402
import subprocess  # noqa: E402
import sys  # noqa: E402
import tempfile  # noqa: E402
from pathlib import Path  # noqa: E402

ROOT = Path(__file__).resolve().parent.parent
MODES = ("eager", "cold", "artefacts", "disk")


def child(mode: str, sd15: bool, device_name: str, artefacts: Path, pixels_out: Path, threads: int) -> dict:
    """One fresh process's measurement (run with --child)."""
    import numpy as np
    import torch

    from benchmarks.timing import sync
    from helpers.models import load_components
    from helpers.reference import sd15_random_components
    from helpers.sampling import generate
    from helpers.speed import apply_fast_path

    torch.set_num_threads(threads)
    imported = time.perf_counter() - PROCESS_START
    device = torch.device(device_name)
    dtype = torch.float16 if device.type == "cuda" else torch.float32
    loaded_at = time.perf_counter()
    if mode == "artefacts":
        torch.compiler.load_cache_artifacts(artefacts.read_bytes())
    if sd15:
        torch.manual_seed(0)  # random weights: the same in every child, so their pixels can be compared
    components = sd15_random_components(device, dtype) if sd15 else load_components("bundled", device, dtype)
    if mode != "eager":
        # the fastest compiled setting measured on each (benchmarks/RESULTS.md): CUDA graphs on a GPU; on the CPU,
        # channels_last with PyTorch's own convolutions
        cuda = device.type == "cuda"
        components = apply_fast_path(components, compile_mode="reduce-overhead" if cuda else "default", onednn=cuda)
    sync(device)
    loaded = time.perf_counter() - PROCESS_START
    size = 512 if sd15 else None
    kwargs = dict(prompt="a large blue circle on the left on a white background", height=size, width=size)
    kwargs |= dict(num_inference_steps=20, guidance_scale=7.5, seed=0, scheduler="dpm++")
    pixels = generate(components, **kwargs).pixels
    sync(device)
    first_image = time.perf_counter() - PROCESS_START
    second = generate(components, **kwargs)
    if mode == "cold":
        artefacts.write_bytes(torch.compiler.save_cache_artifacts()[0])
    np.save(pixels_out, pixels)
    return {
        "mode": mode,
        "import_s": imported,
        "load_s": loaded - imported,
        "load_includes_artefacts_s": loaded - (loaded_at - PROCESS_START) if mode == "artefacts" else None,
        "first_image_s": first_image,
        "second_image_s": second.seconds,
    }


def run_child(mode: str, args: argparse.Namespace, artefacts: Path, pixels_out: Path, cache: Path) -> dict:
    """A fresh process whose Inductor and Triton caches live in `cache`; its report."""
    env = os.environ | {"TORCHINDUCTOR_CACHE_DIR": f"{cache}/inductor", "TRITON_CACHE_DIR": f"{cache}/triton"}
    cmd = [sys.executable, "-m", "benchmarks.cold_start", "--child", mode, "--artefacts", str(artefacts)]
    cmd += ["--pixels", str(pixels_out), "--device", args.device, "--threads", str(args.threads)]
    cmd += ["--sd15"] if args.sd15 else []
    started = time.perf_counter()
    done = subprocess.run(cmd, env=env, cwd=ROOT, capture_output=True, text=True)
    wall = time.perf_counter() - started
    if done.returncode != 0:
        raise RuntimeError(f"{mode} child failed:\n{done.stderr[-3000:]}")
    report = json.loads(done.stdout.strip().splitlines()[-1])
    return report | {"process_wall_s": wall}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sd15", action="store_true", help="SD v1.5's architecture with random weights, 512x512")
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--json", type=Path, help="write the reports here")
    parser.add_argument("--child", choices=MODES, help=argparse.SUPPRESS)
    parser.add_argument("--artefacts", type=Path, help=argparse.SUPPRESS)
    parser.add_argument("--pixels", type=Path, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        print(json.dumps(child(args.child, args.sd15, args.device, args.artefacts, args.pixels, args.threads)))
        return

    import numpy as np

    reports: list[dict] = []
    with tempfile.TemporaryDirectory() as work:
        artefacts = Path(work) / "compile_cache.bin"
        for r in range(args.rounds):
            pixels = {}
            for mode in MODES:
                out = Path(work) / f"{mode}.npy"
                # empty caches for every mode but disk, which finds what this round's cold run left
                cache = Path(work) / f"cache-{r}-{'cold' if mode == 'disk' else mode}"
                report = run_child(mode, args, artefacts, out, cache) | {"round": r}
                pixels[mode] = np.load(out)
                if mode == "cold":
                    report["artefacts_bytes"] = artefacts.stat().st_size
                reports.append(report)
                print(
                    f"round {r} {mode:9s}: first image {report['first_image_s']:6.1f} s after the process started "
                    f"(import {report['import_s']:.1f}, load {report['load_s']:.1f}), "
                    f"second image {report['second_image_s']:.3f} s",
                    flush=True,
                )
            for mode in MODES[1:]:
                reports[-len(MODES) + MODES.index(mode)]["max_pixel_difference_from_eager"] = float(
                    np.abs(pixels[mode] - pixels["eager"]).max()
                )
    summary = {mode: statistics.median(r["first_image_s"] for r in reports if r["mode"] == mode) for mode in MODES}
    print("median seconds to the first image:", ", ".join(f"{m} {s:.1f}" for m, s in summary.items()))
    if args.json:
        model = "SD v1.5 architecture, random weights, 512x512" if args.sd15 else "bundled model, 64x64"
        meta = {"command": "python -m benchmarks.cold_start " + " ".join(sys.argv[1:]), "model": model}
        args.json.write_text(json.dumps(meta | {"median_first_image_s": summary, "runs": reports}, indent=2) + "\n")


if __name__ == "__main__":
    main()
