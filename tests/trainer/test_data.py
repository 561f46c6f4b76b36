"""Conversation data: exact answer-only label mask, image token expansion, bad input, overlong samples."""
import json

import pytest

from encoders.spatialboost.data import IGNORE, ConversationData, DataError, write_jsonl
from encoders.spatialboost.lm import load_lm


@pytest.fixture(scope="module")
def tok():
    return load_lm("builtin:tiny-qwen2").tokenizer


def _runs(labels):
    """Contiguous runs of supervised positions -> list of token-id lists."""
    runs, cur = [], []
    for x in labels:
        if x != IGNORE:
            cur.append(x)
        elif cur:
            runs.append(cur)
            cur = []
    if cur:
        runs.append(cur)
    return runs


def test_label_mask_is_exactly_the_answers(qa_file, tok):
    data = ConversationData(qa_file, tok, tokens_per_image=64)
    img = tok.convert_tokens_to_ids("<image>")
    recs = [json.loads(line) for line in qa_file.read_text().splitlines()]
    for s, rec in zip(data.samples, recs):
        answers = [m["value"] for m in rec["conversations"] if m["from"] == "gpt"]
        runs = _runs(s.labels)
        assert [tok.decode(r) for r in runs] == [a + "<|im_end|>\n" for a in answers]
        # supervised positions carry their own token; everything else (system/user/roles/images) is -100
        assert all(lab in (IGNORE, t) for lab, t in zip(s.labels, s.input_ids))
        assert sum(lab != IGNORE for lab in s.labels) == sum(len(r) for r in runs)
        views = len(rec.get("images", [rec.get("image")]))
        assert s.input_ids.count(img) == 64 * views
        assert all(lab == IGNORE for lab, t in zip(s.labels, s.input_ids) if t == img)
        # the unexpanded text is the chat template's rendering
        text = tok.decode([t for i, t in enumerate(s.input_ids) if t != img or s.input_ids[i - 1] != img])
        msgs = [{"role": "user" if m["from"] == "human" else "assistant", "content": m["value"]}
                for m in rec["conversations"]]
        assert text == tok.apply_chat_template(msgs, tokenize=False)


def test_placeholder_mismatch_names_the_sample(tmp_path, tok):
    (tmp_path / "a.png").write_bytes(b"x")
    f = write_jsonl(tmp_path / "bad.jsonl", [
        {"id": "ok", "image": "a.png", "conversations": [{"from": "human", "value": "<image>\nQ"},
                                                         {"from": "gpt", "value": "A"}]},
        {"id": "two-views", "images": ["a.png", "a.png"],
         "conversations": [{"from": "human", "value": "<image>\nQ"}, {"from": "gpt", "value": "A"}]}])
    with pytest.raises(DataError, match=r"sample 'two-views' has 1 '<image>' placeholder\(s\).*but 2 image"):
        ConversationData(f, tok, tokens_per_image=4)


def test_missing_image_and_bad_json(tmp_path, tok):
    f = write_jsonl(tmp_path / "m.jsonl", [{"id": "x1", "image": "nope.png", "conversations": [
        {"from": "human", "value": "<image>\nQ"}, {"from": "gpt", "value": "A"}]}])
    with pytest.raises(DataError, match=r"sample 'x1': image .*nope.png' does not exist"):
        ConversationData(f, tok, tokens_per_image=4)
    (tmp_path / "j.jsonl").write_text('{"id": 1}\n{oops\n')
    with pytest.raises(DataError, match=r"j.jsonl:2: not valid JSON"):
        ConversationData(tmp_path / "j.jsonl", tok, tokens_per_image=4)


def test_overlong_samples_truncate_at_turn_or_skip(qa_file, tok):
    full = ConversationData(qa_file, tok, tokens_per_image=64)
    lens = {s.id: len(s.input_ids) for s in full.samples}
    # first turn of a single-view sample is ~64 + 60 tokens; 2 turns ~ 64 + 110; two-view samples are longer
    limit = lens["s1"] - 10
    cut = ConversationData(qa_file, tok, tokens_per_image=64, max_length=limit, overflow="truncate")
    assert cut.stats.truncated > 0
    for s in cut.samples:
        assert len(s.input_ids) <= limit
        assert _runs(s.labels) and tok.decode(_runs(s.labels)[-1]).endswith("<|im_end|>\n")   # whole turns
        if s.truncated:
            assert s.n_turns == 1
    assert cut.stats.samples + cut.stats.skipped_overlong == len(full)
    limit = max(v for k, v in lens.items() if int(k[1:]) % 3)          # every single-view sample fits
    skip = ConversationData(qa_file, tok, tokens_per_image=64, max_length=limit, overflow="skip")
    assert skip.stats.truncated == 0
    assert skip.stats.skipped_overlong == sum(v > limit for v in lens.values()) == 3   # the two-view ones
    assert all(not s.truncated and s.n_turns == 2 for s in skip.samples)
    with pytest.raises(DataError, match="no usable sample"):
        ConversationData(qa_file, tok, tokens_per_image=64, max_length=20)
