"""Names: structural roles -> ``transformers.Dinov2Model`` state-dict keys (transformers 5 and 4.x names), the
cross-check against the exporter's own names, and the ``Dinov2Config`` read off the trace."""
from __future__ import annotations

from .source import FocusConversionError
from .trace import TracedGraph

# Parameters of Dinov2Model that the exported graph legitimately lacks, and how they are filled.
NOT_IN_GRAPH = {"embeddings.mask_token": "zeros (used only with bool_masked_pos, i.e. pre-training)"}

# HF key for each role; transformers 5 names first, 4.x names second.
_ROLE_TO_HF = {
    "patch.weight": ["embeddings.patch_embeddings.projection.weight"],
    "patch.bias": ["embeddings.patch_embeddings.projection.bias"],
    "cls_token": ["embeddings.cls_token"],
    "position_embeddings": ["embeddings.position_embeddings"],
    "final_norm.weight": ["layernorm.weight"],
    "final_norm.bias": ["layernorm.bias"],
}
_LAYER_ROLE_TO_HF = {
    "norm1": ["norm1"], "norm2": ["norm2"],
    "q": ["attention.q_proj", "attention.attention.query"],
    "k": ["attention.k_proj", "attention.attention.key"],
    "v": ["attention.v_proj", "attention.attention.value"],
    "o": ["attention.o_proj", "attention.output.dense"],
    "fc1": ["mlp.fc1"], "fc2": ["mlp.fc2"],
    "ls1": ["layer_scale1.lambda1"], "ls2": ["layer_scale2.lambda1"],
}


def hf_candidates(role: str) -> list[str]:
    if role in _ROLE_TO_HF:
        return _ROLE_TO_HF[role]
    _, i, rest = role.split(".", 2)                     # layer.<i>.<role>[.weight|.bias]
    base, _, suffix = rest.partition(".")
    return [f"encoder.layer.{i}.{c}" + (f".{suffix}" if suffix else "")
            for c in _LAYER_ROLE_TO_HF[base]]


def cross_check_names(tg: TracedGraph) -> int:
    """Where the exporter kept a module-path name on an initializer, it must agree with the role the
    structural trace gave it (a second, independent check of the q/k/v assignment). Returns the
    number of names checked; anonymous names (``onnx::MatMul_1966``) are skipped."""
    checked, wrong = 0, []
    for role, src in tg.sources.items():
        if "::" in src or "(" in src or "." not in src:
            continue
        cands = hf_candidates(role)
        if any(src == c or src.endswith("." + c) for c in cands):
            checked += 1
        else:
            wrong.append(f"{role} <- '{src}'")
    if wrong:
        raise FocusConversionError("the structural trace disagrees with the exporter's names: "
                                   + "; ".join(wrong[:10]))
    tg.names_checked = checked
    return checked


def focus_config_from_trace(tg: TracedGraph):
    from transformers import Dinov2Config
    if tg.mlp_hidden % tg.hidden_size:
        raise FocusConversionError(f"MLP width {tg.mlp_hidden} is not a multiple of {tg.hidden_size}")
    return Dinov2Config(
        hidden_size=tg.hidden_size, num_hidden_layers=tg.num_layers,
        num_attention_heads=tg.num_heads, mlp_ratio=tg.mlp_hidden // tg.hidden_size,
        patch_size=tg.patch_size, image_size=tg.pos_grid * tg.patch_size,
        num_channels=tg.num_channels, layer_norm_eps=tg.layer_norm_eps, hidden_act=tg.hidden_act,
        qkv_bias=True, use_swiglu_ffn=False, layerscale_value=1.0, drop_path_rate=0.0,
        hidden_dropout_prob=0.0, attention_probs_dropout_prob=0.0)
