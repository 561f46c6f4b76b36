"""Stage checkpoints of a boost run, and resuming from them.

``<run>/stage<k>/ckpt-<step>/`` holds ``model.safetensors`` (every parameter trained so far, unsharded),
``optimizer.pt`` (AdamW state keyed by parameter name, unsharded: any world size / strategy can resume it),
``rng.safetensors`` (the torch CPU generator) and ``state.json`` (step, losses so far, ``done``). Each is
written into a temporary folder and renamed when complete (``harness.atomic.atomic_dir``), so the last
``ckpt-*`` folder is always whole: a rerun of the same config resumes there and continues the same loss curve.
"""
from __future__ import annotations

import hashlib
import json
import os
import shutil
from pathlib import Path

import torch
from torch import nn

from harness.atomic import atomic_dir, is_stale_temp


def stage_dir(run_dir: Path, stage: int) -> Path:
    return run_dir / f"stage{stage}"


def latest_checkpoint(run_dir: Path, stage: int) -> Path | None:
    d = stage_dir(run_dir, stage)
    cks = sorted(p for p in d.glob("ckpt-*") if p.is_dir() and (p / "state.json").is_file()) \
        if d.is_dir() else []
    return cks[-1] if cks else None


def read_state(ckpt: Path) -> dict:
    return json.loads((ckpt / "state.json").read_text())


def write_checkpoint(final: Path, params: dict[str, torch.Tensor], optimizer_state: dict,
                     state: dict, keep: int) -> Path:
    """Publish ``final`` (the trained ``params``, the optimiser, the RNG, ``state``); keep the last ``keep``
    checkpoints of the stage and remove temporary folders of killed writers."""
    from safetensors.torch import save_file
    tensors = {n: p.detach().cpu().contiguous() for n, p in params.items()}
    rng = {"torch": torch.get_rng_state()}
    with atomic_dir(final, replace=True) as tmp:
        save_file(tensors, str(tmp / "model.safetensors"))
        torch.save(optimizer_state, tmp / "optimizer.pt")
        save_file(rng, str(tmp / "rng.safetensors"))
        (tmp / "state.json").write_text(json.dumps({**state, "saved": sorted(tensors)}, indent=1))
        for f in tmp.iterdir():                   # flush file contents before the rename makes them visible
            with open(f, "rb") as fh:
                os.fsync(fh.fileno())
    old = sorted(p for p in final.parent.glob("ckpt-*") if p.is_dir())
    for p in old[:-max(1, keep)]:
        shutil.rmtree(p, ignore_errors=True)
    for p in final.parent.glob(".ckpt-*"):
        if is_stale_temp(p):
            shutil.rmtree(p, ignore_errors=True)
    return final


def load_params(model: nn.Module, ckpt: Path) -> list[str]:
    """Copy the checkpoint's tensors into ``model``'s parameters of the same names; returns those names."""
    from safetensors.torch import load_file
    tensors = load_file(str(ckpt / "model.safetensors"))
    named = dict(model.named_parameters())
    missing = [n for n in tensors if n not in named]
    if missing:
        raise RuntimeError(f"checkpoint {ckpt} holds parameters this model does not have: {missing[:5]} "
                           f"(was it written with another config?)")
    with torch.no_grad():
        for n, t in tensors.items():
            named[n].copy_(t.to(named[n].device, named[n].dtype))
    return list(tensors)


def restore_training_state(ckpt: Path, optimizer: torch.optim.Optimizer, device: torch.device,
                           model: nn.Module) -> tuple[int, list[float]]:
    """Optimiser and RNG as they were at ``ckpt`` (the parameters come from :func:`load_params`); returns the
    step to continue from and the losses so far. ``model`` maps the saved parameter names to ``optimizer``'s
    parameters (sharded under FSDP or not)."""
    from safetensors.torch import load_file
    from . import fsdp
    saved = torch.load(ckpt / "optimizer.pt", weights_only=True, map_location="cpu" if fsdp.is_sharded(model)
                       else device)
    if fsdp.is_sharded(model):
        fsdp.load_full_optimizer_state(model, optimizer, saved)
    else:
        fsdp.load_optimizer_state(model, optimizer, saved)
    st = read_state(ckpt)
    torch.set_rng_state(load_file(str(ckpt / "rng.safetensors"))["torch"])
    return int(st["step"]), list(st["losses"])


def params_digest(params: dict[str, torch.Tensor]) -> str:
    """Short hash of parameter values: DDP processes compare theirs at the end of a stage."""
    h = hashlib.sha256()
    for k in sorted(params):
        h.update(k.encode())
        h.update(params[k].detach().float().cpu().contiguous().numpy().tobytes())
    return h.hexdigest()[:16]
