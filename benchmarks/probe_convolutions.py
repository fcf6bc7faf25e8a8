"""oneDNN's convolutions against PyTorch's own, on the CPU: at the bundled model's sizes and at SD v1.5's.

Times single 3x3 and 1x1 convolutions (batch 2, as under guidance) in both memory layouts, oneDNN on and off
(`torch.backends.mkldnn.enabled`), then one whole U-Net call at batch 2 each way: the bundled model's, and with
--sd15 SD v1.5's (random weights, 64x64 latents; about a minute). Backs the `onednn` option of
helpers.speed.apply_fast_path.

    python -m benchmarks.probe_convolutions
    python -m benchmarks.probe_convolutions --sd15
"""

from __future__ import annotations

import argparse

import torch

from benchmarks.timing import median_seconds
from helpers.models import load_components
from helpers.reference import sd15_architecture

# (in channels, out channels, kernel, latent side): the bundled U-Net's, then SD v1.5's
SHAPES = [(48, 48, 3, 8), (96, 96, 3, 4), (96, 96, 1, 8), (320, 320, 3, 64), (640, 640, 3, 32), (1280, 1280, 3, 8)]
LAYOUTS = {"contiguous": torch.contiguous_format, "channels_last": torch.channels_last}


def median_ms(module: torch.nn.Module, args: tuple[torch.Tensor, ...], repeats: int) -> float:
    module(*args)  # warm-up
    return 1000 * median_seconds(lambda: module(*args), repeats)


def each_way(module: torch.nn.Module, inputs: tuple[torch.Tensor, ...], repeats: int) -> str:
    """Milliseconds per call, oneDNN on and off, in each memory layout."""
    cells = []
    for layout, fmt in LAYOUTS.items():
        module.to(memory_format=fmt)
        args = tuple(a.to(memory_format=fmt) if a.dim() == 4 else a for a in inputs)
        for onednn in (True, False):
            torch.backends.mkldnn.enabled = onednn
            cells.append(f"{layout}, oneDNN {'on' if onednn else 'off'} {median_ms(module, args, repeats):.2f}")
    torch.backends.mkldnn.enabled = True
    return " | ".join(cells)


@torch.inference_mode()
def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--sd15", action="store_true", help="also one SD v1.5 U-Net call each way (about a minute)")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    print(f"torch {torch.__version__}, {args.threads} threads; milliseconds per call (median)")
    for cin, cout, k, side in SHAPES:
        conv = torch.nn.Conv2d(cin, cout, k, padding=k // 2).eval()
        repeats = 200 if side * cin < 2000 else 5
        timing = each_way(conv, (torch.randn(2, cin, side, side),), repeats)
        print(f"conv {cin}->{cout} {k}x{k} at {side}x{side}: {timing}")
    unets = {"bundled U-Net": load_components("bundled", device="cpu", dtype=torch.float32).unet}
    if args.sd15:
        unets["SD v1.5 U-Net"] = sd15_architecture("cpu")[1].eval()
    for name, unet in unets.items():
        c, side, width = unet.config.in_channels, unet.config.sample_size, unet.config.cross_attention_dim
        inputs = (torch.randn(2, c, side, side), torch.tensor(500), torch.randn(2, 77, width))
        print(f"{name}, batch 2: {each_way(unet, inputs, 20 if side <= 8 else 2)}")


if __name__ == "__main__":
    main()
