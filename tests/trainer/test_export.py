"""End to end through the CLI (stages 1-3, MLflow), export, and loading as boosted:PATH / boosted:runs:/ID/encoder."""
import json
import shutil

import pytest
import torch
from torch import nn

from encoders.base import Encoder, EncoderInfo, LayerFeatures
from encoders.spatialboost.cli import main
from encoders.spec import build_encoder
from harness.workspace import open_workspace


@pytest.fixture(scope="module")
def boosted_run(tmp_path_factory):
    from .conftest import make_dataset
    tmp = tmp_path_factory.mktemp("boost")
    data = make_dataset(tmp / "data", n=6)
    ws = tmp / "ws"
    import io
    import contextlib
    out = io.StringIO()
    with contextlib.redirect_stdout(out):
        rc = main(["boost", "--encoder", "builtin:tiny-vit", "--data", str(data), "--stages", "1,2,3",
                   "--workspace", str(ws), "--no-progress", "max_length=512", "checkpoint_every=1",
                   "stage1.batch_size=4", "stage1.micro_batch_size=2", "stage2.batch_size=4",
                   "stage2.micro_batch_size=4", "stage3.batch_size=2", "stage3.micro_batch_size=2",
                   "stage3.lr=1e-2", "stage2.max_steps=1"])
    assert rc == 0
    spec = out.getvalue().strip().splitlines()[-1]
    return spec, ws, data


def test_boosted_spec_loads_as_a_normal_encoder(boosted_run):
    spec, ws, _ = boosted_run
    assert spec.startswith("boosted:")
    base = build_encoder("builtin:tiny-vit")
    enc = build_encoder(spec, open_workspace(ws))
    assert type(enc) is type(base)
    assert enc.boosted_from == "builtin:tiny-vit" and enc.info.spec == spec
    assert enc.fingerprint() != base.fingerprint()
    meta = enc.boosted_meta
    assert meta["base_fingerprint"] == base.fingerprint() and meta["variant"] == "dual"
    assert set(meta["run_ids"]) == {"stage1", "stage2", "stage3"} and set(meta["data_ids"]) == set(meta["run_ids"])
    alphas = [m.a for m in enc.modules() if hasattr(m, "a") and isinstance(m.a, nn.Parameter)]
    assert len(alphas) == 4 and any(not torch.all(a == 0) for a in alphas)        # trained (3 steps)
    x = torch.randn(2, 3, 64, 64)
    out, ref = enc(x, layers=(-2,)), base(x, layers=(-2,))
    assert out.patches.shape == ref.patches.shape and not torch.allclose(out.patches, ref.patches)
    # the MLflow artifact loads to the same weights
    run3 = meta["run_ids"]["stage3"]
    enc2 = build_encoder(f"boosted:runs:/{run3}/encoder", open_workspace(ws))
    assert enc2.fingerprint() == enc.fingerprint()
    # cache keys differ from the base
    from harness.cache import FeatureCache
    assert FeatureCache.key(enc.fingerprint(), "d", "t", [-1], ["cls"]) != \
        FeatureCache.key(base.fingerprint(), "d", "t", [-1], ["cls"])


def test_mlflow_logs_every_stage(boosted_run):
    _, ws, data = boosted_run
    import mlflow
    from encoders.spatialboost.data import file_id
    client = mlflow.MlflowClient(f"sqlite:///{ws / 'mlflow.db'}")
    exp = client.get_experiment_by_name("spatialboost-boost")
    runs = {r.info.run_name: r for r in client.search_runs([exp.experiment_id])}
    assert {"stage1", "stage2", "stage3"} <= set(runs)
    for name in ("stage1", "stage2", "stage3"):
        r = runs[name]
        assert r.info.status == "FINISHED"
        assert {"loss", "lr", "tokens_per_s"} <= set(r.data.metrics)
        assert r.data.tags["dataset_id"] == file_id(data)
    hist = client.get_metric_history(runs["stage1"].info.run_id, "loss")
    assert len(hist) == 2                                     # 6 samples / batch 4 -> 2 steps
    alpha_keys = [k for k in runs["stage3"].data.metrics if k.startswith("alpha/")]
    assert len(alpha_keys) == 4 * 3                           # 4 layers x mean/min/max


def test_base_mismatch_and_bad_exports(boosted_run, tmp_path):
    spec, _, _ = boosted_run
    src = spec.split(":", 1)[1]
    bad = tmp_path / "bad"
    shutil.copytree(src, bad)
    meta = json.loads((bad / "boosted.json").read_text())
    meta["base_spec"] = "builtin:tiny-vit?seed=1"             # same architecture, other weights
    (bad / "boosted.json").write_text(json.dumps(meta))
    with pytest.raises(ValueError, match=r"fingerprint .* now builds an encoder with fingerprint .*weights differ"):
        build_encoder(f"boosted:{bad}")
    meta["base_spec"] = "builtin:tiny-vit?img_size=32"       # other preprocessing
    (bad / "boosted.json").write_text(json.dumps(meta))
    with pytest.raises(ValueError, match=r"image_size: \[64, 64\] -> \[32, 32\]"):
        build_encoder(f"boosted:{bad}")
    with pytest.raises(ValueError, match="not a boosted encoder export"):
        build_encoder(f"boosted:{tmp_path}")


class ConvEncoder(Encoder):
    def __init__(self):
        super().__init__()
        self.model = nn.Sequential(nn.Conv2d(3, 8, 8, 8), nn.ReLU())
        self.info = EncoderInfo(spec="test:conv", embed_dim=8, num_layers=1, patch_size=8, num_prefix_tokens=0,
                                image_size=(64, 64))

    def _features(self, images, block_ids):
        f = self.model(images).permute(0, 2, 3, 1)
        return {0: LayerFeatures(cls=f.mean((1, 2)), patches=f)}


def test_encoder_without_attention_fails_with_module_types(qa_file, tmp_path):
    from harness.config import build
    from encoders.spatialboost.lm import load_lm
    from encoders.spatialboost.trainer import BoostConfig, BoostTrainer
    from encoders.spatialboost.vlm import SpatialVLM
    from .conftest import tiny_overrides
    vlm = SpatialVLM(ConvEncoder(), load_lm("builtin:tiny-qwen2"))
    cfg = build(BoostConfig, tiny_overrides(qa_file, tmp_path / "ws", tracking=False, stages=[3]))
    tr = BoostTrainer(cfg, vlm=vlm, echo=lambda m: None)
    with pytest.raises(ValueError, match=r"no recognisable attention layers in Sequential; found module types: "
                                         r"Sequential, Conv2d, ReLU"):
        tr.run()


def test_boosted_encoder_carries_run_tags(boosted_run):
    """The eval runner copies ``encoder.run_tags`` into every run: the report can say what trained the candidate."""
    spec, ws, _ = boosted_run
    enc = build_encoder(spec, open_workspace(ws))
    tags = enc.run_tags
    assert tags["boost.lm"] == "builtin:tiny-qwen2" and tags["boost.lm_random"] == "1"
    # 6 samples: stage 1 one epoch at batch 4 (2 steps), stage 2 max_steps=1 at batch 4, stage 3 batch 2 (3 steps)
    assert tags["boost.steps"] == "1:2,2:1,3:3" and tags["boost.samples"] == "1:8,2:4,3:6"
    assert tags["boost.variant"] == "dual"
    from mlflow.tracking import MlflowClient
    c = MlflowClient(tracking_uri=f"sqlite:///{ws / 'mlflow.db'}")
    parent = c.get_run(tags["boost.run_id"])
    assert parent.info.run_name.startswith("boost ") and parent.info.status == "FINISHED"
    assert {k: parent.data.tags[k] for k in tags} == tags
