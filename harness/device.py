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


def fast_precision(device: torch.device) -> str:
    """``bf16`` where this device computes it natively (CUDA with bf16; a CPU whose oneDNN has bf16 kernels:
    AVX512-BF16 or AMX), else ``fp32``. For frozen-feature extraction, where bf16 features agree with fp32
    ones to a cosine of ~0.99998 (DINOv2-S) and a native-bf16 CPU runs the ViT 1.5-2x faster; where bf16 is
    emulated it is slower than fp32, hence the check."""
    if device.type == "cuda":
        return "bf16" if torch.cuda.is_bf16_supported() else "fp32"
    if device.type == "cpu":
        try:
            return "bf16" if torch.ops.mkldnn._is_mkldnn_bf16_supported() else "fp32"
        except (AttributeError, RuntimeError):   # a torch build without oneDNN
            return "fp32"
    return "fp32"


def seed_everything(seed: int) -> torch.Generator:
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)
    return torch.Generator().manual_seed(seed)


def is_oom(err: BaseException) -> bool:
    return isinstance(err, torch.cuda.OutOfMemoryError) or "out of memory" in str(err).lower()
