"""The hand-written loop equals diffusers' StableDiffusionPipeline, pixel for pixel."""

from __future__ import annotations

from collections import Counter

import numpy as np
import pytest
from torch.overrides import TorchFunctionMode

from helpers.models import SCHEDULERS, Components
from helpers.reference import diffusers_pipeline
from helpers.sampling import generate
from helpers.seeding import make_generator


@pytest.mark.parametrize("guidance_scale", [1.0, 7.5])
@pytest.mark.parametrize("scheduler", sorted(SCHEDULERS))
def test_generate_equals_pipeline(tiny: Components, scheduler: str, guidance_scale: float):
    kwargs = dict(
        prompt=["a red circle", "a blue square on the left"],
        negative_prompt=["a green triangle", ""],
        height=64,
        width=48,
        num_inference_steps=4,
        guidance_scale=guidance_scale,
    )
    ours = generate(tiny, **kwargs, scheduler=scheduler, seed=7)
    theirs = diffusers_pipeline(tiny, scheduler)(**kwargs, generator=make_generator(7), output_type="np").images
    assert ours.pixels.shape == theirs.shape == (2, 64, 48, 3)
    assert ours.pixels.dtype == np.float32
    assert np.abs(ours.pixels - theirs).max() == 0.0


@pytest.mark.parametrize("scheduler, evaluations", [("dpm++", 5), ("heun", 9)])
def test_work_per_step(tiny: Components, scheduler: str, evaluations: int):
    """One U-Net call at batch 2 per evaluation, and the prompt encoded once (plus once unconditionally)."""
    unet_batches, text_calls = [], []
    hooks = [
        tiny.unet.register_forward_hook(lambda m, args, out: unet_batches.append(args[0].shape[0])),
        tiny.text_encoder.register_forward_hook(lambda m, args, out: text_calls.append(1)),
    ]
    try:
        out = generate(tiny, "a red circle", num_inference_steps=5, guidance_scale=7.5, seed=0, scheduler=scheduler)
    finally:
        for hook in hooks:
            hook.remove()
    assert out.unet_calls == evaluations
    assert unet_batches == [2] * evaluations
    assert len(text_calls) == 2


class CountHostReads(TorchFunctionMode):
    """Counts the tensor methods that hand a value to Python or the CPU: each one waits for a GPU (a host sync)."""

    READS = {"item", "tolist", "numpy", "cpu", "nonzero", "__bool__", "__int__", "__float__", "__index__"}

    def __init__(self) -> None:
        super().__init__()
        self.counts: Counter[str] = Counter()

    def __torch_function__(self, func, types, args=(), kwargs=None):
        name = getattr(func, "__name__", "")
        if name in self.READS:
            self.counts[name] += 1
        return func(*args, **(kwargs or {}))


@pytest.mark.parametrize("scheduler", sorted(SCHEDULERS))
def test_no_host_syncs_beyond_the_library(tiny: Components, scheduler: str):
    """Ours reads tensors back exactly where the pipeline does: the scheduler's own reads, and the final pixels."""
    pipe = diffusers_pipeline(tiny, scheduler)
    pipe.set_progress_bar_config(disable=True)
    with CountHostReads() as ours:
        generate(tiny, "a red circle", num_inference_steps=6, seed=0, scheduler=scheduler)
    with CountHostReads() as theirs:
        pipe("a red circle", num_inference_steps=6, generator=make_generator(0), output_type="np")
    assert ours.counts["cpu"] == 1  # the mode does see reads: here, the pixels moved to the CPU once
    assert ours.counts == theirs.counts
