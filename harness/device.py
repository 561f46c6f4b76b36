"""Devices and mixed precision: first-class on GPU, always working on CPU."""
from __future__ import annotations

import contextlib
import random

import numpy as np
import torch

PRECISIONS = ("fp32", "bf16", "fp16")


DEVICES = "auto, cpu, cuda, cuda:N, mps"


def resolve_device(name: str = "auto") -> torch.device:
    """The torch device for ``name``; a device this machine lacks is a ConfigError naming ``device``
    (commands call this before any run is created)."""
    from harness.config import ConfigError
    if name == "auto":
        if torch.cuda.is_available():
            return torch.device("cuda")
        if getattr(torch.backends, "mps", None) and torch.backends.mps.is_available():
            return torch.device("mps")
        return torch.device("cpu")
    try:
        dev = torch.device(name)
    except (RuntimeError, ValueError, TypeError):
        raise ConfigError(f"device={name!r} is not a device; use one of {DEVICES}") from None
    if dev.type not in ("cpu", "cuda", "mps"):
        raise ConfigError(f"device={name!r}: only {DEVICES} are supported")
    if dev.type == "cuda":
        if not torch.cuda.is_available():
            raise ConfigError(f"device={name!r}: CUDA is not available on this machine (use device=cpu or auto)")
        if dev.index is not None and dev.index >= torch.cuda.device_count():
            raise ConfigError(f"device={name!r}: this machine has {torch.cuda.device_count()} CUDA device(s)")
    if dev.type == "mps" and not (getattr(torch.backends, "mps", None) and torch.backends.mps.is_available()):
        raise ConfigError(f"device={name!r}: MPS is not available on this machine (use device=cpu or auto)")
    return dev


def autocast(device: torch.device, precision: str):
    """Autocast for bf16/fp16 on accelerators; fp32 (or CPU fp16, which is slow and lossy) runs plain."""
    if precision not in PRECISIONS:
        raise ValueError(f"precision '{precision}' is not one of {PRECISIONS}")
    if precision == "fp32" or (device.type == "cpu" and precision == "fp16"):
        return contextlib.nullcontext()
    dtype = torch.bfloat16 if precision == "bf16" else torch.float16
    return torch.autocast(device_type=device.type, dtype=dtype)


def seed_everything(seed: int) -> torch.Generator:
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)
    return torch.Generator().manual_seed(seed)


def is_oom(err: BaseException) -> bool:
    return isinstance(err, torch.cuda.OutOfMemoryError) or "out of memory" in str(err).lower()
