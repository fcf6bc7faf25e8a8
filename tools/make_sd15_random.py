"""Write SD v1.5's architecture with random weights, in the hub repository's layout, to a folder.

    python tools/make_sd15_random.py outputs/sd15-random

The layout is that of `stable-diffusion-v1-5/stable-diffusion-v1-5`: model_index.json; tokenizer/, scheduler/;
text_encoder/, unet/ and vae/ each with float32 weights and the "fp16" variant beside them; and the
feature_extractor/ and safety_checker/ folders the hub copy also has (their configs only: no code path here reads
them, and the safety checker's random weights would be 1.2 GB). The pictures such a model draws are noise; what it
tests is the code path the notebook takes with SD v1.5 (`make test-sd15`). About 6.5 GB on disk.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import torch
from transformers import CLIPTokenizer

from helpers.models import CLIP_TOKENIZER, SD15_SCHEDULER
from helpers.reference import sd15_architecture

MODEL_INDEX = {
    "_class_name": "StableDiffusionPipeline",
    "_diffusers_version": "0.6.0",
    "feature_extractor": ["transformers", "CLIPImageProcessor"],
    "safety_checker": ["stable_diffusion", "StableDiffusionSafetyChecker"],
    "scheduler": ["diffusers", "PNDMScheduler"],
    "text_encoder": ["transformers", "CLIPTextModel"],
    "tokenizer": ["transformers", "CLIPTokenizer"],
    "unet": ["diffusers", "UNet2DConditionModel"],
    "vae": ["diffusers", "AutoencoderKL"],
}
FEATURE_EXTRACTOR = {  # SD v1.5's feature_extractor/preprocessor_config.json
    "crop_size": 224,
    "do_center_crop": True,
    "do_convert_rgb": True,
    "do_normalize": True,
    "do_resize": True,
    "feature_extractor_type": "CLIPFeatureExtractor",
    "image_mean": [0.48145466, 0.4578275, 0.40821073],
    "image_std": [0.26862954, 0.26130258, 0.27577711],
    "resample": 3,
    "size": 224,
}
SAFETY_CHECKER = {  # the parts of SD v1.5's safety_checker/config.json that name the architecture
    "_name_or_path": "CompVis/stable-diffusion-safety-checker",
    "architectures": ["StableDiffusionSafetyChecker"],
    "model_type": "clip",
    "projection_dim": 768,
}


def write(folder: Path) -> Path:
    """Build the random-weight model and save it in the hub's layout; returns the folder."""
    folder.mkdir(parents=True, exist_ok=True)
    torch.manual_seed(0)
    text_encoder, unet, vae = sd15_architecture("cpu")
    for name, module in (("text_encoder", text_encoder), ("unet", unet), ("vae", vae)):
        module.save_pretrained(folder / name, safe_serialization=True)
        module.half().save_pretrained(folder / name, safe_serialization=True, variant="fp16")
    CLIPTokenizer.from_pretrained(CLIP_TOKENIZER).save_pretrained(folder / "tokenizer")
    (folder / "scheduler").mkdir(exist_ok=True)
    (folder / "scheduler" / "scheduler_config.json").write_text(json.dumps(SD15_SCHEDULER, indent=2))
    for name, config in (("feature_extractor", FEATURE_EXTRACTOR), ("safety_checker", SAFETY_CHECKER)):
        (folder / name).mkdir(exist_ok=True)
        filename = "preprocessor_config.json" if name == "feature_extractor" else "config.json"
        (folder / name / filename).write_text(json.dumps(config, indent=2))
    (folder / "model_index.json").write_text(json.dumps(MODEL_INDEX, indent=2))
    return folder


if __name__ == "__main__":
    if len(sys.argv) != 2:
        sys.exit(__doc__)
    print(f"wrote {write(Path(sys.argv[1]))}")
