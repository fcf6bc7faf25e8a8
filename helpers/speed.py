"""Opt-in speed settings for the hand-written loop (all leave the maths unchanged).

- channels_last: the memory layout cuDNN's fastest convolutions want;
- fused QKV: one projection matmul instead of three in every attention layer;
- torch.compile of the U-Net and of the VAE decoder (Inductor kernels; "reduce-overhead" adds CUDA graphs);
- freeze (with torch.compile, inference only): the weights become constants of the compiled graph, so
  Inductor can fold them and pre-pack the convolution weights for oneDNN on the CPU. Inductor's options
  are process-wide: they hold for every later torch.compile in the same process;
- onednn=False (CPU): PyTorch's own convolution kernels instead of oneDNN's: faster for the bundled model's
  small convolutions (8x8 latents), slower for SD v1.5's (measured in benchmarks/RESULTS.md, by
  `python -m benchmarks.probe_convolutions`). It sets torch.backends.mkldnn.enabled = False, process-wide too
  (set it back to True to undo).

PyTorch's scaled-dot-product attention (flash / memory-efficient kernels) is diffusers' default
attention processor already, so the baseline uses it too.
"""

from __future__ import annotations

import torch

from helpers.models import Components


def apply_fast_path(
    components: Components,
    channels_last: bool = True,
    fuse_qkv: bool = True,
    compile_mode: str | None = None,
    freeze: bool = False,
    onednn: bool = True,
) -> Components:
    """Apply the chosen settings in place and return the components. compile_mode None skips torch.compile."""
    if freeze and compile_mode is None:
        raise ValueError("freeze needs a compile_mode: it is an option of torch.compile")
    if not onednn:
        torch.backends.mkldnn.enabled = False
    unet, vae = components.unet, components.vae
    if fuse_qkv:
        unet.fuse_qkv_projections()
        vae.fuse_qkv_projections()
    if channels_last:
        unet.to(memory_format=torch.channels_last)
        vae.to(memory_format=torch.channels_last)
    if compile_mode is not None:
        import torch._inductor.config as inductor

        inductor.conv_1x1_as_mm = True  # 1x1 convolutions as matmuls: faster kernels
        inductor.freezing = freeze
        components.unet = torch.compile(unet, mode=compile_mode)
        vae.decoder = torch.compile(vae.decoder, mode=compile_mode)
    return components


def apply_memory_savers(
    components: Components,
    attention_slicing: bool = False,
    vae_slicing: bool = False,
    vae_tiling: bool = False,
    cpu_offload: bool = False,
) -> Components:
    """Options for small GPUs, each trading speed for peak memory.

    - attention_slicing: attention computed a few heads at a time;
    - vae_slicing: decode a batch one image at a time;
    - vae_tiling: decode in overlapping tiles (large images; results change slightly at tile seams);
    - cpu_offload: keep each model on the CPU and move it to the GPU only while it runs (accelerate).
    """
    if attention_slicing:
        components.unet.set_attention_slice("auto")
    if vae_slicing:
        components.vae.enable_slicing()
    if vae_tiling:
        components.vae.enable_tiling()
    if cpu_offload:
        from accelerate import cpu_offload_with_hook

        device = components.execution_device = components.device
        hook = None
        for model in (components.text_encoder, components.unet, components.vae):
            model.to("cpu")
            _, hook = cpu_offload_with_hook(model, device, prev_module_hook=hook)
    return components
