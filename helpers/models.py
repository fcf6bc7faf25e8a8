"""Where a model comes from and how its components are loaded; the scheduler registry.

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
    DDIMScheduler,
    DPMSolverMultistepScheduler,
    EulerAncestralDiscreteScheduler,
    EulerDiscreteScheduler,
    HeunDiscreteScheduler,
    LMSDiscreteScheduler,
    PNDMScheduler,
    UNet2DConditionModel,
    UniPCMultistepScheduler,
)
from diffusers.schedulers.scheduling_utils import SchedulerMixin
from transformers import CLIPTextModel, CLIPTokenizer

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


@dataclass(frozen=True)
class SchedulerEntry:
    """Everything the project knows about one scheduler: adding a scheduler is adding one entry below."""

    cls: type[SchedulerMixin]  # the diffusers class, built from the model's own scheduler config
    a1111_name: str  # how AUTOMATIC1111 names the sampler in PNG parameters
    usual_steps: int  # the step count it is usually run at (toy.evaluate measures each at it)


SCHEDULERS: dict[str, SchedulerEntry] = {
    "pndm": SchedulerEntry(PNDMScheduler, "PLMS", 50),
    "lms": SchedulerEntry(LMSDiscreteScheduler, "LMS", 50),
    "heun": SchedulerEntry(HeunDiscreteScheduler, "Heun", 25),
    "dpm++": SchedulerEntry(DPMSolverMultistepScheduler, "DPM++ 2M", 20),
    "euler": SchedulerEntry(EulerDiscreteScheduler, "Euler", 30),
    "euler_a": SchedulerEntry(EulerAncestralDiscreteScheduler, "Euler a", 30),
    "ddim": SchedulerEntry(DDIMScheduler, "DDIM", 50),
    "unipc": SchedulerEntry(UniPCMultistepScheduler, "UniPC", 20),
}


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


def check_scheduler_name(name: object) -> str:
    if not isinstance(name, str):
        raise TypeError(f"scheduler must be a str, one of {sorted(SCHEDULERS)}, got {type(name).__name__} {name!r}")
    if name not in SCHEDULERS:
        raise ValueError(f"scheduler must be one of {sorted(SCHEDULERS)}, got {name!r}")
    return name


def make_scheduler(name: str, scheduler_config: dict) -> SchedulerMixin:
    """A fresh scheduler of the registered kind, configured from the model's own scheduler config."""
    return SCHEDULERS[check_scheduler_name(name)].cls.from_config(scheduler_config)


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


def is_bundled(components: Components) -> bool:
    """Whether the components are the bundled toy model's."""
    return components.source.kind == "bundled"


def sd15_architecture(device: torch.device | str = "meta", dtype: torch.dtype = torch.float32):
    """SD v1.5's text encoder, U-Net and VAE built from their published configs, with random weights.

    On the "meta" device nothing is allocated: good for parameter counts and shapes.
    """
    from transformers import CLIPTextConfig

    with torch.device(device):
        text_encoder = CLIPTextModel(CLIPTextConfig.from_json_file(SD15_CONFIGS / "text_encoder_config.json"))
        unet = UNet2DConditionModel.from_config(UNet2DConditionModel.load_config(SD15_CONFIGS / "unet_config.json"))
        vae = AutoencoderKL.from_config(AutoencoderKL.load_config(SD15_CONFIGS / "vae_config.json"))
    if dtype != torch.float32:
        text_encoder, unet, vae = text_encoder.to(dtype), unet.to(dtype), vae.to(dtype)
    return text_encoder, unet, vae


def random_components(
    text_encoder: CLIPTextModel, unet: UNet2DConditionModel, vae: AutoencoderKL, name: str, reason: str
) -> Components:
    """Networks built in memory (random weights), with SD v1.5's tokenizer and scheduler config, as Components."""
    for model in (text_encoder, unet, vae):
        model.eval().requires_grad_(False)
    source = ModelSource(SD15_CONFIGS, "random", name, unet.device, unet.dtype, reason)
    tokenizer = CLIPTokenizer.from_pretrained(CLIP_TOKENIZER)
    return Components(tokenizer, text_encoder, unet, vae, dict(SD15_SCHEDULER), source)


def sd15_random_components(device: torch.device | str = "cpu", dtype: torch.dtype = torch.float32) -> Components:
    """SD v1.5's architecture with random weights, ready for the loop (speed does not depend on the weights)."""
    return random_components(*sd15_architecture(device, dtype), "sd15-random", "SD v1.5 architecture, random weights")


def model_name(components: Components) -> str:
    """A short name for the model: "toy-sd", the hub id, or the folder's name (decided by `resolve_source`)."""
    return components.source.name


def diffusers_pipeline(components: Components, scheduler: str, pipeline_class=None):
    """diffusers' own pipeline (StableDiffusionPipeline by default) on the very same components."""
    from diffusers import StableDiffusionPipeline

    pipe = (pipeline_class or StableDiffusionPipeline)(
        vae=components.vae,
        text_encoder=components.text_encoder,
        tokenizer=components.tokenizer,
        unet=components.unet,
        scheduler=make_scheduler(scheduler, components.scheduler_config),
        safety_checker=None,
        feature_extractor=None,
        requires_safety_checker=False,
    )
    pipe.set_progress_bar_config(disable=True)
    return pipe
