"""Campaign boost variants (harness/commands/campaign_boost.py) and the ablation campaign files."""
from __future__ import annotations

import json
from pathlib import Path

import mlflow
import pytest

from harness.commands.campaign import CampaignSpec, expand_boosted, load_campaign, run_campaign
from harness.commands.campaign_boost import plan_boosts
from harness.config import ConfigError, build

ROOT = Path(__file__).resolve().parents[2]
ABLATIONS = sorted((ROOT / "configs" / "ablations").glob("*.yaml"))
TINY_BOOST = {"encoder": "builtin:tiny-vit",
              "config": {"lm": "builtin:tiny-qwen2", "max_length": 1024, "checkpoint_every": 1000,
                         **{f"stage{k}": {"batch_size": 2, "micro_batch_size": 2, "max_steps": 1} for k in (1, 2)},
                         "stage3": {"batch_size": 2, "micro_batch_size": 2, "lr": 1e-3}},
              "data": {"stage1": {"task": "caption", "samples": 2}, "stage2": {"task": "mvqa", "samples": 2},
                       "stage3": {"task": "cot", "samples": 4}}}


def _spec(ws, boosts, **over) -> CampaignSpec:
    return build(CampaignSpec, {"experiment": "abl", "world": "tiny", "preset": "tiny", "encoders": ["builtin:tiny-vit"],
                                "suites": {"depth.nyud": {"head": "linear"}}, "workspace": str(ws),
                                "eval": {"batch_size": 16}, "report": False, "boost": TINY_BOOST, "boosts": boosts,
                                **over})


@pytest.mark.parametrize("bad, match", [
    ([{"name": "a"}, {"name": "a"}], r"boosts\[1\] \(a\): duplicate name"),
    ([{"name": "a", "epochs": 2}], r"boosts\[0\] \(a\): unknown key"),
    ([{"config": {}}], r"boosts\[0\]: each boost variant is a mapping with a 'name'"),
    ([{"name": "a", "data": {"stage3": {"levels": ["pix", "walls"]}}}], r"boosts\[0\] \(a\): data.stage3: .*levels"),
    ([{"name": "a", "data": {"stage3": {"order": "sideways"}}}], r"\(a\): data.stage3: .*order"),
    ([{"name": "a", "config": {"variant": "adapter"}}], r"boosts\[0\] \(a\): .*variant"),
    ([{"name": "a", "data": {"stage3": {"estimators": {"depth": "no_such_module:X"}}}}],
     r"\(a\): data.stage3.estimators.depth='no_such_module:X': cannot build"),
])
def test_bad_variants_are_refused_before_anything_runs(workspace, bad, match):
    with pytest.raises(ConfigError, match=match):
        plan_boosts(_spec(workspace, bad))
    assert not (workspace / "boost").exists()


def test_boost_suites_must_be_campaign_suites(workspace):
    spec = _spec(workspace, [{"name": "a"}], boost={**TINY_BOOST, "suites": ["seg.ade20k"]})
    with pytest.raises(ConfigError, match="boost.suites: .*seg.ade20k"):
        expand_boosted(spec, ["builtin:tiny-vit"])


def test_variant_replaces_top_level_keys(tmp_path):
    f = tmp_path / "c.yaml"
    f.write_text(json.dumps({"experiment": "paper", "encoders": ["a"], "suites": {"depth.nyud": {}, "seg.ade20k": {}},
                             "boost": {"encoder": "a", "config": {"lm": "/models/x"}},
                             "variants": {"demo": {"experiment": "demo", "suites": {"depth.nyud": {}},
                                                   "boost": {"encoder": "b"}}}}))
    demo = load_campaign(f, variant="demo")
    assert demo.experiment == "demo" and list(demo.suites) == ["depth.nyud"]      # no paper suite leaks in
    assert dict(demo.boost) == {"encoder": "b"} and list(demo.encoders) == ["a"]
    assert load_campaign(f).experiment == "paper"
    with pytest.raises(ConfigError, match="no variant 'gpu'; variants: demo"):
        load_campaign(f, variant="gpu")


@pytest.mark.parametrize("path", ABLATIONS, ids=lambda p: p.stem)
def test_ablation_files_paper_and_demo_variants_resolve(path, workspace):
    paper = load_campaign(path)
    assert paper.boosts and paper.boost["encoder"] == paper.encoders[0] and paper.executor == "slurm"
    demo = load_campaign(path, {"workspace": str(workspace)}, variant="demo")
    assert demo.experiment == paper.experiment + "-demo" and demo.executor == "local"
    plans = plan_boosts(demo)
    assert [p.name for p in plans] == [b["name"] for b in demo.boosts]
    expand_boosted(demo, [demo.boost["encoder"]])      # every boosted eval job validates


def test_the_shared_spatialboost_row_is_one_boost_across_the_demo_files(workspace):
    """Tables 6, 7, 15, 17, 18 and 19 each have the paper's full SpatialBoost as a row: in the demo it must be
    the same config (trained once, reused by the other files), and each file's variants must differ; Table 16's
    1/2 + 1/2 split is Table 7's single + multi-view boost."""
    full, half = set(), {}
    for path in ABLATIONS:
        demo = load_campaign(path, {"workspace": str(workspace)}, variant="demo")
        assert demo.eval["precision"] == "auto" and demo.boost["config"]["precision"] == "bf16", path.name
        plans = plan_boosts(demo)
        keys = [json.dumps([p.config, p.data], sort_keys=True) for p in plans]
        half.update({path.stem: k for k, p in zip(keys, plans)
                     if [m["samples"] for m in p.data[3].get("mix", [])] == [8, 8]})
        assert len(set(keys)) == len(keys), f"{path.name}: two variants with one config"
        base = [k for k, p in zip(keys, plans) if p.data[3] == {"task": "cot", "samples": 16} and
                "variant" not in p.config and p.config["lm"] == "builtin:smollm2-135m"]
        if path.stem != "table16":
            assert len(base) == 1, path.name
            full.add(base[0])
    assert len(full) == 1
    assert set(half) == {"table7", "table16"} and half["table7"] == half["table16"]     # SV 8 + MV 8: one boost


@pytest.mark.slow      # two tiny boosts + 3 tiny evals, twice: minutes on free cores, >25 min at load 15
def test_two_variants_boost_once_tag_their_data_and_rerun_reuses_everything(workspace):
    """forward vs reverse order on the tiny world: each variant trained once, its eval runs carry the
    boost.data.* tags the report groups by; a rerun reuses the exports and the runs."""
    spec = _spec(workspace, [{"name": "fwd"}, {"name": "rev", "data": {"stage3": {"order": "reverse"}}}])
    res = run_campaign(spec, progress=False, log=lambda m: None)
    assert {k: v["status"] for k, v in res.boosts.items()} == {"fwd": "done", "rev": "done"}, res.boosts
    fwd_dir = Path(res.boosts["fwd"]["spec"].split(":", 1)[1]).parent
    assert res.boosts["rev"]["stages_1_2_from"] == str(fwd_dir)      # only stage 3 differs: trained once
    rev_dir = Path(res.boosts["rev"]["spec"].split(":", 1)[1]).parent
    assert json.loads((rev_dir / "shared_stages.json").read_text())["from"] == str(fwd_dir)
    assert res.count("done") == 3 and res.failed == 0, res.results
    client = mlflow.MlflowClient(tracking_uri=f"sqlite:///{workspace / 'mlflow.db'}")
    exp = client.get_experiment_by_name("abl")
    runs = client.search_runs([exp.experiment_id], "attributes.status = 'FINISHED'")
    boosted = {r.data.tags["boost.data.order"]: r for r in runs if r.data.tags.get("boosted_from")}
    assert set(boosted) == {"forward", "reverse"}
    for r in boosted.values():
        t = r.data.tags
        assert t["boosted_from"] == "builtin:tiny-vit" and t["boost.data.levels"] == "pix,obj,scene"
        assert t["boost.data.views"] == "1" and t["boost.data.source"] == "gt" and t["boost.data.samples"] == "4"
    again = run_campaign(spec, progress=False, log=lambda m: None)
    assert {v["status"] for v in again.boosts.values()} == {"reused"}
    assert again.count("reused") == 3 and again.count("done") == 0


def test_variants_that_change_only_stage_3_share_stages_1_and_2(workspace):
    """early_key: the stage-3 data, the trainer variant and the LoRA / dual settings leave stages 1-2 alone;
    the LM, the seed or the stage-2 data do not."""
    from encoders.spatialboost.boost_config import BoostConfig
    from harness.commands.campaign_boost import early_key
    base = {"lm": "builtin:smollm2-135m", "stage1": {"data": "/q/s1.jsonl"}, "stage2": {"data": "/q/s2.jsonl"},
            "stage3": {"data": "/q/s3.jsonl"}}
    key = early_key(build(BoostConfig, base))
    for over in ({"stage3": {"data": "/q/s3-reverse.jsonl", "batch_size": 8}}, {"variant": "lora", "lora_r": 4},
                 {"variant": "full"}, {"dual_layers": "all"}, {"workspace": "/elsewhere", "experiment": "x"}):
        assert early_key(build(BoostConfig, {**base, **over})) == key, over
    for over in ({"lm": "builtin:tiny-qwen2"}, {"seed": 1}, {"stage2": {"data": "/q/other.jsonl"}},
                 {"max_length": 1024}):
        assert early_key(build(BoostConfig, {**base, **over})) != key, over
