"""Opt-in speed and memory settings keep the maths; the notebook stops early on a bad parameter."""

from __future__ import annotations

import json
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
