"""Derive CLIP's BPE tokenizer files (vocab.json, merges.txt) from OpenAI's merge list.

The source, ``bpe_simple_vocab_16e6.txt.gz`` (MIT, see models/clip-tokenizer/LICENSE-open_clip),
ships inside the open-clip-torch wheel. Fetch it without its heavy dependencies, then run:

    pip download --no-deps open-clip-torch==3.3.0 -d /tmp/oc
    python tools/derive_clip_tokenizer.py /tmp/oc/open_clip_torch-3.3.0-py3-none-any.whl

The result tokenizes every prompt exactly as Stable Diffusion v1.5's tokenizer does.
"""

from __future__ import annotations

import argparse
import gzip
import json
import zipfile
from pathlib import Path

NUM_MERGES = 49152 - 256 - 2  # open_clip keeps lines 1 .. 48,894 of the file
OUT_DIR = Path(__file__).resolve().parent.parent / "models" / "clip-tokenizer"
TOKENIZER_CONFIG = {
    "tokenizer_class": "CLIPTokenizer",
    "model_max_length": 77,
    "do_lower_case": True,
    "bos_token": "<|startoftext|>",
    "eos_token": "<|endoftext|>",
    "pad_token": "<|endoftext|>",
    "unk_token": "<|endoftext|>",
    "add_prefix_space": False,
    "errors": "replace",
}


def bytes_to_unicode() -> dict[int, str]:
    """GPT-2/CLIP's reversible map from the 256 byte values to printable unicode characters."""
    bs = list(range(ord("!"), ord("~") + 1)) + list(range(ord("¡"), ord("¬") + 1))
    bs += list(range(ord("®"), ord("ÿ") + 1))
    cs = bs[:]
    n = 0
    for b in range(256):
        if b not in bs:
            bs.append(b)
            cs.append(256 + n)
            n += 1
    return dict(zip(bs, (chr(c) for c in cs)))


def read_merge_lines(source: Path) -> list[str]:
    """The merge lines from a .txt.gz file or from the open-clip-torch wheel that holds it."""
    if source.suffix == ".whl":
        with zipfile.ZipFile(source) as wheel:
            raw = wheel.read("open_clip/bpe_simple_vocab_16e6.txt.gz")
    else:
        raw = source.read_bytes()
    lines = gzip.decompress(raw).decode("utf-8").split("\n")
    return lines[1 : NUM_MERGES + 1]


def build_vocab(merges: list[str]) -> dict[str, int]:
    """Byte symbols, the same with </w>, each merge joined, then the two special tokens."""
    symbols = list(bytes_to_unicode().values())
    tokens = symbols + [s + "</w>" for s in symbols] + ["".join(m.split()) for m in merges]
    tokens += ["<|startoftext|>", "<|endoftext|>"]
    return {tok: i for i, tok in enumerate(tokens)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("source", type=Path, help="open-clip-torch wheel or bpe_simple_vocab_16e6.txt.gz")
    parser.add_argument("--out", type=Path, default=OUT_DIR)
    args = parser.parse_args()

    merges = read_merge_lines(args.source)
    vocab = build_vocab(merges)
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "vocab.json").write_text(json.dumps(vocab, ensure_ascii=False), encoding="utf-8")
    (args.out / "merges.txt").write_text("#version: 0.2\n" + "\n".join(merges) + "\n", encoding="utf-8")
    (args.out / "tokenizer_config.json").write_text(json.dumps(TOKENIZER_CONFIG, indent=2) + "\n")
    print(f"wrote {len(vocab)} tokens and {len(merges)} merges to {args.out}")


if __name__ == "__main__":
    main()
