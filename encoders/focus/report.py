"""Per-layer statistics behind README.md's "the last block is saliency-tuned" table."""
from __future__ import annotations

from pathlib import Path
from typing import Sequence

import numpy as np

from .runtime import onnx_intermediate_outputs


def focus_feature_report(model, onnx_path: Path | str | None, images: np.ndarray,
                         layers: Sequence[int] = (4, 8, 11, 12)) -> dict:
    """Per-layer statistics that show how specialised each block is (see README.md).

    ``images``: [N,3,224,224] ImageNet-normalised. For each block index L in ``layers`` (1-based,
    ``hidden_states[L]`` with the final layernorm applied; L = num_layers is the model output):
    top-PC variance share of the patch tokens, |corr| of that PC with the ONNX saliency output
    (pooled to the patch grid), participation ratio, mean pairwise cosine of the CLS tokens between
    images, and the relative update of the residual stream by each block."""
    import torch
    with torch.inference_mode():
        return _feature_report(model, onnx_path, images, layers)


def _feature_report(model, onnx_path, images, layers) -> dict:
    import torch
    sal = onnx_intermediate_outputs(onnx_path, images, ["output_importance"],
                                    keep_session=False)["output_importance"]
    out = model(torch.from_numpy(np.ascontiguousarray(images, np.float32)), output_hidden_states=True)
    hs = out.hidden_states
    n, _, h, w = images.shape
    gh, gw = h // model.config.patch_size, w // model.config.patch_size
    sal_grid = torch.nn.functional.adaptive_avg_pool2d(torch.from_numpy(sal), (gh, gw)).reshape(n, -1)
    rep: dict = {"layers": {}, "relative_update": []}
    L = model.config.num_hidden_layers
    for li in layers:
        t = out.last_hidden_state if li == L else model.layernorm(hs[li])
        pcs, corrs, prs = [], [], []
        for b in range(n):
            p = t[b, 1:].double()
            p = p - p.mean(0)
            u, s, vh = torch.linalg.svd(p, full_matrices=False)
            var = s ** 2
            pcs.append(float(var[0] / var.sum()))
            prs.append(float(var.sum() ** 2 / (var ** 2).sum()))
            comp = u[:, 0] * s[0]
            c = torch.corrcoef(torch.stack([comp, sal_grid[b].double()]))[0, 1]
            corrs.append(abs(float(c)))
        cls = torch.nn.functional.normalize(t[:, 0].double(), dim=-1)
        sim = cls @ cls.T
        off = sim[~torch.eye(n, dtype=torch.bool)]
        rep["layers"][li] = {"top_pc_share": float(np.mean(pcs)), "top_pc_saliency_corr": float(np.mean(corrs)),
                             "participation_ratio": float(np.mean(prs)),
                             "cls_mean_pairwise_cos": float(off.mean()) if n > 1 else float("nan")}
    for li in range(1, L + 1):
        rep["relative_update"].append(float((hs[li] - hs[li - 1]).norm() / hs[li - 1].norm()))
    enc = model.encoder.layer
    rep["layer_scale_mean_abs"] = [(float(b.layer_scale1.lambda1.abs().mean()),
                                    float(b.layer_scale2.lambda1.abs().mean())) for b in enc]
    return rep
