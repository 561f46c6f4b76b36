"""Structural trace of the exported DINOv2 backbone: every weight found by its role in the graph, not by name.

From the graph input to the patch Conv, the token Concat (CLS) and the position Add, then block after block
along the residual stream (see README.md, "How the conversion works")."""
from __future__ import annotations

import math
from dataclasses import dataclass, field

import numpy as np

from .graph import OnnxGraph
from .source import FocusConversionError


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


def _match_layernorm(G: OnnxGraph, x: str, where: str) -> _LN | None:
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


def _linears_from(G: OnnxGraph, x: str) -> list[_Linear]:
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


def _scalar_factors(G: OnnxGraph, start: str, end_node) -> float:
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


def _trace_block(G: OnnxGraph, x: str, i: int, tg: TracedGraph) -> str | None:
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


def _leads_to_softmax(G: OnnxGraph, t: str) -> bool:
    for _ in range(10):
        cs = [c for c in G.consumers.get(t, []) if c.op_type != "Shape"]
        if any(c.op_type == "Softmax" for c in cs):
            return True
        if len(cs) != 1 or cs[0].op_type not in ("Mul", "Div", "Add", "Where", "Cast"):
            return False
        t = cs[0].output[0]
    return False


def _heads_from_reshape(G: OnnxGraph, q: str, hidden: int, where: str) -> tuple[int, int]:
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


def _layer_scale_and_residual(G: OnnxGraph, t: str, residual: str, where: str) -> tuple[str, str]:
    mul = G.only([m for m in G.cons(t, "Mul") if G.weight_operand(m)[0] is not None],
                 "layer-scale Mul", where)
    ls, _ = G.weight_operand(mul)
    add = G.only([a for a in G.cons(mul.output[0], "Add") if residual in a.input], "residual Add", where)
    return ls, add.output[0]


def _ops_between(G: OnnxGraph, start: str, end: str, limit: int = 2000) -> set[str]:
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


def _put(G: OnnxGraph, tg: TracedGraph, key: str, init: str, arr: np.ndarray | None = None):
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
    G = OnnxGraph(model)
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
