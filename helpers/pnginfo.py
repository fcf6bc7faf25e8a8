"""PNGs that remember how they were made: a `parameters` text chunk in AUTOMATIC1111's format.

    a red circle on the left
    Negative prompt: a blue square
    Steps: 20, Sampler: DPM++ 2M, CFG scale: 7.5, Seed: 42, Size: 64x64, Model: toy-sd

Tools that read that chunk (AUTOMATIC1111's PNG Info, ComfyUI, civitai, ...) show the settings, and
`read_parameters` turns them back into `generate` keywords.
"""

from __future__ import annotations

import os
import re
import tempfile
from pathlib import Path

from PIL import Image
from PIL.PngImagePlugin import PngInfo

from helpers.models import SCHEDULERS

SAMPLER_TO_NAME = {display: name for name, (_, display) in SCHEDULERS.items()}
# "Key: value" pairs of the last line; a value may be a quoted string holding commas (AUTOMATIC1111's regex)
PARAM_RE = re.compile(r'\s*(\w[\w \-/]+):\s*("(?:\\.|[^\\"])+"|[^,]*)(?:,|$)')


def format_parameters(
    prompt: str,
    negative_prompt: str | None,
    num_inference_steps: int,
    scheduler: str,
    guidance_scale: float,
    seed: int,
    height: int,
    width: int,
    model: str,
) -> str:
    """The text of the `parameters` chunk."""
    lines = [prompt]
    if negative_prompt:
        lines.append(f"Negative prompt: {negative_prompt}")
    sampler = SCHEDULERS[scheduler][1]
    lines.append(
        f"Steps: {num_inference_steps}, Sampler: {sampler}, CFG scale: {guidance_scale:g}, Seed: {seed}, "
        f"Size: {width}x{height}, Model: {model}"
    )
    return "\n".join(lines)


def parse_parameters(text: str) -> dict:
    """`generate` keywords (and `model`) from a `parameters` text; unknown keys are kept under `extra`."""
    lines = text.strip().split("\n")
    settings = dict((k.strip(), v.strip().strip('"')) for k, v in PARAM_RE.findall(lines[-1]))
    if "Steps" not in settings:
        raise ValueError(f"parameters text has no settings line (Steps: ..., Sampler: ...): {lines[-1]!r}")
    prompt, negative, in_negative = [], [], False
    for line in lines[:-1]:
        if line.startswith("Negative prompt:"):
            in_negative, line = True, line[len("Negative prompt:") :].strip()
        (negative if in_negative else prompt).append(line)
    sampler = settings.pop("Sampler", "PLMS")
    if sampler not in SAMPLER_TO_NAME:
        raise ValueError(f"Sampler must be one of {sorted(SAMPLER_TO_NAME)}, got {sampler!r}")
    width, height = (int(v) for v in settings.pop("Size", "512x512").split("x"))
    out = {
        "prompt": "\n".join(prompt),
        "negative_prompt": "\n".join(negative) or None,
        "num_inference_steps": int(settings.pop("Steps")),
        "scheduler": SAMPLER_TO_NAME[sampler],
        "guidance_scale": float(settings.pop("CFG scale", 7.0)),
        "seed": int(settings.pop("Seed")),
        "height": height,
        "width": width,
        "model": settings.pop("Model", None),
    }
    out["extra"] = settings
    return out


def save_png(image: Image.Image, path: str | os.PathLike, parameters: str) -> Path:
    """Write a PNG with its `parameters` chunk atomically: a temporary file in the same folder, then a rename."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    info = PngInfo()
    info.add_text("parameters", parameters)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as f:
            image.save(f, format="PNG", pnginfo=info)
        umask = os.umask(0)
        os.umask(umask)
        os.chmod(tmp, 0o666 & ~umask)  # mkstemp makes it private; give it an ordinary file's permissions
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return path


def read_parameters(path: str | os.PathLike) -> dict:
    """The parsed `parameters` chunk of a PNG."""
    with Image.open(path) as image:
        text = image.text.get("parameters")  # type: ignore[attr-defined]
    if text is None:
        raise ValueError(f"{str(path)!r} has no 'parameters' text chunk")
    return parse_parameters(text)
