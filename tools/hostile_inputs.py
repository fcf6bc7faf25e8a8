"""Try the project as a hostile user would, and count the cases that behave.

    python tools/hostile_inputs.py            # prints one line per case and the count; exits 1 if any misbehaves

A case *behaves* when a bad input is refused with the expected exception type, whose message names what was wrong
(the word each case lists), before any model work (NaN pixels from an overflowing guidance scale can only be seen
after the run, so that one is refused then); or when a good-but-unusual input gives a finite picture. The
networks of the bundled model are wrapped so that any call during a refused case counts as model work done too early.
"""

from __future__ import annotations

import json
import sys
import tempfile
import warnings
from collections.abc import Callable
from pathlib import Path

import numpy as np
import torch

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from helpers import batch, pnginfo, prompts  # noqa: E402
from helpers.models import ModelSourceError, load_components  # noqa: E402
from helpers.sampling import generate, img2img  # noqa: E402

GOOD = dict(prompt="a red circle", num_inference_steps=2, seed=0, scheduler="ddim")


class Calls:
    """Counts forward calls of the networks."""

    def __init__(self, components) -> None:
        self.count = 0
        for module in (components.text_encoder, components.unet, components.vae):
            module.register_forward_pre_hook(self.hook)

    def hook(self, *args) -> None:
        self.count += 1


def refused(run: Callable[[], object], error: type, words: list[str], calls: Calls | None) -> tuple[bool, str]:
    before = calls.count if calls else 0
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            run()
    except error as err:
        message = str(err)
        missing = [w for w in words if w not in message]
        early = calls is None or calls.count == before
        ok = not missing and early
        why = f"{type(err).__name__}: {message[:90]}" + ("" if early else " (after model work)")
        return ok, why + (f" (missing {missing})" if missing else "")
    except Exception as err:  # noqa: BLE001 - any other exception is a misbehaviour, reported
        return False, f"wrong exception {type(err).__name__}: {str(err)[:90]}"
    return False, "no error"


def finite(run: Callable[[], object]) -> tuple[bool, str]:
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            out = run()
    except Exception as err:  # noqa: BLE001
        return False, f"{type(err).__name__}: {str(err)[:90]}"
    return bool(np.isfinite(out.pixels).all()), f"finite picture {out.pixels.shape}"


def main() -> int:
    torch.set_num_threads(2)
    components = load_components("bundled", device="cpu", dtype=torch.float32)
    calls = Calls(components)
    picture = np.full((64, 64, 3), 128, np.uint8)
    bad_generate = [
        (dict(prompt=42), TypeError, ["prompt"]),
        (dict(prompt=["ok", 3]), TypeError, ["prompt"]),
        (dict(prompt=[]), ValueError, ["prompt"]),
        (dict(prompt=None), TypeError, ["prompt"]),
        (dict(negative_prompt=5), TypeError, ["negative_prompt"]),
        (dict(prompt=["a", "b"], negative_prompt=["x"]), ValueError, ["negative_prompt"]),
        (dict(height=60), ValueError, ["height"]),
        (dict(width=0), ValueError, ["width"]),
        (dict(width=-64), ValueError, ["width"]),
        (dict(width=64.0), TypeError, ["width"]),
        (dict(height="64"), TypeError, ["height"]),
        (dict(height=True), TypeError, ["height"]),
        (dict(height=2**20, width=2**20), ValueError, ["height"]),
        (dict(num_inference_steps=0), ValueError, ["num_inference_steps"]),
        (dict(num_inference_steps=1000), ValueError, ["num_inference_steps"]),
        (dict(num_inference_steps=1001, scheduler="pndm"), ValueError, ["num_inference_steps"]),
        (dict(num_inference_steps=1000, scheduler="dpm++"), ValueError, ["num_inference_steps"]),
        (dict(num_inference_steps=1000, scheduler="unipc"), ValueError, ["num_inference_steps"]),
        (dict(num_inference_steps=2.5), TypeError, ["num_inference_steps"]),
        (dict(num_inference_steps="20"), TypeError, ["num_inference_steps"]),
        (dict(guidance_scale=float("nan")), ValueError, ["guidance_scale"]),
        (dict(guidance_scale=float("inf")), ValueError, ["guidance_scale"]),
        (dict(guidance_scale=-1.0), ValueError, ["guidance_scale"]),
        (dict(guidance_scale="7.5"), TypeError, ["guidance_scale"]),
        (dict(guidance_scale=None), TypeError, ["guidance_scale"]),
        (dict(num_images_per_prompt=0), ValueError, ["num_images_per_prompt"]),
        (dict(num_images_per_prompt=10**9), ValueError, ["num_images_per_prompt"]),
        (dict(num_images_per_prompt=2.0), TypeError, ["num_images_per_prompt"]),
        (dict(seed=-1), ValueError, ["seed"]),
        (dict(seed=2**64), ValueError, ["seed"]),
        (dict(seed="42"), TypeError, ["seed"]),
        (dict(seed=1.5), TypeError, ["seed"]),
        (dict(seed=True), TypeError, ["seed"]),
        (dict(generator=torch.Generator().manual_seed(1)), ValueError, ["seed or generator"]),
        (dict(seed=None, generator=7), TypeError, ["generator"]),
        (dict(scheduler="karras"), ValueError, ["scheduler"]),
        (dict(scheduler=["pndm"]), TypeError, ["scheduler"]),
        (dict(scheduler=None), TypeError, ["scheduler"]),
        (dict(callback=5), TypeError, ["callback"]),
        (dict(prompt_weighting="yes"), TypeError, ["prompt_weighting"]),
        (dict(prompt="a (red:-1) circle"), ValueError, ["prompt position"]),
        (dict(prompt="a (red:50) circle"), ValueError, ["prompt position"]),
        (dict(prompt="a (red:1.2.3) circle"), ValueError, ["prompt position"]),
    ]
    good_generate = [
        dict(guidance_scale=np.float32(7.5)),
        dict(guidance_scale=np.int64(7)),
        dict(seed=np.int64(3)),
        dict(seed=2**64 - 1),
        dict(height=np.int32(64), width=np.int64(48)),
        dict(num_inference_steps=np.int64(3)),
        dict(prompt="a red circle, " * 40),
        dict(prompt="a ((red)) [circle] BREAK on a white background"),
        dict(prompt="a (red circle"),
        dict(prompt=""),
        dict(guidance_scale=0.0),
        dict(prompt="a red circle", negative_prompt="a red circle, " * 40),
    ]
    cases: list[tuple[str, Callable[[], tuple[bool, str]]]] = []

    def bad(name: str, run: Callable[[], object], error: type, words: list[str], model: bool = False) -> None:
        cases.append((name, lambda: refused(run, error, words, calls if model else None)))

    for change, error, words in bad_generate:
        args = {**GOOD, **change}
        bad(f"generate {change}", lambda a=args: generate(components, **a), error, words, model=True)
    overflow = {**GOOD, "guidance_scale": 1e30}  # NaN pixels can only be seen after the run: refused then
    bad("generate {'guidance_scale': 1e30}", lambda: generate(components, **overflow), FloatingPointError, ["guidance"])
    for change in good_generate:
        args = {**GOOD, **change}
        cases.append((f"generate {change}", lambda a=args: finite(lambda: generate(components, **a))))
    for strength in (-0.1, 1.5, float("nan"), "0.5"):
        error = TypeError if isinstance(strength, str) else ValueError
        run = lambda s=strength: img2img(components, picture, "a red circle", s, num_inference_steps=2)  # noqa: E731
        bad(f"img2img strength={strength!r}", run, error, ["strength"], model=True)
    cases.append(("img2img strength=0.5", lambda: finite(lambda: img2img(components, picture, "a red circle", 0.5))))
    bad_text = [
        ("a red circle\nSteps: 20, Sampler: Euler, Size: 64x64", ["'Seed'"]),
        ("a red circle\nSteps: 20, Sampler: Euler, Seed: 1, Size: abc", ["'Size'"]),
        ("a red circle\nSteps: twenty, Sampler: Euler, Seed: 1", ["'Steps'"]),
        ("a red circle\nSteps: 20, Sampler: Euler, Seed: 1, Size: 64x64x3", ["'Size'"]),
        ("a red circle\nSteps: 20, Sampler: Karras, Seed: 1", ["Sampler"]),
        ("a red circle", ["settings line"]),
    ]
    for text, words in bad_text:
        bad(f"parse_parameters {text[-30:]!r}", lambda t=text: pnginfo.parse_parameters(t), ValueError, words)
    tmp = Path(tempfile.mkdtemp())
    (tmp / "bom.txt").write_bytes("\ufeff# c\na red circle\n".encode())
    (tmp / "bad.txt").write_bytes(b"\xff\xfe\n")
    (tmp / "empty.txt").write_text("# nothing\n\n")
    (tmp / "file").write_text("x")
    cases.append(
        ("batch prompts with a BOM", lambda: (batch.read_prompts(tmp / "bom.txt") == ["a red circle"], "read"))
    )
    bad("batch prompts not UTF-8", lambda: batch.read_prompts(tmp / "bad.txt"), ValueError, ["bad.txt", "UTF-8"])
    bad("batch prompts file empty", lambda: batch.read_prompts(tmp / "empty.txt"), ValueError, ["no prompts"])
    for seeds, words in (([0, 0], ["more than once"]), ([-1], ["seed"]), ([2**64], ["seed"])):
        bad(f"batch --seeds {seeds}", lambda s=seeds: batch.check_seeds(s), ValueError, words)
    bad("batch --out is a file", lambda: batch.check_out_folder(tmp / "file"), ValueError, ["--out"])
    bad("load_components(123)", lambda: load_components(123, device="cpu"), TypeError, ["source"])
    missing = tmp / "nowhere"
    bad("load a missing folder", lambda: load_components(missing, device="cpu"), ModelSourceError, ["does not exist"])
    lenient = ("red:x", 1.1)

    def lenient_parse() -> tuple[bool, str]:
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            pieces = prompts.parse_emphasis("a (red:x) circle")
        return pieces[1] == lenient and "position 6" in str(caught[0].message), "kept as text, with a warning"

    cases.append(("prompt weight not a number", lenient_parse))
    behaved = 0
    for name, case in cases:
        ok, why = case()
        behaved += ok
        print(f"{'ok ' if ok else 'BAD'} {name[:70]:70s} {why}")
    summary = {"cases": len(cases), "behaved": behaved}
    print(json.dumps(summary))
    return 0 if behaved == len(cases) else 1


if __name__ == "__main__":
    sys.exit(main())
