"""The bundled model: loads offline through both loaders, and draws the named colour and shape."""

from __future__ import annotations

import dataclasses
import json
import subprocess
import sys

import numpy as np
import pytest
import torch
from diffusers import StableDiffusionPipeline

from helpers.models import BUNDLED_MODEL, Components, load_components
from helpers.sampling import generate
from helpers.schedulers import make_scheduler
from toy import evaluate, world
from toy.screen import with_spacing
from toy.train import SMOKE, stage_config, vae_fused_adamw

PROMPTS = [
    "a large red circle in the center on a white background",
    "a large blue square on the left on a black background",
    "a large yellow triangle at the bottom on a gray background",
    "a large green square on the right on a white background",
    "a large orange circle at the top on a black background",
    "a large purple triangle in the center on a white background",
]


@pytest.fixture(scope="module")
def bundled() -> Components:
    return load_components("bundled", device="cpu", dtype=torch.float32)


def test_folder_is_small_and_safetensors_only():
    files = [p for p in BUNDLED_MODEL.rglob("*") if p.is_file()]
    assert sum(p.stat().st_size for p in files) <= 15 * 2**20
    weights = [p for p in files if p.suffix in (".safetensors", ".bin", ".ckpt", ".pt")]
    assert len(weights) == 3 and all(p.suffix == ".safetensors" for p in weights)


def test_loads_offline_with_diffusers_own_loader(monkeypatch, bundled: Components):
    """No network at all: any attempt to open a connection fails the test."""
    import socket

    def refuse(*args, **kwargs):
        raise AssertionError(f"the bundled model tried to reach the network: {args}")

    monkeypatch.setattr(socket.socket, "connect", refuse)
    monkeypatch.setattr(socket, "create_connection", refuse)
    pipe = StableDiffusionPipeline.from_pretrained(BUNDLED_MODEL, safety_checker=None, requires_safety_checker=False)
    assert pipe.unet.dtype == pipe.text_encoder.dtype == torch.float32
    assert pipe.vae_scale_factor == bundled.vae_scale_factor == 8
    assert pipe.vae.config.latent_channels == pipe.unet.config.in_channels == 4
    assert pipe.tokenizer("a red circle").input_ids == bundled.tokenizer("a red circle").input_ids


def test_draws_what_the_prompt_names(bundled: Components):
    """At guidance 3 (DPM-Solver++ draws 99% of the named attributes there, toy/RESULTS.md's curve): shape,
    position and background follow the prompt every time; colour (all six here) in at least five of the six, where
    chance is one in six."""
    out = generate(bundled, PROMPTS, num_inference_steps=20, guidance_scale=3.0, seed=0, scheduler="dpm++")
    scores = [world.score(prompt, np.asarray(image)) for prompt, image in zip(PROMPTS, out.images)]
    for prompt, score in zip(PROMPTS, scores):
        assert score["shape"] and score["position"] and score["background"], (prompt, score)
    assert sum(score["color"] for score in scores) >= len(PROMPTS) - 1, scores


def results_row(setting: str) -> dict[str, float]:
    """One row of toy/RESULTS.md's table of Stable Diffusion's defaults, e.g. 'pndm, 20 steps'."""
    lines = (BUNDLED_MODEL.parents[1] / "toy" / "RESULTS.md").read_text().splitlines()
    header = next(line for line in lines if line.startswith("| setting |"))
    row = next(line for line in lines if line.startswith(f"| {setting} |"))
    names, values = header.strip("|").split("|"), row.strip("|").split("|")
    return {n.strip(): float(v) for n, v in zip(names[1:], values[1:]) if n.strip() in ("color", "shape")}


@pytest.mark.parametrize("scheduler", ["pndm", "lms", "dpm++"])
def test_sd_defaults_give_what_the_results_claim(bundled: Components, scheduler: str):
    """Stable Diffusion's defaults, 20 steps at guidance 7.5, on `make evaluate`'s 164 training prompts and seed:
    colour and shape within 3 points (4 pictures of 164) of what toy/RESULTS.md claims for this model."""
    from toy.evaluate import ROWS_SEED, accuracy, prompt_sets

    prompts = prompt_sets()[0]
    measured, _, _ = accuracy(
        bundled, prompts, seed=ROWS_SEED, num_inference_steps=20, guidance_scale=7.5, scheduler=scheduler
    )
    claimed = results_row(f"{scheduler}, 20 steps")
    for key, value in claimed.items():
        assert abs(measured[key] - value) <= 3.0, (scheduler, key, measured[key], value)


def test_evaluate_names_the_model_it_measured_in_its_command():
    """A results file made from another folder says so: the bundled model's command stays make evaluate's."""
    from toy.evaluate import evaluate_command

    assert evaluate_command("bundled", 2) == "python -m toy.evaluate --repeats 2"
    assert evaluate_command("/tmp/my-model", 2) == "python -m toy.evaluate --model /tmp/my-model --repeats 2"
    assert (
        "Command: `python -m toy.evaluate --repeats 2`" in (BUNDLED_MODEL.parents[1] / "toy" / "RESULTS.md").read_text()
    )


def test_evaluate_reports_where_the_vaes_training_ended():
    """The VAE section of make evaluate names the mean MSE of the VAE's last 200 steps, read from the first stage's
    log (the U-Net's rows ignored), and the precision it trained in; a log without VAE steps is refused."""
    from toy.evaluate import vae_training_line

    log = {
        "stages": [{"config": {"vae_bf16": True}}, {"config": {}}],
        "log": [{"stage": "vae", "step": k, "mse": 1.0 if k < 100 else 0.5} for k in range(300)]
        + [{"stage": "unet", "step": k, "loss": 9.0, "mse": 9.0} for k in range(50)],
    }
    line = vae_training_line(log)
    assert "300 steps (bfloat16 autocast)" in line and "last 200 steps averaged 0.50000" in line
    assert "last 300 steps averaged 0.66667" in vae_training_line(log, last=300)  # 100 at 1.0, 200 at 0.5
    shipped = json.loads((BUNDLED_MODEL / "training_log.json").read_text())
    shipped_mse = [row["mse"] for row in shipped["log"] if row["stage"] == "vae"]
    shipped_line = vae_training_line(shipped)  # the shipped VAE was trained with toy.train --vae-bf16
    assert f"{np.mean(shipped_mse[-200:]):.5f}" in shipped_line and "(bfloat16 autocast)" in shipped_line
    with pytest.raises(ValueError, match="no VAE steps"):
        vae_training_line({"stages": [{"config": {}}], "log": log["log"][300:]})


def test_evaluate_draws_240_two_shape_prompts_after_the_others():
    """make evaluate's two-shape prompts grew from 60 to 240: the first 60 and every one-shape prompt are as before,
    each names two different colours, and toy.screen's --more-pairs draws another sample."""
    from toy.evaluate import prompt_sets, two_shape_prompts
    from toy.screen import MORE_PAIRS_SEED

    train, held, pairs = prompt_sets()
    train60, held60, pairs60 = prompt_sets(pairs=60)
    assert (train, held, pairs[:60]) == (train60, held60, pairs60) and len(pairs) == 240
    for prompt in pairs:
        shapes = world.parse_caption(prompt)["shapes"]
        assert len(shapes) == 2 and shapes[0]["color"] != shapes[1]["color"], prompt
    more = two_shape_prompts(np.random.default_rng(MORE_PAIRS_SEED), 240)
    assert len(more) == 240 and sum(a == b for a, b in zip(more, pairs)) < 24  # another sample, not the same list


def test_open_prompts_are_scored_over_four_seeds(bundled: Components):
    """make evaluate scores its 75 open prompts over four starting noises (OPEN_SEEDS): the pooled percentages are
    those of every picture's own read-back, and the first seed's pictures are the ones shown."""
    from toy.evaluate import OPEN_SEEDS, open_prompts, pooled_accuracy

    opened = open_prompts()
    assert len(opened) == len(set(opened)) == 75 and len(OPEN_SEEDS) == 4 and OPEN_SEEDS[0] == 5
    # 2 steps: rough pictures, so that the two seeds score differently and pooling shows (3 did, for an older model)
    prompts, seeds, settings = opened[:3] + opened[-3:], (5, 6), {"num_inference_steps": 2, "scheduler": "dpm++"}
    pooled, images, _ = pooled_accuracy(bundled, prompts, seeds, **settings)
    hits: dict[str, list[bool]] = {}
    shape_right = []
    for seed in seeds:
        pictures = generate(bundled, prompts, seed=seed, **settings).images
        if seed == seeds[0]:
            assert all(np.array_equal(np.asarray(a), np.asarray(b)) for a, b in zip(pictures, images))
        scores = [world.score(prompt, np.asarray(picture)) for prompt, picture in zip(prompts, pictures)]
        shape_right.append(sum(score["shape"] for score in scores))
        for score in scores:
            for key, ok in score.items():
                hits.setdefault(key, []).append(ok)
    assert shape_right[0] != shape_right[1], shape_right  # else one seed's score would pass for the pooled one
    assert pooled == pytest.approx({key: 100.0 * np.mean(oks) for key, oks in hits.items()})


def test_screen_gives_every_scheduler_the_asked_grid(bundled: Components):
    """`toy.screen --timestep-spacing`: PNDM and K-LMS, whose own grids differ, both start where the spacing says."""
    assert with_spacing(bundled, None) is bundled
    for spacing, first in (("trailing", 999), ("leading", 951), ("linspace", 999)):
        config = with_spacing(bundled, spacing).scheduler_config
        for name in ("pndm", "lms"):
            scheduler = make_scheduler(name, config)
            scheduler.set_timesteps(20)
            assert scheduler.config.timestep_spacing == spacing and round(float(scheduler.timesteps[0])) == first
    assert bundled.scheduler_config.get("timestep_spacing") is None  # the loaded model's own config is untouched
    with pytest.raises(ValueError, match="timestep_spacing must be one of"):
        with_spacing(bundled, "even")


def test_training_smoke_run(tmp_path):
    out = tmp_path / "smoke"
    run = subprocess.run(
        [
            sys.executable,
            "-m",
            "toy.train",
            "--smoke",
            "--out",
            str(out),
            "--threads",
            "1",
            "--min-snr-gamma",
            "5",
            "--high-noise-share",
            "0.5",
            "--x0-weight-cap",
            "20",
            "--ema-decay",
            "0.99",
            "--warmup",
            "1",
            "--caption-keep",
            "0.85",
            "--vae-color-range",
            "0.5",
        ],
        capture_output=True,
        text=True,
    )
    assert run.returncode == 0, run.stderr[-2000:]
    smoke = load_components(out, device="cpu", dtype=torch.float32)
    assert generate(smoke, "a red circle", num_inference_steps=2, seed=0).pixels.shape == (1, 64, 64, 3)
    # a second stage, as the shipped model had: the log keeps both, the configs do not name the first folder
    again = tmp_path / "resumed"
    args = ["--smoke", "--threads", "1", "--resume", str(out), "--steps", "2", "--caption-keep", "1"]
    args += ["--caption-noise", "0.2", "--caption-noise-kinds", "color,shape", "--shape-range", "1"]
    args += ["--empty-caption-prob", "0.25", "--two-shape-prob", "0.5"]
    args += ["--out", str(again)]
    run = subprocess.run([sys.executable, "-m", "toy.train", *args], capture_output=True, text=True)
    assert run.returncode == 0, run.stderr[-2000:]
    log = json.loads((again / "training_log.json").read_text())
    assert len(log["stages"]) == 2 and "--resume" in log["stages"][1]["command"]
    assert log["stages"][1]["config"]["caption_noise_kinds"] == ["color", "shape"]
    assert log["stages"][1]["config"]["caption_noise"] == 0.2
    assert log["stages"][1]["config"]["empty_caption_prob"] == 0.25
    assert log["stages"][0]["config"]["empty_caption_prob"] == 0.1
    assert log["stages"][1]["config"]["two_shape_prob"] == 0.5 and log["stages"][0]["config"]["two_shape_prob"] == 0.25
    assert log["stages"][1]["config"]["shape_range"] == 1.0 and log["stages"][0]["config"]["shape_range"] == 0.0
    assert log["stages"][0]["config"]["vae_color_range"] == 0.5
    assert stage_config(again, 0) == dataclasses.replace(SMOKE, vae_color_range=0.5, min_snr_gamma=5.0,
                                                         high_noise_share=0.5, x0_weight_cap=20.0, ema_decay=0.99,
                                                         warmup=1, caption_keep=0.85)  # fmt: skip
    assert stage_config(again).caption_noise_kinds == ("color", "shape") and stage_config(again).unet_steps == 2
    assert log["summary"]["minutes"] == round(sum(stage["minutes"] for stage in log["stages"]), 1)
    for name in ("unet", "vae"):
        assert "_name_or_path" not in json.loads((again / name / "config.json").read_text())
    resumed = load_components(again, device="cpu", dtype=torch.float32)
    assert generate(resumed, "a red circle", num_inference_steps=2, seed=0).pixels.shape == (1, 64, 64, 3)


def test_make_train_runs_the_commands_the_bundled_model_was_trained_with():
    """The Makefile's train recipe is the shipped model's training log, stage by stage: the same options, up to the
    folders (the log keeps the --out and --resume folders of the run) and a --seed equal to the default."""
    from pathlib import Path

    def options(command: str) -> list[str]:
        words, kept = command.split(), []
        while words:
            word = words.pop(0)
            if word == "--out" or (word == "--seed" and words[0] == "0"):
                words.pop(0)
            elif word == "--resume":
                kept += [word, "FOLDER"]
                words.pop(0)
            else:
                kept.append(word)
        return kept

    makefile = (Path(__file__).parents[1] / "Makefile").read_text().replace("\\\n", " ")
    recipe = makefile.split("\ntrain:")[1].split("\n\n")[0].splitlines()[1:]
    made = [options(line.split("-m toy.train", 1)[1]) for line in recipe]
    stages = json.loads((BUNDLED_MODEL / "training_log.json").read_text())["stages"]
    logged = [options(stage["command"].split("-m toy.train", 1)[1]) for stage in stages]
    assert made == logged and len(made) == 3, (made, logged)


def test_training_is_reproducible_on_one_machine(tmp_path):
    """The same command twice on one machine gives the same weights, bit for bit, and the same loss log
    (toy/EXPERIMENTS.md, Q: machines whose arithmetic differs in the last bits train different models from one seed)."""
    runs = [tmp_path / "first", tmp_path / "second"]
    for out in runs:
        cmd = [sys.executable, "-m", "toy.train", "--smoke", "--threads", "1", "--out", str(out)]
        run = subprocess.run(cmd, capture_output=True, text=True)
        assert run.returncode == 0, run.stderr[-2000:]
    logs = [json.loads((out / "training_log.json").read_text())["log"] for out in runs]
    assert logs[0] == logs[1] and len(logs[0]) > 0
    for name in ("vae/diffusion_pytorch_model.safetensors", "unet/diffusion_pytorch_model.safetensors",
                 "text_encoder/model.safetensors"):  # fmt: skip
        assert (runs[0] / name).read_bytes() == (runs[1] / name).read_bytes(), name


@pytest.mark.parametrize(
    "flag, value",
    [
        ("--ema-decay", "1.5"),
        ("--lr-floor", "-0.1"),
        ("--average-last", "-1"),
        ("--average-last", "4"),  # more than the smoke config's 3 U-Net steps
        ("--caption-keep", "2"),
        ("--empty-caption-prob", "1.2"),
        ("--two-shape-prob", "-0.2"),
        ("--x0-weight-cap", "-1"),
        ("--steps", "0"),  # once silently replaced by the default (`args.steps or cfg.unet_steps`)
        ("--caption-noise", "1.5"),
        ("--variation", "-1"),
        ("--color-range", "2.5"),
        ("--shape-range", "-0.5"),
        ("--vae-color-range", "3"),
        ("--caption-noise-kinds", "color,hue"),
        ("--unet-heads", "0"),
        ("--unet-heads", "3"),  # the smoke U-Net's 16 channels do not split into 3 heads
        ("--unet-channels", "24,48"),  # not multiples of the group norm's 16 groups
        ("--unet-channels", "32"),  # one level
        ("--unet-channels", "32,wide"),
        ("--vae-target", "101"),
        ("--vae-check-every", "0"),
        ("--vae-draws", "0"),
    ],
)
def test_training_refuses_an_option_out_of_range(tmp_path, flag: str, value: str):
    out = tmp_path / "never"
    run = subprocess.run(
        [sys.executable, "-m", "toy.train", "--smoke", "--out", str(out), flag, value], capture_output=True, text=True
    )
    assert run.returncode == 2 and flag in run.stderr and value in run.stderr, run.stderr[-500:]
    assert not out.exists()


@pytest.mark.parametrize(
    "flag", [["--vae-bf16"], ["--vae-adamw", "fused"], ["--vae-target", "97"], ["--vae-check-every", "100"]]
)
def test_training_refuses_vae_options_on_a_stage_that_trains_no_vae(tmp_path, flag):
    """A --resume stage keeps the saved VAE, so an option of the VAE's training there would be logged and do
    nothing."""
    out = tmp_path / "never"
    command = [sys.executable, "-m", "toy.train", "--smoke", "--out", str(out), "--resume", str(tmp_path), *flag]
    run = subprocess.run(command, capture_output=True, text=True)
    assert run.returncode == 2 and flag[0] in run.stderr and "--resume" in run.stderr, run.stderr[-500:]
    assert not out.exists()


def test_vae_adamw_gives_the_vae_stage_its_own_kernel(tmp_path):
    """--vae-adamw for-loop with --fused-adamw: the U-Net's AdamW fused, the VAE's PyTorch's CPU for-loop, as logged;
    a wrong kernel name is refused, naming the option."""
    train = [sys.executable, "-m", "toy.train", "--smoke", "--threads", "1", "--fused-adamw"]
    run = subprocess.run(
        [*train, "--vae-adamw", "for-loop", "--out", str(tmp_path / "m")], capture_output=True, text=True
    )
    assert run.returncode == 0, run.stderr[-2000:]
    logged = stage_config(tmp_path / "m", 0)
    assert logged.fused_adamw and logged.vae_fused_adamw is False and not vae_fused_adamw(logged)
    wrong = subprocess.run(
        [*train, "--vae-adamw", "foreach", "--out", str(tmp_path / "never")], capture_output=True, text=True
    )
    assert wrong.returncode == 2 and "--vae-adamw" in wrong.stderr, wrong.stderr[-500:]
    assert not (tmp_path / "never").exists()


def test_unet_heads_and_widths_build_a_first_stage_and_later_stages_keep_them(tmp_path):
    """--unet-heads and --unet-channels set the first stage's U-Net heads (diffusers' attention_head_dim) and widths;
    a --resume stage goes on with the saved U-Net's and logs them, and refuses both, which would build another U-Net."""
    train = [sys.executable, "-m", "toy.train", "--smoke", "--threads", "1"]
    first, second = tmp_path / "first", tmp_path / "second"
    for extra in (
        ["--unet-heads", "2", "--unet-channels", "32,16", "--out", str(first)],
        ["--resume", str(first), "--out", str(second)],
    ):
        run = subprocess.run([*train, *extra], capture_output=True, text=True)
        assert run.returncode == 0, run.stderr[-2000:]
    saved = json.loads((second / "unet" / "config.json").read_text())
    assert saved["attention_head_dim"] == 2 and saved["block_out_channels"] == [32, 16] != list(SMOKE.unet_channels)
    for stage in (0, -1):
        assert (stage_config(second, stage).unet_heads, stage_config(second, stage).unet_channels) == (2, (32, 16))
    never = tmp_path / "never"
    for flag, value in (("--unet-heads", "4"), ("--unet-channels", "16,16")):
        run = subprocess.run(
            [*train, "--resume", str(first), flag, value, "--out", str(never)], capture_output=True, text=True
        )
        assert run.returncode == 2 and flag in run.stderr and "--resume" in run.stderr, run.stderr[-500:]
        assert not never.exists()


def test_training_on_a_saved_vae_keeps_that_vae(tmp_path):
    """--vae-from: a first stage on another model's VAE. The VAE's weights, scaling_factor, settings and log rows
    are that model's, the U-Net and text encoder are trained anew; options that would train a VAE are refused."""
    train = [sys.executable, "-m", "toy.train", "--smoke", "--threads", "1"]
    source, held = tmp_path / "source", tmp_path / "held"
    for extra in (
        ["--vae-bf16", "--out", str(source)],
        ["--vae-from", str(source), "--seed", "1", "--fused-adamw", "--color-range", "1.5", "--out", str(held)],
    ):
        run = subprocess.run([*train, *extra], capture_output=True, text=True)
        assert run.returncode == 0, run.stderr[-2000:]
    for name in ("vae/diffusion_pytorch_model.safetensors", "vae/config.json"):
        assert (held / name).read_bytes() == (source / name).read_bytes(), name
    assert (held / "unet/diffusion_pytorch_model.safetensors").read_bytes() != (
        source / "unet/diffusion_pytorch_model.safetensors"
    ).read_bytes()
    logs = [json.loads((folder / "training_log.json").read_text()) for folder in (source, held)]
    vae_rows = [[row for row in log["log"] if row["stage"] == "vae"] for log in logs]
    assert vae_rows[0] == vae_rows[1] and len(vae_rows[0]) == SMOKE.vae_steps
    assert sum(row["stage"] == "unet" for row in logs[1]["log"]) == SMOKE.unet_steps
    assert "--vae-from" in logs[1]["stages"][0]["command"] and stage_config(held, 0).vae_bf16  # the VAE's own settings
    kept = stage_config(held, 0)  # the U-Net's fused kernel and colours, the VAE's for-loop kernel and source colours
    assert kept.fused_adamw and kept.vae_fused_adamw is False and not stage_config(source, 0).fused_adamw
    assert (kept.color_range, kept.vae_color_range) == (1.5, SMOKE.color_range)
    counted = [evaluate.training_lines(log)[0] for log in logs]  # the VAE taken over is not timed: said
    assert "--vae-from" not in counted[0] and "not counting the VAE's, taken over with --vae-from" in counted[1]
    assert (
        stage_config(held, 0).seed == 1 and logs[1]["summary"]["scaling_factor"] == logs[0]["summary"]["scaling_factor"]
    )
    for flag in (["--vae-bf16"], ["--vae-steps", "2"], ["--vae-adamw", "for-loop"], ["--resume", str(source)],
                 ["--vae-target", "97"], ["--vae-draws", "2"]):  # fmt: skip
        never = tmp_path / "never"
        run = subprocess.run(
            [*train, "--vae-from", str(source), *flag, "--out", str(never)], capture_output=True, text=True
        )
        assert run.returncode == 2 and "--vae-from" in run.stderr and flag[0] in run.stderr, run.stderr[-500:]
        assert not never.exists()
    missing = subprocess.run([*train, "--vae-from", str(tmp_path / "nothing")], capture_output=True, text=True)
    assert missing.returncode == 2 and str(tmp_path / "nothing") in missing.stderr, missing.stderr[-500:]


def test_vae_target_reads_the_vae_as_it_trains_and_draws_again_when_it_ends_short(tmp_path):
    """--vae-target: the first stage reads its VAE's two-shape ceiling from half way and at the last step, logs each
    reading, and with --vae-draws 2 trains a second VAE when the first ends short; a smoke VAE never reaches 100, so
    both draws are trained, the better kept, and make evaluate's VAE line says it ended short. --vae-from keeps the
    readings with the VAE."""
    train = [sys.executable, "-m", "toy.train", "--smoke", "--threads", "1"]
    read, held = tmp_path / "read", tmp_path / "held"
    for extra in (
        ["--vae-target", "100", "--vae-check-every", "1", "--vae-draws", "2", "--out", str(read)],
        ["--vae-from", str(read), "--out", str(held)],
    ):
        run = subprocess.run([*train, *extra], capture_output=True, text=True)
        assert run.returncode == 0, run.stderr[-2000:]
    log = json.loads((read / "training_log.json").read_text())
    readings = [row for row in log["log"] if row["stage"] == "vae_reading"]
    read_steps = range(SMOKE.vae_steps // 2, SMOKE.vae_steps)  # every step from half way (--vae-check-every 1)
    assert [(row["draw"], row["step"]) for row in readings] == [(d, s) for d in (0, 1) for s in read_steps]
    assert all(0 <= row["shape"] < 100 and 0 <= row["color"] <= 100 for row in readings)
    kept = [row for row in readings if row.get("kept")]
    assert len(kept) == 1 and kept[0]["step"] == SMOKE.vae_steps - 1
    assert kept[0]["shape"] == max(row["shape"] for row in readings if row["step"] == SMOKE.vae_steps - 1)
    assert sum(row["stage"] == "vae" for row in log["log"]) == SMOKE.vae_steps  # the kept draw's steps only
    assert stage_config(read, 0).vae_target == 100 and stage_config(read, 0).vae_draws == 2
    line = evaluate.vae_training_line(log)
    assert f"ended short at {kept[0]['shape']:.1f} at step {SMOKE.vae_steps - 1} of draw {kept[0]['draw']}" in line
    assert "2 VAE draw(s), target 100" in line
    held_log = json.loads((held / "training_log.json").read_text())
    assert [row for row in held_log["log"] if row["stage"].startswith("vae")] == [
        row for row in log["log"] if row["stage"].startswith("vae")
    ]
    assert evaluate.vae_training_line(held_log) == line


def test_a_vae_taken_over_trains_the_unet_its_own_run_trained(tmp_path):
    """From scratch, the first stage trains its U-Net on the latents of its VAE as saved (float16 weights) and draws
    the U-Net's first weights from the seed alone, so --vae-from on that run's VAE trains the same U-Net and text
    encoder, bit for bit: a --vae-from experiment measures the model make train would ship."""
    train = [sys.executable, "-m", "toy.train", "--smoke", "--threads", "1"]
    scratch, taken = tmp_path / "scratch", tmp_path / "taken"
    for extra in (["--out", str(scratch)], ["--vae-from", str(scratch), "--out", str(taken)]):
        run = subprocess.run([*train, *extra], capture_output=True, text=True)
        assert run.returncode == 0, run.stderr[-2000:]
    for name in ("unet/diffusion_pytorch_model.safetensors", "text_encoder/model.safetensors", "vae/config.json"):
        assert (taken / name).read_bytes() == (scratch / name).read_bytes(), name
    logs = [json.loads((folder / "training_log.json").read_text())["log"] for folder in (scratch, taken)]
    assert logs[0] == logs[1] and sum(row["stage"] == "unet" for row in logs[0]) == SMOKE.unet_steps


def test_vae_probe_trains_the_first_stages_vae_and_reads_its_ceiling():
    """toy.vae_probe: the VAE of toy.train's first stage alone, measured on the capped world toy.evaluate uses, with
    one shape and with two; it reports where the VAE's training ended, and trains the VAE --seed and --bf16 ask for."""
    base = [sys.executable, "-m", "toy.vae_probe", "--smoke", "--threads", "1"]
    run = subprocess.run([*base, "--vae-steps", "2", "--color-range", "2"], capture_output=True, text=True)
    assert run.returncode == 0, run.stderr[-2000:]
    header, trained, options, one, two = run.stdout.strip().splitlines()[-5:]
    assert "--color-range 2, seed 0" in header and "2 steps (float32)" in trained
    assert "'color_range': 1.0" in options  # drawn with each colour inside its name, as make evaluate draws
    one_scores = dict(item.rsplit(" ", 1) for item in one.removeprefix("one shape: ").split(", "))
    assert set(one_scores) == set(world.ATTRIBUTES) and all(0 <= float(v) <= 100 for v in one_scores.values())
    two_scores = dict(item.rsplit(" ", 1) for item in two.removeprefix("two shapes: ").split(", "))
    assert set(two_scores) == {"background", "color", "shape"}  # a two-shape caption names no size or position
    # the smoke config's own range and steps; --bf16 trains under bfloat16 autocast, as toy.train --vae-bf16
    other = subprocess.run([*base, "--bf16", "--seed", "1"], capture_output=True, text=True)
    assert other.returncode == 0, other.stderr[-2000:]
    assert "--color-range 0.9, seed 1" in other.stdout and "3 steps (bfloat16 autocast)" in other.stdout
    mse = [line.rsplit(" ", 1)[-1] for line in (trained, other.stdout.splitlines()[-4])]
    assert mse[0] != mse[1]  # another seed (and precision) trained another VAE
    for flag, value in (("--color-range", "2.5"), ("--vae-steps", "0")):
        bad = subprocess.run([*base, flag, value], capture_output=True, text=True)
        assert bad.returncode == 2 and flag in bad.stderr and value in bad.stderr, bad.stderr[-500:]


def test_vae_probe_measures_a_saved_vae_as_make_evaluate_does():
    """toy.vae_probe --model: the shipped VAE's two ceilings, read as toy/RESULTS.md's VAE rows give them (the same
    functions, scenes and seeds), and where its training ended, from its log; training options beside it refused."""
    base = [sys.executable, "-m", "toy.vae_probe", "--threads", "1", "--model", str(BUNDLED_MODEL)]
    run = subprocess.run(base, capture_output=True, text=True)
    assert run.returncode == 0, run.stderr[-2000:]
    trained, _, one, two = run.stdout.strip().splitlines()[-4:]
    shipped = json.loads((BUNDLED_MODEL / "training_log.json").read_text())
    shipped_mse = [row["mse"] for row in shipped["log"] if row["stage"] == "vae"]
    assert f"averaged {np.mean(shipped_mse[-200:]):.5f}" in trained, trained  # its own log's last 200 steps
    assert "2,800 steps (bfloat16 autocast)" in trained, trained
    for line, row in ((one, "VAE reconstruction"), (two, "VAE reconstruction, 1000 two-shape scenes")):
        scores = dict(item.rsplit(" ", 1) for item in line.split(": ", 1)[1].split(", "))
        assert {key: float(scores[key]) for key in ("color", "shape")} == results_row(row), (line, row)
    bad = subprocess.run([*base, "--seed", "3"], capture_output=True, text=True)
    assert bad.returncode == 2 and "--model" in bad.stderr and "--seed" in bad.stderr, bad.stderr[-500:]
    missing = subprocess.run([*base[:-1], "/nonexistent/model"], capture_output=True, text=True)
    assert missing.returncode == 2 and "/nonexistent/model" in missing.stderr, missing.stderr[-500:]


def test_training_draws_the_asked_share_of_noisy_timesteps():
    from toy.train import Config, sample_timesteps

    gen = torch.Generator().manual_seed(0)
    for share in (0.0, 0.5):
        t = sample_timesteps(Config(high_noise_share=share), 20000, 1000, gen)
        assert t.min() >= 0 and t.max() <= 999
        noisy = (t >= 500).float().mean().item()
        assert abs(noisy - (0.5 + share / 2)) < 0.02, (share, noisy)


def sd15_noise_scheduler():
    from diffusers import DDPMScheduler

    from helpers.models import SD15_SCHEDULER

    return DDPMScheduler.from_config(SD15_SCHEDULER)


def test_min_snr_weights_cap_only_the_nearly_clean_timesteps():
    from toy.train import Config, loss_weights

    scheduler = sd15_noise_scheduler()
    alphas_cumprod = scheduler.alphas_cumprod
    t = torch.arange(1000)
    weights = loss_weights(Config(min_snr_gamma=5.0), scheduler, t)
    snr = alphas_cumprod / (1 - alphas_cumprod)
    assert torch.allclose(weights[snr <= 5], torch.ones(int((snr <= 5).sum())))
    assert torch.allclose(weights[snr > 5], 5 / snr[snr > 5])
    assert weights[0] < 0.01 and weights[-1] == 1.0
    assert torch.equal(loss_weights(Config(min_snr_gamma=0.0), scheduler, t), torch.ones(1000))


def test_x0_weights_turn_noisy_steps_into_picture_errors_up_to_the_cap():
    from toy.train import Config, loss_weights

    scheduler = sd15_noise_scheduler()
    alphas_cumprod = scheduler.alphas_cumprod
    t = torch.arange(1000)
    snr = alphas_cumprod / (1 - alphas_cumprod)
    weights = loss_weights(Config(x0_weight_cap=20.0), scheduler, t)
    assert torch.equal(weights[snr >= 1], torch.ones(int((snr >= 1).sum())))
    middle = (snr < 1) & (snr > 1 / 20)
    assert middle.sum() > 100 and torch.allclose(weights[middle], 1 / snr[middle])
    assert torch.allclose(weights[snr <= 1 / 20], torch.full((int((snr <= 1 / 20).sum()),), 20.0))
    both = loss_weights(Config(x0_weight_cap=20.0, min_snr_gamma=5.0), scheduler, t)
    assert torch.allclose(both, weights * loss_weights(Config(min_snr_gamma=5.0), scheduler, t))


def test_learning_rate_warms_up_then_decays_to_its_floor():
    """The trainer's schedule (transformers' cosine with a floor): 0 -> base over the warm-up, then down to floor."""
    from toy.train import lr_schedule

    optimizer = torch.optim.SGD([torch.nn.Parameter(torch.zeros(1))], lr=1e-3)
    schedule = lr_schedule(optimizer, 1000, 100, floor=0.02)
    rates = []
    for _ in range(1000):
        rates.append(optimizer.param_groups[0]["lr"])
        optimizer.step()
        schedule.step()
    assert rates[0] == 0 and rates[50] == pytest.approx(0.5e-3) and rates[100] == pytest.approx(1e-3)
    assert all(a >= b for a, b in zip(rates[100:], rates[101:]))
    assert rates[-1] == pytest.approx(0.02e-3, rel=1e-2) and min(rates[100:]) >= 0.02e-3 - 1e-12


def test_scheduler_file_is_sd15s_own(tiny_model_dir):
    """The bundled model and every model toy.train saves carry SD v1.5's scheduler file itself, not PNDM's defaults
    written out (those would set timestep_spacing for every scheduler built from it)."""
    from helpers.models import SD15_SCHEDULER

    for folder in (BUNDLED_MODEL, tiny_model_dir):
        assert json.loads((folder / "scheduler" / "scheduler_config.json").read_text()) == SD15_SCHEDULER


def test_confusion_table_runs_past_one_call_of_images():
    """toy.confusion's 270 prompts exceed GenerationSettings' 256 images per call; it generates them in calls."""
    run = subprocess.run(
        [sys.executable, "-m", "toy.confusion", "bundled", "--steps", "2", "--threads", "2"],
        capture_output=True,
        text=True,
    )
    assert run.returncode == 0, run.stderr[-800:]
    assert "270 prompts" in run.stdout and "colour |" in run.stdout, run.stdout[-800:]
