"""onnxruntime access to the backbone's intermediate tensors (the reference the conversion is checked against)."""
from __future__ import annotations

from pathlib import Path
from typing import Sequence

import numpy as np

from .source import find_focus_onnx
from .trace import trace_focus_graph


def focus_tensor_names(onnx_path: Path | str | None = None, model_proto=None) -> dict[str, str]:
    """ONNX tensor names of the backbone states, traced from the graph:
    ``embeddings``, ``layer.0`` ... ``layer.11`` (residual stream after each block, before any norm;
    = HF ``hidden_states[1..12]``) and ``last_hidden_state`` (after the final layernorm)."""
    import onnx
    if model_proto is None:
        model_proto = onnx.load(str(onnx_path if onnx_path is not None else find_focus_onnx()))
    tg = trace_focus_graph(model_proto)
    names = {"embeddings": tg.embeddings_out}
    names.update({f"layer.{i}": t for i, t in enumerate(tg.layer_outputs)})
    names["last_hidden_state"] = tg.final_norm_out
    return names


_SESSIONS: dict[tuple, object] = {}


def onnx_intermediate_outputs(onnx_path: Path | str | None, pixel_values: np.ndarray,
                              names: Sequence[str], free_spatial_dims: bool = True,
                              keep_session: bool = True) -> dict[str, np.ndarray]:
    """Run the ONNX graph with onnxruntime and return the requested tensors (ONNX tensor names, or the
    keys of ``focus_tensor_names``: ``embeddings``, ``layer.<i>``, ``last_hidden_state``; the graph
    outputs' own names work too). The tensors are added as graph outputs on a copy of the model.
    ``free_spatial_dims`` makes the declared 224x224 input H, W symbolic so other sizes can run."""
    import onnx
    import onnxruntime as ort

    path = Path(onnx_path) if onnx_path is not None else find_focus_onnx()
    st = path.stat()
    key = (str(path.resolve()), st.st_size, st.st_mtime_ns, tuple(names), free_spatial_dims)
    entry = _SESSIONS.get(key)
    if entry is None:
        proto = onnx.load(str(path))
        aliases = {}
        if any(n in ("embeddings", "last_hidden_state") or n.startswith("layer.") for n in names):
            aliases = focus_tensor_names(model_proto=proto)
        resolved = [aliases.get(n, n) for n in names]
        g = proto.graph
        produced = {o for n in g.node for o in n.output} | {i.name for i in g.input}
        for want, t in zip(names, resolved):
            if t not in produced:
                raise KeyError(f"'{want}' is not a tensor of {path.name} (aliases: "
                               f"{sorted(aliases) or 'none loaded'})")
        existing = {o.name for o in g.output}
        for t in resolved:
            if t not in existing:
                g.output.append(onnx.helper.make_tensor_value_info(t, onnx.TensorProto.FLOAT, None))
                existing.add(t)
        if free_spatial_dims:
            for inp in g.input:
                dims = inp.type.tensor_type.shape.dim
                if len(dims) == 4:
                    dims[2].dim_param, dims[3].dim_param = "height", "width"
            del g.value_info[:]
        opts = ort.SessionOptions()
        opts.log_severity_level = 3
        sess = ort.InferenceSession(proto.SerializeToString(), sess_options=opts,
                                    providers=["CPUExecutionProvider"])
        entry = (sess, resolved, g.input[0].name)
        if keep_session:
            _SESSIONS.clear()                              # hold at most one extra graph in memory
            _SESSIONS[key] = entry
    sess, resolved, input_name = entry
    x = np.ascontiguousarray(pixel_values, dtype=np.float32)
    outs = sess.run(resolved, {input_name: x})
    return dict(zip(names, outs))
