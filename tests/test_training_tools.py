"""The training script uses the libraries' own tools where they exist; each is checked against the rule it replaced."""

from __future__ import annotations

import dataclasses
import functools

import numpy as np
import pytest
import torch
from diffusers import DDPMScheduler
from diffusers.training_utils import EMAModel
from transformers import CLIPTokenizer

from helpers.models import SD15_SCHEDULER
from toy import train


def test_diffusers_ema_is_the_warmed_up_average_the_trainer_used():
    """decay_k = min(decay, (1 + k) / (10 + k)), shadow += (1 - decay_k) * (param - shadow), from the first step."""
    torch.manual_seed(0)
    param = torch.nn.Parameter(torch.randn(50))
    ema = EMAModel([param], decay=0.995)
    shadow = param.detach().clone()
    for k in range(300):
        with torch.no_grad():
            param.add_(torch.randn(50) * 0.1)
        ema.step([param])
        decay = min(0.995, (1 + k) / (10 + k))
        shadow = shadow + (1 - decay) * (param.detach() - shadow)
    assert torch.allclose(ema.shadow_params[0], shadow, atol=1e-6)
    assert not torch.allclose(shadow, param.detach(), atol=1e-2)  # the average is not the last value


RAW = dataclasses.replace(train.SMOKE, warmup=0, lr_floor=1.0, ema_decay=0.0)  # a constant rate; raw weights saved


@functools.cache
def smoke_data() -> tuple[list, np.ndarray, torch.Tensor, torch.Tensor, CLIPTokenizer]:
    """The smoke world's scenes, pictures, latents (from an untrained VAE, seed 0) and the tokenizer."""
    scenes, images = train.make_dataset(RAW, np.random.default_rng(0))
    torch.manual_seed(0)
    means, stds = train.encode_all(train.build_vae(RAW).eval(), images)
    return scenes, images, means, stds, CLIPTokenizer.from_pretrained(train.TOKENIZER_DIR)


def smoke_weights(**changes) -> list[torch.Tensor]:
    """The U-Net's and text encoder's weights after train_unet on the smoke data with RAW and `changes`, from the
    same initial weights each time (seed 1)."""
    scenes, _, means, stds, tokenizer = smoke_data()
    torch.manual_seed(1)
    unet, text_encoder = train.train_unet(dataclasses.replace(RAW, **changes), scenes, means, stds, 1.0, tokenizer, [])
    return [p.detach().clone() for p in [*unet.parameters(), *text_encoder.parameters()]]


def test_average_last_saves_the_equal_average_of_the_last_steps_weights():
    """--average-last N (SWA): the saved weights are the mean of the last N steps' weights. With a constant rate the
    first k steps of a run are a k-step run (the data and noise come in the same order), so a 3-step run averaging
    its last 2 saves (W2 + W3) / 2, where Wk is a k-step run's last weights (saved with an EMA of decay 0)."""
    weights = smoke_weights
    two, three, averaged = weights(unet_steps=2), weights(unet_steps=3), weights(unet_steps=3, average_last=2)
    assert any(not torch.allclose(a, b) for a, b in zip(two, three))  # the last step moved the weights
    for mean, a, b in zip(averaged, two, three, strict=True):
        torch.testing.assert_close(mean, (a + b) / 2)
    last = weights(unet_steps=3, average_last=1)  # the average of one step is that step's weights
    for mean, b in zip(last, three, strict=True):
        torch.testing.assert_close(mean, b)


def test_vae_bf16_trains_the_same_vae_in_bfloat16s_rounding():
    """--vae-bf16: the VAE stage's forward passes under bfloat16 autocast. From the same seed its losses follow
    float32's to bfloat16's rounding (not to float32's), and the trained weights stay float32."""
    cfg = dataclasses.replace(train.SMOKE, vae_steps=4)
    images = train.make_dataset(cfg, np.random.default_rng(0))[1]
    runs = {}
    for bf16 in (False, True):
        torch.manual_seed(0)
        log: list[dict] = []
        vae = train.train_vae(dataclasses.replace(cfg, vae_bf16=bf16), images, log)
        runs[bf16] = (np.array([row["mse"] for row in log]), vae)
    mse32, (mse16, vae16) = runs[False][0], runs[True]
    assert len(mse16) == cfg.vae_steps and all(p.dtype == torch.float32 for p in vae16.parameters())
    assert not np.array_equal(mse16, mse32)  # other rounding: autocast was on
    np.testing.assert_allclose(mse16, mse32, rtol=0.05)  # the same training, not another one
    assert not torch.is_autocast_enabled("cpu")  # nothing left switched on


def test_train_vae_shows_each_step_to_after_step():
    """after_step(step, vae) sees every update in order, with the VAE as that step left it: the weights it is shown
    at the last step are the ones train_vae returns, and earlier ones differ (the snapshot probe of section Z)."""
    cfg = train.SMOKE
    images = train.make_dataset(cfg, np.random.default_rng(0))[1]
    seen: list[tuple[int, torch.Tensor]] = []
    torch.manual_seed(0)
    vae = train.train_vae(cfg, images, [], lambda step, v: seen.append((step, next(v.parameters()).detach().clone())))
    assert [step for step, _ in seen] == list(range(cfg.vae_steps)) and cfg.vae_steps >= 3
    assert torch.equal(seen[-1][1], next(vae.parameters())) and not torch.equal(seen[0][1], seen[-1][1])


def scripted_reader(shapes: list[float], seen: list[torch.Tensor]):
    """A stand-in for train.vae_reading that returns the given shape readings in turn and records a weight of each
    VAE it read."""
    readings = iter(shapes)

    def read(cfg: train.Config, vae) -> dict[str, float]:
        seen.append(next(vae.parameters()).detach().clone())
        return {"color": 50.0, "shape": next(readings)}

    return read


def test_vae_target_ends_the_vae_stage_at_the_first_reading_that_reaches_it():
    """Readings from half way, every vae_check_every steps; the stage ends at the first that reaches the target,
    with the VAE plain training would have at that step (reading draws no random numbers)."""
    cfg = dataclasses.replace(train.SMOKE, vae_steps=8, vae_target=50.0, vae_check_every=2)
    images = train.make_dataset(cfg, np.random.default_rng(0))[1]
    log: list[dict] = []
    torch.manual_seed(0)
    vae = train.train_vae_to_target(cfg, images, log, scripted_reader([10.0, 60.0, 99.0], []))
    assert [(row["step"], row["shape"]) for row in log if row["stage"] == "vae_reading"] == [(4, 10.0), (6, 60.0)]
    assert [row["step"] for row in log if row["stage"] == "vae"] == list(range(7))
    assert [row.get("kept", False) for row in log if row["stage"] == "vae_reading"] == [False, True]
    torch.manual_seed(0)
    plain = train.train_vae(cfg, images, [], lambda step, v: step == 6)
    for a, b in zip(vae.parameters(), plain.parameters(), strict=True):
        assert torch.equal(a, b)


def test_vae_target_draws_again_and_keeps_the_best_last_reading():
    """When a VAE ends short of the target, another is drawn as the seed 1000 further on draws it, up to vae_draws;
    none reaching it, the one whose last reading is highest is kept, and only its steps are logged as "vae" rows."""
    cfg = dataclasses.replace(train.SMOKE, vae_steps=4, vae_target=99.0, vae_check_every=1, vae_draws=3)
    images = train.make_dataset(cfg, np.random.default_rng(0))[1]
    log: list[dict] = []
    torch.manual_seed(0)
    seen: list[torch.Tensor] = []
    vae = train.train_vae_to_target(cfg, images, log, scripted_reader([10, 30, 5, 50, 40, 40], seen))
    readings = [row for row in log if row["stage"] == "vae_reading"]
    assert [(row["draw"], row["step"]) for row in readings] == [(d, s) for d in range(3) for s in (2, 3)]
    assert [row for row in readings if row.get("kept")] == [readings[3]] and readings[3]["draw"] == 1
    assert sum(row["stage"] == "vae" for row in log) == cfg.vae_steps
    torch.manual_seed(1000)
    second = train.train_vae(dataclasses.replace(cfg, seed=1000), images, [])
    for a, b in zip(vae.parameters(), second.parameters(), strict=True):
        assert torch.equal(a, b)
    assert not torch.equal(seen[1], seen[3])  # the draws' last weights differ


def test_vae_reading_reads_a_float16_copy_and_leaves_the_vae_as_it_was():
    """train.vae_reading: toy.evaluate's two-shape ceiling of the VAE rounded as saved, the same twice; the VAE being
    trained keeps its float32 weights."""
    from types import SimpleNamespace

    from toy.evaluate import vae_ceiling_two_shapes, vae_world

    cfg = train.SMOKE
    torch.manual_seed(0)
    vae = train.build_vae(cfg)
    before = [p.detach().clone() for p in vae.parameters()]
    first, second = train.vae_reading(cfg, vae), train.vae_reading(cfg, vae)
    assert first == second and set(first) >= {"color", "shape"}
    assert all(p.dtype == torch.float32 and torch.equal(p, q) for p, q in zip(vae.parameters(), before, strict=True))
    rounded = train.build_vae(cfg)
    rounded.load_state_dict(vae.state_dict())
    rounded.to(torch.float16).to(torch.float32).eval()
    world_options = vae_world(dataclasses.asdict(cfg))
    assert first == vae_ceiling_two_shapes(SimpleNamespace(vae=rounded), np.random.default_rng(6), world_options)


def test_unet_heads_split_the_same_weights_into_that_many_heads():
    """unet_heads changes how each attention layer splits its channels, not its weights: from one seed, 2 heads and 8
    have the same parameters, and the U-Net's output differs (the heads attend separately)."""
    nets = {}
    for heads in (2, 8):
        torch.manual_seed(0)
        nets[heads] = train.build_unet(dataclasses.replace(train.SMOKE, unet_heads=heads), 8).eval()
        attentions = [m for m in nets[heads].modules() if type(m).__name__ == "Attention"]
        assert attentions and all(m.heads == heads for m in attentions)
    for (name, a), (_, b) in zip(nets[2].named_parameters(), nets[8].named_parameters(), strict=True):
        assert torch.equal(a, b), name
    x, t, text = torch.randn(1, 4, 8, 8), torch.tensor([500]), torch.randn(1, 77, train.SMOKE.text_hidden)
    with torch.no_grad():
        assert not torch.allclose(nets[2](x, t, text).sample, nets[8](x, t, text).sample, atol=1e-4)


def test_fused_adamw_takes_the_same_steps_in_other_rounding(monkeypatch):
    """fused_adamw: both stages' AdamW run PyTorch's fused kernel; three U-Net steps from one seed end where the
    for-loop kernel's do, up to rounding."""
    asked: list = []
    adamw = torch.optim.AdamW
    monkeypatch.setattr(
        torch.optim, "AdamW", lambda *args, **kwargs: asked.append(kwargs.get("fused")) or adamw(*args, **kwargs)
    )
    weights = {fused: smoke_weights(unet_steps=3, fused_adamw=fused) for fused in (False, True)}
    for own in (None, False):  # the VAE stage's own setting, where one is given, wins over the shared one
        train.train_vae(
            dataclasses.replace(RAW, fused_adamw=True, vae_fused_adamw=own, vae_steps=1), smoke_data()[1], []
        )
    assert asked == [None, True, True, None]  # for-loop (PyTorch's CPU default), fused U-Net and VAE, the VAE's own
    torch.manual_seed(1)
    start = [
        p.detach().clone()
        for p in [*train.build_unet(RAW, 8).parameters(), *train.build_text_encoder(RAW).parameters()]
    ]
    assert any(not torch.allclose(a, b) for a, b in zip(start, weights[True]))  # the steps moved the weights
    moved = torch.cat([(loop - before).flatten() for loop, before in zip(weights[False], start, strict=True)])
    apart = torch.cat([(fused - loop).flatten() for fused, loop in zip(weights[True], weights[False], strict=True)])
    print(f"fused - for-loop: {apart.norm() / moved.norm():.2e} of the steps' length")
    assert apart.norm() <= 1e-2 * moved.norm()  # the same steps, to a hundredth of their length (0.3% here)


def test_ema_foreach_keeps_the_same_average(monkeypatch):
    """ema_foreach: diffusers' EMA updates its averages in torch._foreach ops; after four U-Net steps from one seed the
    saved averages equal the for-loop's up to rounding, and are an average, not the last weights."""
    asked: list = []
    ema_model = train.EMAModel
    monkeypatch.setattr(
        train, "EMAModel", lambda *args, **kwargs: asked.append(kwargs["foreach"]) or ema_model(*args, **kwargs)
    )
    averages = {foreach: smoke_weights(unet_steps=4, ema_decay=0.9, ema_foreach=foreach) for foreach in (False, True)}
    last = smoke_weights(unet_steps=4)  # RAW's EMA decay 0: the last weights
    assert asked == [False, True, False]
    apart = max((a - b).abs().max().item() for a, b in zip(averages[True], averages[False], strict=True))
    moved = max((a - b).abs().max().item() for a, b in zip(averages[True], last, strict=True))
    print(f"foreach - for-loop: {apart:.1e}; average - last weights: {moved:.1e}")
    # the two averages agree to a thousandth of their distance from the last weights
    assert 1e-5 < moved and apart <= 1e-3 * moved


def test_compute_snr_is_alpha_bar_over_one_minus_alpha_bar():
    scheduler = DDPMScheduler.from_config(SD15_SCHEDULER)
    t = torch.tensor([0, 10, 500, 999])
    alphas_cumprod = scheduler.alphas_cumprod[t]
    cfg = train.Config(min_snr_gamma=5.0)
    expected = (alphas_cumprod / (1 - alphas_cumprod)).clamp(max=5.0) / (alphas_cumprod / (1 - alphas_cumprod))
    assert torch.allclose(train.loss_weights(cfg, scheduler, t), expected, rtol=1e-5)
    assert train.loss_weights(cfg, scheduler, t)[-1] == 1.0 and train.loss_weights(cfg, scheduler, t)[0] < 0.01


def test_pixels_are_normalised_as_before_to_the_last_bit_or_one():
    images = np.arange(256, dtype=np.uint8).reshape(1, 16, 16, 1).repeat(3, axis=3)
    ours = train.to_tensor(images)
    before = torch.from_numpy(images).permute(0, 3, 1, 2).float() / 127.5 - 1.0
    assert ours.shape == (1, 3, 16, 16) and ours.dtype == torch.float32
    assert (ours - before).abs().max() <= 2.0**-23  # one unit in the last place at 1.0, at most
    assert ours.min() == -1.0 and ours.max() == 1.0


def test_caption_tokens_are_the_ids_of_one_batched_tokenizer_call():
    """The cache returns what the tokenizer returns for the batch: padded to 77, long captions cut, empty ones kept."""
    from helpers.models import CLIP_TOKENIZER

    tokenizer = CLIPTokenizer.from_pretrained(CLIP_TOKENIZER)
    tokens = train.CaptionTokens(tokenizer)
    long = " ".join(["a large red circle on the left"] * 20)
    for captions in (["a red circle", "", "a blue square on a black background"], ["", long, "a red circle", ""]):
        expected = tokenizer(
            captions, padding="max_length", max_length=tokenizer.model_max_length, truncation=True, return_tensors="pt"
        ).input_ids
        ids = tokens(captions)
        assert ids.dtype == expected.dtype and torch.equal(ids, expected)
    assert ids.shape == (4, tokenizer.model_max_length) and len(tokens.known) == 4  # each caption tokenized once


def test_encoding_in_smaller_batches_gives_the_same_numbers():
    torch.manual_seed(0)
    vae = train.build_vae(train.SMOKE).eval()
    images = np.random.default_rng(0).integers(0, 256, (20, 64, 64, 3), dtype=np.uint8)
    means, stds = train.encode_all(vae, images, batch=8)
    means_one, stds_one = train.encode_all(vae, images, batch=20)
    assert means.shape == (20, 4, 8, 8) and torch.equal(means, means_one) and torch.equal(stds, stds_one)
    assert means.std() > 0


def test_two_shape_prob_sets_the_share_of_two_shape_pictures():
    """--two-shape-prob reaches the scenes; the default keeps the shipped model's data (a quarter with two shapes)."""
    for share in (0.0, 0.25, 1.0):
        cfg = train.Config(num_images=200, two_shape_prob=share)
        scenes, images = train.make_dataset(cfg, np.random.default_rng(0))
        two = sum(len(scene.shapes) == 2 for scene in scenes) / len(scenes)
        assert images.shape == (200, 64, 64, 3)
        assert abs(two - share) <= 0.08, (share, two)
    default, _ = train.make_dataset(train.Config(num_images=50), np.random.default_rng(1))
    explicit, _ = train.make_dataset(train.Config(num_images=50, two_shape_prob=0.25), np.random.default_rng(1))
    assert default == explicit


def test_pair_misses_counts_each_named_shape_and_what_was_read_instead():
    """toy.pair_misses on drawn two-shape scenes: every shape read right; a caption naming the wrong shape is a miss."""
    from toy import world
    from toy.pair_misses import misses_by_drawn_size, shape_misses

    rng = np.random.default_rng(0)
    scenes = [world.sample_scene(rng, two_shape_prob=1.0) for _ in range(12)]
    images = [world.render(scene, rng) for scene in scenes]
    prompts = [world.caption(scene) for scene in scenes]
    named, right, misses = shape_misses(prompts, images)
    assert sum(named.values()) == 24 and right == named and not misses
    first = scenes[0].shapes[0].shape
    other = next(s for s in world.SHAPES if s != first)
    wrong = prompts[0].replace(f" {first}", f" {other}", 1)
    named, right, misses = shape_misses([wrong], images[:1])
    assert misses == {(other, first): 1} and named[other] >= 1
    squares = [s.size for scene in scenes for s in scene.shapes if s.shape == "square"]
    sizes = misses_by_drawn_size(prompts, images, "square")
    assert {size: n for size, (_, n) in sizes.items()} == {size: squares.count(size) for size in set(squares)}
    assert all(missed == 0 for missed, _ in sizes.values())
    left, right_shape = scenes[0].shapes  # the left one is now named `other` and drawn as `first`: a miss
    expected = {left.size: [1, 1]}
    if right_shape.shape == other:  # drawn as named: counted, not missed
        expected.setdefault(right_shape.size, [0, 0])[1] += 1
    assert misses_by_drawn_size([wrong], images[:1], other) == {k: tuple(v) for k, v in expected.items()}
    with pytest.raises(ValueError, match="two shapes"):
        shape_misses(["a red circle"], images[:1])
