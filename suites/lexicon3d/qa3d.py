"""``lexicon3d.scanqa`` / ``lexicon3d.sqa3d``: 3D question answering with frozen lifted features (paper
Table 3 VLR, App. A.4). The head is 3D-LLM's: a Q-Former (learned queries cross-attending to the scene's
lifted point features) projected into a frozen LM's input space; only the Q-Former trains (encoder and LM
frozen); answers by greedy decoding with a length cap. The paper's LM is FlanT5 (any local causal-LM folder
works here); the embedded default is SmolLM2-135M, which installs offline.

Points: ``points`` per scene drawn truly at random with the run's seed among the points some frame saw
(Lexicon3D's "random 5,000 points" always takes the first 5,000; fixed here), redrawn every epoch for
training, one fixed draw per scene for evaluation. The paper's first stage (10 epochs on 3D-Language data)
is out of reach offline: ``pretrain`` takes any JSONL of {"scene", "text"} and trains the Q-Former to
caption the scene before the QA epochs.
"""
from __future__ import annotations

import copy
import json
import time
from collections import Counter
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

import numpy as np
import torch

from harness.config import field
from harness.registry import build_lm
from harness.samples import PerSample
from harness.suite import MetricSpec, RunContext, Suite, SuiteResult, SuiteSpec
from heads.qformer import PrefixLM, QFormer
from suites.images import DataError
from suites.lexicon3d.common import LiftOptions, resolve_layer
from suites.lexicon3d.features import lifted_features
from suites.lexicon3d.language.annotations import find
from suites.lexicon3d.language.common import default_root, fingerprint, read_split, scene_objects, split_names
from suites.lexicon3d.language.metrics import BLEU_COLUMNS, caption_scores, exact_match
from suites.lexicon3d.language.scenes import scannet_root
from suites.lexicon3d.scannet import ScanNetData

QTYPES = ("What", "Is", "How", "Can", "Which", "Others")
CAPTION = ("bleu1", "bleu2", "bleu3", "bleu4", "meteor", "rouge_l", "cider")


@dataclass(frozen=True)
class QAOptions(LiftOptions):
    lm: str = field("builtin:smollm2-135m", help="frozen LM: builtin:smollm2-135m, builtin:tiny-qwen2 (random, "
                    "tests) or a local causal-LM folder (paper: FlanT5)")
    points: int = field(5000, min=1, help="points per scene fed to the Q-Former, drawn at random with the seed")
    queries: int = field(32, min=1, help="learned queries = soft-prefix length (3D-LLM / BLIP-2: 32)")
    d_model: int = field(768, min=8, help="Q-Former width")
    qformer_layers: int = field(6, min=1, help="Q-Former layers (self + cross attention + FFN each)")
    qformer_heads: int = field(12, min=1, help="Q-Former attention heads")
    dropout: float = field(0.1, min=0, max=1, max_open=True, help="Q-Former dropout")
    epochs: int = field(35, min=1, help="QA epochs (paper: 35)")
    lr: float = field(1e-4, min=0, min_open=True, help="AdamW learning rate")
    weight_decay: float = field(0.05, min=0, help="AdamW weight decay")
    batch: int = field(16, min=1, help="questions per step")
    max_questions: int | None = field(None, min=1, help="at most this many fitting questions (seeded subset)")
    max_answer_tokens: int = field(10, min=1, help="greedy decoding length cap")
    eval_every: int = field(5, min=1, help="held-out generation every n epochs (and after the last)")
    meteor: bool = field(True, help="METEOR through pycocoevalcap's jar (needs java; ~1 min on 2 loaded cores)")
    pretrain: str | None = field(None, help="optional first stage: JSONL of {scene, text} (3D-Language data)")
    pretrain_epochs: int = field(10, min=1, help="epochs of the optional first stage (paper: 10)")
    text_encoder: str = field("builtin:minilm", help="classify head only: frozen text encoder of the question "
                              "(builtin:minilm or a local HF folder)")
    max_tokens: int = field(64, min=4, help="classify head only: question (+ situation) tokens kept")
    features: Literal["encoder", "oracle"] = field("encoder", help="point features: the encoder's lifted ones, or "
                                                   "(diagnostic upper bound) the one-hot ground-truth class of the "
                                                   "point's object + its RGB colour (needs instance ids, the world's)")


class _QABase(Suite):
    Options = QAOptions
    kind = ""

    @classmethod
    def demo_protocol(cls, preset: str) -> dict:
        if preset == "tiny":
            return {"lm": "builtin:tiny-qwen2", "points": 256, "queries": 4, "d_model": 32, "qformer_layers": 1,
                    "qformer_heads": 2, "epochs": 2, "batch": 8, "max_answer_tokens": 4, "meteor": False,
                    "frame_size": (96, 128), "border": 4, "max_points": 500}
        # the frozen SmolLM2 costs ~1 s CPU per question per training step and ~0.8 s per generated answer on 2
        # cores (README): the demo runs the closed-set ``classify`` head (demo_heads) on the same lifted points
        return {"layer": -4, "max_points": 3000, "points": 256, "queries": 8, "d_model": 128,
                "qformer_layers": 2, "qformer_heads": 4, "epochs": 12, "batch": 32, "lr": 1e-3,
                "max_tokens": 48, "meteor": False}

    @classmethod
    def demo_heads(cls, preset: str) -> str | None:
        return "classify" if preset == "default" else None

    def default_data(self, workspace):
        return default_root(workspace)

    def _files(self, data) -> list[Path]:
        kinds = ("sqa3d_q", "sqa3d_a") if self.kind == "sqa3d" else (self.kind,)
        return [find(data, k, s) for k in kinds for s in ("train", "val")]

    def dataset_fingerprint(self, data) -> str:
        return fingerprint(data, self._files(data))

    def validate(self, ctx: RunContext) -> dict:
        scannet = scannet_root(ctx.data)
        objects = scene_objects(scannet, ScanNetData(scannet))
        return {f"{s}_questions": len(read_split(ctx.data, self.kind, s, objects)[0]) for s in ("train", "val")}

    def prompt(self, q) -> str:
        if q.situation:
            return f"Situation: {q.situation} Question: {q.question} Answer:"
        return f"Question: {q.question} Answer:"

    # ------------------------------------------------------------------------------------------------
    def run(self, ctx: RunContext) -> SuiteResult:
        o = self.options
        scannet = scannet_root(ctx.data)
        data = ScanNetData(scannet)
        layer = resolve_layer(ctx.encoder, o.layer)
        t0 = time.perf_counter()
        lifted = lifted_features(ctx, data, o.lift_params(), layer)
        t_lift = time.perf_counter() - t0
        objects = scene_objects(scannet, data)
        train, _ = read_split(ctx.data, self.kind, "train", objects)
        val, _ = read_split(ctx.data, self.kind, "val", objects)
        fit_s, hold_s, _ = split_names(lifted, o.holdout_fraction)
        rng = np.random.default_rng(ctx.seed)
        fit = [q for q in train if q.scene in fit_s]
        hold = [q for q in train if q.scene in hold_s]
        if o.max_questions is not None and len(fit) > o.max_questions:
            fit = [fit[i] for i in sorted(rng.choice(len(fit), o.max_questions, replace=False))]

        # per-scene seen points
        scenes = {}
        classes = sorted({n for ob in objects.values() for n in ob.names})
        for k, name in enumerate(lifted.scenes):
            sl = lifted.scene(k)
            seen = np.flatnonzero(lifted.counts[:, sl].sum(0) > 0)
            if len(seen) == 0:
                raise DataError(f"scene '{name}': no point of its cloud is seen by any frame")
            feats = lifted.all_views(sl) if o.features == "encoder" else \
                oracle_features(data.scenes[k], o.lift_params(), k, sl.stop - sl.start, objects[name], classes)
            scenes[name] = (np.asarray(lifted.coords[sl], np.float32)[seen], feats[seen])
        eval_draw = {n: np.random.default_rng([ctx.seed, k]).permutation(len(c))[:o.points]
                     for k, (n, (c, _)) in enumerate(scenes.items())}

        def batch_points(names, draw):
            n = max(len(draw[s]) for s in names)
            D = next(iter(scenes.values()))[1].shape[1]
            f, x, m = torch.zeros(len(names), n, D), torch.zeros(len(names), n, 3), torch.zeros(len(names), n, dtype=torch.bool)
            for b, s in enumerate(names):
                idx = draw[s]
                c, v = scenes[s]
                f[b, :len(idx)] = torch.from_numpy(v[idx])
                x[b, :len(idx)] = torch.from_numpy(c[idx] - c.mean(0))
                m[b, :len(idx)] = True
            return f, x, m

        if self.head(ctx) == "classify":
            return self._run_classify(ctx, lifted, layer, t_lift, fit, hold, val, scenes, eval_draw, batch_points)
        t1 = time.perf_counter()
        lm = build_lm(o.lm, ctx.workspace, ctx.seed)    # the trainer's loader, through the core registry
        plm = PrefixLM(lm.model.to(ctx.device), lm.tokenizer)
        t_lm = time.perf_counter() - t1
        torch.manual_seed(ctx.seed)
        D = next(iter(scenes.values()))[1].shape[1]
        qf = QFormer(D, lm.hidden_size, o.queries, o.d_model, o.qformer_layers, o.qformer_heads, o.dropout).to(ctx.device)
        opt = torch.optim.AdamW(qf.parameters(), lr=o.lr, weight_decay=o.weight_decay)
        step = 0

        def train_epoch(items, prompt_of, answer_of, epoch, tag):
            nonlocal step
            qf.train()
            draw = {n: np.random.default_rng([ctx.seed, 1000 + epoch, k]).permutation(len(c))[:o.points]
                    for k, (n, (c, _)) in enumerate(scenes.items())}
            order = np.random.default_rng([ctx.seed, epoch]).permutation(len(items))
            losses = []
            for s in range(0, len(items), o.batch):
                its = [items[i] for i in order[s:s + o.batch]]
                f, x, m = batch_points([q.scene if hasattr(q, "scene") else q["scene"] for q in its], draw)
                loss = plm.loss(qf(f.to(ctx.device), x.to(ctx.device), m.to(ctx.device)),
                                [prompt_of(q) for q in its], [answer_of(q) for q in its])
                opt.zero_grad(set_to_none=True)
                loss.backward()
                opt.step()
                losses.append(loss.item())
                step += 1
            ctx.log_curve({f"qformer.{tag}_loss": float(np.mean(losses))}, step)
            return float(np.mean(losses))

        def answer(items):
            qf.eval()
            out = []
            with torch.no_grad():
                for s in range(0, len(items), 32):
                    its = items[s:s + 32]
                    f, x, m = batch_points([q.scene for q in its], eval_draw)
                    out += plm.generate(qf(f.to(ctx.device), x.to(ctx.device), m.to(ctx.device)),
                                        [self.prompt(q) for q in its], o.max_answer_tokens)
            return out

        pre_losses = []
        if o.pretrain:
            pre = read_pretrain(Path(o.pretrain), scenes)
            for e in range(o.pretrain_epochs):
                pre_losses.append(train_epoch(pre, lambda r: "Describe the scene:", lambda r: r["text"], e, "pretrain"))
        losses, curve = [], []
        best, best_state, best_epoch = -1.0, copy.deepcopy(qf.state_dict()), 0
        for e in range(o.epochs):
            losses.append(train_epoch(fit, self.prompt, lambda q: q.answers[0], 100 + e, "train"))
            if (e + 1) % o.eval_every == 0 or e + 1 == o.epochs:
                v = 100.0 * float(np.mean([exact_match(p, q.answers) for p, q in zip(answer(hold), hold)]))
                ctx.log_curve({"qformer.val_em1": v}, step)
                ctx.report_intermediate(v, e)
                curve.append((e + 1, v))
                if v > best:
                    best, best_state, best_epoch = v, copy.deepcopy(qf.state_dict()), e + 1
        qf.load_state_dict(best_state)
        t2 = time.perf_counter()
        preds = answer(val)
        t_gen = time.perf_counter() - t2
        metrics, per_sample, missing = self.score(val, preds, fit, o.meteor)
        metrics["val.em1"] = best
        details = {**self._floor_details(), "head": "qformer",
                   "missing_metrics": missing, "questions": {"fit": len(fit), "held_out": len(hold), "val": len(val)},
                   "train_loss": losses, "pretrain_loss": pre_losses, "held_out_em1_curve": curve,
                   "examples": [{"q": self.prompt(q), "pred": p, "answers": q.answers} for q, p in list(zip(val, preds))[:20]],
                   "seconds": {"lifting": round(t_lift, 3), "lm_load": round(t_lm, 3), "generate_val": round(t_gen, 3)},
                   "lifting_cached": not lifted.computed, "lifted_key": lifted.key, "block": layer, "lm": o.lm}
        selection = {"qformer": {"epoch": best_epoch, "rule": "max EM@1 on the held-out train scenes",
                                 "val_em1": best, "block": layer}}
        return SuiteResult(metrics=metrics, selection=selection, details=details, per_sample=per_sample)

    @staticmethod
    def _floor_details() -> dict:
        return {"floors": {"floor": "the most frequent fitting answer of the question's type (its first two "
                                    "words, VQA-style), else the most frequent",
                           "floor_global": "the most frequent fitting answer",
                           "floor_blind": "the most frequent fitting answer to the same question text (a blind, "
                                          "text-only prior), else the most frequent"}}

    def head(self, ctx: RunContext) -> str:
        if len(ctx.heads) != 1:
            from harness.errors import UserError
            raise UserError(f"{self.spec.name} runs one head at a time (qformer or classify), got {','.join(ctx.heads)}")
        return ctx.heads[0]

    def _run_classify(self, ctx, lifted, layer, t_lift, fit, hold, val, scenes, eval_draw, batch_points) -> SuiteResult:
        """The ``classify`` head: the Q-Former body scores the fitting answers (no LM; heads/qformer.py
        ``QAClassifier``). Question (and situation) tokens from the frozen text encoder, cached per text set."""
        from heads.qformer import QAClassifier
        from suites.lexicon3d.common import small_ops_threads
        from suites.lexicon3d.language.common import encode_texts
        o = self.options
        t0 = time.perf_counter()
        text_of = lambda q: self.prompt(q)[:-len(" Answer:")]        # noqa: E731 - the prompt minus its cue
        texts = sorted({text_of(q) for q in fit + hold + val})
        tokens, masks, tdim = encode_texts(ctx, o.text_encoder, o.max_tokens, texts)
        tix = {t: i for i, t in enumerate(texts)}
        t_text = time.perf_counter() - t0
        vocab = [a for a, _ in Counter(q.answers[0] for q in fit).most_common()]
        aix = {a: i for i, a in enumerate(vocab)}
        torch.manual_seed(ctx.seed)
        D = next(iter(scenes.values()))[1].shape[1]
        head = QAClassifier(D, tdim, len(vocab), o.queries, o.d_model, o.qformer_layers, o.qformer_heads, o.dropout)
        opt = torch.optim.AdamW(head.parameters(), lr=o.lr, weight_decay=o.weight_decay)

        def inputs(its, draw):
            f, x, m = batch_points([q.scene for q in its], draw)
            k = [tix[text_of(q)] for q in its]
            return f, x, m, tokens[k], masks[k]

        def answer(its):
            head.eval()
            out = []
            with torch.no_grad():
                for s in range(0, len(its), 64):
                    out += [vocab[int(i)] for i in head(*inputs(its[s:s + 64], eval_draw)).argmax(1)]
            return out

        t1 = time.perf_counter()
        losses, curve, step = [], [], 0
        best, best_state, best_epoch = -1.0, copy.deepcopy(head.state_dict()), 0
        with small_ops_threads(ctx.device):
            for e in range(o.epochs):
                head.train()
                draw = {n: np.random.default_rng([ctx.seed, 1100 + e, k]).permutation(len(c))[:o.points]
                        for k, (n, (c, _)) in enumerate(scenes.items())}
                order = np.random.default_rng([ctx.seed, 100 + e]).permutation(len(fit))
                ls = []
                for s in range(0, len(fit), o.batch):
                    its = [fit[i] for i in order[s:s + o.batch]]
                    y = torch.tensor([aix[q.answers[0]] for q in its])
                    loss = torch.nn.functional.cross_entropy(head(*inputs(its, draw)), y)
                    opt.zero_grad(set_to_none=True)
                    loss.backward()
                    opt.step()
                    ls.append(loss.item())
                    step += 1
                losses.append(float(np.mean(ls)))
                v = 100.0 * float(np.mean([exact_match(p, q.answers) for p, q in zip(answer(hold), hold)]))
                ctx.log_curve({"classify.train_loss": losses[-1], "classify.val_em1": v}, step)
                ctx.report_intermediate(v, e)
                curve.append((e + 1, round(v, 2)))
                if v > best:
                    best, best_state, best_epoch = v, copy.deepcopy(head.state_dict()), e + 1
            head.load_state_dict(best_state)
            t_train = time.perf_counter() - t1
            t2 = time.perf_counter()
            preds = answer(val)
            t_gen = time.perf_counter() - t2
        metrics, per_sample, missing = self.score(val, preds, fit, o.meteor)
        metrics["val.em1"] = best
        details = {**self._floor_details(), "head": "classify", "answers": len(vocab), "missing_metrics": missing,
                   "questions": {"fit": len(fit), "held_out": len(hold), "val": len(val)},
                   "fit_scenes": sorted({q.scene for q in fit}), "features": o.features,
                   "train_loss": losses, "held_out_em1_curve": curve,
                   "examples": [{"q": self.prompt(q), "pred": p, "answers": q.answers} for q, p in list(zip(val, preds))[:20]],
                   "seconds": {"lifting": round(t_lift, 3), "text": round(t_text, 3), "train": round(t_train, 3),
                               "answer_val": round(t_gen, 3)},
                   "lifting_cached": not lifted.computed, "lifted_key": lifted.key, "block": layer}
        selection = {"classify": {"epoch": best_epoch, "rule": "max EM@1 on the held-out train scenes",
                                  "val_em1": best, "block": layer}}
        return SuiteResult(metrics=metrics, selection=selection, details=details, per_sample=per_sample)

    def score(self, val, preds, fit, meteor: bool):
        metrics, per_sample = {}, {}
        ids = [q.uid for q in val]
        em = np.array([exact_match(p, q.answers) for p, q in zip(preds, val)])
        metrics["em1"] = 100.0 * float(em.mean())
        per_sample["em1"] = PerSample(ids, em[:, None], reduce="mean", scale=100.0)
        cap, per, missing = caption_scores(preds, [q.answers for q in val], meteor=meteor)
        metrics.update(cap)
        for k, (stats, reduce) in per.items():
            per_sample[k] = PerSample(ids, stats / 100.0 if reduce == "mean" else stats, reduce=reduce, scale=100.0,
                                      columns=BLEU_COLUMNS if reduce.startswith("bleu") else (k,))
        # floors (no scene): the majority fitting answer of the question's type, overall, to the same text
        top = Counter(q.answers[0] for q in fit).most_common(1)[0][0]
        by_q: dict[str, Counter] = {}
        by_t: dict[str, Counter] = {}
        for q in fit:
            by_q.setdefault(q.question, Counter())[q.answers[0]] += 1
            by_t.setdefault(prefix_type(q.question), Counter())[q.answers[0]] += 1

        def majority(table, key):
            return table[key].most_common(1)[0][0] if key in table else top
        for name, guess in (("floor", lambda q: majority(by_t, prefix_type(q.question))),
                            ("floor_global", lambda q: top),
                            ("floor_blind", lambda q: majority(by_q, q.question))):
            f = np.array([exact_match(guess(q), q.answers) for q in val])
            metrics[f"{name}.em1"] = 100.0 * float(f.mean())
            per_sample[f"{name}.em1"] = PerSample(ids, f[:, None], reduce="mean", scale=100.0)
        return metrics, per_sample, missing


def oracle_features(scene, params, k: int, n: int, objs, classes: list[str]) -> np.ndarray:
    """Diagnostic point features [n, C + 3]: one-hot ground-truth class of the point's object (zeros off
    objects) + the point's RGB in [-1, 1]: what a perfect encoder could tell the head (an upper bound)."""
    from suites.lexicon3d.language.scenes import lifted_instances
    from suites.lexicon3d.lifting import select_points
    from suites.lexicon3d.scannet import load_cloud
    inst = lifted_instances(scene, params, k, n)
    if inst is None:
        raise DataError(f"scene '{scene.name}': features=oracle needs instance ids beside the cloud (_inst.pth)")
    coords, colors, _ = load_cloud(scene.cloud)
    rgb = np.asarray(colors, np.float32)[select_points(coords, params, k)]
    cix = {oid + 1: classes.index(name) for oid, name in zip(objs.ids.tolist(), objs.names)}
    out = np.zeros((n, len(classes) + 3), np.float32)
    for i, v in enumerate(inst.tolist()):
        if v in cix:
            out[i, cix[v]] = 1.0
    out[:, len(classes):] = rgb
    return out


def prefix_type(question: str) -> str:
    """The question's type for the floor: its first two words, lower case (VQA's question-type prefixes)."""
    return " ".join(question.lower().replace("?", " ").split()[:2])


def read_pretrain(path: Path, scenes: dict) -> list[dict]:
    """The optional first stage's JSONL: one {"scene": id, "text": caption} per line."""
    out = []
    try:
        lines = path.read_text().splitlines()
    except OSError as e:
        raise DataError(f"cannot read pretraining file '{path}': {e}") from None
    for i, line in enumerate(lines, 1):
        if not line.strip():
            continue
        try:
            r = json.loads(line)
            scene, text = str(r["scene"]), str(r["text"])
        except (ValueError, KeyError, TypeError):
            raise DataError(f"'{path}' line {i}: expected a JSON object with 'scene' and 'text'") from None
        if scene not in scenes:
            raise DataError(f"'{path}' line {i}: unknown scene '{scene}'")
        out.append({"scene": scene, "text": text})
    if not out:
        raise DataError(f"'{path}' holds no records")
    return out


class ScanQASuite(_QABase):
    kind = "scanqa"
    spec = SuiteSpec(
        name="lexicon3d.scanqa", version="2", task="3d-qa", heads=("qformer", "classify"),
        metrics=(MetricSpec("em1", "max", "val EM@1 (%): greedy answer equals a reference answer"),)
        + tuple(MetricSpec(m, "max", f"val {m} (%), pycocoevalcap") for m in CAPTION)
        + (MetricSpec("val.em1", "max", "EM@1 on the train scenes held out for selection (%)"),),
        primary="em1", validation="val.em1", paper_table="Table 3",
        description="ScanQA: Q-Former over lifted point features into a frozen LM (3D-LLM head), greedy answers.")


class SQA3DSuite(_QABase):
    kind = "sqa3d"
    spec = SuiteSpec(
        name="lexicon3d.sqa3d", version="2", task="3d-qa", heads=("qformer", "classify"),
        metrics=(MetricSpec("em1", "max", "val EM@1 (%): greedy answer equals a reference answer"),)
        + tuple(MetricSpec(f"em1.{t.lower()}", "max", f"val EM@1 of '{t}' questions (%)") for t in QTYPES)
        + tuple(MetricSpec(m, "max", f"val {m} (%), pycocoevalcap") for m in CAPTION)
        + (MetricSpec("val.em1", "max", "EM@1 on the train scenes held out for selection (%)"),),
        primary="em1", validation="val.em1", paper_table="Table 3",
        description="SQA3D: situation + question; Q-Former over lifted point features into a frozen LM.")

    def score(self, val, preds, fit, meteor: bool):
        metrics, per_sample, missing = super().score(val, preds, fit, meteor)
        for t in QTYPES:
            sel = [(p, q) for p, q in zip(preds, val) if q.qtype == t]
            if sel:
                em = np.array([exact_match(p, q.answers) for p, q in sel])
                metrics[f"em1.{t.lower()}"] = 100.0 * float(em.mean())
                per_sample[f"em1.{t.lower()}"] = PerSample([q.uid for _, q in sel], em[:, None], reduce="mean", scale=100.0)
            else:
                metrics[f"em1.{t.lower()}"] = float("nan")
        return metrics, per_sample, missing
