"""Loading local weights safely: safetensors, or torch.load(weights_only=True); never bare pickle."""
from __future__ import annotations

from pathlib import Path
from typing import Callable, Mapping

import torch
from torch import nn

from harness.errors import UserError

_CONTAINER_KEYS = ("state_dict", "model", "teacher", "student", "module", "model_state", "net")


class CheckpointError(UserError, ValueError):
    pass


def read_state_dict(path: str | Path) -> dict[str, torch.Tensor]:
    p = Path(path).expanduser()
    if not p.is_file():
        raise CheckpointError(f"checkpoint '{p}' does not exist")
    if p.suffix == ".safetensors":
        from safetensors.torch import load_file
        try:
            sd = load_file(str(p))
        except Exception as e:  # noqa: BLE001 - safetensors raises several types
            raise CheckpointError(f"checkpoint '{p}' is not a valid safetensors file: {e}") from None
    else:
        try:
            sd = torch.load(p, map_location="cpu", weights_only=True)
        except Exception as e:  # noqa: BLE001
            raise CheckpointError(
                f"checkpoint '{p}' could not be loaded with torch.load(weights_only=True): {e}. "
                "Only tensors/containers are accepted; convert it to safetensors if it holds other objects."
            ) from None
    # unwrap {'model': {...}} / {'state_dict': {...}} / DINO {'teacher': {...}}
    while isinstance(sd, Mapping) and not any(isinstance(v, torch.Tensor) for v in sd.values()):
        key = next((k for k in _CONTAINER_KEYS if k in sd and isinstance(sd[k], Mapping)), None)
        if key is None:
            raise CheckpointError(f"checkpoint '{p}' holds no tensors (top-level keys: {list(sd)[:10]})")
        sd = sd[key]
    return {k: v for k, v in sd.items() if isinstance(v, torch.Tensor)}


def remap_keys(sd: Mapping[str, torch.Tensor], rules: list[tuple[str, str]]) -> dict[str, torch.Tensor]:
    """Apply prefix rewrites (``old:new``; new may be empty to strip). Common wrappers are stripped."""
    out = {}
    for k, v in sd.items():
        for old, new in rules:
            if k.startswith(old):
                k = new + k[len(old):]
        out[k] = v
    return out


def load_into(model: nn.Module, path: str | Path, remap: str | None = None, *,
              auto_prefixes: tuple[str, ...] = ("module.", "backbone.", "encoder.", "visual."),
              filter_fn: Callable | None = None) -> None:
    """Load a checkpoint into ``model``; any missing, unexpected or mis-shaped key is an error that lists them.

    ``filter_fn(state_dict, model) -> state_dict`` is the library's own converter of published layouts
    (timm's ``checkpoint_filter_fn``: DINOv2/DINOv3 hub checkpoints, OpenAI CLIP, position-table
    resampling to the model's grid). It runs on the checkpoint as written and on each prefix-stripped
    variant; whichever fits the model best is loaded, strictly."""
    sd = read_state_dict(path)
    rules = []
    if remap:
        for rule in remap.split(","):
            old, _, new = rule.partition(":")
            rules.append((old, new))
    sd = remap_keys(sd, rules)
    own = model.state_dict()
    # a wrapper prefix (DDP's module., a full CLIP's visual., ...) is stripped when the keys under it
    # fit the model better than the checkpoint as a whole
    def fit(d):
        good = sum(1 for k, v in d.items() if k in own and tuple(own[k].shape) == tuple(v.shape))
        return good, -len(set(d) ^ set(own))
    candidates = [sd] + [{k[len(p):]: v for k, v in sd.items() if k.startswith(p)} for p in auto_prefixes]
    candidates = [c for c in candidates if c]
    if filter_fn is not None:
        converted = []
        for c in candidates:
            try:
                converted.append(filter_fn(dict(c), model))
            except CheckpointError:   # the converter recognised the layout and found it unusable
                raise
            except Exception:  # noqa: BLE001 - a converter that does not recognise the layout
                continue
        candidates = converted + candidates
    sd = max(candidates, key=fit)
    missing = sorted(set(own) - set(sd))
    unexpected = sorted(set(sd) - set(own))
    shape = sorted(k for k in set(own) & set(sd) if tuple(own[k].shape) != tuple(sd[k].shape))
    if missing or unexpected or shape:
        def show(keys):
            return ", ".join(keys[:8]) + (f" ... (+{len(keys) - 8} more)" if len(keys) > 8 else "")
        lines = [f"checkpoint '{path}' does not fit {type(model).__name__}:"]
        if missing:
            lines.append(f"  missing keys ({len(missing)}): {show(missing)}")
        if unexpected:
            lines.append(f"  unexpected keys ({len(unexpected)}): {show(unexpected)}")
        if shape:
            lines.append("  shape mismatches: " + show(
                [f"{k} {tuple(sd[k].shape)} vs model {tuple(own[k].shape)}" for k in shape]))
        lines.append("  (use ?remap=old_prefix:new_prefix in the encoder spec to rename keys)")
        raise CheckpointError("\n".join(lines))
    model.load_state_dict(sd, strict=True)
