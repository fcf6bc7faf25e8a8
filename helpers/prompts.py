"""Prompts the way people write them: longer than 77 tokens, and with AUTOMATIC1111's emphasis syntax.

Emphasis (AUTOMATIC1111's `parse_prompt_attention`, reimplemented here):
    (word)      weight x 1.1 per pair of round brackets, nested: ((word)) = 1.21
    [word]      weight / 1.1 per pair of square brackets
    (word:1.3)  weight x 1.3 (the number replaces the 1.1 of its brackets)
    \\( \\) \\[ \\]  literal brackets
    BREAK       start a new chunk of 75 tokens here
Each weight multiplies that token's vector in the text encoder's *output*; then the whole embedding is rescaled so
its mean is what it was before weighting (AUTOMATIC1111 does this to avoid artefacts).

Long prompts (AUTOMATIC1111's chunking): the tokens are cut into chunks of 75 (at the last comma within the last
20 tokens when a chunk fills, as AUTOMATIC1111 does by default), each chunk is wrapped in start and end tokens and
padded to 77, encoded on its own, and the chunks' embeddings are concatenated along the sequence axis: a prompt of
k chunks gives (77 * k, hidden). Every prompt and negative prompt of a batch is padded with empty chunks to the
same k, so the U-Net's cross-attention sees one sequence length.

Choices where AUTOMATIC1111 is lenient (so that its prompts, and its PNGs, still run here): an unclosed bracket
applies to the rest of the prompt, a stray closing bracket and a weight that is not a number are kept as text;
each of these warns and names its position. A weight below 0 or above MAX_WEIGHT is refused (a ValueError naming
its position): it cannot mean what its writer intended.

`compel`, the library diffusers' docs used to recommend, parses another syntax ("word++", "(word)1.1") and
weights differently (it blends towards the embedding without the word; its author says it was written without
reference to AUTOMATIC1111's code), so it cannot reproduce AUTOMATIC1111's prompts; hence this module.
"""

from __future__ import annotations

import re
import warnings
from dataclasses import dataclass

import torch

ROUND, SQUARE = 1.1, 1 / 1.1
MAX_WEIGHT = 10.0
CHUNK = 75  # tokens per chunk, between the start and end tokens
COMMA_BACKTRACK = 20  # a full chunk is cut at a comma among its last 20 tokens, if there is one
MEAN_FLOOR = 1e-4  # a chunk's mean below this share of its mean magnitude counts as zero (nothing to restore)
ATTENTION = re.compile(
    r"""
    \\\(|\\\)|\\\[|\\\]|\\\\|\\|   # escaped brackets and backslashes
    \(|\[|                         # opening brackets
    :\s*([+-]?[.\d]+)\s*\)|        # a weight closing round brackets
    \)|\]|                         # closing brackets
    [^\\()\[\]:]+|                 # plain text
    :                              # a colon that is not a weight
    """,
    re.X,
)
BREAK = re.compile(r"\s*\bBREAK\b\s*", re.S)


def parse_emphasis(text: str) -> list[tuple[str, float]]:
    """The prompt as (text, weight) pieces; "BREAK" pieces have weight -1. Mirrors AUTOMATIC1111's parser."""
    pieces: list[list] = []
    round_open: list[tuple[int, int]] = []  # (index into pieces, position in text)
    square_open: list[tuple[int, int]] = []

    def multiply(start: int, factor: float) -> None:
        for piece in pieces[start:]:
            piece[1] *= factor

    for m in ATTENTION.finditer(text):
        token, weight, where = m.group(0), m.group(1), m.start()
        if token.startswith("\\"):
            pieces.append([token[1:], 1.0])
        elif token == "(":
            round_open.append((len(pieces), where))
        elif token == "[":
            square_open.append((len(pieces), where))
        elif weight is not None and round_open:
            value = _weight(weight, text, where)
            multiply(round_open.pop()[0], value)
        elif token == ")" and round_open:
            multiply(round_open.pop()[0], ROUND)
        elif token == "]" and square_open:
            multiply(square_open.pop()[0], SQUARE)
        else:
            if token in (")", "]") or (weight is not None and not round_open):
                _lenient(f"a closing {token.strip()[-1]!r} with no opening bracket is kept as text", text, where)
            elif token == ":" and round_open:
                _lenient("a ':' not followed by a number and ')' is kept as text", text, where)
            for i, part in enumerate(BREAK.split(token)):
                if i > 0:
                    pieces.append(["BREAK", -1.0])
                pieces.append([part, 1.0])
    for start, where in round_open:
        _lenient("an unclosed '(' weights the rest of the prompt by 1.1", text, where)
        multiply(start, ROUND)
    for start, where in square_open:
        _lenient("an unclosed '[' weights the rest of the prompt by 1/1.1", text, where)
        multiply(start, SQUARE)
    merged: list[list] = []
    for piece in pieces or [["", 1.0]]:
        if merged and merged[-1][1] == piece[1] and piece[1] != -1:
            merged[-1][0] += piece[0]
        else:
            merged.append(piece)
    return [(t, w) for t, w in merged]


def _weight(number: str, text: str, where: int) -> float:
    try:
        value = float(number)
    except ValueError:
        raise ValueError(f"prompt position {where}: weight {number!r} is not a number: {text!r}") from None
    if not 0 <= value <= MAX_WEIGHT:
        raise ValueError(
            f"prompt position {where}: weight {value:g} is outside 0 .. {MAX_WEIGHT:g} "
            f"(1 is neutral, 1.1 to 1.5 is usual): {text!r}"
        )
    return value


def _lenient(what: str, text: str, where: int) -> None:
    warnings.warn(f"prompt position {where}: {what}, as AUTOMATIC1111 does: {text!r}", stacklevel=4)


def weighted_tokens(tokenizer, text: str) -> tuple[list[int], list[float]]:
    """Token ids (no start or end token) and one weight per token; BREAK becomes the id -1."""
    ids: list[int] = []
    weights: list[float] = []
    for piece, weight in parse_emphasis(text):
        if weight == -1:
            ids.append(-1)
            weights.append(1.0)
            continue
        piece_ids = tokenizer(piece, add_special_tokens=False, verbose=False).input_ids
        ids += piece_ids
        weights += [weight] * len(piece_ids)
    return ids, weights


@dataclass
class Chunks:
    """A prompt cut into chunks of model_max_length ids, with a weight for each id."""

    ids: torch.Tensor  # (chunks, model_max_length), start and end tokens included
    weights: torch.Tensor  # (chunks, model_max_length), 1.0 for the start, end and padding tokens


def chunk(tokenizer, text: str) -> Chunks:
    """AUTOMATIC1111's chunks of 75 tokens: cut at BREAK, and at the last comma when a chunk fills."""
    ids, weights = weighted_tokens(tokenizer, text)
    comma = tokenizer(",", add_special_tokens=False).input_ids[0]
    rows: list[tuple[list[int], list[float]]] = []
    current: tuple[list[int], list[float]] = ([], [])
    last_comma = -1

    def close(cut: int | None = None) -> None:
        nonlocal current, last_comma
        cut = len(current[0]) if cut is None else cut
        rows.append((current[0][:cut], current[1][:cut]))
        current = (current[0][cut:], current[1][cut:])
        last_comma = -1

    for token, weight in zip(ids, weights):
        if token == -1:
            close()
            continue
        if token == comma:
            last_comma = len(current[0])
        elif len(current[0]) == CHUNK and last_comma != -1 and len(current[0]) - last_comma <= COMMA_BACKTRACK:
            close(last_comma + 1)
        if len(current[0]) == CHUNK:
            close()
        current[0].append(token)
        current[1].append(weight)
    if current[0] or not rows:
        close()
    start, end = tokenizer.bos_token_id, tokenizer.eos_token_id
    padded_ids, padded_weights = [], []
    for row_ids, row_weights in rows:
        pad = CHUNK - len(row_ids)
        padded_ids.append([start, *row_ids, *[end] * (pad + 1)])
        padded_weights.append([1.0, *row_weights, *[1.0] * (pad + 1)])
    return Chunks(torch.tensor(padded_ids), torch.tensor(padded_weights))


def is_plain(tokenizer, text: str) -> bool:
    """True when the prompt has no emphasis, escapes or BREAK and fits in one chunk: it then encodes as diffusers."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # chunk() warns about the same text if it is used
        pieces = parse_emphasis(text)
    return pieces == [(text, 1.0)] and len(tokenizer(text, add_special_tokens=False, verbose=False).input_ids) <= CHUNK


def pad_chunks(chunks: Chunks, count: int, tokenizer) -> Chunks:
    """Add empty chunks (a start token, then end tokens) until there are `count`, as AUTOMATIC1111 pads."""
    missing = count - len(chunks.ids)
    if missing <= 0:
        return chunks
    empty = chunk(tokenizer, "")
    ids = torch.cat([chunks.ids, empty.ids.repeat(missing, 1)])
    return Chunks(ids, torch.cat([chunks.weights, empty.weights.repeat(missing, 1)]))


@torch.no_grad()
def encode_chunks(text_encoder, chunks: Chunks) -> torch.Tensor:
    """Encode each chunk, weight each token's vector, restore each chunk's mean, concatenate: (1, 77 * k, hidden).

    AUTOMATIC1111 takes the mean over the batch of prompts for each chunk; for one prompt that is this.
    """
    device = text_encoder.device
    z = text_encoder(chunks.ids.to(device)).last_hidden_state  # (k, 77, hidden)
    if not bool((chunks.weights == 1.0).all()):
        original_mean = z.mean(dim=(1, 2), keepdim=True)
        z = z * chunks.weights.to(device, z.dtype).unsqueeze(-1)
        new_mean = z.mean(dim=(1, 2), keepdim=True)
        # A mean that is numerically zero (an embedding centred on 0, e.g. from a text encoder with random
        # weights) has no level to restore: dividing by it would give inf. Such a chunk keeps the weights alone.
        level = MEAN_FLOOR * z.abs().mean(dim=(1, 2), keepdim=True)
        restorable = (original_mean.abs() > level) & (new_mean.abs() > level)
        z = torch.where(restorable, z * (original_mean / torch.where(restorable, new_mean, 1.0)), z)
    return z.reshape(1, -1, z.shape[-1]).to(text_encoder.dtype)


def encode_weighted(tokenizer, text_encoder, groups: list[list[str]]) -> list[torch.Tensor]:
    """Each group of prompts (e.g. the prompts and their negatives) encoded to (len(group), 77 * k, hidden), with one
    k for all groups: every text is parsed and chunked first (so a bad weight fails before any encoding), then padded
    with empty chunks to the longest."""
    chunked = [[chunk(tokenizer, text) for text in group] for group in groups]
    count = max(len(c.ids) for group in chunked for c in group)
    return [
        torch.cat([encode_chunks(text_encoder, pad_chunks(c, count, tokenizer)) for c in group]) for group in chunked
    ]
