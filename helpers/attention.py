"""Where the model looks: capture the U-Net's cross-attention maps (pixels x prompt tokens).

A diffusers attention processor wraps each cross-attention layer's own processor: it computes the
softmax(QK^T / sqrt(d)) probabilities of the text tokens for every latent pixel, keeps their mean over
heads, and then lets the original processor produce the layer's output, so the image is unchanged.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

import torch
import torch.nn.functional as F
from diffusers import UNet2DConditionModel
from diffusers.models.attention_processor import Attention


class CrossAttentionStore:
    """The cross-attention probabilities of every call, each (batch, pixels, tokens), averaged over heads."""

    def __init__(self) -> None:
        self.maps: list[torch.Tensor] = []

    def token_maps(self, height: int, width: int, guided: bool) -> torch.Tensor:
        """Every stored map resized to height x width and averaged: (batch, tokens, height, width).

        With guidance the U-Net's batch holds the unconditional half first; only the conditional half is kept.
        """
        if not self.maps:
            raise ValueError("no cross-attention was captured: run the U-Net inside capture_cross_attention")
        total = None
        for probs in self.maps:
            probs = probs[probs.shape[0] // 2 :] if guided else probs
            batch, pixels, tokens = probs.shape
            scale = (height * width / pixels) ** 0.5
            h, w = round(height / scale), round(width / scale)
            grid = probs.float().permute(0, 2, 1).reshape(batch, tokens, h, w)
            grid = F.interpolate(grid, size=(height, width), mode="bilinear", align_corners=False)
            total = grid if total is None else total + grid
        return total / len(self.maps)


class CapturingProcessor:
    """Stores a cross-attention layer's probabilities, then defers to the layer's original processor."""

    def __init__(self, inner, store: CrossAttentionStore) -> None:
        self.inner, self.store = inner, store

    def __call__(self, attn: Attention, hidden_states, encoder_hidden_states=None, attention_mask=None, *args, **kw):
        if encoder_hidden_states is not None:
            query = attn.head_to_batch_dim(attn.to_q(hidden_states))
            key = attn.head_to_batch_dim(attn.to_k(encoder_hidden_states))
            probs = attn.get_attention_scores(query, key, None)  # (batch * heads, pixels, tokens)
            batch = hidden_states.shape[0]
            self.store.maps.append(probs.reshape(batch, attn.heads, *probs.shape[1:]).mean(1).detach().cpu())
        return self.inner(attn, hidden_states, encoder_hidden_states, attention_mask, *args, **kw)


@contextmanager
def capture_cross_attention(unet: UNet2DConditionModel) -> Iterator[CrossAttentionStore]:
    """Within the block, every cross-attention call of `unet` is recorded in the yielded store."""
    original = unet.attn_processors
    store = CrossAttentionStore()
    wrapped = {
        name: CapturingProcessor(proc, store) if name.endswith("attn2.processor") else proc
        for name, proc in original.items()
    }
    unet.set_attn_processor(wrapped)
    try:
        yield store
    finally:
        unet.set_attn_processor(original)
