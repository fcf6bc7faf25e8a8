"""Does torch.compile train the bundled U-Net correctly on this CPU? One backward pass's gradients, eager against
each compile backend.

`make train` could run its U-Net compiled (`torch.compile`, Inductor), and on the CPU a compiled training step took
0.84 times the eager one's time (toy/EXPERIMENTS.md, T). Before a speed counts, the step must compute the same
gradients: this builds the recipe's U-Net from one seed, runs the recipe's loss forward and backward on fixed inputs
eagerly and through each backend, and prints each backend's loss difference, the relative difference of all the
gradients together, and the parameters whose gradients differ most. Writes a JSON file.

    python -m benchmarks.check_compile_gradients                  # the recipe's U-Net; eager, aot_eager, inductor
    python -m benchmarks.check_compile_gradients --smoke --backends aot_eager --out /tmp/g.json   # (tests)
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import torch
import torch.nn.functional as F
from diffusers.models.attention_processor import AttnProcessor

from toy import train, world

HERE = Path(__file__).resolve().parent
BACKENDS = ("eager", "aot_eager", "inductor")  # eager: Dynamo's graph run as is; aot_eager adds AOTAutograd's


def gradients(unet: torch.nn.Module, forward, inputs: tuple[torch.Tensor, ...]) -> tuple[float, dict]:
    """The recipe's loss (MSE against the noise) and every parameter's gradient, after one backward pass."""
    noisy, t, encoder_states, noise = inputs
    unet.zero_grad(set_to_none=True)
    loss = F.mse_loss(forward(noisy, t, encoder_states).sample, noise)
    loss.backward()
    return loss.item(), {name: p.grad.detach().clone() for name, p in unet.named_parameters()}


def compare(eager: dict, other: dict, worst: int = 5) -> dict:
    """The relative difference of all gradients together, and of the `worst` parameters that differ most."""
    flat = torch.cat([g.flatten() for g in eager.values()])
    diff = torch.cat([(other[name] - g).flatten() for name, g in eager.items()])
    per_parameter = {name: ((other[name] - g).norm() / g.norm().clamp(min=1e-30)).item() for name, g in eager.items()}
    ranked = sorted(per_parameter.items(), key=lambda item: -item[1])
    return {
        "relative_difference": (diff.norm() / flat.norm()).item(),
        "parameters_off_by_1e-3": sum(value > 1e-3 for value in per_parameter.values()),
        "parameters": len(per_parameter),
        "zero_gradients_where_eager_has_some": sum(
            bool(other[name].abs().max() == 0 and g.abs().max() > 0) for name, g in eager.items()
        ),
        "worst": dict(ranked[:worst]),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--backends", default=",".join(BACKENDS), help=f"comma-separated, of {','.join(BACKENDS)}")
    parser.add_argument("--smoke", action="store_true", help="the smoke config's tiny U-Net")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--out", type=Path, default=HERE / "compile_gradients.json")
    args = parser.parse_args()
    backends = args.backends.split(",")
    if not backends or not set(backends) <= set(BACKENDS):
        parser.error(f"--backends must be a comma-separated subset of {','.join(BACKENDS)}, got {args.backends!r}")
    torch.set_num_threads(args.threads)
    cfg = train.SMOKE if args.smoke else train.Config()
    latent_size = world.IMAGE_SIZE // 2 ** (len(cfg.vae_channels) - 1)
    torch.manual_seed(0)
    unet = train.build_unet(cfg, latent_size).train()
    unet.set_attn_processor(AttnProcessor())  # as toy.train trains it
    shape = (cfg.unet_batch, unet.config.in_channels, latent_size, latent_size)
    gen = torch.Generator().manual_seed(0)
    inputs = (
        torch.randn(shape, generator=gen),
        torch.randint(0, 1000, (cfg.unet_batch,), generator=gen),
        torch.randn((cfg.unet_batch, 77, cfg.text_hidden), generator=gen),
        torch.randn(shape, generator=gen),
    )
    eager_loss, eager = gradients(unet, unet, inputs)
    results = {
        "command": "python -m benchmarks.check_compile_gradients "
        + " ".join([f"--backends {args.backends}", f"--threads {args.threads}", *(["--smoke"] if args.smoke else [])]),
        "torch": torch.__version__,
        "backends": {},
    }
    for backend in backends:
        torch._dynamo.reset()
        loss, grads = gradients(unet, torch.compile(unet, backend=backend), inputs)
        row = {"loss_difference": abs(loss - eager_loss), **compare(eager, grads)}
        results["backends"][backend] = row
        print(
            f"{backend}: loss difference {row['loss_difference']:.1e}, gradients' relative difference "
            f"{row['relative_difference']:.2e}; {row['parameters_off_by_1e-3']} of {row['parameters']} parameters off "
            f"by more than 1e-3, {row['zero_gradients_where_eager_has_some']} with zero gradients where eager has some"
        )
    args.out.write_text(json.dumps(results, indent=2) + "\n")
    print(f"written: {args.out}")


if __name__ == "__main__":
    main()
