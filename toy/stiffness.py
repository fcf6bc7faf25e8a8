"""How stiff guidance makes the sampling ODE, measured: the guided x0-hat's Jacobian along a sampling path.

    python -m toy.stiffness [--model FOLDER] [--directions toy/stiffness_directions.png] > toy/stiffness.txt

In sigma form a sampler integrates dx/dsigma = (x - x0_hat(x)) / sigma, and the guided clean-latent estimate is
x0_hat = x0_u + g (x0_c - x0_u). One step from sigma to sigma' multiplies a small error along an eigenvector of
d x0_hat / dx (eigenvalue j) as the linear test equation with h * lambda = -z, z = (1 - j) (sigma - sigma') / sigma.
Forward Euler (and so DDIM) is stable for z up to 2, the 4th-order Adams-Bashforth rule of PNDM and K-LMS only up to
about 0.3 (its stability interval on the negative real axis). This script follows Euler's 20-step path (SD v1.5's
"linspace" sigmas, as K-LMS uses; Euler stays on course, so the path is the one the model means) for one prompt and
seed, and at every step computes the full Jacobian of x0_hat with respect to the latent (4 x 8 x 8 = 256 numbers, by
central differences in one batch) for the text and the unconditional prediction. It prints, per step, sigma, the
step's relative size, the most negative real part of the guided Jacobian's eigenvalues at guidance 7.5 and 2, and z.

With --directions PNG it also shows, at four steps, *which* direction is stiffest at guidance 7.5: the picture x0_hat
decodes to, the same with one unit of the stiffest eigenvector added to the latent, and where the pixels change; and
it prints how much of that change falls inside the shape (toy.world.foreground) and its mean RGB change there.
"""

from __future__ import annotations

import argparse

import numpy as np
import torch

from helpers import plotting
from helpers.models import load_components, make_scheduler
from helpers.sampling import decode, encode_text, guided_noise, initial_latents, to_numpy
from helpers.seeding import make_generator
from toy import world

PROMPT = "a small red circle on the left on a black background"  # toy.guidance_diagnosis's prompt
SHOWN_STEPS = (4, 7, 10, 13)  # where --directions looks, 1-based
AB4_LIMIT, EULER_LIMIT = 0.3, 2.0


@torch.no_grad()
def jacobians(components, x: torch.Tensor, t: torch.Tensor, sigma: float, embeds: torch.Tensor, h: float = 1e-2):
    """d x0_hat / dx for the unconditional and the text prediction (each n x n, n = x.numel()), central differences."""
    n = x.numel()
    basis = torch.eye(n, dtype=x.dtype).reshape(n, *x.shape[1:])
    points = torch.cat([x + h * basis, x - h * basis])  # (2n, C, H, W)
    scale = (sigma**2 + 1) ** 0.5  # what Euler's scale_model_input divides by
    out = []
    for emb in embeds:  # unconditional, then text
        eps = components.unet(points / scale, t, encoder_hidden_states=emb.expand(2 * n, -1, -1)).sample
        x0 = points - sigma * eps
        out.append(((x0[:n] - x0[n:]) / (2 * h)).reshape(n, n).T.double().numpy())  # column i: d x0 / d x_i
    return out


def most_negative(jacobian: np.ndarray) -> float:
    return float(np.linalg.eigvals(jacobian).real.min())


def stiffest_direction(jacobian: np.ndarray) -> tuple[float, np.ndarray]:
    """The eigenvalue with the most negative real part and its eigenvector (real part, unit length)."""
    values, vectors = np.linalg.eig(jacobian)
    k = int(np.argmin(values.real))
    vector = vectors[:, k].real
    return float(values.real[k]), vector / np.linalg.norm(vector)


@torch.no_grad()
def show_direction(components, x0_hat: torch.Tensor, direction: np.ndarray) -> tuple[list[np.ndarray], str]:
    """Pictures of x0_hat, of x0_hat plus the unit direction, and of where they differ; and a line saying how much of
    the change lies inside the shape and how the shape's mean colour moves (RGB, 0 to 1)."""
    step = torch.tensor(direction, dtype=x0_hat.dtype).reshape(x0_hat.shape)
    before, after = (to_numpy(decode(components, latent))[0] for latent in (x0_hat, x0_hat + step))
    change = np.abs(after - before).sum(-1)
    inside, _ = world.foreground((before * 255).round().astype(np.uint8))
    rgb = ", ".join(f"{v:+.3f}" for v in (after - before)[inside].mean(0)) if inside.any() else "none"
    line = (
        f"{100 * change[inside].sum() / change.sum():.0f}% of the pixel change inside the shape "
        f"({100 * inside.mean():.0f}% of the picture), its mean RGB change ({rgb})"
    )
    return [before, after.clip(0, 1), plotting.normalize(change)], line


@torch.no_grad()
def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="bundled")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--directions", help="save a figure of the stiffest direction at a few steps to this PNG")
    args = parser.parse_args()
    torch.set_num_threads(2)
    components = load_components(args.model, device="cpu", dtype=torch.float32)
    embeds = torch.stack([encode_text(components, [""]), encode_text(components, [PROMPT])])
    sched = make_scheduler("euler", components.scheduler_config)
    sched.set_timesteps(20)
    x = initial_latents(components, 1, 64, 64, make_generator(args.seed), sched.init_noise_sigma)
    sigmas = sched.sigmas.tolist()
    print(f"model {args.model}, prompt {PROMPT!r}, seed {args.seed}; Euler's 20-step path")
    print(
        f"z = (1 - j_min) x step: unstable for PNDM/K-LMS's 4th-order rule above {AB4_LIMIT}, "
        f"for Euler above {EULER_LIMIT:g}"
    )
    columns = ["step", "sigma", "step/sigma", "j_min g7.5", "z g7.5", "j_min g2", "z g2"]
    print(" ".join(f"{c:>10s}" for c in columns))
    counts, panels, titles, notes = {7.5: 0, 2.0: 0}, [], [], []
    for i, t in enumerate(sched.timesteps):
        sigma, relative = sigmas[i], (sigmas[i] - sigmas[i + 1]) / sigmas[i]
        j_u, j_c = jacobians(components, x, t, sigma, embeds)
        cells = []
        for g in (7.5, 2.0):
            j = most_negative(j_u + g * (j_c - j_u))
            z = (1 - j) * relative
            counts[g] += z > AB4_LIMIT
            cells += [f"{j:10.2f}", f"{z:10.2f}"]
        print(f"{i + 1:10d} {sigma:10.3f} {relative:10.3f} " + " ".join(cells), flush=True)
        eps = guided_noise(components, sched, x, t, embeds[:, 0], 7.5)
        if args.directions and i + 1 in SHOWN_STEPS:
            value, direction = stiffest_direction(j_u + 7.5 * (j_c - j_u))
            pictures, line = show_direction(components, x - sigma * eps, direction)
            notes.append(f"step {i + 1}, eigenvalue {value:.2f}: {line}")
            panels += pictures
            titles += [f"x0-hat, step {i + 1}", "+ stiffest direction", f"change (j = {value:.1f})"]
        x = sched.step(eps, t, x).prev_sample
    for g, count in counts.items():
        print(f"guidance {g:g}: {count} of 20 steps with z > {AB4_LIMIT} (outside the 4th-order rule's interval)")
    if args.directions:
        print("the stiffest direction at guidance 7.5 (one unit of it added to x0-hat's latent):")
        print("\n".join(notes))
        plotting.image_grid(panels, titles, cols=6, size=1.6).savefig(args.directions, dpi=100)
        print(f"figure: {args.directions}")


if __name__ == "__main__":
    main()
