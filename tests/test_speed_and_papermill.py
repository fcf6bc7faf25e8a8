"""Opt-in speed and memory settings keep the maths; the notebook stops early on a bad parameter."""

from __future__ import annotations

import json
import statistics
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from helpers.models import load_components
from helpers.sampling import generate
from helpers.speed import apply_fast_path, apply_memory_savers

ROOT = Path(__file__).resolve().parent.parent
KWARGS = dict(prompt=["a red circle", "a blue square"], num_inference_steps=3, seed=4, scheduler="dpm++")


def test_fused_qkv_and_channels_last_keep_the_image(tiny_model_dir):
    components = load_components(tiny_model_dir, device="cpu", dtype=torch.float32)
    plain = generate(components, **KWARGS).pixels
    apply_fast_path(components, channels_last=True, fuse_qkv=True, compile_mode=None)
    assert np.abs(generate(components, **KWARGS).pixels - plain).max() < 1e-4


def test_pytorch_convolutions_keep_the_image(tiny_model_dir):
    components = load_components(tiny_model_dir, device="cpu", dtype=torch.float32)
    plain = generate(components, **KWARGS).pixels
    apply_fast_path(components, channels_last=True, fuse_qkv=False, onednn=False)
    try:
        assert not torch.backends.mkldnn.enabled
        assert np.abs(generate(components, **KWARGS).pixels - plain).max() < 1e-4
    finally:
        torch.backends.mkldnn.enabled = True


def test_compiled_with_frozen_weights_keeps_the_image(tiny_model_dir):
    components = load_components(tiny_model_dir, device="cpu", dtype=torch.float32)
    plain = generate(components, **KWARGS).pixels
    apply_fast_path(components, channels_last=False, compile_mode="default", freeze=True)
    try:
        assert np.abs(generate(components, **KWARGS).pixels - plain).max() < 1e-4
    finally:
        import torch._inductor.config as inductor

        inductor.freezing = False
        torch._dynamo.reset()


def test_freeze_without_compile_is_refused_before_anything_changes(tiny_model_dir):
    components = load_components(tiny_model_dir, device="cpu", dtype=torch.float32)
    unet, processors = components.unet, {k: type(v) for k, v in components.unet.attn_processors.items()}
    with pytest.raises(ValueError, match="freeze"):
        apply_fast_path(components, freeze=True)
    assert components.unet is unet
    assert {k: type(v) for k, v in unet.attn_processors.items()} == processors  # QKV not fused


def test_memory_savers_keep_the_image(tiny_model_dir):
    components = load_components(tiny_model_dir, device="cpu", dtype=torch.float32)
    plain = generate(components, **KWARGS).pixels
    apply_memory_savers(components, attention_slicing=True, vae_slicing=True)
    assert np.abs(generate(components, **KWARGS).pixels - plain).max() < 1e-4


def test_bad_notebook_parameter_stops_in_the_check_cell(tmp_path):
    out = tmp_path / "bad.ipynb"
    cmd = [sys.executable, "-m", "papermill", "--cwd", str(ROOT), str(ROOT / "StableDiffusion_Implementation.ipynb")]
    cmd += [str(out), "-p", "scheduler", "karras", "-p", "output_dir", str(tmp_path), "-p", "model", "bundled"]
    run = subprocess.run(cmd, capture_output=True, text=True, timeout=300)
    assert run.returncode != 0
    assert "scheduler must be one of" in run.stderr and "'karras'" in run.stderr
    executed = [c for c in json.loads(out.read_text())["cells"] if c.get("execution_count")]
    assert "models.load_folder" not in "".join("".join(c["source"]) for c in executed)  # no weights were loaded


def run_benchmark(script: str, *args: str) -> None:
    """`python -m benchmarks.NAME ...` from the project root, as the benchmarks' docstrings say to run them."""
    env = {"PATH": "/usr/bin:/bin", "TORCH_THREADS": "2", "OMP_NUM_THREADS": "2"}
    module = "benchmarks." + script.removesuffix(".py")
    done = subprocess.run([sys.executable, "-m", module, *args], env=env, cwd=ROOT, capture_output=True)
    assert done.returncode == 0, done.stderr.decode()[-2000:]


def test_gpu_benchmark_runs_at_toy_size_on_the_cpu(tmp_path):
    """bench_gpu.py --toy: every variant is timed (none fails) and ours runs the same step counts as diffusers."""
    run_benchmark("bench_gpu.py", "--toy", "--repeats", "1", "--json", str(tmp_path / "gpu.json"))
    results = json.loads((tmp_path / "gpu.json").read_text())
    assert results["flops"]["unet_guided_step"] > 0 and results["flops"]["vae_decode"] > 0
    variants = results["variants"]
    assert [v for v in variants if "error" in v] == []
    assert all(v["seconds_per_image"] > 0 and 0 < v["fraction_of_floor"] < 1 for v in variants)
    names = {(v["name"], v["steps"]) for v in variants}
    assert ("diffusers default fp16 pipeline (PNDM)", 2) in names and ("ours, same settings (PNDM)", 2) in names


def test_precision_check_runs_at_toy_size_and_bfloat16_stays_close(tmp_path):
    """check_fast_path.py --toy: bfloat16 starts from the float32 noise, so its image stays near float32's."""
    run_benchmark("check_fast_path.py", "--toy", "--no-fast-path", "--repeats", "1", "--json", str(tmp_path / "p.json"))
    results = json.loads((tmp_path / "p.json").read_text())
    rows = {row["name"]: row for row in results["rows"]}
    bf16 = rows["plain loop, torch.bfloat16"]
    assert bf16["finite"] and bf16["max_diff_between_calls"] == 0
    assert 0 < bf16["mean_diff_vs_fp32"] < 0.02  # different noise would give about 0.1 to 0.2
    assert 0 < results["unet_call_relative_error"]["torch.bfloat16"] < 0.05


def test_loop_benchmark_writes_paired_ratios_with_intervals(tmp_path):
    """bench_loop.py at 2 steps: each scheduler, and all of them pooled, get a paired ratio inside its interval."""
    out = tmp_path / "loop.json"
    run_benchmark(
        "bench_loop.py", "--steps", "2", "--rounds", "6", "--schedulers", "pndm", "euler_a", "--json", str(out)
    )
    results = json.loads(out.read_text())
    rows = results["schedulers"]
    assert sorted(rows) == ["euler_a", "pndm"]
    assert all(len(row["ours_s"]) == len(row["diffusers_s"]) == 6 for row in rows.values())
    for row in rows.values():  # the reported ratio is the median of the rounds' own ratios, from the raw times
        ratios = sorted(o / t for o, t in zip(row["ours_s"], row["diffusers_s"]))
        assert row["paired_ratio"] == pytest.approx(statistics.median(ratios))
        assert (row["paired_ratio_low"], row["paired_ratio_high"]) == pytest.approx((ratios[0], ratios[-1]))
    pooled = [o / t for row in rows.values() for o, t in zip(row["ours_s"], row["diffusers_s"])]
    assert results["all_schedulers"]["paired_ratio"] == pytest.approx(statistics.median(pooled))


def test_training_benchmark_times_every_setting_in_turns(tmp_path):
    """bench_train.py --smoke: both stages, three settings timed round by round; each paired ratio comes from the raw
    times; PyTorch's own convolutions give the first step's loss of oneDNN's up to rounding (same maths), bfloat16
    autocast a loss near it but not equal (the forward pass really ran in bfloat16)."""
    out = tmp_path / "train.json"
    run_benchmark("bench_train.py", "--smoke", "--rounds", "6", "--threads", "1", "--out", str(out))
    stages = json.loads(out.read_text())["stages"]
    for stage in ("unet", "vae"):
        row = stages[stage]
        onednn = row["seconds"]["oneDNN"]
        for name in ("channels_last, PyTorch convolutions", "oneDNN, bfloat16 autocast"):
            other = row["seconds"][name]
            assert len(other) == len(onednn) == 6
            assert row["paired_ratio"][name]["paired_ratio"] == pytest.approx(
                statistics.median(n / o for n, o in zip(other, onednn))
            )
        loss = row["first_step_loss"]["oneDNN"]
        assert row["first_step_loss_difference"]["channels_last, PyTorch convolutions"] <= 1e-4 * loss
        assert 0 < row["first_step_loss_difference"]["oneDNN, bfloat16 autocast"] <= 2e-2 * loss


def test_compile_gradient_check_finds_the_eager_gradients_through_a_correct_backend(tmp_path):
    """check_compile_gradients.py --smoke: Dynamo's graph run eagerly, and with AOTAutograd's backward, give the eager
    U-Net's loss and gradients exactly (the check itself compares like with like); Inductor, which computes other
    gradients for this U-Net on these CPUs (EXPERIMENTS, T), takes minutes to compile and is left to the script."""
    out = tmp_path / "gradients.json"
    run_benchmark("check_compile_gradients.py", "--smoke", "--backends", "eager,aot_eager", "--out", str(out))
    rows = json.loads(out.read_text())["backends"]
    assert set(rows) == {"eager", "aot_eager"}
    for row in rows.values():
        assert row["loss_difference"] == 0 and row["relative_difference"] == 0
        assert row["parameters_off_by_1e-3"] == 0 and row["zero_gradients_where_eager_has_some"] == 0
        assert row["parameters"] > 50 and len(row["worst"]) == 5
    bad = subprocess.run(
        [sys.executable, "-m", "benchmarks.check_compile_gradients", "--backends", "eager,tvm"],
        cwd=ROOT,
        capture_output=True,
        text=True,
    )
    assert bad.returncode == 2 and "--backends" in bad.stderr and "tvm" in bad.stderr


def test_cpu_benchmark_compares_settings_in_turns(tmp_path):
    """bench_cpu.py: PyTorch's convolutions (oneDNN off) keep the pixels, and the paired ratio is reported."""
    out = tmp_path / "cpu.json"
    settings = ["eager", "eager, channels_last, PyTorch convolutions"]
    run_benchmark("bench_cpu.py", "--settings", *settings, "--rounds", "6", "--out", str(out))
    rows = json.loads(out.read_text())["settings"]
    native = rows[settings[1]]
    assert len(native["seconds"]) == len(rows["eager"]["seconds"]) == 6
    ratios = [n / e for n, e in zip(native["seconds"], rows["eager"]["seconds"])]  # round by round, from raw times
    assert native["paired_ratio_to_first_setting"] == pytest.approx(statistics.median(ratios), abs=2e-3)  # JSON rounds
    assert 0 < native["max_pixel_difference_from_first_setting"] < 1e-4  # other kernels, same maths
