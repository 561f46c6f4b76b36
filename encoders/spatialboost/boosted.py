"""``boosted:PATH`` and ``boosted:runs:/<run_id>/encoder``: a SpatialBoost-trained encoder as a harness Encoder.

Registered in harness/registry.py as ``"boosted": "encoders.spatialboost.boosted:build_boosted"``.

The base encoder is rebuilt from the recorded spec, its fingerprint checked against the recorded one (a
mismatch stops with an error saying what differs), the recorded variant re-applied to its backbone
(dual-channel wrap with the saved :class:`DualChannelConfig`, LoRA, or nothing for full fine-tuning) and the
trained tensors loaded. The result is the base adapter's own class (``TimmEncoder``, ``HFVisionEncoder``, ...)
with ``info.spec`` = the boosted spec, ``boosted_from`` = the base spec, ``boosted_meta`` = the export's JSON,
and a fingerprint of its own (it hashes the wrapped weights), so the feature cache keeps it apart from the base.
"""
from __future__ import annotations

import dataclasses
import json
from pathlib import Path

import torch

from encoders.adapters.common import EncoderSpecError
from encoders.base import Encoder

from .export import FORMAT, base_info


class BoostedEncoderError(EncoderSpecError):
    pass


def _resolve(target: str, spec: str, workspace) -> Path:
    if target.startswith("runs:/"):
        import mlflow
        import os
        uri = os.environ.get("MLFLOW_TRACKING_URI") or workspace.tracking_uri
        run_id = target[len("runs:/"):].split("/", 1)[0]
        dest = workspace.cache / "boosted" / run_id
        if not (dest / "encoder" / "boosted.json").is_file():
            dest.mkdir(parents=True, exist_ok=True)
            try:
                mlflow.artifacts.download_artifacts(artifact_uri=target, dst_path=str(dest), tracking_uri=uri)
            except Exception as e:          # mlflow raises several types for a missing run / artifact
                raise BoostedEncoderError(f"'{spec}': cannot fetch '{target}' from the MLflow store {uri}: "
                                          f"{e}") from None
        sub = target.rstrip("/").split("/", 2)[-1] if target.count("/") >= 2 else ""
        path = dest / sub if sub else dest
    else:
        path = Path(target).expanduser()
    if path.is_file() and path.name == "boosted.json":
        path = path.parent
    if not (path / "boosted.json").is_file():
        raise BoostedEncoderError(f"'{spec}': '{path}' is not a boosted encoder export (no boosted.json)")
    return path


def _differences(rec: dict, now: dict) -> str:
    diffs = [f"{k}: {rec.get(k)!r} -> {now.get(k)!r}" for k in sorted(set(rec) | set(now))
             if rec.get(k) != now.get(k)]
    return "; ".join(diffs) if diffs else "same architecture and preprocessing, so the weights differ"


def build_boosted(target: str, opts: dict, spec: str, workspace) -> Encoder:
    from harness.registry import build_encoder
    from safetensors.torch import load_file
    from .ablations import apply_lora
    from .dual_attention import DualChannelConfig, named_dual_channel_parameters, wrap_dual_channel
    from .vlm import backbone_of

    path = _resolve(target, spec, workspace)
    meta = json.loads((path / "boosted.json").read_text())
    if meta.get("format") != FORMAT:
        raise BoostedEncoderError(f"'{spec}': {path}/boosted.json has format {meta.get('format')!r}, "
                                  f"expected {FORMAT!r}")
    base_spec = meta["base_spec"]
    enc = build_encoder(base_spec, workspace)
    fp = enc.fingerprint()
    if fp != meta["base_fingerprint"]:
        raise BoostedEncoderError(
            f"'{spec}': the boosted checkpoint was trained on base encoder '{base_spec}' with fingerprint "
            f"{meta['base_fingerprint']}, but '{base_spec}' now builds an encoder with fingerprint {fp} "
            f"({_differences(meta.get('base_info', {}), base_info(enc))}). Rebuild the base encoder the "
            f"checkpoint was trained from, or boost this one again.")
    bb = backbone_of(enc)
    variant, wrapper = meta["variant"], meta.get("wrapper", {})
    if variant == "dual":
        fields = {f.name for f in dataclasses.fields(DualChannelConfig)}
        wrap_dual_channel(bb, DualChannelConfig(**{k: v for k, v in wrapper.items() if k in fields}))
        expected = {n for n, _ in named_dual_channel_parameters(bb)}
    elif variant == "lora":
        apply_lora(bb, r=int(wrapper["r"]), alpha=int(wrapper["alpha"]), target=list(wrapper["targets"]))
        expected = {n for n, _ in bb.named_parameters() if "lora_" in n}
    elif variant == "full":
        expected = {n for n, _ in bb.named_parameters()}
    else:
        raise BoostedEncoderError(f"'{spec}': unknown variant {variant!r} in {path}/boosted.json")
    tensors = load_file(str(path / "encoder.safetensors"))
    if set(tensors) != expected:
        extra, missing = sorted(set(tensors) - expected), sorted(expected - set(tensors))
        raise BoostedEncoderError(f"'{spec}': encoder.safetensors does not match the {variant} layout of "
                                  f"'{base_spec}' (unexpected {extra[:4]}, missing {missing[:4]})")
    named = dict(bb.named_parameters())
    with torch.no_grad():
        for n, t in tensors.items():
            if named[n].shape != t.shape:
                raise BoostedEncoderError(f"'{spec}': {n} has shape {tuple(t.shape)} in the export but "
                                          f"{tuple(named[n].shape)} in the model")
            named[n].copy_(t.to(named[n].dtype))
    enc.info = dataclasses.replace(enc.info, spec=spec)
    enc._fingerprint = None
    enc.boosted_from = base_spec
    enc.boosted_meta = meta
    enc.run_tags = boost_run_tags(meta)
    return enc


def boost_run_tags(meta: dict) -> dict[str, str]:
    """The ``boost.*`` tags of an export (``run_tags`` in boosted.json; derived from ``lm`` for older exports),
    so every eval run of a boosted encoder says which LM trained it and whether that LM was random."""
    from .lm import lm_is_random
    tags = {k: str(v) for k, v in (meta.get("run_tags") or {}).items()}
    lm = meta.get("lm", "")
    tags.setdefault("boost.lm", lm)
    tags.setdefault("boost.lm_random", "1" if lm_is_random(lm) else "0")
    tags.setdefault("boost.variant", meta.get("variant", ""))
    tags.setdefault("boost.config_hash", meta.get("config_hash", ""))
    return tags
