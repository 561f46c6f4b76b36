"""LLaVA's JSON data sets as stage data, and mixing several files into one stage.

A stage's data (``data=`` / ``stage<k>.data=``) is one or more comma-separated sources ``FILE[@IMAGE_ROOT]``::

    stage1.data=/d/LLaVA-Pretrain/blip_laion_cc_sbu_558k.json@/d/LLaVA-Pretrain/images
    stage2.data=/d/llava_instruct_150k.json@/d/coco/train2017,/d/world/mvqa.jsonl
    stage3.data=/d/world/cot.jsonl

``IMAGE_ROOT`` is the folder the file's ``image`` paths are relative to (default: ``image_root=`` if set, else the
file's own folder). Formats read (both are what :mod:`.data` already parses; this module adds the roots, the
mixing and the checks):

- LLaVA-Pretrain-558K (``blip_laion_cc_sbu_558k.json``): ``{"id", "image": "00453/004539375.jpg",
  "conversations": [human "<image>\\n<instruction>", gpt caption]}``;
- LLaVA-Instruct-158K (``llava_instruct_150k.json``, ``llava_v1_5_mix665k.json``): ``{"id", "image":
  "000000033471.jpg", "conversations": [human/gpt turns, "<image>" in the first]}``; samples without ``image``
  (text-only ShareGPT turns of the 665K mix) are kept as text-only samples.
- the harness' own QA files (``spatialboost qa generate``: ``images`` lists for multi-view VQA).

A missing image stops loading with a :class:`~.data.DataError` naming the file, the sample id and the path.
Several sources are concatenated (LLaVA-1.5 mixes its instruction sets this way; the paper adds the multi-view
VQA to LLaVA-Instruct in stage 2); the trainer's per-epoch permutation interleaves them.
"""
from __future__ import annotations

import hashlib
from dataclasses import fields
from pathlib import Path

from .data import ConversationData, DataError, DataStats, Sample


def parse_sources(spec: str, default_root: str = "") -> list[tuple[Path, Path | None]]:
    """``"a.json@/imgs,b.jsonl"`` -> ``[(a.json, /imgs), (b.jsonl, default_root or None)]``."""
    out = []
    for part in (p.strip() for p in spec.split(",")):
        if not part:
            continue
        file, _, root = part.partition("@")
        root = root or default_root
        out.append((Path(file).expanduser(), Path(root).expanduser() if root else None))
    return out


def check_sources(key: str, spec: str, default_root: str = "") -> list[tuple[Path, Path | None]]:
    """Cheap checks (files and roots exist) before anything loads; DataError names the key and the path."""
    srcs = parse_sources(spec, default_root)
    if not srcs:
        raise DataError(f"{key}='{spec}': no conversation file")
    for file, root in srcs:
        if not file.is_file():
            raise DataError(f"{key}='{spec}': conversation data file '{file}' does not exist")
        if root is not None and not root.is_dir():
            raise DataError(f"{key}='{spec}': image root '{root}' of '{file.name}' is not a folder")
    return srcs


class MixedData:
    """Several :class:`ConversationData` as one data set (same interface: ``path``, ``id``, ``stats``,
    ``len``, indexing)."""

    def __init__(self, parts: list[ConversationData]):
        self.parts = parts
        self.path = "+".join(str(p.path) for p in parts)
        self.id = hashlib.sha256("+".join(p.id for p in parts).encode()).hexdigest()[:16]
        self.stats = DataStats(**{f.name: sum(getattr(p.stats, f.name) for p in parts)
                                  for f in fields(DataStats)})
        self.samples: list[Sample] = [s for p in parts for s in p.samples]
        self.sources = {str(p.path): len(p) for p in parts}

    def __len__(self) -> int:
        return len(self.samples)

    def __getitem__(self, i: int) -> Sample:
        return self.samples[i]


def load_stage_data(spec: str, tokenizer, tokens_per_image: int, max_length: int, overflow: str,
                    default_root: str = "") -> ConversationData | MixedData:
    """The data of one stage: a single file's :class:`ConversationData`, or the :class:`MixedData` of several."""
    parts = [ConversationData(f, tokenizer, tokens_per_image, max_length, overflow, root)
             for f, root in check_sources("data", spec, default_root)]
    return parts[0] if len(parts) == 1 else MixedData(parts)
