"""The Q-Former trains through a frozen LM (loss decreases on a tiny fixture) and decodes greedily within
the length cap; the grounding head learns a text-to-object rule."""
from __future__ import annotations

import torch
import torch.nn.functional as F

from encoders.spatialboost.lm import tiny_tokenizer
from heads.grounding import GroundingHead
from heads.qformer import PrefixLM, QFormer, fourier_xyz


def _tiny_lm():
    """A 2-layer Qwen2 on the byte tokenizer of ``builtin:tiny-qwen2``, output head untied and scaled: the
    builtin's tied random init gives logits of std ~0.2 whatever the input, so no prefix could move its loss
    by more than ~0.2 nats; a frozen LM able to express a confident answer is what a trained LM is."""
    from transformers import Qwen2Config, Qwen2ForCausalLM
    tok = tiny_tokenizer()
    cfg = Qwen2Config(vocab_size=len(tok), hidden_size=64, intermediate_size=128, num_hidden_layers=2,
                      num_attention_heads=4, num_key_value_heads=2, tie_word_embeddings=False,
                      pad_token_id=tok.pad_token_id, eos_token_id=tok.eos_token_id)
    torch.manual_seed(0)
    model = Qwen2ForCausalLM(cfg)
    model.lm_head.weight.data *= 25
    return model, tok


def test_qformer_loss_decreases_and_lm_stays_frozen():
    model, tok = _tiny_lm()
    plm = PrefixLM(model, tok)
    frozen = {k: v.clone() for k, v in model.state_dict().items()}
    torch.manual_seed(0)
    qf = QFormer(8, 64, queries=4, d=32, layers=1, heads=2, dropout=0.0)
    # two "scenes": the answer is a function of the point features only
    feats = torch.stack([torch.ones(64, 8), -torch.ones(64, 8)])
    xyz = torch.rand(2, 64, 3)
    mask = torch.ones(2, 64, dtype=torch.bool)
    prompts, answers = ["Question: what? Answer:"] * 2, ["red", "blue"]
    opt = torch.optim.AdamW(qf.parameters(), lr=3e-3)
    losses = []
    for _ in range(40):
        loss = plm.loss(qf(feats, xyz, mask), prompts, answers)
        opt.zero_grad()
        loss.backward()
        opt.step()
        losses.append(loss.item())
    assert losses[-1] < 0.85 * losses[0], (losses[0], losses[-1])
    assert all(torch.equal(v, model.state_dict()[k]) for k, v in frozen.items())
    assert all(p.grad is None for p in model.parameters())
    out = plm.generate(qf(feats, xyz, mask), prompts, max_new_tokens=3)
    assert len(out) == 2 and out[0] != out[1]          # the prefix carries the scene into the answer
    assert all(len(o) <= 3 for o in out)             # byte tokens: at most one character each


def test_fourier_xyz_shape_and_range():
    e = fourier_xyz(torch.rand(5, 7, 3), bands=4)
    assert e.shape == (5, 7, 24) and e.abs().max() <= 1.0


def test_grounding_head_learns_to_pick_the_named_object():
    """Text token = one-hot class; object feature = one-hot class: the head must match them."""
    torch.manual_seed(0)
    C, M = 5, 4
    head = GroundingHead(C, C, 0, d=32, layers=1, heads=2, ffn=64, dropout=0.0)
    opt = torch.optim.AdamW(head.parameters(), lr=3e-3)

    def batch(n):
        cls = torch.stack([torch.randperm(C)[:M] for _ in range(n)])          # distinct classes per scene
        obj = F.one_hot(cls, C).float()
        y = torch.randint(0, M, (n,))
        txt = F.one_hot(cls[torch.arange(n), y], C).float()[:, None]
        return obj, txt, y

    for _ in range(200):
        obj, txt, y = batch(32)
        loss = F.cross_entropy(head(obj, torch.ones(32, M, dtype=torch.bool), torch.zeros(32, M, 0), txt,
                                    torch.ones(32, 1, dtype=torch.bool)), y)
        opt.zero_grad()
        loss.backward()
        opt.step()
    obj, txt, y = batch(256)
    mask = torch.ones(256, M, dtype=torch.bool)
    mask[:, -1] = False                                                        # padding is never chosen
    with torch.no_grad():
        pred = head(obj, mask, torch.zeros(256, M, 0), txt, torch.ones(256, 1, dtype=torch.bool)).argmax(1)
    assert (pred != M - 1).all()
    keep = y != M - 1
    assert (pred[keep] == y[keep]).float().mean() > 0.9


def test_qa_classifier_answers_from_the_points_the_question_names():
    """The closed-set head learns "is there a <class>?": the answer depends on the question's token and on
    which feature direction the scene's points carry; padded points do not change its output."""
    from heads.qformer import QAClassifier
    torch.manual_seed(0)
    n_cls, B = 4, 64
    present = torch.rand(B, n_cls) > 0.5                       # which classes each scene holds
    asked = torch.randint(0, n_cls, (B,))
    feats = torch.zeros(B, 16, n_cls)
    for b in range(B):
        cls = present[b].nonzero().flatten()
        if len(cls):
            feats[b, torch.arange(16), cls[torch.arange(16) % len(cls)]] = 1.0
    txt = F.one_hot(asked, n_cls).float()[:, None, :]           # one "token": the asked class
    y = present[torch.arange(B), asked].long()
    xyz, mask, tmask = torch.rand(B, 16, 3), torch.ones(B, 16, dtype=torch.bool), torch.ones(B, 1, dtype=torch.bool)
    head = QAClassifier(n_cls, n_cls, 2, queries=2, d=32, layers=1, heads=2, dropout=0.0)
    opt = torch.optim.AdamW(head.parameters(), lr=3e-3)
    for _ in range(300):
        loss = F.cross_entropy(head(feats, xyz, mask, txt, tmask), y)
        opt.zero_grad()
        loss.backward()
        opt.step()
    head.eval()
    with torch.no_grad():
        acc = (head(feats, xyz, mask, txt, tmask).argmax(1) == y).float().mean().item()
        padded = head(torch.cat([feats, torch.randn(B, 5, n_cls)], 1), torch.cat([xyz, torch.rand(B, 5, 3)], 1),
                      torch.cat([mask, torch.zeros(B, 5, dtype=torch.bool)], 1), txt, tmask)
    assert acc > 0.95, acc
    assert torch.allclose(padded, head(feats, xyz, mask, txt, tmask), atol=1e-5)
