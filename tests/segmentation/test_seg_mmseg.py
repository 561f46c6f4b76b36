"""mmseg 1.2.2 on mmcv-lite in this environment: the mmcv.ops shim, model building from a ConfigDict, a
training step, slide inference, IoUMetric, and our own slide / multi-head loop against mmseg's."""
import subprocess
import sys

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from suites.segmentation.datasets import read_ade20k
from suites.segmentation.protocol import HeadGeometry, build_segmentor, eval_pipeline, train_pipeline


def test_shim_behaviours(mmseg_ns):
    import mmcv
    import mmcv.ops
    from suites.segmentation.mmseg_compat import MissingOpError, import_mmseg
    assert import_mmseg() is mmseg_ns                     # idempotent
    assert mmseg_ns.shim and mmcv.ops is sys.modules["mmcv.ops"]
    # unknown op -> ModuleNotFoundError (what mmseg's cc_head / psa_head / point_head catch)
    with pytest.raises(ModuleNotFoundError, match="CrissCrossAttention"):
        from mmcv.ops import CrissCrossAttention  # noqa: F401
    with pytest.raises(ImportError):
        import mmcv.ops.multi_scale_deform_attn  # noqa: F401
    from mmseg.models.decode_heads import cc_head, psa_head
    assert cc_head.CrissCrossAttention is None and psa_head.PSAMask is None
    # dunder look-ups -> AttributeError (inspect.getmodule / mmengine's registry probe __file__)
    assert not hasattr(mmcv.ops, "__file__") and not hasattr(mmcv.ops, "__path__")
    with pytest.raises(AttributeError):
        mmcv.ops.__wrapped__  # noqa: B018
    import inspect
    assert inspect.getmodule(test_shim_behaviours) is sys.modules[__name__]
    # compiled ops import but refuse to run
    from mmcv.ops import sigmoid_focal_loss
    with pytest.raises(MissingOpError, match="compiled extension"):
        sigmoid_focal_loss(torch.zeros(1, 2), torch.zeros(1, dtype=torch.long), 2.0, 0.25, None, "mean")
    # point_sample (pure PyTorch in mmcv too): pixel centres return the pixel values exactly
    from mmcv.ops import point_sample
    feat = torch.arange(2 * 3 * 4 * 5, dtype=torch.float32).view(2, 3, 4, 5)
    ys, xs = torch.meshgrid(torch.arange(4), torch.arange(5), indexing="ij")
    pts = torch.stack([(xs + 0.5) / 5, (ys + 0.5) / 4], -1).view(1, -1, 2).expand(2, -1, -1)
    torch.testing.assert_close(point_sample(feat, pts), feat.view(2, 3, -1))
    assert point_sample(feat, pts.view(2, 4, 5, 2)).shape == (2, 3, 4, 5)


def test_shim_installs_before_mmseg_in_a_fresh_interpreter():
    code = ("import sys; sys.path.insert(0, '.');"
            "from suites.segmentation.mmseg_compat import import_mmseg; ns = import_mmseg();"
            "import mmseg.models.losses.focal_loss, mmseg.models.decode_heads.san_head, mmseg.utils.mask_classification;"
            "assert 'BNHead' in ns.MODELS.module_dict and 'HarnessEncoder' in ns.MODELS.module_dict;"
            "assert import_mmseg() is ns; print('ok', ns.versions['mmseg'])")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr[-2000:]
    assert "ok 1.2.2" in out.stdout


GEO = HeadGeometry("linear", (-1,), 32, 21, 32, (0.5, 2.0), (1.0,), False)
MS = HeadGeometry("ms", (-4, -3, -2, -1), 32, 16, 32, (1.0, 3.0), (1.0, 1.32), True)


def test_mmseg_model_train_step_slide_inference_and_iou_metric(mmseg_ns, tiny_encoder, ade_root):
    ns = mmseg_ns
    enc = tiny_encoder
    model = build_segmentor(enc, GEO, 150, seed=0)
    assert type(model).__name__ == "EncoderDecoder" and type(model.decode_head).__name__ == "BNHead"
    assert not any(p.requires_grad for p in model.backbone.parameters())
    train = read_ade20k(ade_root, "training")
    ds = train.build(train_pipeline(GEO, 150, "ade20k"))
    data = model.data_preprocessor(ns.pseudo_collate([ds[i] for i in range(4)]), training=True)
    assert data["inputs"].shape == (4, 3, 32, 32)
    model.train()
    assert not model.backbone.encoder.training                # frozen encoder stays in eval mode
    enc_before = {k: v.clone() for k, v in enc.state_dict().items()}
    head_before = [p.detach().clone() for p in model.decode_head.parameters()]
    opt = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=1e-2)
    losses = model.loss(data["inputs"], data["data_samples"])      # mmseg's own training path
    assert set(losses) == {"decode.loss_ce", "decode.acc_seg"} and torch.isfinite(losses["decode.loss_ce"])
    # the suite's per-head loss is mmseg's loss_by_feat without the accuracy
    with torch.no_grad():
        feats = model.decode_head.features(model.backbone(data["inputs"]))
        logits = model.decode_head.heads.project(model.decode_head.heads.normalize(feats), 0)
        ref = type(model.decode_head).__mro__[1].loss_by_feat(model.decode_head, logits, data["data_samples"])
        ours = model.decode_head.loss_single(logits, model.decode_head.stack_labels(data["data_samples"]))
    torch.testing.assert_close(ours, ref["loss_ce"])
    losses["decode.loss_ce"].backward()
    opt.step()
    assert any(not torch.equal(a, b) for a, b in zip(head_before, model.decode_head.parameters()))
    assert all(torch.equal(v, enc.state_dict()[k]) for k, v in enc_before.items())

    model.eval()
    val = read_ade20k(ade_root, "validation").build(eval_pipeline(GEO, 150, "ade20k"), test_mode=True)
    metric = ns.IoUMetric(iou_metrics=["mIoU"], prefix="t")
    metric.dataset_meta = val.metainfo
    for i in range(len(val)):
        batch = ns.pseudo_collate([val[i]])
        out = model.test_step(batch)                               # slide inference (test_cfg mode=slide)
        assert out[0].pred_sem_seg.data.shape == out[0].gt_sem_seg.data.shape == (1, 48, 64)
        metric.process(batch, [o.to_dict() for o in out])
    res = metric.compute_metrics(metric.results)
    assert set(res) == {"aAcc", "mIoU", "mAcc"} and 0 <= res["mIoU"] <= 100


@pytest.mark.parametrize("num_heads", [1, 3])
def test_our_slide_loop_equals_mmseg_slide_inference(mmseg_ns, tiny_encoder, ade_root, num_heads):
    from suites.segmentation.inference import predict_image
    ns = mmseg_ns
    model = build_segmentor(tiny_encoder, GEO, 150, num_heads=num_heads, seed=1).eval()
    with torch.no_grad():   # non-trivial running statistics
        model.decode_head.heads.norm.running_mean.normal_(0, 0.5)
        model.decode_head.heads.norm.running_var.uniform_(0.5, 2.0)
    val = read_ade20k(ade_root, "validation").build(eval_pipeline(GEO, 150, "ade20k"), test_mode=True)
    from suites.segmentation.protocol import load_pipeline
    raw = read_ade20k(ade_root, "validation").build(load_pipeline(150, "ade20k"), test_mode=True)
    for i in range(len(val)):
        batch = ns.pseudo_collate([val[i]])
        with torch.no_grad():
            data = model.data_preprocessor(batch, training=False)
            metas = [s.metainfo for s in data["data_samples"]]
            logits = model.inference(data["inputs"], metas)                  # mmseg slide, [1, K*C, h, w]
            logits = F.interpolate(logits, size=metas[0]["ori_shape"], mode="bilinear", align_corners=False)
        ours = predict_image(model, raw[i]["img"], GEO, tiny_encoder.info, window_batch=2)
        assert ours.shape == (num_heads, 48, 64)
        for k in range(num_heads):
            ref = logits[0, k * 150:(k + 1) * 150].argmax(0)
            assert torch.equal(ours[k], ref), f"head {k} of image {i}"
        if num_heads == 1:
            assert torch.equal(model.test_step(batch)[0].pred_sem_seg.data[0], ours[0])


def test_ms_head_concatenates_last_four_layers_and_tta_averages_softmax(tiny_encoder, ade_root):
    from suites.segmentation.inference import predict_image, slide_logits, window_inputs
    from suites.segmentation.protocol import load_pipeline, window_boxes
    from suites.segmentation.windows import normalize_bgr
    import mmcv
    model = build_segmentor(tiny_encoder, MS, 150, seed=0).eval()
    hd = model.decode_head
    assert hd.in_channels == 4 * tiny_encoder.info.embed_dim and hd.input_transform == "resize_concat"
    img = read_ade20k(ade_root, "validation").build(load_pipeline(150, "ade20k"), test_mode=True)[0]["img"]
    pred = predict_image(model, img, MS, tiny_encoder.info, window_batch=3)
    # independent recomputation: mean over scales x flips of softmax(slide logits) at the original size
    acc = 0
    for scale in MS.test_scales():
        x = normalize_bgr(mmcv.imrescale(img, scale, interpolation="bilinear"), tiny_encoder.info.mean,
                          tiny_encoder.info.std)[None]
        for flip in (False, True):
            xi = x.flip(-1) if flip else x
            boxes = window_boxes(*xi.shape[-2:], MS.crop, MS.stride)
            lg = slide_logits(model, window_inputs(model, xi, boxes, 100), boxes, xi.shape[-2:], [0], 100)
            lg = lg.flip(-1) if flip else lg
            acc = acc + F.interpolate(lg, size=img.shape[:2], mode="bilinear").softmax(1)
    assert torch.equal(pred[0], acc[0].argmax(0))


def test_head_asking_for_more_layers_than_the_encoder_has(tiny_encoder):
    from suites.images import DataError
    geo = HeadGeometry("ms", tuple(range(-6, 0)), 32, 16, 32, (1.0, 3.0), (1.0,), False)
    with pytest.raises(DataError, match="layer -6 but encoder 'builtin:tiny-vit' has only 4 blocks"):
        build_segmentor(tiny_encoder, geo, 150)


def test_fast_mode_window_set_matches_the_training_geometry(tiny_encoder, ade_root, tmp_path):
    from suites.segmentation.windows import WindowSet
    train = read_ade20k(ade_root, "training")
    ws = WindowSet(train, [0, 1], GEO, tiny_encoder.info)
    # 48x64 image -> short side 32 -> 32x43 -> windows at x=0 and x=11 (mmseg's grid)
    assert len(ws) == 4 and ws.index[0][1] == (0, 32, 0, 32) and ws.index[1][1] == (0, 32, 11, 43)
    x, j = ws[1]
    assert x.shape == (3, 32, 32) and j == 1
    labels = ws.labels(tmp_path, "k")
    assert labels.shape == (4, 32, 32) and labels.dtype == np.uint8
    assert set(np.unique(labels)) <= {0, 1, 2, 3, 255}           # ADE 1..4 reduced to 0..3, 0 -> 255
    assert ws.labels(tmp_path, "k").shape == labels.shape and not list(tmp_path.glob("*.tmp-*"))
