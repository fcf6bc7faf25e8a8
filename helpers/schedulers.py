"""The scheduler registry: every scheduler the project offers, by name, with what is known about it.

Adding a scheduler is adding one entry to SCHEDULERS; the input checks, the PNG text and its reader, toy.evaluate
and the notebook's scheduler sections pick it up from there.
"""

from __future__ import annotations

from dataclasses import dataclass

from diffusers import (
    DDIMScheduler,
    DPMSolverMultistepScheduler,
    EulerAncestralDiscreteScheduler,
    EulerDiscreteScheduler,
    HeunDiscreteScheduler,
    LMSDiscreteScheduler,
    PNDMScheduler,
    UniPCMultistepScheduler,
)
from diffusers.schedulers.scheduling_utils import SchedulerMixin


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


def check_scheduler_name(name: object) -> str:
    if not isinstance(name, str):
        raise TypeError(f"scheduler must be a str, one of {sorted(SCHEDULERS)}, got {type(name).__name__} {name!r}")
    if name not in SCHEDULERS:
        raise ValueError(f"scheduler must be one of {sorted(SCHEDULERS)}, got {name!r}")
    return name


def make_scheduler(name: str, scheduler_config: dict) -> SchedulerMixin:
    """A fresh scheduler of the registered kind, configured from the model's own scheduler config."""
    return SCHEDULERS[check_scheduler_name(name)].cls.from_config(scheduler_config)
