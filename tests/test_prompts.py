"""Long prompts and emphasis, AUTOMATIC1111's way: parsing, chunks, weighted embeddings, and where they apply."""

from __future__ import annotations

import warnings

import numpy as np
import pytest
import torch
from transformers import CLIPTokenizer

from helpers import prompts
from helpers.models import CLIP_TOKENIZER, Components
from helpers.reference import diffusers_pipeline
from helpers.sampling import generate, prompt_embeddings
from helpers.seeding import make_generator


@pytest.fixture(scope="module")
def tokenizer() -> CLIPTokenizer:
    return CLIPTokenizer.from_pretrained(CLIP_TOKENIZER)


@pytest.mark.parametrize(
    "text, expected",
    [
        ("a red circle", [("a red circle", 1.0)]),
        ("a (red) circle", [("a ", 1.0), ("red", 1.1), (" circle", 1.0)]),
        ("a ((red)) circle", [("a ", 1.0), ("red", 1.1 * 1.1), (" circle", 1.0)]),
        ("a [red] circle", [("a ", 1.0), ("red", 1 / 1.1), (" circle", 1.0)]),
        ("a (red:1.5) circle", [("a ", 1.0), ("red", 1.5), (" circle", 1.0)]),
        ("(a (b:2) c)", [("a ", 1.1), ("b", 2 * 1.1), (" c", 1.1)]),
        (r"a \(red\) circle", [("a (red) circle", 1.0)]),
        ("a BREAK b", [("a", 1.0), ("BREAK", -1.0), ("b", 1.0)]),
        ("", [("", 1.0)]),
    ],
)
def test_parse_matches_hand_computed_weights(text: str, expected: list):
    got = prompts.parse_emphasis(text)
    assert [t for t, _ in got] == [t for t, _ in expected]
    assert np.allclose([w for _, w in got], [w for _, w in expected])


@pytest.mark.parametrize(
    "text, position, words, expected",
    [
        ("a (red circle", 2, ["unclosed '('", "rest of the prompt"], [("a ", 1.0), ("red circle", 1.1)]),
        ("a red) circle", 5, ["closing ')'", "kept as text"], [("a red) circle", 1.0)]),
        ("a [red circle", 2, ["unclosed '['"], [("a ", 1.0), ("red circle", 1 / 1.1)]),
        ("a (red:x) circle", 6, ["':' not followed by a number"], [("a ", 1.0), ("red:x", 1.1), (" circle", 1.0)]),
    ],
)
def test_automatic1111_leniency_warns_with_the_position(text: str, position: int, words: list[str], expected: list):
    """Where AUTOMATIC1111 is lenient we are too (its prompts must still run), but say so, with the position."""
    with pytest.warns(UserWarning) as caught:
        pieces = prompts.parse_emphasis(text)
    message = str(caught[0].message)
    assert f"prompt position {position}:" in message and all(w in message for w in words)
    assert [t for t, _ in pieces] == [t for t, _ in expected]
    assert np.allclose([w for _, w in pieces], [w for _, w in expected])


@pytest.mark.parametrize("weight", ["-1", "10.5", "100", "1.2.3", "."])
def test_bad_weights_are_refused_naming_the_position(weight: str):
    with pytest.raises(ValueError, match="prompt position 6: weight"):
        prompts.parse_emphasis(f"a (red:{weight}) circle")


def test_chunks_of_75_tokens_wrapped_in_start_and_end(tokenizer):
    a = tokenizer("a", add_special_tokens=False).input_ids[0]
    start, end = tokenizer.bos_token_id, tokenizer.eos_token_id
    chunks = prompts.chunk(tokenizer, "a " * 80)
    assert chunks.ids.shape == chunks.weights.shape == (2, 77)
    assert chunks.ids[0].tolist() == [start] + [a] * 75 + [end]
    assert chunks.ids[1].tolist() == [start] + [a] * 5 + [end] * 71
    assert bool((chunks.weights == 1.0).all())


def test_a_full_chunk_is_cut_after_its_last_comma(tokenizer):
    a, comma, b = (tokenizer(w, add_special_tokens=False).input_ids[0] for w in ("a", ",", "b"))
    chunks = prompts.chunk(tokenizer, "a " * 70 + ", " + "b " * 10)
    assert chunks.ids.shape == (2, 77)
    assert chunks.ids[0, 1:73].tolist() == [a] * 70 + [comma, tokenizer.eos_token_id]
    assert chunks.ids[1, 1:12].tolist() == [b] * 10 + [tokenizer.eos_token_id]


def test_break_starts_a_chunk_and_weights_follow_their_tokens(tokenizer):
    chunks = prompts.chunk(tokenizer, "a (red:1.5) circle BREAK [blue] square")
    assert chunks.ids.shape == (2, 77)
    red, blue = (tokenizer(w, add_special_tokens=False).input_ids[0] for w in ("red", "blue"))
    assert chunks.ids[0, 2] == red and chunks.weights[0, 2] == pytest.approx(1.5)
    assert chunks.ids[1, 1] == blue and chunks.weights[1, 1] == pytest.approx(1 / 1.1)
    assert chunks.weights[0].tolist().count(1.0) == 76 and chunks.weights[1].tolist().count(1.0) == 76


def test_weighted_embedding_by_hand():
    """Scale each token's output vector by its weight, then restore the chunk's mean: AUTOMATIC1111's rule (the
    bundled model's trained text encoder, whose embeddings have a mean to restore)."""
    from helpers.models import load_components

    bundled = load_components("bundled", device="cpu", dtype=torch.float32)
    chunks = prompts.chunk(bundled.tokenizer, "a (red:1.5) [circle] " + "on the left, " * 30)
    with torch.no_grad():
        z = bundled.text_encoder(chunks.ids).last_hidden_state
    weighted = z * chunks.weights.unsqueeze(-1)
    original, new = z.mean(dim=(1, 2), keepdim=True), weighted.mean(dim=(1, 2), keepdim=True)
    level = prompts.MEAN_FLOOR * weighted.abs().mean(dim=(1, 2), keepdim=True)
    assert ((original.abs() > level) & (new.abs() > level)).all()  # a mean to restore, in every chunk
    expected = (weighted * (original / new)).reshape(1, -1, z.shape[-1])
    got = prompts.encode_chunks(bundled.text_encoder, chunks)
    assert got.shape == (1, 77 * len(chunks.ids), bundled.text_encoder.config.hidden_size)
    assert torch.equal(got, expected)


def test_negative_prompt_is_padded_to_the_prompts_chunks(tiny: Components):
    long_prompt = "a red circle, " * 30  # 120 tokens: two chunks
    embeds = prompt_embeddings(tiny, [long_prompt], [""], 1, guided=True)
    assert embeds.shape == (2, 154, tiny.text_encoder.config.hidden_size)
    empty = prompts.encode_chunks(tiny.text_encoder, prompts.chunk(tiny.tokenizer, ""))
    assert torch.equal(embeds[0, 77:], empty[0])  # the negative's second chunk is the empty prompt's


def test_plain_prompts_take_diffusers_path(tiny: Components, tokenizer):
    assert prompts.is_plain(tokenizer, "a red circle on the left")
    assert not prompts.is_plain(tokenizer, "a (red) circle")
    assert not prompts.is_plain(tokenizer, r"a \(red\) circle")
    assert not prompts.is_plain(tokenizer, "a red circle, " * 30)
    kwargs = dict(prompt="a red circle, on the left", num_inference_steps=3, seed=0, scheduler="euler")
    with_weighting = generate(tiny, **kwargs).pixels
    pipe = diffusers_pipeline(tiny, "euler")
    theirs = pipe(kwargs["prompt"], num_inference_steps=3, generator=make_generator(0), output_type="np").images
    assert np.abs(with_weighting - theirs).max() == 0


def test_without_weighting_long_prompts_are_cut_exactly_as_diffusers_cuts_them(tiny: Components):
    long_prompt = "a red circle, " * 30
    kwargs = dict(num_inference_steps=3, seed=0, scheduler="ddim")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        ours = generate(tiny, long_prompt, prompt_weighting=False, **kwargs).pixels
        theirs = diffusers_pipeline(tiny, "ddim")(
            long_prompt, num_inference_steps=3, generator=make_generator(0), output_type="np"
        ).images
    assert np.abs(ours - theirs).max() == 0
    chunked = generate(tiny, long_prompt, **kwargs).pixels  # with weighting the second chunk counts
    assert np.abs(chunked - ours).max() > 0


def test_emphasis_changes_the_picture_and_a_bad_weight_stops_before_model_work(tiny: Components):
    kwargs = dict(num_inference_steps=2, seed=0, scheduler="ddim")
    plain = generate(tiny, "a red circle", **kwargs).pixels
    assert np.abs(generate(tiny, "a (red:1.5) circle", **kwargs).pixels - plain).max() > 0
    calls = []
    hook = tiny.text_encoder.register_forward_hook(lambda *args: calls.append(1))
    try:
        with pytest.raises(ValueError, match="prompt position 6: weight 20"):
            generate(tiny, "a (red:20) circle", **kwargs)
    finally:
        hook.remove()
    assert calls == []
    with pytest.raises(TypeError, match="prompt_weighting must be True or False"):
        generate(tiny, "a red circle", prompt_weighting="yes", **kwargs)


def test_a_centred_embedding_keeps_its_weights_instead_of_dividing_by_zero(tokenizer):
    """AUTOMATIC1111's mean restore divides by the weighted mean; an embedding centred on 0 (a text encoder with
    random weights, like SD v1.5's architecture in `make test-sd15`) made that inf. Such a chunk keeps the weights."""

    class Centred(torch.nn.Module):
        device, dtype = torch.device("cpu"), torch.float32

        def forward(self, ids):
            z = torch.randn(ids.shape[0], ids.shape[1], 8, generator=torch.Generator().manual_seed(0))
            return type("Out", (), {"last_hidden_state": z - z.mean()})()

    chunks = prompts.chunk(tokenizer, "a (purple:1.2) circle")
    got = prompts.encode_chunks(Centred(), chunks)
    z = Centred()(chunks.ids).last_hidden_state
    assert torch.isfinite(got).all()
    assert torch.equal(got, (z * chunks.weights.unsqueeze(-1)).reshape(1, -1, 8))
