"""LLaVA-Pretrain-558K and LLaVA-Instruct-158K JSON files (fixtures written here) load with image roots; a missing
image names the sample; stage 2 mixes LLaVA-Instruct with the multi-view VQA file."""
import json

import numpy as np
import pytest

from encoders.spatialboost.data import IGNORE, DataError
from encoders.spatialboost.llava import MixedData, load_stage_data, parse_sources
from encoders.spatialboost.lm import load_lm

from .conftest import make_dataset, tiny_overrides


@pytest.fixture(scope="module")
def tok():
    return load_lm("builtin:tiny-qwen2").tokenizer


def _img(path, seed):
    from PIL import Image
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(np.random.default_rng(seed).integers(0, 255, (30, 40, 3), dtype=np.uint8)).save(path)


def write_pretrain(folder):
    """LLaVA-Pretrain-558K layout: blip_laion_cc_sbu_558k.json + images/<shard>/<id>.jpg."""
    recs = []
    for k, (sid, instr) in enumerate([("004539375", "Render a clear and concise summary of the photo.\n<image>"),
                                      ("002239345", "<image>\nWrite a terse but informative summary of the picture."),
                                      ("005947502", "Give a brief description of the image.\n<image>")]):
        _img(folder / "images" / sid[:5] / f"{sid}.jpg", k)
        recs.append({"id": sid, "image": f"{sid[:5]}/{sid}.jpg",
                     "conversations": [{"from": "human", "value": instr},
                                       {"from": "gpt", "value": f"a caption number {k} of a room"}]})
    (folder / "blip_laion_cc_sbu_558k.json").write_text(json.dumps(recs))
    return folder / "blip_laion_cc_sbu_558k.json", folder / "images"


def write_instruct(folder):
    """LLaVA-Instruct-158K layout: llava_instruct_150k.json + COCO train2017 images elsewhere; multi-turn; the
    665K mix also has text-only samples (no ``image``) and integer ids."""
    coco = folder / "coco" / "train2017"
    recs = []
    for k, sid in enumerate(["000000033471", "000000052846"]):
        _img(coco / f"{sid}.jpg", 10 + k)
        recs.append({"id": sid, "image": f"{sid}.jpg", "conversations": [
            {"from": "human", "value": "What are the colors of the bus in the image?\n<image>"},
            {"from": "gpt", "value": "The bus in the image is white and red."},
            {"from": "human", "value": "What feature can be seen on the back of the bus?"},
            {"from": "gpt", "value": "The back of the bus features an advertisement."}]})
    recs.append({"id": 123, "conversations": [{"from": "human", "value": "Say hi."}, {"from": "gpt", "value": "Hi."}]})
    (folder / "json").mkdir(parents=True, exist_ok=True)
    (folder / "json" / "llava_instruct_150k.json").write_text(json.dumps(recs))
    return folder / "json" / "llava_instruct_150k.json", coco


def test_pretrain_558k_with_image_root(tmp_path, tok):
    js, root = write_pretrain(tmp_path / "LLaVA-Pretrain")
    data = load_stage_data(f"{js}@{root}", tok, tokens_per_image=4, max_length=512, overflow="truncate")
    assert [s.id for s in data.samples] == ["004539375", "002239345", "005947502"]
    assert data.samples[0].images == [root / "00453" / "004539375.jpg"]
    img = tok.convert_tokens_to_ids("<image>")
    for k, s in enumerate(data.samples):
        assert s.input_ids.count(img) == 4                                   # one view, expanded
        sup = [t for t, lab in zip(s.input_ids, s.labels) if lab != IGNORE]
        assert tok.decode(sup) == f"a caption number {k} of a room<|im_end|>\n"


def test_instruct_158k_multiturn_and_text_only(tmp_path, tok):
    js, coco = write_instruct(tmp_path)
    data = load_stage_data(f"{js}@{coco}", tok, tokens_per_image=4, max_length=512, overflow="truncate")
    assert [s.id for s in data.samples] == ["000000033471", "000000052846", "123"]
    assert data.samples[0].n_turns == 2 and data.samples[0].images == [coco / "000000033471.jpg"]
    assert data.samples[2].images == [] and tok.convert_tokens_to_ids("<image>") not in data.samples[2].input_ids
    # `image_root=` (the config's) serves files without their own @ROOT
    d2 = load_stage_data(str(js), tok, tokens_per_image=4, max_length=512, overflow="truncate",
                         default_root=str(coco))
    assert [s.images for s in d2.samples] == [s.images for s in data.samples]


def test_missing_image_and_root_name_the_sample(tmp_path, tok):
    js, coco = write_instruct(tmp_path)
    (coco / "000000052846.jpg").unlink()
    with pytest.raises(DataError, match=r"sample '000000052846': image '.*000000052846.jpg' does not exist"):
        load_stage_data(f"{js}@{coco}", tok, tokens_per_image=4, max_length=512, overflow="truncate")
    with pytest.raises(DataError, match=r"image root '.*nowhere' of 'llava_instruct_150k.json' is not a folder"):
        load_stage_data(f"{js}@{tmp_path / 'nowhere'}", tok, tokens_per_image=4, max_length=512,
                        overflow="truncate")
    # without the root, images resolve against the JSON's folder, where they are not
    with pytest.raises(DataError, match=r"sample '000000033471'"):
        load_stage_data(str(js), tok, tokens_per_image=4, max_length=512, overflow="truncate")


def test_parse_sources():
    from pathlib import Path as P
    assert parse_sources("a.json@/imgs, b.jsonl", "/r") == [(P("a.json"), P("/imgs")), (P("b.jsonl"), P("/r"))]


def test_stage2_mixes_instruct_with_multiview_vqa(tmp_path):
    from harness.config import build
    from encoders.spatialboost.trainer import BoostConfig, BoostTrainer
    js, coco = write_instruct(tmp_path / "llava")
    mvqa = make_dataset(tmp_path / "mvqa", n=4, multiview_every=1)          # two views per sample
    caps, croot = write_pretrain(tmp_path / "pre")
    ov = tiny_overrides(mvqa, tmp_path / "ws", stages=[1, 2], tracking=False)
    ov["stage1"].update(data=f"{caps}@{croot}", max_steps=1)
    ov["stage2"].update(data=f"{js}@{coco},{mvqa}", max_steps=2)
    tr = BoostTrainer(build(BoostConfig, ov), echo=lambda m: None)
    d2 = tr.data_for(2)
    assert isinstance(d2, MixedData) and len(d2) == 3 + 4
    assert d2.sources == {str(js): 3, str(mvqa): 4}
    assert {len(s.images) for s in d2.samples} == {0, 1, 2}                 # text-only, LLaVA, two-view VQA
    assert d2.stats.samples == 7 and d2.stats.answer_tokens == sum(p.stats.answer_tokens for p in d2.parts)
    assert not tr.warnings                                                  # each stage has its own data
    tr.run()
    assert len(tr.results[2].losses) == 2 and all(np.isfinite(tr.results[2].losses))
