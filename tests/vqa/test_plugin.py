"""The lmms-eval plugin: registered through lmms-eval's entry-point manifest, and a 5-sample local task run by
lmms-eval's own evaluator on a tiny VLM (tiny ViT + tiny Qwen2), checked against an independent computation."""
from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from PIL import Image

from suites.vqa.lmms_tasks import evaluate, offline_env, task_manager, write_task


@pytest.fixture(scope="module")
def five(tmp_path_factory):
    root = tmp_path_factory.mktemp("five")
    offline_env(root / "cache")
    (root / "images").mkdir()
    rng = np.random.default_rng(1)
    docs, quant = [], []
    for i in range(5):
        Image.fromarray(rng.integers(0, 255, (40, 40, 3), dtype=np.uint8)).save(root / "images" / f"{i}.png")
        docs.append({"id": f"v{i}#d0", "image": f"images/{i}.png", "question": "Which point is closer?\n(A) A\n(B) B",
                     "choices": ["(A)", "(B)"], "answer_index": i % 2, "answer": ["(A)", "(B)"][i % 2],
                     "kind": "choice", "qtype": "depth"})
        quant.append({"id": f"v{i}#n0", "image": f"images/{i}.png", "question": "How far apart are they?",
                      "answer": "1.00 m", "target_value": 1.0, "kind": "quantitative", "qtype": "distance"})
    (root / "blink_depth_local.jsonl").write_text("".join(json.dumps(d) + "\n" for d in docs))
    (root / "spatialrgpt_quant_local.jsonl").write_text("".join(json.dumps(d) + "\n" for d in quant))
    for t in ("blink_depth_local", "spatialrgpt_quant_local"):
        write_task(t, root, root / "tasks" / t)
    return root, docs


def test_registered_through_lmms_eval_entry_points():
    from lmms_eval.models import get_model, list_available_models
    assert "spatialboost_vlm" in list_available_models()
    from suites.vqa.plugin import SpatialBoostLMM
    assert get_model("spatialboost_vlm") is SpatialBoostLMM
    assert get_model("spatialboost") is SpatialBoostLMM          # alias from the manifest


def _nll(vlm, plugin, doc, image, cont):
    """Negative log-likelihood of ``cont`` after the prompt, computed with the trainer's own embedding
    (SpatialVLM.embed on a Batch) and a full forward: independent of the plugin's request handling."""
    from encoders.spatialboost.data import Batch
    ids = plugin.prompt_ids(doc["question"], 1)
    cont_ids = vlm.tokenizer(cont, add_special_tokens=False)["input_ids"]
    x = torch.tensor([ids + cont_ids])
    batch = Batch(x, torch.ones_like(x), torch.full_like(x, -100), plugin.pixels([image]))
    with torch.no_grad():
        logits = vlm.lm(inputs_embeds=vlm.embed(batch)).logits[0]
    lp = torch.log_softmax(logits.double(), -1)
    return -sum(float(lp[len(ids) - 1 + k, t]) for k, t in enumerate(cont_ids))


def test_five_samples_through_the_evaluator(five, tiny_vlm):
    from lmms_eval.models import get_model
    root, docs = five
    plugin = get_model("spatialboost_vlm").from_vlm(tiny_vlm, image_size=32, max_new_tokens=6)
    out = evaluate(plugin, ["blink_depth_local", "spatialrgpt_quant_local"], task_manager(root / "tasks", False))
    samples = sorted(out["samples"]["blink_depth_local"], key=lambda s: s["doc_id"])
    assert [s["doc"]["id"] for s in samples] == [d["id"] for d in docs]
    accs = []
    for s, d in zip(samples, docs):
        img = Image.open(root / d["image"]).convert("RGB")
        nll = [_nll(tiny_vlm, plugin, d, img, c) for c in ("(A)", "(B)")]
        got = [r[0] for r in s["filtered_resps"]]
        assert got == pytest.approx(nll, rel=1e-4, abs=1e-4)
        accs.append(float(int(np.argmin(nll)) == d["answer_index"]))
        assert s["acc"] == accs[-1]
    assert out["results"]["blink_depth_local"]["acc,none"] == pytest.approx(np.mean(accs))
    # generate_until: the evaluator's answers are the plugin's greedy decodes, judged by the rule judge
    from suites.vqa.judge import judge_quantity
    gen = sorted(out["samples"]["spatialrgpt_quant_local"], key=lambda s: s["doc_id"])
    assert len(gen) == 5
    for s in gen:
        img = Image.open(root / s["doc"]["image"]).convert("RGB")
        assert s["filtered_resps"][0] == plugin.generate(s["doc"]["question"], [img], ["\n"], 24)
        assert s["acc"] == judge_quantity(s["filtered_resps"][0], 1.0)
    # the lmms-eval-free scorer (VLMRunner.score_local, benchmarks/vqa_signal.py) agrees doc by doc
    from suites.vqa.taskfns import make
    from suites.vqa.vlm_runner import VLMRunner
    runner = VLMRunner(tiny_vlm, image_size=32, max_new_tokens=6)
    for task, kind in (("blink_depth_local", "choice"), ("spatialrgpt_quant_local", "quantitative")):
        fns = make(str(root), kind)
        for s in out["samples"][task]:
            assert runner.score_local(s["doc"], fns, kind, 24) == s["acc"]


def test_multi_image_prompt_and_placeholder_count(tiny_vlm):
    from suites.vqa.plugin import SpatialBoostLMM
    plugin = SpatialBoostLMM.from_vlm(tiny_vlm)
    ids = plugin.prompt_ids("Which image is brighter?", 2)
    assert ids.count(tiny_vlm.image_token_id) == 2 * plugin.tpi
    with pytest.raises(ValueError, match="placeholders"):
        plugin.prompt_ids("<image> only one", 2)
    imgs = [Image.new("RGB", (30, 30), (255, 255, 255)), Image.new("RGB", (30, 30), (0, 0, 0))]
    assert isinstance(plugin.generate("<image><image>Which is brighter?", imgs, max_new_tokens=2), str)


def test_unknown_lmms_eval_task_lists_close_names(five):
    from suites.vqa.lmms_tasks import UnknownTaskError, check_task
    root, _ = five
    with pytest.raises(UnknownTaskError, match="Did you mean: blink_depth_local"):
        check_task("blink_depth_locall", task_manager(root / "tasks", False))
