"""Generate every prompt x seed of a file, one PNG each, on one process or many (Hugging Face accelerate).

    python -m helpers.batch --prompts prompts.txt --seeds 0 1 2 --out outputs/batch
    accelerate launch --cpu --num_processes 2 -m helpers.batch --prompts prompts.txt --out outputs/batch

The work is split between processes the way diffusers documents distributed inference
(`PartialState().split_between_processes`). Nothing is lost or done twice: each image is written
atomically (a temporary file, then a rename), and a rerun skips the images already on disk, so a run
that was killed halfway resumes to the same set of files. Each PNG carries its generation parameters.
"""

from __future__ import annotations

import argparse
from pathlib import Path

import torch

from helpers.models import SCHEDULERS, load_components, model_name, pick_device
from helpers.pnginfo import format_parameters, save_png
from helpers.sampling import generate


def read_prompts(path: Path) -> list[str]:
    """One prompt per line; blank lines and lines starting with # are skipped."""
    lines = [line.strip() for line in Path(path).read_text(encoding="utf-8").splitlines()]
    prompts = [line for line in lines if line and not line.startswith("#")]
    if not prompts:
        raise ValueError(f"prompts file {str(path)!r} holds no prompts")
    return prompts


def work_items(prompts: list[str], seeds: list[int]) -> list[tuple[str, int, str]]:
    """(file name, seed, prompt) for every prompt x seed, in a fixed order."""
    return [(f"{i:05d}-seed{seed}.png", seed, prompt) for i, prompt in enumerate(prompts) for seed in seeds]


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m helpers.batch", description=__doc__.splitlines()[0])
    parser.add_argument("--prompts", type=Path, required=True, help="text file, one prompt per line")
    parser.add_argument("--out", type=Path, required=True, help="folder for the PNGs")
    parser.add_argument("--seeds", type=int, nargs="+", default=[0], help="seeds per prompt (default: 0)")
    parser.add_argument("--model", default="auto", help="auto, bundled, a hub id or a local folder")
    parser.add_argument("--negative-prompt", default=None)
    parser.add_argument("--steps", type=int, default=20)
    parser.add_argument("--guidance", type=float, default=7.5)
    parser.add_argument("--scheduler", default="dpm++", choices=sorted(SCHEDULERS))
    parser.add_argument("--height", type=int, default=None)
    parser.add_argument("--width", type=int, default=None)
    parser.add_argument("--threads", type=int, default=None, help="torch threads per process (CPU)")
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> None:
    from accelerate import PartialState
    from tqdm.auto import tqdm

    args = parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    items = work_items(read_prompts(args.prompts), args.seeds)
    state = PartialState()
    device = state.device if state.device.type != "cpu" else pick_device()
    components = load_components(args.model, device=device)
    name = model_name(components)
    if state.is_main_process:  # temporary files left by a killed run
        for stale in args.out.glob(".*.png.*.tmp"):
            stale.unlink()
    state.wait_for_everyone()
    with state.split_between_processes(items) as mine:
        todo = [item for item in mine if not (args.out / item[0]).exists()]
        bar = tqdm(todo, desc=f"process {state.process_index}", position=state.process_index)
        for filename, seed, prompt in bar:
            out = generate(
                components,
                prompt,
                negative_prompt=args.negative_prompt,
                height=args.height,
                width=args.width,
                num_inference_steps=args.steps,
                guidance_scale=args.guidance,
                seed=seed,
                scheduler=args.scheduler,
            )
            height, width = out.pixels.shape[1:3]
            text = format_parameters(
                prompt, args.negative_prompt, args.steps, args.scheduler, args.guidance, seed, height, width, name
            )
            save_png(out.images[0], args.out / filename, text)
    state.wait_for_everyone()
    if state.is_main_process:
        done = sum((args.out / item[0]).exists() for item in items)
        print(f"{done} of {len(items)} images in {args.out}")


if __name__ == "__main__":
    main()
