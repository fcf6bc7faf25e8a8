"""Where models come from: folders, safetensors only, clear errors; the real SD v1.5 architecture."""

from __future__ import annotations

import shutil

import pytest
import torch

from helpers.models import BUNDLED_MODEL, ModelSourceError, check_model_folder, load_components, resolve_source
from helpers.reference import sd15_architecture


def test_missing_folder_is_named(tmp_path):
    with pytest.raises(ModelSourceError, match="does not exist"):
        load_components(tmp_path / "nowhere", device="cpu")


def test_folder_not_in_diffusers_layout(tmp_path):
    (tmp_path / "unet").mkdir()
    with pytest.raises(ModelSourceError, match="not in diffusers' layout: missing model_index.json"):
        check_model_folder(tmp_path)


def test_pickle_only_folder_is_refused(tiny_model_dir, tmp_path):
    copy = tmp_path / "pickled"
    shutil.copytree(tiny_model_dir, copy)
    weights = copy / "unet" / "diffusion_pytorch_model.safetensors"
    weights.rename(copy / "unet" / "diffusion_pytorch_model.bin")
    with pytest.raises(ModelSourceError, match=r"unet/ holds only pickle weights \(diffusion_pytorch_model.bin\)"):
        load_components(copy, device="cpu")


@pytest.fixture
def offline_empty_cache(monkeypatch, tmp_path):
    """huggingface_hub offline with an empty cache. It reads HF_HUB_OFFLINE and HF_HUB_CACHE once, at import, so a
    changed environment variable would not reach it: its constants are what is patched."""
    from huggingface_hub import constants

    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", True)
    monkeypatch.setattr(constants, "HF_HUB_CACHE", str(tmp_path))


def test_offline_is_read_from_huggingface_hub_itself(monkeypatch):
    """Whether a hub id may be downloaded follows the library's own HF_HUB_OFFLINE, not a second parse of the env."""
    import huggingface_hub
    from huggingface_hub import constants

    asked = []
    monkeypatch.setattr(huggingface_hub, "snapshot_download", lambda hub_id, **kw: asked.append(kw) or "/x")
    for offline in (True, False):
        monkeypatch.setattr(constants, "HF_HUB_OFFLINE", offline)
        source = resolve_source("some/model", torch.device("cpu"))
    assert [kw["local_files_only"] for kw in asked] == [True, False]
    assert (source.kind, source.name, str(source.folder)) == ("hub", "some/model", "/x")  # the id kept, not parsed


def test_uncached_hub_id_offline_says_what_to_do(offline_empty_cache):
    with pytest.raises(ModelSourceError) as caught:
        resolve_source("someone/not-a-model", torch.device("cpu"))
    message = str(caught.value)
    assert (
        "'someone/not-a-model'" in message and "huggingface-cli download" in message and "SD_MODEL=bundled" in message
    )


def test_auto_on_cpu_picks_the_bundled_model(monkeypatch):
    monkeypatch.delenv("SD_MODEL", raising=False)
    source = resolve_source("auto", torch.device("cpu"))
    assert source.folder == BUNDLED_MODEL and "bundled" in source.reason and "no CUDA or MPS" in source.reason
    assert (source.kind, source.name, source.dtype) == ("bundled", "toy-sd", torch.float32)


def test_sd_model_overrides_auto(monkeypatch, tiny_model_dir):
    monkeypatch.setenv("SD_MODEL", str(tiny_model_dir))
    source = resolve_source("auto", torch.device("cpu"))
    assert source.folder == tiny_model_dir and "SD_MODEL" in source.reason
    assert (source.kind, source.name) == ("folder", tiny_model_dir.name)


def test_sd15_architecture_counts_and_shapes():
    text_encoder, unet, vae = sd15_architecture("meta")
    count = lambda m: sum(p.numel() for p in m.parameters())  # noqa: E731
    assert count(unet) == 859_520_964
    assert count(vae) == 83_653_863
    ids = torch.zeros(1, 77, dtype=torch.long, device="meta")
    assert text_encoder(ids)[0].shape == (1, 77, 768)
    latents = vae.encode(torch.zeros(1, 3, 512, 512, device="meta")).latent_dist.mean
    assert latents.shape == (1, 4, 64, 64)
    noise = unet(torch.cat([latents] * 2), 10, encoder_hidden_states=torch.zeros(2, 77, 768, device="meta")).sample
    assert noise.shape == (2, 4, 64, 64)


def test_fp16_variant_is_used_in_half_precision(tiny_model_dir, tmp_path):
    """A hub-style folder with only fp16-variant weights loads in float16 (as SD v1.5's does on CUDA)."""
    folder = tmp_path / "variant"
    shutil.copytree(tiny_model_dir, folder)
    for part in ("text_encoder", "unet", "vae"):
        for weights in (folder / part).glob("*.safetensors"):
            weights.rename(weights.with_suffix(".fp16.safetensors"))
    components = load_components(folder, device="cpu", dtype=torch.float16)
    assert components.unet.dtype == components.text_encoder.dtype == components.vae.dtype == torch.float16


def test_truncated_weights_are_named(tiny_model_dir, tmp_path):
    copy = tmp_path / "truncated"
    shutil.copytree(tiny_model_dir, copy)
    weights = copy / "text_encoder" / "model.safetensors"
    weights.write_bytes(weights.read_bytes()[:200])
    with pytest.raises(ModelSourceError, match=r"truncated'?: the weights in text_encoder/ cannot be read"):
        load_components(copy, device="cpu")
    weights.write_bytes(b"")
    with pytest.raises(ModelSourceError, match="text_encoder/ cannot be read"):
        load_components(copy, device="cpu")


def test_a_source_of_the_wrong_type_is_named():
    with pytest.raises(TypeError, match="source must be 'auto', 'bundled', a hub id or a folder path, got int 123"):
        load_components(123, device="cpu")


def test_hub_download_fetches_the_weights_of_the_requested_dtype(monkeypatch):
    """float32 on CUDA must fetch the float32 files: fetching by the device's default (fp16) left nothing to load."""
    import huggingface_hub

    asked = []
    monkeypatch.setattr(huggingface_hub, "snapshot_download", lambda hub_id, **kw: asked.append(kw) or "/x")
    from helpers.models import _cached_hub_snapshot

    _cached_hub_snapshot("some/model", allow_download=True, dtype=torch.float32)
    _cached_hub_snapshot("some/model", allow_download=True, dtype=torch.float16)
    assert asked[0]["allow_patterns"][-1] == "*/*[!6].safetensors"
    assert asked[1]["allow_patterns"][-1] == "*/*.fp16.safetensors"
    resolve_source("some/model", torch.device("cuda"), torch.float32)
    assert asked[2]["allow_patterns"][-1] == "*/*[!6].safetensors"


def test_scheduler_config_is_read_as_diffusers_pipelines_read_it(tiny_model_dir, tmp_path):
    """SD v1.5's scheduler file leaves out timestep_spacing: every scheduler must get what a pipeline's config gives
    (diffusers does not pass PNDM's default "leading" on to other classes, so Euler keeps its own, "linspace")."""
    import json

    from diffusers import StableDiffusionPipeline

    from helpers.models import SCHEDULERS, SD15_CONFIGS, make_scheduler

    copy = tmp_path / "hub-like"
    shutil.copytree(tiny_model_dir, copy)
    raw = json.loads((SD15_CONFIGS / "scheduler_config.json").read_text())
    assert "timestep_spacing" not in raw
    (copy / "scheduler" / "scheduler_config.json").write_text(json.dumps(raw))
    ours = load_components(copy, device="cpu")
    pipe = StableDiffusionPipeline.from_pretrained(copy, safety_checker=None, requires_safety_checker=False)
    for name, entry in SCHEDULERS.items():
        mine, theirs = make_scheduler(name, ours.scheduler_config), entry.cls.from_config(pipe.scheduler.config)
        mine.set_timesteps(20)
        theirs.set_timesteps(20)
        assert torch.equal(mine.timesteps, theirs.timesteps), name
    assert make_scheduler("euler", ours.scheduler_config).config.timestep_spacing == "linspace"


def test_gated_and_other_hub_errors_are_told_apart(monkeypatch):
    """A gated repository needs a login, not a download; a disk error is not "not cached" and is raised as is."""
    from unittest.mock import MagicMock

    import huggingface_hub
    from huggingface_hub.errors import GatedRepoError

    from helpers.models import _cached_hub_snapshot

    def gated(*args, **kwargs):
        raise GatedRepoError("401 gated", response=MagicMock())

    monkeypatch.setattr(huggingface_hub, "snapshot_download", gated)
    with pytest.raises(ModelSourceError, match="gated on the hub: accept its licence"):
        _cached_hub_snapshot("some/model", allow_download=True, dtype=torch.float16)

    def disk_full(*args, **kwargs):
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(huggingface_hub, "snapshot_download", disk_full)
    with pytest.raises(OSError, match="No space left"):
        _cached_hub_snapshot("some/model", allow_download=True, dtype=torch.float16)


def test_a_scheduler_is_added_in_one_place(monkeypatch):
    """One SCHEDULERS entry makes a scheduler usable everywhere: generate's check, the PNG text and its reader."""
    from diffusers import KDPM2DiscreteScheduler

    from helpers import models, pnginfo
    from helpers.models import SchedulerEntry
    from helpers.settings import GenerationSettings

    monkeypatch.setitem(models.SCHEDULERS, "dpm2", SchedulerEntry(KDPM2DiscreteScheduler, "DPM2", 25))
    settings = GenerationSettings("a red circle", None, 64, 64, 20, seed=1, scheduler="dpm2")
    settings.check(vae_scale_factor=8)
    text = pnginfo.format_parameters(settings, "m")
    assert "Sampler: DPM2," in text and pnginfo.parse_parameters(text)["scheduler"] == "dpm2"
    sched = models.make_scheduler("dpm2", models.SD15_SCHEDULER)
    assert isinstance(sched, KDPM2DiscreteScheduler)


def test_a_snapshot_in_the_hub_cache_is_named_by_its_hub_id(tiny_model_dir, tmp_path):
    """SD_MODEL pointing into the cache (models--org--name/snapshots/HASH) records org/name in PNGs, not the hash."""
    import shutil

    snapshot = tmp_path / "models--org--some-model" / "snapshots" / "abc123"
    shutil.copytree(tiny_model_dir, snapshot)
    source = resolve_source(str(snapshot), torch.device("cpu"))
    assert (source.kind, source.name, source.folder) == ("folder", "org/some-model", snapshot)
    assert resolve_source(str(tiny_model_dir), torch.device("cpu")).name == tiny_model_dir.name
