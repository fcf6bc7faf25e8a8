"""PNGs that remember how they were made: a `parameters` text chunk in AUTOMATIC1111's format.

    a red circle on the left
    Negative prompt: a blue square
    Steps: 20, Sampler: DPM++ 2M, CFG scale: 7.5, Seed: 42, Size: 64x64, Model: toy-sd

Tools that read that chunk (AUTOMATIC1111's PNG Info, ComfyUI, civitai, ...) show the settings, and
`read_parameters` turns them back into `generate` keywords.

That text is lossy by design (a prompt line that starts with "Negative prompt:" or with spaces cannot be told
apart), so the PNG also carries the exact settings as JSON in a second text chunk, `sd-step-by-step`;
`read_parameters` prefers it, and falls back to the A1111 text for PNGs written by other tools.
"""

from __future__ import annotations

import dataclasses
import json
import os
import re
import tempfile
from pathlib import Path

from PIL import Image
from PIL.PngImagePlugin import PngInfo

from helpers.models import SCHEDULERS
from helpers.settings import GenerationSettings

# "Key: value" pairs of the last line; a value may be a quoted string holding commas (AUTOMATIC1111's regex)
PARAM_RE = re.compile(r'\s*(\w[\w \-/]+):\s*("(?:\\.|[^\\"])+"|[^,]*)(?:,|$)')
EXACT_CHUNK = "sd-step-by-step"  # the exact settings, as JSON


def _number_text(value: float) -> str:
    """The shortest text that reads back as the same float (7.5, 7, 7.123456789)."""
    short = f"{value:g}"
    return short if float(short) == float(value) else repr(float(value))


def _quoted(value: str) -> str:
    """A settings value, quoted as A1111 quotes one that holds a comma or a quote."""
    return json.dumps(value) if any(c in value for c in ',"\n') else value


def _one_image(settings: GenerationSettings) -> GenerationSettings:
    """The settings of one picture: one prompt, one negative, a seed and a size; else a ValueError naming the field."""
    for name, ok in (
        ("prompt", isinstance(settings.prompt, str)),
        ("negative_prompt", settings.negative_prompt is None or isinstance(settings.negative_prompt, str)),
        ("seed", settings.seed is not None),
        ("height", settings.height is not None),
        ("width", settings.width is not None),
        ("num_images_per_prompt", settings.num_images_per_prompt == 1),
    ):
        if not ok:
            raise ValueError(f"a PNG records one picture's settings; {name}={getattr(settings, name)!r} is not one")
    return settings


def format_parameters(settings: GenerationSettings, model: str) -> str:
    """The text of the `parameters` chunk (AUTOMATIC1111's format) for one picture's settings."""
    s = _one_image(settings)
    lines = [s.prompt]
    if s.negative_prompt:
        lines.append(f"Negative prompt: {s.negative_prompt}")
    sampler = SCHEDULERS[s.scheduler].a1111_name
    lines.append(
        f"Steps: {s.num_inference_steps}, Sampler: {sampler}, CFG scale: {_number_text(s.guidance_scale)}, "
        f"Seed: {s.seed}, Size: {s.width}x{s.height}, Model: {_quoted(model)}"
    )
    return "\n".join(lines)


def exact_parameters(settings: GenerationSettings, model: str) -> str:
    """The exact settings as JSON (the `sd-step-by-step` chunk): every value reads back unchanged."""
    s = _one_image(settings)
    # every field of the settings value itself (a field added to GenerationSettings is recorded with no change here)
    exact = {f.name: getattr(s, f.name) for f in dataclasses.fields(s) if f.name != "num_images_per_prompt"}
    exact["model"] = model
    return json.dumps(exact, sort_keys=True, default=lambda value: value.item())  # numpy scalars as Python numbers


def _field(settings: dict, key: str, convert, default=None):
    """One settings field converted, or a ValueError that names it."""
    if key not in settings:
        if default is None:
            raise ValueError(f"parameters text has no {key!r} field in its settings line")
        return default
    raw = settings.pop(key)
    try:
        return convert(raw)
    except ValueError:
        raise ValueError(f"parameters field {key!r} has an unreadable value {raw!r}") from None


def _size(text: str) -> tuple[int, int]:
    width, height = text.split("x")  # a ValueError when there are not exactly two parts
    return int(width), int(height)


def parse_parameters(text: str) -> dict:
    """`generate` keywords (and `model`) from a `parameters` text; unknown keys are kept under `extra`.

    A malformed field is a ValueError that names it.
    """
    lines = text.strip().split("\n")
    settings = {k.strip(): (json.loads(v) if v.startswith('"') else v.strip()) for k, v in PARAM_RE.findall(lines[-1])}
    if "Steps" not in settings:
        raise ValueError(f"parameters text has no settings line (Steps: ..., Sampler: ...): {lines[-1]!r}")
    prompt, negative, in_negative = [], [], False
    for line in lines[:-1]:
        if line.startswith("Negative prompt:"):
            in_negative, line = True, line[len("Negative prompt:") :].strip()
        (negative if in_negative else prompt).append(line)
    sampler = settings.pop("Sampler", "PLMS")
    by_sampler = {entry.a1111_name: name for name, entry in SCHEDULERS.items()}
    if sampler not in by_sampler:
        raise ValueError(f"Sampler must be one of {sorted(by_sampler)}, got {sampler!r}")
    width, height = _field(settings, "Size", _size, (512, 512))
    out = {
        "prompt": "\n".join(prompt),
        "negative_prompt": "\n".join(negative) or None,
        "num_inference_steps": _field(settings, "Steps", int),
        "scheduler": by_sampler[sampler],
        "guidance_scale": _field(settings, "CFG scale", float, GenerationSettings.guidance_scale),
        "seed": _field(settings, "Seed", int),
        "height": height,
        "width": width,
        "model": settings.pop("Model", None),
        "prompt_weighting": True,  # AUTOMATIC1111 reads emphasis and long prompts: so do we, for its PNGs
    }
    out["extra"] = settings
    return out


def save_png(image: Image.Image, path: str | os.PathLike, parameters: str, exact: str | None = None) -> Path:
    """Write a PNG with its `parameters` chunk (and the exact JSON one, when given) atomically: a temporary file in
    the same folder, then a rename."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    info = PngInfo()
    info.add_text("parameters", parameters)
    if exact is not None:
        info.add_itxt(EXACT_CHUNK, exact)
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
    """`generate` keywords (and `model`, `extra`) from a PNG: the exact chunk when present, else the A1111 text.

    `GenerationSettings.from_keywords(read_parameters(path))` is the settings value.
    """
    with Image.open(path) as image:
        chunks = dict(image.text)  # type: ignore[attr-defined]
    if EXACT_CHUNK in chunks:
        exact = json.loads(chunks[EXACT_CHUNK]) | {"extra": {}}
        exact.setdefault("prompt_weighting", True)  # PNGs written before the setting existed
        return exact
    if "parameters" not in chunks:
        raise ValueError(f"{str(path)!r} has no 'parameters' text chunk")
    return parse_parameters(chunks["parameters"])
