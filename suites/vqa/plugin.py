"""The lmms-eval model plugin: a LLaVA-style VLM built by the SpatialBoost trainer (any frozen encoder spec +
2-layer MLP projector + a causal LM), registered through lmms-eval's own mechanism (the ``lmms_eval.models``
entry-point group with a :class:`ModelManifest`, pyproject.toml), so ``lmms-eval --model spatialboost_vlm
--model_args run_dir=...,encoder=...,lm=...`` works from lmms-eval's CLI too.

Prompting is the one the trainer trained with: the user message ``"<image>\\n" * n_views + question`` in the
LM's chat template, each ``<image>`` expanded to the view's visual tokens (a question that already holds
``<image>`` placeholders keeps them: multi-image tasks such as BLINK / MUIRBench place them). Requests:
``generate_until`` (greedy, KV cache, stops at EOS / ``until`` / ``max_new_tokens``) and ``loglikelihood``
(lmms-eval's convention, as its LLaVA models: the *negative* log-likelihood of the continuation's tokens after
the generation prompt, and whether greedy decoding gives it; ``multiple_choice`` takes the argmin).

lmms-eval 0.7.3's evaluator passes every model output through ``unwrap_generation_output``, which turns a
``(float, bool)`` pair into its string, so ``multiple_choice`` then fails to unpack it; wrapping the pair in a
``GenerationResult`` (returned unchanged as ``.text``) keeps the tuple.
"""
from __future__ import annotations

from typing import Any

import numpy as np
import torch
from lmms_eval.api.instance import GenerationResult, Instance
from lmms_eval.api.model import lmms

IMAGE_TOKEN = "<image>"
MODEL_ID = "spatialboost_vlm"


class SpatialBoostLMM(lmms):
    """lmms-eval "simple" model around a trained ``SpatialVLM`` (encoder, projector, lm, tokenizer)."""
    is_simple = True

    def __init__(self, run_dir: str = "", encoder: str = "", lm: str = "builtin:smollm2-135m",
                 feature_layer: int = -1, image_size: int = 0, device: str | None = "cpu",
                 workspace: str = "", vlm: Any = None, max_new_tokens: int = 32, precision: str = "fp32",
                 batch_size: Any = 1, max_batch_size: Any = None, **unused):
        super().__init__()
        if vlm is None:
            if not run_dir or not encoder:
                raise ValueError("spatialboost_vlm needs model_args run_dir=<stage-2 run folder>,encoder=<spec>")
            from .vlm_cache import load_trained_vlm
            vlm = load_trained_vlm(run_dir, encoder, lm, int(feature_layer), workspace or None)
        self.vlm = vlm.eval()
        self.device_ = torch.device(device or "cpu")
        self.precision = precision        # the training's autocast (bf16-stored frozen weights need it)
        self.vlm.to(self.device_)
        info = vlm.encoder.info
        self.size = int(image_size) or int(info.image_size[0])
        self.mean = torch.tensor(info.mean, dtype=torch.float32).view(3, 1, 1)
        self.std = torch.tensor(info.std, dtype=torch.float32).view(3, 1, 1)
        self.tok = vlm.tokenizer
        self.max_new_tokens = int(max_new_tokens)
        self.tpi = (self.size // info.patch_size) ** 2

    @classmethod
    def from_vlm(cls, vlm, image_size: int = 0, device: str = "cpu", max_new_tokens: int = 32,
                 precision: str = "fp32") -> "SpatialBoostLMM":
        return cls(vlm=vlm, image_size=image_size, device=device, max_new_tokens=max_new_tokens, precision=precision)

    def autocast(self):
        from harness.device import autocast
        return autocast(self.device_, self.precision)

    # ------------------------------------------------------------------------------------------ inputs
    def pixels(self, images) -> torch.Tensor:
        """PIL images -> [N,3,S,S], the trainer's ImageLoader transform (RGB, square bicubic, normalise)."""
        from PIL import Image
        out = []
        for im in images:
            im = im.convert("RGB").resize((self.size, self.size), Image.BICUBIC)
            x = torch.from_numpy(np.asarray(im, dtype=np.uint8).copy()).permute(2, 0, 1).float() / 255.0
            out.append((x - self.mean) / self.std)
        return torch.stack(out) if out else torch.zeros(0, 3, self.size, self.size)

    def prompt_ids(self, text: str, n_images: int) -> list[int]:
        if IMAGE_TOKEN not in text:
            text = f"{IMAGE_TOKEN}\n" * n_images + text
        if text.count(IMAGE_TOKEN) != n_images:
            raise ValueError(f"prompt holds {text.count(IMAGE_TOKEN)} {IMAGE_TOKEN} placeholders for {n_images} images")
        s = self.tok.apply_chat_template([{"role": "user", "content": text}], tokenize=False,
                                         add_generation_prompt=True)
        img = self.vlm.image_token_id
        ids: list[int] = []
        for t in self.tok(s, add_special_tokens=False)["input_ids"]:
            ids.extend([img] * self.tpi if t == img else [t])
        return ids

    def embed(self, ids: list[int], pix: torch.Tensor) -> torch.Tensor:
        x = torch.tensor([ids], device=self.device_)
        emb = self.vlm.lm.get_input_embeddings()(x)
        if pix.shape[0]:
            vis = self.vlm.visual_tokens(pix.to(self.device_))
            emb = emb.masked_scatter((x == self.vlm.image_token_id).unsqueeze(-1), vis.to(emb.dtype))
        return emb

    def _visuals(self, doc_to_visual, doc_id, task, split):
        vis = doc_to_visual(self.task_dict[task][split][doc_id]) if doc_to_visual is not None else []
        return [v for v in (vis or []) if v is not None]

    # ---------------------------------------------------------------------------------------- requests
    @torch.no_grad()
    def generate(self, text: str, images, until=(), max_new_tokens: int | None = None) -> str:
        ids = self.prompt_ids(text, len(images))
        emb = self.embed(ids, self.pixels(images))
        eos = {self.tok.eos_token_id, self.tok.convert_tokens_to_ids("<|im_end|>")} - {None}
        out: list[int] = []
        past = None
        for _ in range(max_new_tokens or self.max_new_tokens):
            r = self.vlm.lm(inputs_embeds=emb, past_key_values=past, use_cache=True)
            past = r.past_key_values
            nxt = int(r.logits[0, -1].argmax())
            if nxt in eos:
                break
            out.append(nxt)
            text_out = self.tok.decode(out, skip_special_tokens=True)
            if any(u and u in text_out for u in until):
                break
            emb = self.vlm.lm.get_input_embeddings()(torch.tensor([[nxt]], device=self.device_))
        text_out = self.tok.decode(out, skip_special_tokens=True)
        for u in until:
            if u:
                text_out = text_out.split(u)[0]
        return text_out.strip()

    def generate_until(self, requests: list[Instance]) -> list[str]:
        res = []
        for ctx, gen_kwargs, doc_to_visual, doc_id, task, split in [r.args for r in requests]:
            gen_kwargs = dict(gen_kwargs or {})
            until = gen_kwargs.get("until") or []
            until = [until] if isinstance(until, str) else list(until)
            with self.autocast():
                text = self.generate(ctx, self._visuals(doc_to_visual, doc_id, task, split), until,
                                     int(gen_kwargs.get("max_new_tokens", self.max_new_tokens)))
            res.append(text)
        return res

    @torch.no_grad()
    def continuation_loglik(self, context: str, continuation: str, images) -> tuple[float, bool]:
        """(log-likelihood of ``continuation``'s tokens after the prompt of ``context`` + ``images``, whether
        greedy decoding gives them): the computation behind ``loglikelihood``, callable without lmms-eval
        (benchmarks/vqa_overhead.py times the evaluator against a loop over this)."""
        ids = self.prompt_ids(context, len(images))
        cont_ids = self.tok(str(continuation).strip(), add_special_tokens=False)["input_ids"]
        with self.autocast():
            emb = self.embed(ids + cont_ids, self.pixels(images))
            logits = self.vlm.lm(inputs_embeds=emb, use_cache=False).logits[0].float()
        lp = torch.log_softmax(logits[len(ids) - 1:-1], -1)
        target = torch.tensor(cont_ids, device=lp.device)
        return float(lp.gather(1, target[:, None]).sum()), bool((lp.argmax(-1) == target).all())

    def loglikelihood(self, requests: list[Instance]) -> list:
        res = []
        for ctx, cont, doc_to_visual, doc_id, task, split in [r.args for r in requests]:
            if not isinstance(cont, str):
                cont = cont(self.task_dict[task][split][doc_id])
            ll, greedy = self.continuation_loglik(ctx, cont, self._visuals(doc_to_visual, doc_id, task, split))
            res.append(GenerationResult((-ll, greedy)))
        return res

    def clean(self) -> None:
        """lmms-eval calls this after the requests; its default deletes every nn.Module attribute. The VLM
        belongs to the caller (the suite reuses it and reads it afterwards), so nothing is freed here."""

    def generate_until_multi_round(self, requests) -> list[str]:
        raise NotImplementedError("spatialboost_vlm answers single-round requests")
