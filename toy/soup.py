"""Average the trained weights of runs that share a starting point: a "model soup" (Wortsman et al. 2022).

Two runs of one last training stage that differ only in their seed differ by several points of adherence
(toy/EXPERIMENTS.md, R). Runs fine-tuned from the same weights stay close enough that their average is a model too, and
averaging cancels part of what each seed added by chance. The U-Net's and the text encoder's weights are averaged
(in float32, saved in the runs' own precision); everything else (VAE, tokenizer, scheduler, configs) is the first
run's, and must be the same in every run.

    python -m toy.soup OUT RUN1 RUN2 [RUN3 ...]
"""

from __future__ import annotations

import argparse
import json
import shutil
from pathlib import Path

import torch
from safetensors.torch import load_file, save_file

AVERAGED = ("unet/diffusion_pytorch_model.safetensors", "text_encoder/model.safetensors")
SHARED = ("vae/diffusion_pytorch_model.safetensors", "unet/config.json", "text_encoder/config.json")


def average_state_dicts(states: list[dict[str, torch.Tensor]]) -> dict[str, torch.Tensor]:
    """The element-wise mean of state dicts with the same keys and shapes: in float32, cast to the first's dtypes."""
    if len(states) < 2:
        raise ValueError(f"states: a soup needs at least two, got {len(states)}")
    keys = set(states[0])
    for k, state in enumerate(states[1:], start=1):
        if set(state) != keys:
            raise ValueError(f"states[{k}] has other weights than states[0]: {sorted(set(state) ^ keys)[:5]}")
        for name, tensor in state.items():
            if tensor.shape != states[0][name].shape:
                raise ValueError(f"states[{k}][{name!r}] has shape {tuple(tensor.shape)}, "
                                 f"states[0] {tuple(states[0][name].shape)}")  # fmt: skip
    return {name: (sum(s[name].float() for s in states) / len(states)).to(states[0][name].dtype) for name in states[0]}


def make_soup(runs: list[Path], out: Path) -> None:
    """Write to `out` (a new folder) the first run with its U-Net and text encoder replaced by the average of all."""
    runs = [Path(r) for r in runs]
    if len(runs) < 2:
        raise ValueError(f"runs: a soup needs at least two model folders, got {len(runs)}")
    if Path(out).exists():
        raise ValueError(f"out: {out} exists already; a soup is written to a new folder, so nothing is overwritten")
    for run in runs:
        for name in (*AVERAGED, *SHARED, "training_log.json"):
            if not (run / name).is_file():
                raise ValueError(f"runs: {run} has no {name}; each run must be a model folder that toy.train wrote")
        for name in SHARED:
            if (run / name).read_bytes() != (runs[0] / name).read_bytes():
                raise ValueError(f"runs: {run}'s {name} differs from {runs[0]}'s; a soup needs runs from one start")
    logs = [json.loads((run / "training_log.json").read_text()) for run in runs]
    for run, run_log in zip(runs, logs):
        if run_log["stages"][:-1] != logs[0]["stages"][:-1]:
            raise ValueError(f"runs: {run}'s stages before its last differ from {runs[0]}'s; a soup needs runs from "
                             "one start")  # fmt: skip
    averaged = {name: average_state_dicts([load_file(run / name) for run in runs]) for name in AVERAGED}
    shutil.copytree(runs[0], out)
    for name, state in averaged.items():
        save_file(state, out / name, metadata={"format": "pt"})
    log = logs[0]
    log["soup"] = {"of": [str(run) for run in runs], "last_stages": [run_log["stages"][-1] for run_log in logs]}
    (out / "training_log.json").write_text(json.dumps(log) + "\n")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("out", type=Path, help="the new model folder")
    parser.add_argument("runs", type=Path, nargs="+", help="model folders trained from one starting point")
    args = parser.parse_args()
    try:
        make_soup(args.runs, args.out)
    except ValueError as error:
        parser.error(str(error))
    print(f"the average of {len(args.runs)} runs -> {args.out}")


if __name__ == "__main__":
    main()
