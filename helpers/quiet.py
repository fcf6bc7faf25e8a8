"""Quiet libraries for a clean notebook: known, harmless notices and progress bars off, nothing else.

- transformers logs that its image processors fall back to PIL when torchvision is missing (this project uses
  no image processor) and draws a "Loading weights" progress bar for every model;
- diffusers draws its own progress bars while loading.
Warnings about *our* inputs (a prompt cut at 77 tokens, a float16 overflow) are not touched.
"""

from __future__ import annotations


def quiet_libraries() -> None:
    """Errors only from transformers' and diffusers' loggers, and no loading progress bars."""
    from diffusers.utils import logging as diffusers_logging
    from transformers.utils import logging as transformers_logging

    for logging in (transformers_logging, diffusers_logging):
        logging.set_verbosity_error()
        logging.disable_progress_bar()
