"""Shared fixtures: a tiny random model in diffusers' layout, built once per test session."""

from __future__ import annotations

import os

import pytest
import torch
from transformers import CLIPTokenizer

from helpers.models import Components, load_components
from toy import train

torch.set_num_threads(int(os.environ.get("TORCH_THREADS", "2")))


@pytest.fixture(scope="session")
def tiny_model_dir(tmp_path_factory: pytest.TempPathFactory):
    """A randomly initialised model of the bundled model's classes, saved as the trainer saves it."""
    out = tmp_path_factory.mktemp("tiny-sd")
    torch.manual_seed(0)
    cfg = train.SMOKE
    tokenizer = CLIPTokenizer.from_pretrained(train.TOKENIZER_DIR)
    vae, text_encoder = train.build_vae(cfg), train.build_text_encoder(cfg)
    unet = train.build_unet(cfg, latent_size=8)
    train.save_model(out, vae, text_encoder, unet, tokenizer)
    return out


@pytest.fixture(scope="session")
def tiny(tiny_model_dir) -> Components:
    return load_components(tiny_model_dir, device="cpu", dtype=torch.float32)
