"""Inference on a trained ``SpatialVLM`` without lmms-eval: the prompt the trainer trained with, greedy
generation and continuation log-likelihoods. The lmms-eval plugin (:mod:`.plugin`) is this plus lmms-eval's
request plumbing; ``benchmarks/vqa_signal.py`` and ``benchmarks/vqa_overhead.py`` call it directly (machines
without lmms-eval, e.g. a bare GPU image, and the overhead baseline).

Prompting: the user message ``"<image>\\n" * n_views + question`` in the LM's chat template, each ``<image>``
expanded to the view's visual tokens (a question that already holds ``<image>`` placeholders keeps them:
multi-image tasks such as BLINK / MUIRBench place them).
"""
from __future__ import annotations

import numpy as np
import torch

IMAGE_TOKEN = "<image>"


class VLMRunner:
    """Greedy generation and log-likelihoods of a trained VLM (encoder, projector, lm, tokenizer)."""

    def __init__(self, vlm, image_size: int = 0, device: str | None = "cpu", max_new_tokens: int = 32,
                 precision: str = "fp32"):
        self._init_runner(vlm, image_size, device, max_new_tokens, precision)

    def _init_runner(self, vlm, image_size, device, max_new_tokens, precision) -> None:
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

    # ---------------------------------------------------------------------------------------- requests
    @torch.no_grad()
    def generate(self, text: str, images, until=(), max_new_tokens: int | None = None) -> str:
        """Greedy answer (KV cache; stops at EOS / any of ``until`` / ``max_new_tokens``), under the autocast."""
        with self.autocast():
            return self._generate(text, images, until, max_new_tokens)

    def _generate(self, text, images, until, max_new_tokens) -> str:
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

    @torch.no_grad()
    def continuation_loglik(self, context: str, continuation: str, images) -> tuple[float, bool]:
        """(log-likelihood of ``continuation``'s tokens after the prompt of ``context`` + ``images``, whether
        greedy decoding gives them): what lmms-eval's ``loglikelihood`` requests ask for."""
        ids = self.prompt_ids(context, len(images))
        cont_ids = self.tok(str(continuation).strip(), add_special_tokens=False)["input_ids"]
        with self.autocast():
            emb = self.embed(ids + cont_ids, self.pixels(images))
            logits = self.vlm.lm(inputs_embeds=emb, use_cache=False).logits[0].float()
        lp = torch.log_softmax(logits[len(ids) - 1:-1], -1)
        target = torch.tensor(cont_ids, device=lp.device)
        return float(lp.gather(1, target[:, None]).sum()), bool((lp.argmax(-1) == target).all())

    def score_local(self, doc: dict, fns: dict, kind: str, max_new_tokens: int = 24) -> float:
        """One local-task document scored as its lmms-eval task does (:func:`suites.vqa.lmms_tasks.write_task`):
        ``choice`` = argmin of the choices' negative log-likelihoods after ``" "``; otherwise greedy generation
        until a newline, judged by the task's ``process_results``."""
        images = fns["doc_to_visual"](doc)
        text = fns["doc_to_text"](doc)
        if kind == "choice":
            nll = [-self.continuation_loglik(text, " " + c, images)[0] for c in fns["doc_to_choice"](doc)]
            return float(min(range(len(nll)), key=nll.__getitem__) == fns["doc_to_target"](doc))
        answer = self.generate(text, images, ["\n"], max_new_tokens)
        return float(fns["process_results"](doc, [answer])["acc"])
