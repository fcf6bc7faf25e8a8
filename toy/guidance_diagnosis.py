"""Why PNDM and K-LMS break at guidance 7.5 with the bundled model: the guided prediction, step by step.

    python -m toy.guidance_diagnosis > toy/guidance_diagnosis.txt

For one prompt and seed, each scheduler at 20 steps: at every U-Net call, the standard deviation of the
unconditional noise prediction, of the gap (text - unconditional), and of the clean latent the guided prediction
implies (x0-hat; the training latents have a standard deviation of about 1). A sampler that stays on course brings
x0-hat's standard deviation down to about 1 and keeps it there.
"""

from __future__ import annotations

import argparse

import torch

from helpers.models import load_components, make_scheduler
from helpers.sampling import Step, encode_text, initial_latents, predicted_x0
from helpers.seeding import make_generator

PROMPT = "a small red circle on the left on a black background"


@torch.no_grad()
def trace(components, name: str, guidance: float, steps: int, seed: int) -> list[tuple[float, float, float, float]]:
    """(timestep, std of the unconditional prediction, std of the gap, std of x0-hat) at every U-Net call."""
    embeds = torch.cat([encode_text(components, [""]), encode_text(components, [PROMPT])])
    sched = make_scheduler(name, components.scheduler_config)
    sched.set_timesteps(steps)
    generator = make_generator(seed)
    x = initial_latents(components, 1, 64, 64, generator, sched.init_noise_sigma)
    rows = []
    for t in sched.timesteps:
        model_input = sched.scale_model_input(torch.cat([x, x]), t)
        uncond, text = components.unet(model_input, t, encoder_hidden_states=embeds).sample.chunk(2)
        guided = uncond + guidance * (text - uncond)
        x0 = predicted_x0(Step(len(rows), t, x, guided, x, sched))
        rows.append((float(t), uncond.std().item(), (text - uncond).std().item(), x0.std().item()))
        x = sched.step(guided, t, x, **({"generator": generator} if name == "euler_a" else {})).prev_sample
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--schedulers", nargs="+", default=["ddim", "dpm++", "pndm", "lms"])
    parser.add_argument("--guidance", nargs="+", type=float, default=[7.5, 2.0])
    parser.add_argument("--model", default="bundled")
    args = parser.parse_args()
    torch.set_num_threads(2)
    components = load_components(args.model, device="cpu")
    print(f"prompt {PROMPT!r}, seed 0, 20 steps; per U-Net call: t, std(gap = text - uncond), std(x0-hat)")
    for guidance in args.guidance:
        for name in args.schedulers:
            rows = trace(components, name, guidance, 20, 0)
            cells = " ".join(f"{t:.0f}:{gap:.2f}/{x0:.1f}" for t, _, gap, x0 in rows[:14])
            print(f"guidance {guidance:g} {name:6s} {cells} ... final x0 std {rows[-1][3]:.2f}")


if __name__ == "__main__":
    main()
