"""Session 24 (toy/EXPERIMENTS.md, section Y): which positions a model draws where they are named. One row per model,
ten pictures: "a large red circle" and "a large blue square" at each of the five positions (left, right, top, bottom,
centre), on a white background; DPM-Solver++, 20 steps, guidance 7.5, seed 0. A look, not a measurement (toy.screen
measures the position of 164 prompts). Writes positions_Y_<model names>.png beside this file.

    python -m toy.logs.positions_probe_Y /work/r/Mid3 /work/r/Y3 /work/r/X3
    python -m toy.logs.positions_probe_Y /work/r/Mid1 /work/r/Mid2 /work/r/Mid3_4
"""

import sys
from pathlib import Path

import torch
from diffusers import DPMSolverMultistepScheduler, StableDiffusionPipeline
from PIL import Image

from toy import world

CELL = 96
PAIRS = (("red", "circle"), ("blue", "square"))


def row(model: str) -> list[Image.Image]:
    pipe = StableDiffusionPipeline.from_pretrained(model, torch_dtype=torch.float32, safety_checker=None)
    pipe.scheduler = DPMSolverMultistepScheduler.from_config(pipe.scheduler.config)
    pipe.set_progress_bar_config(disable=True)
    pictures = []
    for position in world.POSITIONS:
        for colour, shape in PAIRS:
            prompt = f"a large {colour} {shape} {position} on a white background"
            generator = torch.Generator().manual_seed(0)
            size = world.IMAGE_SIZE
            out = pipe(prompt, num_inference_steps=20, guidance_scale=7.5, generator=generator, height=size, width=size)
            pictures.append(out.images[0].resize((CELL, CELL), Image.NEAREST))
    return pictures


def main() -> None:
    torch.set_num_threads(2)
    models = sys.argv[1:]
    rows = [row(model) for model in models]
    sheet = Image.new("RGB", (CELL * len(rows[0]), CELL * len(rows)), "black")
    for r, pictures in enumerate(rows):
        for c, picture in enumerate(pictures):
            sheet.paste(picture, (c * CELL, r * CELL))
    names = "_".join(Path(model).name for model in models)
    sheet.save(Path(__file__).with_name(f"positions_Y_{names}.png"))


if __name__ == "__main__":
    main()
