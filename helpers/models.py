"""Where a model comes from (ModelSource) and how its components are loaded.

A model source is one of:
- a hub id, e.g. ``stable-diffusion-v1-5/stable-diffusion-v1-5`` (downloaded or cached);
- a local folder in diffusers' layout (model_index.json, tokenizer/, text_encoder/, unet/, vae/,
  scheduler/) with safetensors weights;
- ``bundled``: the small model trained by ``toy/train.py`` that ships in ``models/toy-sd``;
- ``auto`` (the default): SD v1.5 when a CUDA or MPS device is present and its weights can be had,
  otherwise the bundled model. The environment variable ``SD_MODEL`` overrides ``auto``.
"""

from __future__ import annotations

import contextlib
import json
import os
from dataclasses import dataclass
from pathlib import Path

import torch
from diffusers import (
    AutoencoderKL,
    PNDMScheduler,
    UNet2DConditionModel,
)
from transformers import CLIPTextModel, CLIPTokenizer

# the scheduler registry (helpers/schedulers.py), re-exported: models.SCHEDULERS reads naturally in the notebook
from helpers.schedulers import SCHEDULERS as SCHEDULERS
from helpers.schedulers import SchedulerEntry as SchedulerEntry
from helpers.schedulers import check_scheduler_name as check_scheduler_name
from helpers.schedulers import make_scheduler as make_scheduler

SD15_HUB_ID = "stable-diffusion-v1-5/stable-diffusion-v1-5"
MODELS_DIR = Path(__file__).resolve().parent.parent / "models"
BUNDLED_MODEL = MODELS_DIR / "toy-sd"
SD15_CONFIGS = MODELS_DIR / "sd15-configs"
CLIP_TOKENIZER = MODELS_DIR / "clip-tokenizer"  # SD v1.5's tokenizer files, derived by tools/derive_clip_tokenizer.py
# SD v1.5's own scheduler/scheduler_config.json: scaled-linear betas 0.00085..0.012, 1000 steps, epsilon
SD15_SCHEDULER = json.loads((SD15_CONFIGS / "scheduler_config.json").read_text())
COMPONENTS = ("tokenizer", "text_encoder", "unet", "vae", "scheduler")
WEIGHTED = ("text_encoder", "unet", "vae")
PICKLE_SUFFIXES = (".bin", ".ckpt", ".pt", ".pth", ".pkl")


class ModelSourceError(ValueError):
    """A model source that cannot be used, with a message that says what to do instead."""


@dataclass(frozen=True)
class ModelSource:
    """Where a model comes from, decided once: its folder, what kind of source it is, its name, and why it is used.

    kind is "bundled", "hub" (name is the hub id), "folder" (name is the folder's name) or "random" (built in
    memory with random weights, for benchmarks; folder is where its configs live). The device and dtype
    are the ones the source was resolved for (the hub download fetches the weights of that dtype only).
    """

    folder: Path
    kind: str
    name: str
    device: torch.device
    dtype: torch.dtype
    reason: str


@dataclass
class Components:
    """Everything the hand-written loop needs, loaded from one source."""

    tokenizer: CLIPTokenizer
    text_encoder: CLIPTextModel
    unet: UNet2DConditionModel
    vae: AutoencoderKL
    scheduler_config: dict
    source: ModelSource
    execution_device: torch.device | None = None  # set when models are offloaded to the CPU between uses

    @property
    def device(self) -> torch.device:
        return self.execution_device or self.unet.device

    @property
    def dtype(self) -> torch.dtype:
        return self.unet.dtype

    @property
    def reason(self) -> str:
        """One line: which model, and why."""
        return self.source.reason

    @property
    def vae_scale_factor(self) -> int:
        return 2 ** (len(self.vae.config.block_out_channels) - 1)


def pick_device() -> torch.device:
    """CUDA, then Apple's MPS, then the CPU."""
    if torch.cuda.is_available():
        return torch.device("cuda")
    if getattr(torch.backends, "mps", None) and torch.backends.mps.is_available():
        return torch.device("mps")
    return torch.device("cpu")


def pick_dtype(device: torch.device) -> torch.dtype:
    """fp16 on CUDA, fp32 elsewhere."""
    return torch.float16 if device.type == "cuda" else torch.float32


def check_model_folder(folder: Path) -> Path:
    """A folder in diffusers' layout with safetensors weights, or a ModelSourceError saying why not."""
    folder = Path(folder)
    if not folder.is_dir():
        raise ModelSourceError(f"model folder {str(folder)!r} does not exist")
    missing = [c for c in ("model_index.json", *COMPONENTS) if not (folder / c).exists()]
    if missing:
        raise ModelSourceError(
            f"model folder {str(folder)!r} is not in diffusers' layout: missing {', '.join(missing)} "
            f"(expected model_index.json and the folders {', '.join(COMPONENTS)})"
        )
    for part in WEIGHTED:
        files = [p for p in (folder / part).iterdir() if p.is_file()]
        if any(p.suffix == ".safetensors" for p in files):
            continue
        pickles = [p.name for p in files if p.suffix in PICKLE_SUFFIXES]
        if pickles:
            raise ModelSourceError(
                f"model folder {str(folder)!r}: {part}/ holds only pickle weights ({', '.join(pickles)}); "
                "pickle files can run arbitrary code, so only safetensors are loaded. Convert them "
                "with `model.save_pretrained(dir, safe_serialization=True)` in a trusted environment."
            )
        raise ModelSourceError(f"model folder {str(folder)!r}: {part}/ holds no .safetensors weights")
    return folder


def _cached_hub_snapshot(hub_id: str, allow_download: bool, dtype: torch.dtype) -> Path:
    """The local snapshot of a hub model, downloading it only when allowed.

    SD v1.5's repository holds fp32 and fp16 copies of every weight: only the copy that `dtype` will load is
    fetched (the same rule as `load_folder`'s choice of variant).
    """
    from huggingface_hub import snapshot_download
    from huggingface_hub.errors import (
        GatedRepoError,
        HFValidationError,
        LocalEntryNotFoundError,
        RepositoryNotFoundError,
        RevisionNotFoundError,
    )

    weights = "*/*.fp16.safetensors" if dtype == torch.float16 else "*/*[!6].safetensors"
    patterns = ["model_index.json", "*/*.json", "*/*.txt", weights]
    try:
        return Path(snapshot_download(hub_id, allow_patterns=patterns, local_files_only=not allow_download))
    except GatedRepoError:  # a RepositoryNotFoundError too, but the cure is a login, not a download
        raise ModelSourceError(
            f"model {hub_id!r} is gated on the hub: accept its licence on its page and log in "
            "(`hf auth login`), or point SD_MODEL at a local copy, or use the bundled model: SD_MODEL=bundled."
        ) from None
    # Offline or not cached, no such repository or revision, a malformed id: all end in the same advice. Anything
    # else (a disk error, a server error) is not "not cached" and is raised as it is.
    except (LocalEntryNotFoundError, RepositoryNotFoundError, RevisionNotFoundError, HFValidationError) as err:
        raise ModelSourceError(
            f"model {hub_id!r} is neither a local folder nor in the local Hugging Face cache, "
            "and could not be downloaded "
            f"({type(err).__name__}). Fetch it once with network access: "
            f"`huggingface-cli download {hub_id}`, point SD_MODEL at a local copy, "
            "or use the bundled model: SD_MODEL=bundled."
        ) from None


def _folder_name(folder: Path) -> str:
    """A folder's model name: the hub id for a snapshot in the Hugging Face cache (models--org--name/snapshots/...),
    else the folder's own name."""
    for part in folder.resolve().parts:
        if part.startswith("models--"):
            return part[len("models--") :].replace("--", "/")
    return folder.resolve().name


def _offline() -> bool:
    """Whether huggingface_hub was told not to reach the hub (HF_HUB_OFFLINE, read by the library itself)."""
    from huggingface_hub import constants

    return bool(constants.HF_HUB_OFFLINE)


def resolve_source(
    source: str | os.PathLike | None = "auto", device: torch.device | None = None, dtype: torch.dtype | None = None
) -> ModelSource:
    """Which model to load, from where, and one line saying why; the device and dtype are decided here, once."""
    if source is not None and not isinstance(source, (str, os.PathLike)):
        raise TypeError(
            f"source must be 'auto', 'bundled', a hub id or a folder path, got {type(source).__name__} {source!r}"
        )
    device = torch.device(device) if device is not None else pick_device()
    dtype = dtype or pick_dtype(device)

    def bundled(reason: str) -> ModelSource:
        return ModelSource(check_model_folder(BUNDLED_MODEL), "bundled", "toy-sd", device, dtype, reason)

    def hub(hub_id: str, reason: str) -> ModelSource:
        folder = _cached_hub_snapshot(hub_id, allow_download=not _offline(), dtype=dtype)
        return ModelSource(folder, "hub", hub_id, device, dtype, reason)

    if source in (None, "auto") and os.environ.get("SD_MODEL"):
        source = os.environ["SD_MODEL"]
        why = "set by SD_MODEL"
    else:
        why = "asked for"
    if source in (None, "auto"):
        if device.type == "cpu":
            return bundled("bundled toy model: no CUDA or MPS device for SD v1.5")
        try:
            return hub(SD15_HUB_ID, f"{SD15_HUB_ID} on {device.type}")
        except ModelSourceError:
            return bundled(f"bundled toy model: {SD15_HUB_ID} is neither cached nor reachable")
    if source in ("bundled", "toy"):
        return bundled(f"bundled toy model ({why})")
    path = Path(source).expanduser()
    if path.exists() or str(source).startswith((".", "/", "~")) or str(source).count("/") != 1:
        folder = check_model_folder(path)
        kind = "bundled" if folder.resolve() == BUNDLED_MODEL.resolve() else "folder"
        name = "toy-sd" if kind == "bundled" else _folder_name(folder)
        return ModelSource(folder, kind, name, device, dtype, f"local folder {str(path)!r} ({why})")
    return hub(str(source), f"{source} from the hub cache ({why})")


def load_components(
    source: str | os.PathLike | None = "auto",
    device: torch.device | str | None = None,
    dtype: torch.dtype | None = None,
) -> Components:
    """Load tokenizer, text encoder, U-Net, VAE and scheduler config from one source."""
    resolved = resolve_source(source, device, dtype)
    print(f"Model: {resolved.reason}")
    return load_folder(resolved)


@contextlib.contextmanager
def _naming(folder: Path, part: str):
    """Turn a weight file that cannot be read (empty, truncated, not safetensors) into an error naming it."""
    from safetensors import SafetensorError

    try:
        yield
    except (SafetensorError, OSError) as err:
        raise ModelSourceError(
            f"model folder {str(folder)!r}: the weights in {part}/ cannot be read ({type(err).__name__}: {err})"
        ) from err


def load_folder(source: ModelSource) -> Components:
    """Load every component from a resolved source's folder in diffusers' layout, safetensors only.

    In half precision, weights saved as the "fp16" variant (diffusion_pytorch_model.fp16.safetensors) are used
    where the folder has them.
    """
    folder, device, dtype = source.folder, source.device, source.dtype
    variant = "fp16" if dtype == torch.float16 and any(folder.glob("unet/*.fp16.safetensors")) else None
    kwargs = {"use_safetensors": True, "variant": variant}
    tokenizer = CLIPTokenizer.from_pretrained(folder, subfolder="tokenizer")
    with _naming(folder, "text_encoder"):
        text_encoder = CLIPTextModel.from_pretrained(folder, subfolder="text_encoder", dtype=dtype, **kwargs)
    with _naming(folder, "unet"):
        unet = UNet2DConditionModel.from_pretrained(folder, subfolder="unet", torch_dtype=dtype, **kwargs)
    with _naming(folder, "vae"):
        vae = AutoencoderKL.from_pretrained(folder, subfolder="vae", torch_dtype=dtype, **kwargs)
    scheduler_config = PNDMScheduler.load_config(folder, subfolder="scheduler")
    for model in (text_encoder, unet, vae):
        model.to(device).eval().requires_grad_(False)
    return Components(tokenizer, text_encoder, unet, vae, dict(scheduler_config), source)


def model_name(components: Components) -> str:
    """A short name for the model: "toy-sd", the hub id, or the folder's name (decided by `resolve_source`)."""
    return components.source.name
