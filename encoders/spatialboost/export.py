"""Export of a boosted encoder (after stage 3), read back by :mod:`encoders.spatialboost.boosted`.

Folder layout (``<run>/boosted/``, also logged as the MLflow artifact ``encoder/`` of the stage-3 run)::

    boosted.json          format, base encoder spec + fingerprint + info, variant, wrapper config,
                          feature layer, data set ids, stage run ids, config hash, parameter counts
    encoder.safetensors   the trained encoder parameters, named relative to the adapter's backbone
                          (dual: ``<layer>.plus.*`` and ``<layer>.a``; lora: ``*.lora_A/B.*``; full: every parameter)
    projector.safetensors the stage-3 projector (not needed to use the encoder; kept for the VLM)

Only trained tensors are stored: the frozen original weights come from the base encoder spec, whose fingerprint
must match when loading.
"""
from __future__ import annotations

import json
from dataclasses import asdict
from pathlib import Path

import torch
from torch import nn

from harness.atomic import atomic_dir

from .dual_attention import named_dual_channel_parameters

FORMAT = "spatialboost-boosted/1"


def trained_encoder_tensors(backbone: nn.Module, variant: str) -> dict[str, torch.Tensor]:
    if variant == "dual":
        named = dict(named_dual_channel_parameters(backbone))
    elif variant == "lora":
        named = {n: p for n, p in backbone.named_parameters() if "lora_" in n}
    elif variant == "full":
        named = dict(backbone.named_parameters())
    else:
        raise ValueError(f"unknown variant {variant!r}")
    return {n: p.detach().float().cpu().contiguous() for n, p in named.items()}


def base_info(encoder) -> dict:
    info = asdict(encoder.info)
    info.pop("spec", None)
    info["params"] = sum(p.numel() for p in encoder.parameters())
    return json.loads(json.dumps(info))


def write_boosted(out: str | Path, *, backbone: nn.Module, variant: str, wrapper: dict, base_spec: str,
                  base_fingerprint: str, base_encoder_info: dict, extra: dict | None = None,
                  projector: nn.Module | None = None) -> Path:
    """Write the export folder atomically (temporary sibling + rename)."""
    from safetensors.torch import save_file
    out = Path(out)
    tensors = trained_encoder_tensors(backbone, variant)
    meta = {"format": FORMAT, "base_spec": base_spec, "base_fingerprint": base_fingerprint,
            "base_info": base_encoder_info, "variant": variant, "wrapper": wrapper,
            "trained_params": int(sum(t.numel() for t in tensors.values())), **(extra or {})}
    with atomic_dir(out, replace=True) as tmp:
        save_file(tensors, str(tmp / "encoder.safetensors"))
        if projector is not None:
            save_file({n: p.detach().float().cpu().contiguous() for n, p in projector.named_parameters()},
                      str(tmp / "projector.safetensors"))
        (tmp / "boosted.json").write_text(json.dumps(meta, indent=1, default=str))
    return out


def export_boosted(trainer, out: str | Path, *, data_ids: dict, run_ids: dict) -> Path:
    """Export the encoder of a :class:`~encoders.spatialboost.trainer.BoostTrainer` after stage 3."""
    from .vlm import backbone_of
    cfg = trainer.cfg
    rep = trainer.variant_report
    extra = {"feature_layer": trainer.vlm.feature_layer, "image_size": trainer.image_size, "lm": cfg.lm,
             "data_ids": data_ids, "run_ids": run_ids, "config_hash": trainer.hash,
             "params_before": rep.get("params_before", rep.get("params_total")),
             "params_after": rep.get("params_after", rep.get("params_total")),
             "increase_pct": rep.get("increase_pct", 0.0),
             # what a report says about this candidate (copied into every eval run's tags)
             "run_tags": dict(getattr(trainer, "tags", None) or trainer.run_tags())}
    return write_boosted(out, backbone=backbone_of(trainer.vlm.encoder), variant=cfg.variant,
                         wrapper=rep.get("wrapper", {}), base_spec=trainer.base_spec,
                         base_fingerprint=trainer.base_fingerprint, base_encoder_info=trainer.base_info,
                         extra=extra, projector=trainer.vlm.projector)
