"""Images that carry their parameters; batch runs on one or two processes, nothing lost or done twice."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
from PIL import Image
from PIL.PngImagePlugin import PngInfo

from helpers.batch import work_items
from helpers.models import Components
from helpers.pnginfo import format_parameters, parse_parameters, read_parameters, save_png
from helpers.sampling import generate

ROOT = Path(__file__).resolve().parent.parent


def test_format_matches_automatic1111():
    text = format_parameters("a red circle", "a blue square", 20, "dpm++", 7.5, 42, 64, 48, "toy-sd")
    assert text == (
        "a red circle\nNegative prompt: a blue square\n"
        "Steps: 20, Sampler: DPM++ 2M, CFG scale: 7.5, Seed: 42, Size: 48x64, Model: toy-sd"
    )


def test_round_trip_regenerates_the_identical_image(tiny: Components, tmp_path):
    kwargs = dict(prompt="a red circle", negative_prompt="green", num_inference_steps=3, guidance_scale=5.0, seed=9)
    kwargs.update(height=64, width=48, scheduler="euler_a")
    first = generate(tiny, **kwargs)
    text = format_parameters(kwargs["prompt"], "green", 3, "euler_a", 5.0, 9, 64, 48, "tiny")
    path = save_png(first.images[0], tmp_path / "a.png", text)
    parsed = read_parameters(path)
    assert parsed.pop("model") == "tiny" and parsed.pop("extra") == {}
    assert parsed == kwargs
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
    assert 1 <= len(partial) <= 6
    before = {name: (tmp_path / name).stat().st_mtime_ns for name in partial}
    run(batch_command(tiny_model_dir, prompts_file, tmp_path, 1))
    assert {p.name for p in tmp_path.iterdir()} == set(pngs(single_run))  # no temporary files left behind
    assert pngs(tmp_path) == pngs(single_run)
    assert all((tmp_path / name).stat().st_mtime_ns == t for name, t in before.items())  # not redone
