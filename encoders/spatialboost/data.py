"""LLaVA-style conversation data for the three SpatialBoost stages.

Input: a ``.json`` file holding a list of samples or a ``.jsonl`` file with one sample per line::

    {"id": "s1", "image": "img/0001.png",                       # or "images": ["a.png", "b.png"] (multi-view)
     "conversations": [{"from": "human", "value": "<image>\\nHow far is the chair?"},
                       {"from": "gpt",   "value": "About 1.2 m."}, ...]}

Image paths are relative to the data file's folder (or ``image_root``). ``from`` is ``human``/``user``,
``gpt``/``assistant`` or ``system``. Each ``<image>`` placeholder takes the next image in order, so a sample
with *k* images has exactly *k* placeholders (else :class:`DataError` naming the sample id).

Tokenisation (done once, at load, so bad input stops before training starts and never mid-epoch): the
conversation is rendered with the tokenizer's chat template incrementally, message by message; the text an
assistant message adds after the generation prompt (its answer plus the template's end-of-turn, e.g.
``"About 1.2 m.<|im_end|>\\n"`` in ChatML) is supervised, everything else (system prompt, user turns, role
headers, image tokens) gets label -100. Segments are tokenised separately, so the label mask is exact.
Each ``<image>`` token is then expanded to ``tokens_per_image`` copies, which the VLM replaces by the projected
patch tokens of that view.

Overlong samples (more than ``max_length`` tokens after expansion): ``overflow="truncate"`` keeps the longest
prefix of whole turns (user + answer) that fits and still holds every image placeholder; a sample where not
even the first turn fits is skipped. ``overflow="skip"`` skips every overlong sample. Counts are reported in
:attr:`ConversationData.stats` (and logged by the trainer).
"""
from __future__ import annotations

import functools
import hashlib
import json
import logging
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Sequence

import numpy as np
import torch

from harness.errors import UserError

from .lm import IMAGE_TOKEN

IGNORE = -100
ROLES = {"human": "user", "user": "user", "gpt": "assistant", "assistant": "assistant", "system": "system"}
log = logging.getLogger(__name__)



class DataError(UserError, ValueError):
    """Bad conversation data; the message names the file and the sample (exit status 2)."""


@dataclass
class Sample:
    id: str
    images: list[Path]
    input_ids: list[int]      # image tokens already expanded
    labels: list[int]
    n_turns: int
    truncated: bool = False


@dataclass
class DataStats:
    samples: int = 0
    truncated: int = 0
    skipped_overlong: int = 0
    answer_tokens: int = 0
    tokens: int = 0
    bad_images: int = 0           # images that failed to decode during training (black image used)

    def to_dict(self) -> dict:
        return dict(self.__dict__)


def file_id(path: Path) -> str:
    """The data set's id: sha256 (16 hex) of the file's bytes."""
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()[:16]


def read_records(path: str | Path) -> list[dict]:
    path = Path(path)
    if not path.is_file():
        raise DataError(f"conversation data '{path}' does not exist")
    text = path.read_text(encoding="utf-8")
    if path.suffix == ".jsonl":
        recs = []
        for ln, line in enumerate(text.splitlines(), 1):
            if not line.strip():
                continue
            try:
                recs.append(json.loads(line))
            except json.JSONDecodeError as e:
                raise DataError(f"{path}:{ln}: not valid JSON ({e.msg})") from None
    else:
        try:
            recs = json.loads(text)
        except json.JSONDecodeError as e:
            raise DataError(f"{path}: not valid JSON ({e.msg} at line {e.lineno})") from None
        if isinstance(recs, dict):
            recs = [recs]
    if not isinstance(recs, list) or not all(isinstance(r, dict) for r in recs):
        raise DataError(f"{path}: expected a list of samples (JSON) or one sample object per line (JSONL)")
    return recs


def _messages(rec: dict, sid: str, path: Path) -> list[dict]:
    conv = rec.get("conversations")
    if not isinstance(conv, list) or not conv:
        raise DataError(f"{path}: sample '{sid}' has no 'conversations' list")
    out = []
    for i, m in enumerate(conv):
        if not isinstance(m, dict) or "value" not in m or m.get("from") not in ROLES:
            raise DataError(f"{path}: sample '{sid}' message {i}: expected {{'from': human|gpt|system, "
                            f"'value': text}}, got {str(m)[:120]}")
        out.append({"role": ROLES[m["from"]], "content": str(m["value"])})
    if not any(m["role"] == "assistant" for m in out):
        raise DataError(f"{path}: sample '{sid}' has no answer (no 'gpt' message)")
    return out


def segment_conversation(tokenizer, messages: list[dict]) -> list[tuple[str, bool, int]]:
    """``[(text, supervised, turn_index)]`` whose concatenation is the rendered chat.

    Rendered incrementally with the tokenizer's chat template; an assistant message's segment is what its
    rendering adds after the generation prompt."""
    def render(msgs, gen):
        return tokenizer.apply_chat_template(msgs, tokenize=False, add_generation_prompt=gen)

    segs: list[tuple[str, bool, int]] = []
    prev, turn = "", 0
    for k, m in enumerate(messages):
        if m["role"] != "assistant":
            continue
        prefix = render(messages[:k], True)
        full = render(messages[:k + 1], False)
        if not prefix.startswith(prev) or not full.startswith(prefix):
            raise DataError("the tokenizer's chat template is not prefix-stable (rendering a conversation one "
                            "message longer changes the earlier text); use a template without such rewriting")
        segs.append((prefix[len(prev):], False, turn))
        segs.append((full[len(prefix):], True, turn))
        prev, turn = full, turn + 1
    return segs


class ConversationData:
    """Validated, tokenised samples of one conversation file."""

    def __init__(self, path: str | Path, tokenizer, tokens_per_image: int, max_length: int = 2048,
                 overflow: str = "truncate", image_root: str | Path | None = None, check_images: bool = True):
        if overflow not in ("truncate", "skip"):
            raise ValueError(f"overflow must be 'truncate' or 'skip', got {overflow!r}")
        self.path = Path(path)
        self.id = file_id(self.path)
        self.stats = DataStats()
        root = Path(image_root) if image_root else self.path.parent
        image_id = tokenizer.convert_tokens_to_ids(IMAGE_TOKEN)
        self.samples: list[Sample] = []
        seen: set[str] = set()
        for idx, rec in enumerate(read_records(self.path)):
            sid = str(rec.get("id", f"#{idx}"))
            if sid in seen:
                raise DataError(f"{self.path}: sample id '{sid}' appears twice")
            seen.add(sid)
            imgs = rec.get("images", rec.get("image", []))
            imgs = [imgs] if isinstance(imgs, str) else list(imgs or [])
            msgs = _messages(rec, sid, self.path)
            n_ph = sum(m["content"].count(IMAGE_TOKEN) for m in msgs)
            if n_ph != len(imgs):
                raise DataError(f"{self.path}: sample '{sid}' has {n_ph} '{IMAGE_TOKEN}' placeholder(s) in its "
                                f"conversation but {len(imgs)} image(s); each image needs exactly one placeholder")
            paths = [(root / p) if not Path(p).is_absolute() else Path(p) for p in imgs]
            if check_images:
                for p in paths:
                    if not p.is_file():
                        raise DataError(f"{self.path}: sample '{sid}': image '{p}' does not exist")
            sample = self._tokenise(sid, paths, msgs, tokenizer, image_id, tokens_per_image, max_length,
                                    overflow)
            if sample is not None:
                self.samples.append(sample)
                self.stats.answer_tokens += sum(1 for x in sample.labels if x != IGNORE)
                self.stats.tokens += len(sample.input_ids)
        self.stats.samples = len(self.samples)
        if not self.samples:
            raise DataError(f"{self.path}: no usable sample ({self.stats.skipped_overlong} longer than "
                            f"max_length={max_length})")
        if self.stats.truncated or self.stats.skipped_overlong:
            log.warning("%s: %d sample(s) truncated at a turn boundary, %d skipped (longer than %d tokens)",
                        self.path, self.stats.truncated, self.stats.skipped_overlong, max_length)

    def _tokenise(self, sid, paths, msgs, tokenizer, image_id, tpi, max_length, overflow) -> Sample | None:
        turns: list[tuple[list[int], list[int], int]] = []        # per turn: ids, labels, n_images
        for text, sup, turn in segment_conversation(tokenizer, msgs):
            ids = tokenizer(text, add_special_tokens=False)["input_ids"]
            if turn == len(turns):
                turns.append(([], [], 0))
            t_ids, t_lab, n_img = turns[turn]
            for t in ids:
                if t == image_id:
                    t_ids.extend([image_id] * tpi)
                    t_lab.extend([IGNORE] * tpi)
                    n_img += 1
                else:
                    t_ids.append(t)
                    t_lab.append(t if sup else IGNORE)
            turns[turn] = (t_ids, t_lab, n_img)
        total_images = sum(t[2] for t in turns)
        if total_images != len(paths):        # e.g. a placeholder inside a system prompt the template dropped
            raise DataError(f"{self.path}: sample '{sid}': {total_images} '{IMAGE_TOKEN}' token(s) after applying "
                            f"the chat template but {len(paths)} image(s)")
        ids, labels, kept, imgs = [], [], 0, 0
        for t_ids, t_lab, n_img in turns:
            if len(ids) + len(t_ids) > max_length:
                break
            ids += t_ids
            labels += t_lab
            kept += 1
            imgs += n_img
        truncated = kept < len(turns)
        if truncated and (overflow == "skip" or kept == 0 or imgs < total_images):
            self.stats.skipped_overlong += 1
            return None
        self.stats.truncated += int(truncated)
        return Sample(sid, paths, ids, labels, kept, truncated)

    def __len__(self) -> int:
        return len(self.samples)

    def __getitem__(self, i: int) -> Sample:
        return self.samples[i]


class ImageLoader:
    """PIL -> RGB -> square resize (bicubic) -> normalised tensor [3,S,S]. A file that fails to decode (it was
    checked to exist at load time) is replaced by a zero image and counted, so an epoch never dies on it."""

    def __init__(self, size: int, mean: Sequence[float], std: Sequence[float], stats: DataStats | None = None):
        self.size = int(size)
        self.mean = torch.tensor(mean, dtype=torch.float32).view(3, 1, 1)
        self.std = torch.tensor(std, dtype=torch.float32).view(3, 1, 1)
        self.stats = stats

    def __call__(self, path: Path) -> torch.Tensor:
        from PIL import Image
        try:
            with Image.open(path) as im:
                im = im.convert("RGB").resize((self.size, self.size), Image.BICUBIC)
                x = torch.from_numpy(np.asarray(im, dtype=np.uint8).copy()).permute(2, 0, 1).float() / 255.0
        except (OSError, ValueError) as e:
            log.warning("image '%s' could not be decoded (%s); using a blank image", path, e)
            if self.stats is not None:
                self.stats.bad_images += 1
            return torch.zeros(3, self.size, self.size)
        return (x - self.mean) / self.std


@dataclass
class Batch:
    input_ids: torch.Tensor        # [B, L]
    attention_mask: torch.Tensor   # [B, L]
    labels: torch.Tensor           # [B, L]
    pixel_values: torch.Tensor     # [N_views, 3, S, S] (views of all samples, in order)
    ids: list[str] = field(default_factory=list)

    @property
    def answer_tokens(self) -> int:
        return int((self.labels[:, 1:] != IGNORE).sum())

    def to(self, device) -> "Batch":
        return Batch(self.input_ids.to(device), self.attention_mask.to(device), self.labels.to(device),
                     self.pixel_values.to(device), self.ids)


def collate(samples: Sequence[Sample], loader: ImageLoader, pad_id: int) -> Batch:
    L = max(len(s.input_ids) for s in samples)
    B = len(samples)
    ids = torch.full((B, L), pad_id, dtype=torch.long)
    lab = torch.full((B, L), IGNORE, dtype=torch.long)
    att = torch.zeros((B, L), dtype=torch.long)
    for i, s in enumerate(samples):
        n = len(s.input_ids)
        ids[i, :n] = torch.tensor(s.input_ids)
        lab[i, :n] = torch.tensor(s.labels)
        att[i, :n] = 1
    views = [loader(p) for s in samples for p in s.images]
    pix = torch.stack(views) if views else torch.zeros(0, 3, loader.size, loader.size)
    return Batch(ids, att, lab, pix, [s.id for s in samples])


class StepBatches:
    """This process's micro-batches of an optimiser step, a pure function of the step: each epoch is a fresh
    permutation of the data seeded by ``seed + epoch``, the batch its ``batch_size`` consecutive entries and this
    rank every ``world``-th of them. A resumed or prefetched run thus sees the batches an uninterrupted one would."""

    def __init__(self, data, loader: ImageLoader, pad_id: int, batch_size: int, micro_batch_size: int, seed: int,
                 rank: int = 0, world: int = 1):
        self.data, self.loader, self.pad_id = data, loader, pad_id
        self.batch_size, self.micro, self.seed, self.rank, self.world = batch_size, micro_batch_size, seed, rank, world
        self.n = len(data)
        self.steps_per_epoch = math.ceil(self.n / batch_size)
        self.order = functools.lru_cache(maxsize=2)(self._order)     # this epoch's and the next (prefetch)

    def _order(self, epoch: int) -> torch.Tensor:
        return torch.randperm(self.n, generator=torch.Generator().manual_seed(self.seed + epoch))

    def __call__(self, step: int) -> list[Batch]:
        epoch, within = divmod(step, self.steps_per_epoch)
        perm = self.order(epoch)
        idx = [int(perm[(within * self.batch_size + j) % self.n]) for j in range(self.batch_size)]
        mine = idx[self.rank::self.world]
        micro = [mine[i:i + self.micro] for i in range(0, len(mine), self.micro)]
        return [collate([self.data[i] for i in mb], self.loader, self.pad_id) for mb in micro]


class BatchPrefetcher:
    """Builds the batches of the coming steps in background threads while the current step runs.

    Decoding and resizing a step's images takes ~2.3 ms each on a CPU core: at a GPU's batch sizes that is as long
    as the step itself, so collating in the training loop leaves the GPU idle. ``make(step)`` must be a pure
    function of the step (the trainer's index order is), so the batches, and the training, are the same with and
    without prefetching; ``depth`` 0 builds each step's batches in the calling thread (no threads)."""

    def __init__(self, make: Callable[[int], list], stop: int, depth: int = 2):
        self.make, self.stop, self.depth = make, int(stop), max(0, int(depth))
        self.pending: dict[int, object] = {}
        self.pool = None
        if self.depth:
            from concurrent.futures import ThreadPoolExecutor
            self.pool = ThreadPoolExecutor(self.depth, thread_name_prefix="batch-prefetch")

    def get(self, step: int) -> list:
        if self.pool is None:
            return self.make(step)
        for s in range(step, min(step + self.depth + 1, self.stop)):
            if s not in self.pending:
                self.pending[s] = self.pool.submit(self.make, s)
        return self.pending.pop(step).result()

    def close(self) -> None:
        if self.pool is not None:
            for f in self.pending.values():
                f.cancel()
            self.pending.clear()
            self.pool.shutdown(wait=True)
            self.pool = None

    def __enter__(self) -> "BatchPrefetcher":
        return self

    def __exit__(self, *exc) -> None:
        self.close()


def write_jsonl(path: str | Path, records: Sequence[dict]) -> Path:
    """Small helper (tests, demos): write samples as JSONL."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("".join(json.dumps(r) + "\n" for r in records), encoding="utf-8")
    return path
