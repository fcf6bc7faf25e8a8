"""Generate every prompt x seed of a file, one PNG each, on one process or many (Hugging Face accelerate).

    python -m helpers.batch --prompts prompts.txt --seeds 0 1 2 --out outputs/batch
    accelerate launch --cpu --num_processes 2 -m helpers.batch --prompts prompts.txt --out outputs/batch

The work is split between processes the way diffusers documents distributed inference
(`PartialState().split_between_processes`). Nothing is lost or done twice: each image is written
atomically (a temporary file, then a rename), and a rerun skips an image only when the file on disk is a
valid PNG whose recorded settings (the exact `sd-step-by-step` chunk) equal this run's: a run killed halfway
resumes to the same set of files, and after a change of prompt, seeds, steps or scheduler the stale files are
made again. Each PNG carries its generation parameters.
"""

from __future__ import annotations

import argparse
import dataclasses
import os
from pathlib import Path

import torch
from PIL import Image

from helpers.models import SCHEDULERS, load_components, model_name, pick_device
from helpers.pnginfo import EXACT_CHUNK, exact_parameters, format_parameters, save_png
from helpers.sampling import generate
from helpers.seeding import check_seed
from helpers.settings import GenerationSettings


def read_prompts(path: Path) -> list[str]:
    """One prompt per line (UTF-8, a byte-order mark allowed); blank lines and lines starting with # are skipped."""
    try:
        text = Path(path).read_text(encoding="utf-8-sig")
    except UnicodeDecodeError as err:
        raise ValueError(f"prompts file {str(path)!r} is not valid UTF-8 (byte {err.start}: {err.reason})") from None
    lines = [line.strip() for line in text.splitlines()]
    prompts = [line for line in lines if line and not line.startswith("#")]
    if not prompts:
        raise ValueError(f"prompts file {str(path)!r} holds no prompts")
    return prompts


def check_seeds(seeds: list[int]) -> list[int]:
    """Each seed valid and none twice (two equal seeds would name the same file)."""
    for seed in seeds:
        try:
            check_seed(seed)
        except (TypeError, ValueError) as err:
            raise ValueError(f"--seeds: {err}") from None
    repeated = sorted({s for s in seeds if seeds.count(s) > 1})
    if repeated:
        raise ValueError(f"--seeds: each seed once, but {', '.join(map(str, repeated))} appear(s) more than once")
    return seeds


def check_out_folder(out: Path) -> Path:
    """The output folder, created if needed and writable, before any model loads."""
    if out.exists() and not out.is_dir():
        raise ValueError(f"--out {str(out)!r} exists and is not a folder")
    try:
        out.mkdir(parents=True, exist_ok=True)
        probe = out / f".write-test-{os.getpid()}"
        probe.touch()
        probe.unlink()
    except OSError as err:
        raise ValueError(f"--out {str(out)!r} cannot be written: {err.strerror}") from None
    return out


def recorded_settings(path: Path) -> str | None:
    """The exact settings a finished PNG records, or None if the file is missing, truncated or not such a PNG."""
    try:
        with Image.open(path) as image:
            image.load()  # reads every chunk: a truncated file fails here
            return image.text.get(EXACT_CHUNK)  # type: ignore[attr-defined]
    except (OSError, SyntaxError, ValueError):
        return None


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
    parser.add_argument(
        "--no-prompt-weighting",
        dest="prompt_weighting",
        action="store_false",
        help="read prompts as diffusers does (cut at 77 tokens, brackets as text), not as AUTOMATIC1111 does",
    )
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> None:
    from accelerate import PartialState
    from tqdm.auto import tqdm

    args = parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    items = work_items(read_prompts(args.prompts), check_seeds(args.seeds))  # all checks before the model loads
    check_out_folder(args.out)
    state = PartialState()
    device = state.device if state.device.type != "cpu" else pick_device()
    components = load_components(args.model, device=device)
    name = model_name(components)
    # One settings value for the run (height or width 0 stays 0, and is refused), checked before any image
    base = GenerationSettings(
        prompt="", negative_prompt=args.negative_prompt, height=args.height, width=args.width,
        num_inference_steps=args.steps, guidance_scale=args.guidance, seed=0, scheduler=args.scheduler,
        prompt_weighting=args.prompt_weighting,
    ).sized(components.unet.config.sample_size, components.vae_scale_factor)  # fmt: skip
    base.check(components.vae_scale_factor, components.scheduler_config["num_train_timesteps"])

    def settings_of(seed: int, prompt: str) -> GenerationSettings:
        return dataclasses.replace(base, prompt=prompt, seed=seed)

    def recorded_is(path: Path, settings: GenerationSettings) -> bool:
        return recorded_settings(path) == exact_parameters(settings, name)

    if state.is_main_process:  # temporary files left by a killed run
        for stale in args.out.glob(".*.png.*.tmp"):
            stale.unlink()
    state.wait_for_everyone()
    with state.split_between_processes(items) as mine:
        todo = [item for item in mine if not recorded_is(args.out / item[0], settings_of(item[1], item[2]))]
        bar = tqdm(todo, desc=f"process {state.process_index}", position=state.process_index)
        for filename, seed, prompt in bar:
            settings = settings_of(seed, prompt)
            out = generate(components, **settings.keywords())
            text, exact = format_parameters(settings, name), exact_parameters(settings, name)
            save_png(out.images[0], args.out / filename, text, exact)
    state.wait_for_everyone()
    if state.is_main_process:  # count only files that hold what this run asked for
        done = sum(recorded_is(args.out / f, settings_of(seed, prompt)) for f, seed, prompt in items)
        print(f"{done} of {len(items)} images in {args.out} hold this run's settings")


if __name__ == "__main__":
    main()
