"""toy.soup: the average of runs from one starting point is a loadable model, and bad input loses nothing."""

from __future__ import annotations

import dataclasses
import json
import shutil

import pytest
import torch
from safetensors.torch import load_file, save_file

from helpers.models import load_components
from toy import evaluate, soup, train

UNET = "unet/diffusion_pytorch_model.safetensors"
TEXT = "text_encoder/model.safetensors"


def fake_run(tiny_model_dir, folder, shift: float):
    """A copy of the tiny model with `shift` added to every U-Net weight, and a one-stage training log."""
    shutil.copytree(tiny_model_dir, folder)
    state = load_file(folder / UNET)
    save_file({k: (v.float() + shift).to(v.dtype) for k, v in state.items()}, folder / UNET, metadata={"format": "pt"})
    stage = {"command": f"shift {shift}", "config": dataclasses.asdict(train.SMOKE), "minutes": 0.0}
    (folder / "training_log.json").write_text(json.dumps({"summary": {}, "stages": [stage], "log": []}))
    return folder


def test_soup_is_the_mean_of_the_runs_and_loads(tiny_model_dir, tmp_path):
    runs = [fake_run(tiny_model_dir, tmp_path / f"run{k}", shift) for k, shift in enumerate((0.0, 0.5, 1.0))]
    soup.make_soup(runs, tmp_path / "soup")
    base, mixed = load_file(runs[0] / UNET), load_file(tmp_path / "soup" / UNET)
    for name, tensor in base.items():  # the mean shift is 0.5, up to float16 rounding
        torch.testing.assert_close(mixed[name].float(), tensor.float() + 0.5, atol=2e-3, rtol=2e-3)
        assert mixed[name].dtype == tensor.dtype
    assert load_file(tmp_path / "soup" / TEXT).keys() == load_file(runs[0] / TEXT).keys()
    log = json.loads((tmp_path / "soup" / "training_log.json").read_text())
    assert [s["command"] for s in log["soup"]["last_stages"]] == ["shift 0.0", "shift 0.5", "shift 1.0"]
    assert train.stage_config(tmp_path / "soup") == train.stage_config(runs[0])
    components = load_components(tmp_path / "soup", device="cpu", dtype=torch.float32)
    assert components.unet.config.in_channels == 4


def test_soup_of_identical_runs_is_the_run(tiny_model_dir, tmp_path):
    runs = [fake_run(tiny_model_dir, tmp_path / f"run{k}", 0.25) for k in range(2)]
    soup.make_soup(runs, tmp_path / "soup")
    for name in (UNET, TEXT):
        same, original = load_file(tmp_path / "soup" / name), load_file(runs[0] / name)
        assert all(torch.equal(same[k], original[k]) for k in original), name


def test_bad_input_names_the_parameter_and_overwrites_nothing(tiny_model_dir, tmp_path):
    runs = [fake_run(tiny_model_dir, tmp_path / f"run{k}", 0.1 * k) for k in range(2)]
    with pytest.raises(ValueError, match="runs: a soup needs at least two"):
        soup.make_soup(runs[:1], tmp_path / "one")
    existing = tmp_path / "existing"
    existing.mkdir()
    (existing / "keep.txt").write_text("mine")
    with pytest.raises(ValueError, match="out: .* exists already"):
        soup.make_soup(runs, existing)
    assert [p.name for p in existing.iterdir()] == ["keep.txt"] and (existing / "keep.txt").read_text() == "mine"
    vae = runs[1] / "vae/diffusion_pytorch_model.safetensors"
    state = load_file(vae)
    save_file({k: v + 1 for k, v in state.items()}, vae, metadata={"format": "pt"})
    with pytest.raises(ValueError, match="runs: .*differs .*one start"):
        soup.make_soup(runs, tmp_path / "other-vae")
    assert not (tmp_path / "other-vae").exists()
    (runs[1] / TEXT).unlink()
    with pytest.raises(ValueError, match="runs: .* has no text_encoder/model.safetensors"):
        soup.make_soup(runs, tmp_path / "missing")


def test_average_state_dicts_refuses_other_shapes():
    with pytest.raises(ValueError, match=r"states\[1\]\['w'\] has shape \(3,\)"):
        soup.average_state_dicts([{"w": torch.zeros(2)}, {"w": torch.zeros(3)}])
    with pytest.raises(ValueError, match=r"states\[1\] has other weights"):
        soup.average_state_dicts([{"w": torch.zeros(2)}, {"v": torch.zeros(2)}])


def test_soup_refuses_runs_whose_earlier_stages_differ(tiny_model_dir, tmp_path):
    runs = [fake_run(tiny_model_dir, tmp_path / f"run{k}", 0.1 * k) for k in range(2)]
    log = json.loads((runs[1] / "training_log.json").read_text())
    log["stages"].insert(0, {"command": "another start", "config": {}, "minutes": 1.0})
    (runs[1] / "training_log.json").write_text(json.dumps(log))
    with pytest.raises(ValueError, match="runs: .*stages before its last differ"):
        soup.make_soup(runs, tmp_path / "soup")
    assert not (tmp_path / "soup").exists()


def test_evaluate_names_every_stage_of_a_soup_and_counts_its_minutes(tiny_model_dir, tmp_path):
    """toy.evaluate's training paragraph: a plain run's stages; a soup's earlier stages and each of its last stages."""
    first = {"command": "python -m toy.train", "config": {}, "minutes": 40.0}
    runs = []
    for k, shift in enumerate((0.0, 0.5, 1.0)):
        run = fake_run(tiny_model_dir, tmp_path / f"run{k}", shift)
        log = json.loads((run / "training_log.json").read_text())
        log["stages"] = [first, {"command": f"last {k}", "config": {}, "minutes": 5.0 + k}]
        log["summary"] = {"minutes": 45.0 + k}
        (run / "training_log.json").write_text(json.dumps(log))
        runs.append(run)
    plain = evaluate.training_lines(json.loads((runs[0] / "training_log.json").read_text()))
    assert plain == ["Training: 45.0 minutes on 2 CPU cores in 2 stage(s):", "`python -m toy.train` (40.0 min)",
                     "`last 0` (5.0 min)"]  # fmt: skip
    soup.make_soup(runs, tmp_path / "soup")
    lines = evaluate.training_lines(json.loads((tmp_path / "soup" / "training_log.json").read_text()))
    assert lines[0].startswith("Training: 58.0 minutes on 2 CPU cores in 4 stages: 1 stage(s), then 3 runs")
    assert lines[1:] == ["`python -m toy.train` (40.0 min)", "last stage 1: `last 0` (5.0 min)",
                         "last stage 2: `last 1` (6.0 min)", "last stage 3: `last 2` (7.0 min)"]  # fmt: skip
