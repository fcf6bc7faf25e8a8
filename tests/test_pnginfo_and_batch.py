"""Images that carry their parameters; batch runs on one or two processes, nothing lost or done twice."""

from __future__ import annotations

import dataclasses
import os
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
from PIL import Image
from PIL.PngImagePlugin import PngInfo

from helpers import batch
from helpers.batch import work_items
from helpers.models import Components
from helpers.pnginfo import exact_parameters, format_parameters, parse_parameters, read_parameters, save_png
from helpers.sampling import generate
from helpers.settings import GenerationSettings

ROOT = Path(__file__).resolve().parent.parent


def test_format_matches_automatic1111():
    settings = GenerationSettings("a red circle", "a blue square", 64, 48, 20, 7.5, seed=42, scheduler="dpm++")
    text = format_parameters(settings, "toy-sd")
    assert text == (
        "a red circle\nNegative prompt: a blue square\n"
        "Steps: 20, Sampler: DPM++ 2M, CFG scale: 7.5, Seed: 42, Size: 48x64, Model: toy-sd"
    )


def test_round_trip_regenerates_the_identical_image(tiny: Components, tmp_path):
    kwargs = dict(prompt="a red circle", negative_prompt="green", num_inference_steps=3, guidance_scale=5.0, seed=9)
    kwargs.update(height=64, width=48, scheduler="euler_a")
    first = generate(tiny, **kwargs)
    text = format_parameters(GenerationSettings(**kwargs), "tiny")
    path = save_png(first.images[0], tmp_path / "a.png", text)
    parsed = read_parameters(path)
    assert parsed.pop("model") == "tiny" and parsed.pop("extra") == {}
    assert parsed == kwargs | {"prompt_weighting": True}
    assert GenerationSettings.from_keywords(parsed) == GenerationSettings(**kwargs)
    again = generate(tiny, **parsed)
    assert np.array_equal(np.asarray(Image.open(path)), np.asarray(again.images[0]))


def test_parses_a_png_written_by_another_tool(tmp_path):
    """A fixture made by hand from the format's description: multi-line prompt, quoted value, extra keys."""
    text = (
        "masterpiece, a lighthouse\nat dusk\nNegative prompt: blurry, lowres\n"
        "Steps: 30, Sampler: Euler a, CFG scale: 6, Seed: 1234, Size: 768x512, Model hash: abc123, "
        'Model: v1-5-pruned, Lora hashes: "a: 1, b: 2", Version: v1.10.0'
    )
    info = PngInfo()
    info.add_text("parameters", text)
    Image.new("RGB", (8, 8)).save(tmp_path / "other.png", pnginfo=info)
    parsed = read_parameters(tmp_path / "other.png")
    assert parsed["prompt"] == "masterpiece, a lighthouse\nat dusk"
    assert parsed["negative_prompt"] == "blurry, lowres"
    assert (parsed["num_inference_steps"], parsed["scheduler"], parsed["guidance_scale"]) == (30, "euler_a", 6.0)
    assert (parsed["seed"], parsed["width"], parsed["height"], parsed["model"]) == (1234, 768, 512, "v1-5-pruned")
    assert parsed["extra"] == {"Model hash": "abc123", "Lora hashes": "a: 1, b: 2", "Version": "v1.10.0"}


def test_unknown_sampler_and_missing_chunk_are_named(tmp_path):
    with pytest.raises(ValueError, match="Sampler must be one of"):
        parse_parameters("x\nSteps: 2, Sampler: DPM++ SDE Karras, Seed: 1")
    Image.new("RGB", (8, 8)).save(tmp_path / "plain.png")
    with pytest.raises(ValueError, match="no 'parameters' text chunk"):
        read_parameters(tmp_path / "plain.png")


def batch_command(model: Path, prompts: Path, out: Path, processes: int) -> list[str]:
    args = ["--model", str(model), "--prompts", str(prompts), "--out", str(out), "--seeds", "0", "1", "--steps", "2"]
    args += ["--threads", "1"]
    if processes == 1:
        return [sys.executable, "-m", "helpers.batch", *args]
    launch = [sys.executable, "-m", "accelerate.commands.launch", "--cpu", "--num_processes", str(processes)]
    launch += ["--num_machines", "1", "--mixed_precision", "no", "--dynamo_backend", "no"]
    return [*launch, "-m", "helpers.batch", *args]


def run(cmd: list[str]) -> None:
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    done = subprocess.run(cmd, cwd=ROOT, env=env, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-3000:]


def pngs(folder: Path) -> dict[str, bytes]:
    return {p.name: p.read_bytes() for p in sorted(folder.iterdir())}


@pytest.fixture(scope="module")
def prompts_file(tmp_path_factory) -> Path:
    path = tmp_path_factory.mktemp("prompts") / "prompts.txt"
    path.write_text("# colours\na red circle\n\na blue square\na green triangle\n")
    return path


@pytest.fixture(scope="module")
def single_run(tiny_model_dir, prompts_file, tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("single")
    run(batch_command(tiny_model_dir, prompts_file, out, 1))
    return out


def test_single_process_writes_every_prompt_and_seed(single_run, prompts_file):
    expected = {name for name, _, _ in work_items(["a red circle", "a blue square", "a green triangle"], [0, 1])}
    assert set(pngs(single_run)) == expected
    assert read_parameters(single_run / "00001-seed1.png")["prompt"] == "a blue square"


def test_two_processes_write_each_image_once_byte_identical(tiny_model_dir, prompts_file, single_run, tmp_path):
    run(batch_command(tiny_model_dir, prompts_file, tmp_path, 2))
    assert pngs(tmp_path) == pngs(single_run)


def test_killed_run_resumes_to_the_same_files(tiny_model_dir, prompts_file, single_run, tmp_path):
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    proc = subprocess.Popen(batch_command(tiny_model_dir, prompts_file, tmp_path, 1), cwd=ROOT, env=env)
    deadline = time.time() + 120
    while not any(p.suffix == ".png" for p in tmp_path.iterdir()) and time.time() < deadline:
        time.sleep(0.02)
    proc.kill()
    proc.wait()
    partial = {p.name for p in tmp_path.glob("*.png")}
    assert 1 <= len(partial) < 6  # killed with work left to resume
    before = {name: (tmp_path / name).stat().st_mtime_ns for name in partial}
    run(batch_command(tiny_model_dir, prompts_file, tmp_path, 1))
    assert {p.name for p in tmp_path.iterdir()} == set(pngs(single_run))  # no temporary files left behind
    assert pngs(tmp_path) == pngs(single_run)
    assert all((tmp_path / name).stat().st_mtime_ns == t for name, t in before.items())  # not redone


AWKWARD = dict(
    prompt="  a red circle\nNegative prompt: not really a negative",
    negative_prompt=" green, blue",
    num_inference_steps=3,
    guidance_scale=7.123456789,
    seed=2**63 + 5,
    height=64,
    width=48,
    scheduler="ddim",
)


def test_exact_chunk_round_trips_what_the_a1111_text_cannot(tiny: Components, tmp_path):
    """Leading spaces, a prompt line that looks like the negative prompt, a long float, a comma in the model name."""
    first = generate(tiny, **AWKWARD)
    settings = GenerationSettings(**AWKWARD)
    text, exact = format_parameters(settings, "my, model"), exact_parameters(settings, "my, model")
    path = save_png(first.images[0], tmp_path / "a.png", text, exact)
    parsed = read_parameters(path)
    assert parsed.pop("model") == "my, model" and parsed.pop("extra") == {}
    assert parsed == AWKWARD | {"prompt_weighting": True}
    assert np.array_equal(np.asarray(Image.open(path)), np.asarray(generate(tiny, **parsed).images[0]))


def test_a1111_text_keeps_floats_and_quoted_model_names():
    settings = GenerationSettings("a red circle", None, 64, 64, 20, 7.123456789, seed=1, scheduler="dpm++")
    text = format_parameters(settings, 'my, "model"')
    assert "CFG scale: 7.123456789" in text and 'Model: "my, \\"model\\""' in text
    parsed = parse_parameters(text)
    assert parsed["guidance_scale"] == 7.123456789 and parsed["model"] == 'my, "model"'
    assert "CFG scale: 7.5," in format_parameters(dataclasses.replace(settings, guidance_scale=7.5), "m")


@pytest.mark.parametrize(
    "settings, field",
    [
        ("Steps: 20, Sampler: Euler, Size: 64x64", "Seed"),
        ("Steps: 20, Sampler: Euler, Seed: 1, Size: abc", "Size"),
        ("Steps: twenty, Sampler: Euler, Seed: 1", "Steps"),
        ("Steps: 20, Sampler: Euler, Seed: 1, Size: 64x64x3", "Size"),
        ("Steps: 20, Sampler: Euler, Seed: one", "Seed"),
        ("Steps: 20, Sampler: Euler, Seed: 1, CFG scale: high", "CFG scale"),
    ],
)
def test_malformed_settings_are_a_value_error_naming_the_field(settings: str, field: str):
    with pytest.raises(ValueError, match=f"'{field}'"):
        parse_parameters(f"a red circle\n{settings}")


def run_batch(model: Path, prompts: Path, out: Path, *extra: str) -> str:
    """helpers.batch in this process (one process), returning its last line."""
    import contextlib
    import io

    buffer = io.StringIO()
    argv = ["--model", str(model), "--prompts", str(prompts), "--out", str(out), "--steps", "2", *extra]
    with contextlib.redirect_stdout(buffer):
        batch.main(argv)
    return buffer.getvalue().strip().splitlines()[-1]


def test_resume_checks_content_not_names(tiny_model_dir, tmp_path):
    prompts = tmp_path / "prompts.txt"
    prompts.write_text("a red circle\na blue square\n")
    out = tmp_path / "out"
    assert run_batch(tiny_model_dir, prompts, out, "--seeds", "0").startswith("2 of 2 images")
    first = pngs(out)
    prompts.write_text("a red circle\na green triangle\n")  # the second prompt changed
    assert run_batch(tiny_model_dir, prompts, out, "--seeds", "0").startswith("2 of 2 images")
    assert read_parameters(out / "00001-seed0.png")["prompt"] == "a green triangle"
    assert pngs(out)["00000-seed0.png"] == first["00000-seed0.png"]  # unchanged, so kept
    run_batch(tiny_model_dir, prompts, out, "--seeds", "0", "--scheduler", "euler")  # another scheduler: all redone
    assert {read_parameters(out / name)["scheduler"] for name in pngs(out)} == {"euler"}
    (out / "00000-seed0.png").write_bytes(b"")  # an empty file and a truncated one do not count as done
    (out / "00001-seed0.png").write_bytes(first["00001-seed0.png"][:100])
    assert run_batch(tiny_model_dir, prompts, out, "--seeds", "0").startswith("2 of 2 images")
    assert all(read_parameters(out / name)["scheduler"] == "dpm++" for name in pngs(out))


def test_prompts_file_with_a_byte_order_mark(tmp_path):
    path = tmp_path / "bom.txt"
    path.write_bytes("\ufeff# a comment\na red circle\n".encode())
    assert batch.read_prompts(path) == ["a red circle"]
    path.write_bytes(b"a red circle\n\xff\xfe broken\n")
    with pytest.raises(ValueError, match="bom.txt.*not valid UTF-8"):
        batch.read_prompts(path)


@pytest.mark.parametrize(
    "extra, words",
    [
        (["--seeds", "0", "0"], ["--seeds", "0 appear(s) more than once"]),
        (["--seeds", "-1"], ["--seeds", "seed must be a non-negative int"]),
        (["--seeds", str(2**64)], ["--seeds", "2**64 - 1"]),
    ],
)
def test_bad_seeds_are_refused_before_the_model_loads(tmp_path, extra: list[str], words: list[str]):
    prompts = tmp_path / "p.txt"
    prompts.write_text("a red circle\n")
    with pytest.raises(ValueError) as caught:  # the model folder does not exist: reaching it would say so instead
        run_batch(tmp_path / "no-such-model", prompts, tmp_path / "out", *extra)
    for word in words:
        assert word in str(caught.value)


def test_output_folder_is_checked_before_the_model_loads(tmp_path):
    prompts = tmp_path / "p.txt"
    prompts.write_text("a red circle\n")
    (tmp_path / "file").write_text("not a folder")
    with pytest.raises(ValueError, match="--out .* is not a folder"):
        run_batch(tmp_path / "no-such-model", prompts, tmp_path / "file")


def test_a_png_written_by_automatic1111_with_emphasis_regenerates(tiny: Components, tmp_path):
    """A1111's own PNG text keeps the emphasis syntax; read back, it is drawn with the weights applied."""
    text = "a (red:1.3) circle, [[blue]] background\nSteps: 3, Sampler: Euler, CFG scale: 7, Seed: 5, Size: 64x64"
    info = PngInfo()
    info.add_text("parameters", text)
    Image.new("RGB", (8, 8)).save(tmp_path / "a1111.png", pnginfo=info)
    parsed = read_parameters(tmp_path / "a1111.png")
    parsed.pop("model"), parsed.pop("extra")
    assert parsed["prompt"] == "a (red:1.3) circle, [[blue]] background" and parsed["prompt_weighting"] is True
    weighted = generate(tiny, **parsed).pixels
    literal = generate(tiny, **(parsed | {"prompt_weighting": False})).pixels
    assert np.isfinite(weighted).all() and np.abs(weighted - literal).max() > 0


def test_a_zero_size_is_refused_not_replaced_by_the_default(tiny_model_dir, tmp_path):
    prompts = tmp_path / "p.txt"
    prompts.write_text("a red circle\n")
    with pytest.raises(ValueError, match="height must be an int between 1 and 4096, got 0"):
        run_batch(tiny_model_dir, prompts, tmp_path / "out", "--height", "0")
