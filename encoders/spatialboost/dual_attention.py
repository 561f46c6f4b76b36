"""Dual-channel attention (SpatialBoost §3.1, Eq. 1; after CogVideo's ``attention_plus`` branch).

For every attention layer ``Attn`` of a vision encoder a trainable copy ``Attn+`` is added next to it and the
two outputs are mixed per channel::

    Attn_final(x) = alpha * Attn(x) + (1 - alpha) * Attn+(x),   alpha = sigmoid(a),  a in R^d, a = 0 at init

``Attn`` keeps its pre-trained weights and is frozen; ``Attn+`` starts as an exact copy of ``Attn`` (its QKV
projection(s) *and* its output projection), so the wrapped encoder computes exactly what the original did at
initialisation (alpha = 0.5 and both branches agree). Only ``Attn+`` and ``a`` train (paper: "we only update
the parameters of Attn+ and alpha while keeping all other parameters frozen").

The wrapper works on the backbone ``nn.Module`` in place, whatever adapter holds it. Recognised attention
blocks (the *whole* block, attention + output projection, is wrapped so ``Attn(x)`` is the full attention
output):

=================  =======================================================  ===================================
kind               layout                                                   seen in
=================  =======================================================  ===================================
``fused_qkv``      ``qkv`` Linear + ``proj`` Linear                         timm ``Attention``; DINOv2/DINOv3
                                                                            torch.hub ``Attention`` /
                                                                            ``MemEffAttention`` / ``SelfAttention``
``separate_qkv``   ``q_proj/k_proj/v_proj`` (or ``query/key/value``) +      HF ``CLIPAttention``,
                   ``out_proj``/``o_proj``/``proj``/``dense``               ``SiglipAttention``,
                                                                            ``Dinov2Attention`` (transformers>=5)
``hf_legacy``      ``attention.{query,key,value}`` + ``output.dense``       HF ViT-style ``Dinov2Attention``
                                                                            (transformers<5), ``ViTAttention``
``mha``            ``torch.nn.MultiheadAttention`` (``in_proj_weight`` +    open_clip ``ResidualAttentionBlock``
                   ``out_proj``)
=================  =======================================================  ===================================

State-dict layout of a wrapped layer (stable; a boosted checkpoint is ``model.state_dict()`` of the wrapped
model, reloaded by wrapping a fresh base model with the same config and calling ``load_state_dict``)::

    <layer>.orig.<original keys>   frozen Attn, e.g. blocks.3.attn.orig.qkv.weight,
                                   encoder.layer.3.attention.orig.q_proj.weight,
                                   transformer.resblocks.3.attn.orig.in_proj_weight
    <layer>.plus.<original keys>   trainable Attn+, e.g. blocks.3.attn.plus.qkv.weight
    <layer>.a                      mixture logits [d] (alpha = sigmoid(a)), e.g. blocks.3.attn.a

Calls are forwarded unchanged (positional args, kwargs such as attention masks / ``attn_bias`` /
``need_weights``); a tensor result is mixed, and for a tuple result (HF attention returns ``(out, weights)``,
``nn.MultiheadAttention`` returns ``(out, weights)``) the first element is mixed and the remaining elements
come from one channel, ``DualChannelConfig.weights_from`` (default: the frozen original). That channel is
called through ``__call__`` (its forward hooks fire, e.g. transformers' ``output_attentions`` recorders);
the other is called through ``.forward`` so that such recorders see exactly one attention module per layer.

Training note: at initialisation Attn+ == Attn, so dL/da = sigmoid'(a) * g * (Attn(x) - Attn+(x)) = 0 and the
first optimiser step moves only Attn+ (with half the gradient of the original layer, 1 - alpha = 0.5); ``a``
starts to move from the second step on. Exactness at init: bitwise for timm / HF / DINOv2-hub layouts; for
``nn.MultiheadAttention`` in eval mode with autograd on, torch's fused fast path serves the frozen branch only
(it needs no parameter requiring grad), so the two branches differ by ~1e-7.

Parameter increase: a copy of QKV + output projection adds 4d^2 per block, +33% on every ViT with MLP ratio 4
(DINOv2/DINOv3 ViT-L, OpenCLIP ViT-L/14, SigLIP2 so400m: +33.1..33.5%). The paper reports +25% (DINO) and
+30% (OpenCLIP / SigLIP2); +25% is what a QKV-only copy gives (``DualChannelConfig.share_out_proj=True``).

Ablations of the paper's Table 17 on the same model (:func:`apply_full_finetune`, :func:`apply_lora`) live in
:mod:`encoders.spatialboost.ablations`; they are importable from here too.
"""
from __future__ import annotations

import copy
import re
from collections import Counter
from dataclasses import asdict, dataclass, field
from typing import Iterator, Sequence

import torch
from torch import nn

__all__ = [
    "DualChannelConfig", "DualChannelAttention", "DualChannelReport",
    "find_attention_modules", "wrap_dual_channel", "dual_channel_modules", "dual_channel_parameters",
    "named_dual_channel_parameters", "alpha_stats", "attention_layout", "select_attention",
    "FUSED_QKV", "SEPARATE_QKV", "HF_LEGACY", "MHA",
]

FUSED_QKV = "fused_qkv"
SEPARATE_QKV = "separate_qkv"
HF_LEGACY = "hf_legacy"
MHA = "mha"

_Q_NAMES = (("q_proj", "k_proj", "v_proj"), ("query", "key", "value"))
_OUT_NAMES = ("out_proj", "o_proj", "proj", "dense")


# ---------------------------------------------------------------------------------------------------------
# recognising attention blocks
# ---------------------------------------------------------------------------------------------------------
def _linear(module: nn.Module, name: str) -> nn.Linear | None:
    child = getattr(module, name, None)
    return child if isinstance(child, nn.Linear) else None


def attention_layout(module: nn.Module) -> tuple[str, list[str], list[str], int] | None:
    """(kind, input-projection names, output-projection names, output dim d) or None.

    Names are relative to ``module``; for ``mha`` the module itself is the target (name "")."""
    if isinstance(module, nn.MultiheadAttention):
        return MHA, [""], [""], module.embed_dim
    proj = _linear(module, "proj")
    if _linear(module, "qkv") is not None and proj is not None:
        return FUSED_QKV, ["qkv"], ["proj"], proj.out_features
    for q, k, v in _Q_NAMES:
        if all(_linear(module, n) is not None for n in (q, k, v)):
            for o in _OUT_NAMES:
                out = _linear(module, o)
                if out is not None:
                    return SEPARATE_QKV, [q, k, v], [o], out.out_features
    inner, output = getattr(module, "attention", None), getattr(module, "output", None)
    if isinstance(inner, nn.Module) and isinstance(output, nn.Module):
        dense = _linear(output, "dense")
        if dense is not None and all(_linear(inner, n) is not None for n in ("query", "key", "value")):
            return (HF_LEGACY, ["attention.query", "attention.key", "attention.value"], ["output.dense"],
                    dense.out_features)
    return None


def join_name(prefix: str, name: str) -> str:
    return f"{prefix}.{name}" if prefix and name else (prefix or name)


def _walk(module: nn.Module, prefix: str, out: list) -> None:
    """Pre-order walk that does not descend into a recognised attention block (or an already wrapped one)."""
    for name, child in module.named_children():
        qual = join_name(prefix, name)
        if isinstance(child, DualChannelAttention):
            continue
        lay = attention_layout(child)
        if lay is not None:
            out.append((qual, child, lay[0]))
        else:
            _walk(child, qual, out)


def _module_types(model: nn.Module) -> str:
    counts = Counter(type(m).__name__ for m in model.modules())
    return ", ".join(f"{n} x{c}" if c > 1 else n for n, c in counts.items())


def find_attention_modules(model: nn.Module) -> list[tuple[str, nn.Module, str]]:
    """All recognisable attention blocks as ``(qualified_name, module, kind)``, in module order.

    Nested matches are not reported (the outermost block that owns both QKV and output projections wins).
    Layers already wrapped by :func:`wrap_dual_channel` are skipped. Raises ``ValueError`` listing the module
    types that were found when there is nothing recognisable."""
    found: list = []
    if attention_layout(model) is not None:
        raise ValueError(f"{type(model).__name__} is itself an attention block; pass the module that contains it "
                         f"(it is replaced in its parent)")
    _walk(model, "", found)
    if not found:
        already = [n for n, m in model.named_modules() if isinstance(m, DualChannelAttention)]
        if already:
            raise ValueError(f"every attention layer of {type(model).__name__} is already dual-channel "
                             f"({len(already)} layers, e.g. '{already[0]}')")
        raise ValueError(
            f"no recognisable attention layers in {type(model).__name__}; found module types: "
            f"{_module_types(model)}. Recognised layouts: qkv+proj Linear (timm / DINOv2 hub), "
            f"q_proj/k_proj/v_proj (or query/key/value) + out_proj/o_proj/proj/dense (HF CLIP/SigLIP/Dinov2), "
            f"attention.{{query,key,value}} + output.dense (HF ViT-style), torch.nn.MultiheadAttention (open_clip)")
    return found


def _block_index(name: str) -> int | None:
    """Block index = the last integer component of the qualified name (``blocks.3.attn`` -> 3; DINOv2's chunked
    ``blocks.1.6.attn`` -> 6, which is the global index there). None for attention outside numbered blocks
    (pooling heads such as SigLIP's ``head.attention``)."""
    nums = [int(p) for p in name.split(".") if p.isdigit()]
    return nums[-1] if nums else None


def _stack_key(name: str) -> str:
    return ".".join("*" if p.isdigit() else p for p in name.split("."))


# ---------------------------------------------------------------------------------------------------------
# the wrapper module
# ---------------------------------------------------------------------------------------------------------
class DualChannelAttention(nn.Module):
    """``alpha * orig(*args, **kw) + (1 - alpha) * plus(*args, **kw)`` with ``alpha = sigmoid(a)`` per channel.

    ``orig`` is the frozen original attention block, ``plus`` its trainable copy, ``a`` a ``[d]`` parameter.
    For tuple outputs the first element is mixed and the rest come from ``weights_from`` (``"orig"`` or
    ``"plus"``)."""

    def __init__(self, orig: nn.Module, plus: nn.Module, dim: int, a_init: float = 0.0, kind: str = "",
                 weights_from: str = "orig"):
        super().__init__()
        if weights_from not in ("orig", "plus"):
            raise ValueError(f"weights_from must be 'orig' or 'plus', got {weights_from!r}")
        self.orig = orig
        self.plus = plus
        ref = next(orig.parameters(), None)
        device = ref.device if ref is not None else None
        # a is kept in float32 (tiny); alpha is cast to the branch output dtype in forward
        self.a = nn.Parameter(torch.full((dim,), float(a_init), dtype=torch.float32, device=device))
        self.kind = kind
        self.weights_from = weights_from

    def alpha(self) -> torch.Tensor:
        return torch.sigmoid(self.a)

    def _mix_tensor(self, o: torch.Tensor, p: torch.Tensor) -> torch.Tensor:
        alpha = torch.sigmoid(self.a).to(o.dtype)
        return alpha * o + (1 - alpha) * p

    def forward(self, *args, **kwargs):
        if self.weights_from == "orig":
            out_o = self.orig(*args, **kwargs)
            out_p = self.plus.forward(*args, **kwargs)
            extras_src = out_o
        else:
            out_p = self.plus(*args, **kwargs)
            out_o = self.orig.forward(*args, **kwargs)
            extras_src = out_p
        if torch.is_tensor(out_o):
            return self._mix_tensor(out_o, out_p)
        if isinstance(out_o, (tuple, list)) and len(out_o) > 0 and torch.is_tensor(out_o[0]):
            first = self._mix_tensor(out_o[0], out_p[0])
            rest = list(extras_src[1:])
            if hasattr(out_o, "_fields"):      # namedtuple
                return type(out_o)(first, *rest)
            return type(out_o)([first, *rest])
        raise TypeError(f"DualChannelAttention: cannot mix outputs of type {type(out_o).__name__} from "
                        f"{type(self.orig).__name__} (expected a tensor or a tuple whose first element is one)")

    def extra_repr(self) -> str:
        return f"kind={self.kind!r}, dim={self.a.numel()}, weights_from={self.weights_from!r}"


# ---------------------------------------------------------------------------------------------------------
# wrapping
# ---------------------------------------------------------------------------------------------------------
@dataclass
class DualChannelConfig:
    """Which attention layers get a second channel, and how it starts.

    layers: ``"all"`` (default), ``"last_<k>"`` (e.g. ``"last_4"``) or a list of block indices (negative from
        the end). Block index = position in the block stack (``blocks.3.attn`` -> 3).
    a_init: initial value of every entry of ``a`` (paper: zero, so alpha = 0.5).
    copy_weights: Attn+ starts as a copy of Attn (paper: yes). False re-initialises Attn+ with the layers'
        ``reset_parameters`` (the wrapped model then no longer equals the original at init).
    freeze_rest: freeze every parameter of the model other than Attn+ and ``a`` (paper: "keeping all other
        parameters frozen"). False only freezes the original attention layers that are wrapped.
    include_non_block: also wrap attention outside numbered blocks (e.g. the MultiheadAttention of SigLIP's
        attention-pooling head ``head.attention``, open_clip's ``attn_pool``). Default: block self-attention
        only.
    weights_from: which channel supplies the extra tuple outputs (attention weights): "orig" or "plus".
    share_out_proj: Attn+ reuses the frozen output projection of Attn instead of a trainable copy (QKV-only
        Attn+). Not the paper's / CogVideo's layout (both copy the output projection too, default False); kept
        because a QKV-only copy is what reproduces the paper's "+25% parameters" figure for DINOv2/DINOv3
        (the full copy gives ~+33% on every ViT with MLP ratio 4). The shared weights then appear under both
        ``orig.`` and ``plus.`` keys of the state dict (same tensor): save with
        ``safetensors.torch.save_model`` / ``load_model``, not ``save_file``.
    """
    layers: str | Sequence[int] = "all"
    a_init: float = 0.0
    copy_weights: bool = True
    freeze_rest: bool = True
    include_non_block: bool = False
    weights_from: str = "orig"
    share_out_proj: bool = False


@dataclass
class DualChannelReport:
    params_before: int
    params_after: int
    params_added: int
    increase_pct: float             # 100 * added / before
    trainable_params: int           # requires_grad after wrapping
    wrapped: list[str]              # qualified names of the wrapped attention blocks
    kinds: dict[str, str]           # wrapped name -> layout kind
    skipped: list[str] = field(default_factory=list)   # recognised but not selected (layers / non-block)

    def summary(self) -> str:
        kinds = ", ".join(sorted(set(self.kinds.values())))
        return (f"dual-channel attention on {len(self.wrapped)} layers ({kinds}): params {self.params_before:,} -> "
                f"{self.params_after:,} (+{self.params_added:,}, +{self.increase_pct:.1f}%), "
                f"trainable {self.trainable_params:,}")

    def to_dict(self) -> dict:
        return asdict(self)


def count_params(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())


def select_attention(found: list[tuple[str, nn.Module, str]], cfg: DualChannelConfig):
    """(selected, skipped names) of the found attention blocks under ``cfg.layers`` / ``cfg.include_non_block``."""
    block = [(n, m, k) for n, m, k in found if _block_index(n) is not None]
    other = [(n, m, k) for n, m, k in found if _block_index(n) is None]
    selected = list(other) if cfg.include_non_block else []
    skipped = [] if cfg.include_non_block else [n for n, _, _ in other]
    layers = cfg.layers
    if isinstance(layers, str) and layers == "all":
        return block + selected, skipped
    stacks = sorted({_stack_key(n) for n, _, _ in block})
    if len(stacks) > 1:
        raise ValueError(f"layers={layers!r} is ambiguous: the model has {len(stacks)} attention stacks "
                         f"({', '.join(stacks)}); wrap the vision tower only, or use layers='all'")
    indices = sorted({_block_index(n) for n, _, _ in block})
    n = len(indices)
    if isinstance(layers, str):
        m = re.fullmatch(r"last_(\d+)", layers)
        if not m:
            raise ValueError(f"layers must be 'all', 'last_<k>' or a list of block indices, got {layers!r}")
        k = int(m.group(1))
        if not 1 <= k <= n:
            raise ValueError(f"layers={layers!r}: the model has {n} attention blocks")
        keep = set(indices[-k:])
    else:
        keep = set()
        for i in layers:
            j = int(i) + n if int(i) < 0 else int(i)
            if j not in indices:
                raise ValueError(f"block index {i} is out of range: the model has {n} attention blocks "
                                 f"(use 0..{n - 1} or -{n}..-1)")
            keep.add(j)
    for name, mod, kind in block:
        if _block_index(name) in keep:
            selected.append((name, mod, kind))
        else:
            skipped.append(name)
    return selected, skipped


def _make_plus(orig: nn.Module, copy_weights: bool) -> nn.Module:
    # share (do not copy) HF config objects: they carry runtime switches such as _attn_implementation
    memo = {}
    for m in orig.modules():
        cfg = m.__dict__.get("config")
        if cfg is not None and not isinstance(cfg, (nn.Module, torch.Tensor)):
            memo[id(cfg)] = cfg
    plus = copy.deepcopy(orig, memo)
    if not copy_weights:
        for m in plus.modules():
            if isinstance(m, nn.MultiheadAttention):
                m._reset_parameters()
            elif hasattr(m, "reset_parameters") and callable(m.reset_parameters):
                m.reset_parameters()
    for p in plus.parameters():
        p.requires_grad_(True)
    return plus


def _set_submodule(model: nn.Module, name: str, new: nn.Module) -> None:
    parent_name, _, child = name.rpartition(".")
    parent = model.get_submodule(parent_name) if parent_name else model
    setattr(parent, child, new)


def wrap_dual_channel(model: nn.Module, cfg: DualChannelConfig | None = None) -> DualChannelReport:
    """Replace the selected attention blocks of ``model`` in place by :class:`DualChannelAttention`.

    Freezes the originals (and, with ``cfg.freeze_rest``, everything else); Attn+ and ``a`` are trainable."""
    cfg = cfg or DualChannelConfig()
    if cfg.weights_from not in ("orig", "plus"):
        raise ValueError(f"weights_from must be 'orig' or 'plus', got {cfg.weights_from!r}")
    if any(isinstance(m, DualChannelAttention) for m in model.modules()):
        raise ValueError(f"{type(model).__name__} already has dual-channel attention layers; wrap a fresh model")
    found = find_attention_modules(model)
    selected, skipped = select_attention(found, cfg)
    if not selected:
        raise ValueError(f"no attention layer selected by layers={cfg.layers!r} "
                         f"(found: {', '.join(n for n, _, _ in found)})")
    before = count_params(model)
    if cfg.freeze_rest:
        for p in model.parameters():
            p.requires_grad_(False)
    wrapped, kinds = [], {}
    for name, orig, kind in selected:
        lay = attention_layout(orig)
        plus = _make_plus(orig, cfg.copy_weights)
        for p in orig.parameters():
            p.requires_grad_(False)
        if cfg.share_out_proj:
            for out_name in (["out_proj"] if kind == MHA else lay[2]):
                _set_submodule(plus, out_name, orig.get_submodule(out_name))
        dual = DualChannelAttention(orig, plus, lay[3], a_init=cfg.a_init, kind=kind,
                                    weights_from=cfg.weights_from)
        _set_submodule(model, name, dual)
        wrapped.append(name)
        kinds[name] = kind
    after = count_params(model)
    return DualChannelReport(
        params_before=before, params_after=after, params_added=after - before,
        increase_pct=100.0 * (after - before) / max(before, 1),
        trainable_params=sum(p.numel() for p in model.parameters() if p.requires_grad),
        wrapped=wrapped, kinds=kinds, skipped=skipped)


# ---------------------------------------------------------------------------------------------------------
# helpers for training / logging
# ---------------------------------------------------------------------------------------------------------
def dual_channel_modules(model: nn.Module) -> Iterator[tuple[str, DualChannelAttention]]:
    for name, m in model.named_modules():
        if isinstance(m, DualChannelAttention):
            yield name, m


def named_dual_channel_parameters(model: nn.Module) -> Iterator[tuple[str, nn.Parameter]]:
    """``(qualified name, parameter)`` for every trainable Attn+ parameter and every ``a`` vector (Attn+
    weights shared with the frozen original, see ``share_out_proj``, are left out)."""
    for name, m in dual_channel_modules(model):
        frozen = {id(p) for p in m.orig.parameters()}
        for pn, p in m.plus.named_parameters():
            if id(p) not in frozen:
                yield f"{name}.plus.{pn}", p
        yield f"{name}.a", m.a


def dual_channel_parameters(model: nn.Module) -> Iterator[nn.Parameter]:
    """The parameters to optimise in stage 3: Attn+ weights and the ``a`` vectors."""
    for _, p in named_dual_channel_parameters(model):
        yield p


@torch.no_grad()
def alpha_stats(model: nn.Module) -> dict[str, tuple[float, float, float]]:
    """``{layer name: (mean, min, max)}`` of alpha = sigmoid(a) (the weight of the frozen original)."""
    out = {}
    for name, m in dual_channel_modules(model):
        al = torch.sigmoid(m.a.detach().float())
        out[name] = (al.mean().item(), al.min().item(), al.max().item())
    return out


# the Table 17 ablations live in their own module (which imports this one); served from here too
_ABLATIONS = ("AblationReport", "apply_full_finetune", "apply_lora", "lora_target_modules")


def __getattr__(name: str):
    if name in _ABLATIONS:
        from . import ablations
        return getattr(ablations, name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
