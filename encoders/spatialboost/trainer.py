"""The SpatialBoost 3-stage trainer (paper §3.1, App. A.1-A.2).

=======  ============================================  ====================================  ========  =====
stage    trains                                        data (paper)                          lr        batch
=======  ============================================  ====================================  ========  =====
1        projector                                     alignment captions (BLIP-558K)        2e-3      256
2        projector + LM                                LLaVA-Instruct-158K + multi-view VQA  2e-5 (*)  128
3        Attn+ and alpha (+ projector); LM and the     multi-turn spatial reasoning          2e-5      128
         original encoder frozen (``variant=dual``)
=======  ============================================  ====================================  ========  =====

(*) The paper gives no stage-2 learning rate; 2e-5 is LLaVA-1.5's visual-instruction-tuning value, which the
paper says it follows. Every stage: one epoch, AdamW (weight decay 0), linear warm-up over 3% of the steps then
cosine decay to 0, gradient clipping at 1.0 (LLaVA-1.5's recipe).

Variants for stage 3 (paper Table 17): ``dual`` (default, :func:`wrap_dual_channel`), ``full`` (every encoder
parameter, :func:`apply_full_finetune`), ``lora`` (:func:`apply_lora`).

Batches: ``batch_size`` is the global batch (samples per optimiser step); each of the W processes takes every
W-th sample of it and runs ``micro_batch_size`` samples at a time with gradient accumulation, so
``batch_size % (W * micro_batch_size) == 0`` is required. The loss of a step is the mean cross entropy over the
answer tokens of the process's share of the batch (DDP then averages the processes). Data order: a permutation
per (seed, stage, epoch); the last batch of an epoch wraps around to the epoch's first samples.

Runs live in ``<workspace>/boost/<config hash>/``: ``stage<k>/ckpt-<step>/`` checkpoints (:mod:`.checkpoints`),
``pipeline.json`` (stages done, MLflow run ids) and ``boosted/`` (the export, :mod:`.export`). Running the same
config again resumes from the last checkpoint (``resume=false`` starts over) and continues the same loss curve.
The configuration lives in :mod:`.boost_config`, the multi-process set-up in :mod:`.distributed`.
"""
from __future__ import annotations

import dataclasses
import json
import logging
import math
import shutil
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import torch
from torch import nn

from harness.atomic import atomic_write_json
from harness.config import config_hash

from .ablations import apply_full_finetune, apply_lora
from .boost_config import (PAPER_DEFAULTS, BoostConfig, Stage1Config, Stage2Config, Stage3Config, StageConfig,
                           dual_cfg, dual_cfg_dict)
from .checkpoints import (latest_checkpoint, load_params, params_digest, read_state, restore_training_state,
                          stage_dir, write_checkpoint)
from .data import BatchPrefetcher, ConversationData, ImageLoader, StepBatches
from .distributed import Dist, init_distributed
from . import fsdp
from .dual_attention import alpha_stats, dual_channel_parameters, wrap_dual_channel
from .records import BoostRecords
from .vlm import SpatialVLM, backbone_of

__all__ = ["BoostConfig", "StageConfig", "Stage1Config", "Stage2Config", "Stage3Config", "PAPER_DEFAULTS",
           "BoostTrainer", "StageResult", "Dist", "build_vlm", "run_boost", "lr_at"]

log = logging.getLogger(__name__)


# --------------------------------------------------------------------------------------------- schedule
def lr_at(step: int, total: int, peak: float, warmup_ratio: float) -> float:
    """Linear warm-up over ``warmup_ratio`` of the steps, then cosine decay to 0 (LLaVA-1.5's schedule)."""
    warm = math.ceil(warmup_ratio * total)
    if step < warm:
        return peak * (step + 1) / warm
    if total <= warm:
        return peak
    progress = (step - warm) / max(1, total - warm)
    return peak * 0.5 * (1.0 + math.cos(math.pi * progress))


# -------------------------------------------------------------------------------------------- the trainer
@dataclass
class StageResult:
    stage: int
    steps: int
    losses: list[float]
    run_id: str | None
    checkpoint: Path
    stats: dict
    step_seconds: list[float] = dataclasses.field(default_factory=list)   # wall per step of this call


class BoostTrainer:
    """Builds the VLM once and runs the configured stages; ``run()`` returns the exported boosted spec."""

    def __init__(self, cfg: BoostConfig, *, vlm: SpatialVLM | None = None, echo: Callable[[str], None] = print):
        from harness.device import resolve_device
        from harness.workspace import open_workspace
        self.cfg = cfg
        self.echo = echo
        ws = open_workspace(cfg.workspace)
        self.ws = ws
        self.device = resolve_device(cfg.device)
        self.dist: Dist = init_distributed(self.device)
        self.device = self.dist.local_device(self.device)
        self.precision = ("bf16" if self.device.type == "cuda" else "fp32") if cfg.precision == "auto" \
            else cfg.precision
        self.hash = config_hash(cfg)
        self.run_dir = Path(cfg.run_dir) if cfg.run_dir else ws.root / "boost" / self.hash
        # everything a user can get wrong (stages, LM spec, data files, encoder) is checked before the run
        # folder, pipeline.json or an MLflow run exists
        self.warnings: list[str] = []
        self.check_inputs(check_lm=vlm is None)
        self.built_here = vlm is None             # an FSDP stage rebuilds the unsharded model afterwards
        if vlm is None:
            vlm = build_vlm(cfg, ws)
        self.vlm = vlm.to(self.device)
        self._data_cache: dict[str, ConversationData] = {}
        self.image_size = cfg.image_size or self.vlm.encoder.info.image_size[0]
        for stage in cfg.stages:            # tokenise now: malformed data stops here, before any output
            self.data_for(stage)
        if self.dist.main:
            if not cfg.resume and self.run_dir.exists():
                shutil.rmtree(self.run_dir)
            self.run_dir.mkdir(parents=True, exist_ok=True)
        self.dist.barrier()
        self.base_spec = self.vlm.encoder.info.spec
        self.base_fingerprint = self.vlm.encoder.fingerprint()
        from .export import base_info
        self.base_info = base_info(self.vlm.encoder)
        self.variant_applied = False
        self.variant_report: dict = {}
        self.trained_lm = False
        self.records = BoostRecords(self.run_dir, cfg, self.hash, ws, self.dist.main)
        self.pipeline, self.tracker, self.tracked = self.records.pipeline, self.records.tracker, self.records.tracked
        if self._grad_ckpt():       # (auto: GPU only) HF recomputes only in train mode: see fsdp.lm_train_mode
            self.vlm.lm.gradient_checkpointing_enable(gradient_checkpointing_kwargs={"use_reentrant": False})

    def stage_data_paths(self) -> dict[int, str]:
        """Stage -> the conversation file it trains on (its own ``stage<k>.data``, else ``data``)."""
        return {st: getattr(self.cfg, f"stage{st}").data or self.cfg.data for st in self.cfg.stages}

    def check_inputs(self, check_lm: bool = True) -> None:
        """Cheap checks of what a user passes; raises a UserError (ConfigError / LMSpecError / DataError)."""
        from harness.config import ConfigError
        from .llava import check_sources
        from .lm import check_lm_spec
        bad = [st for st in self.cfg.stages if st not in (1, 2, 3)]
        if bad or not self.cfg.stages:
            raise ConfigError(f"stages={list(self.cfg.stages)}: stages are 1, 2, 3")
        if check_lm:
            check_lm_spec(self.cfg.lm, self.ws.models)
        paths = self.stage_data_paths()
        shared: dict[str, list[int]] = {}
        for st, path in paths.items():
            key = f"stage{st}.data" if getattr(self.cfg, f"stage{st}").data else "data"
            if not path:
                raise ConfigError(f"stage {st} has no data: set data=FILE (every stage) or stage{st}.data=FILE")
            srcs = check_sources(key, path, self.cfg.image_root)      # FILE[@IMAGE_ROOT],... (.llava)
            shared.setdefault(",".join(str(f.resolve()) for f, _ in srcs), []).append(st)
        for path, stages in shared.items():
            if len(stages) > 1:
                self.warnings.append(
                    f"{path} serves stages {', '.join(map(str, stages))}: the paper trains stage 1 on alignment "
                    f"captions, stage 2 on instruction data + multi-view VQA and stage 3 on the spatial "
                    f"chain-of-thought data (set stage1.data / stage2.data / stage3.data)")
        if self.dist.main:
            for w in self.warnings:
                log.warning(w)
                self.echo(f"warning: {w}")

    def run_tags(self, parent_rid: str | None = None) -> dict[str, str]:
        """What a report needs to say about this candidate: the LM (and whether it is random), steps and
        samples seen per stage, variant and the boost run. Copied into every eval run of the boosted encoder."""
        from .lm import lm_is_random
        from .records import data_tags      # levels / order / views / samples / source of the QA data
        steps, seen = [], []
        for st in self.cfg.stages:
            sc: StageConfig = getattr(self.cfg, f"stage{st}")
            n = len(self._data_cache[self.stage_data_paths()[st]]) if self._data_cache else 0
            total = sc.max_steps if sc.max_steps > 0 else max(1, math.ceil(sc.epochs * math.ceil(n / sc.batch_size)))
            steps.append(f"{st}:{total}")
            seen.append(f"{st}:{total * sc.batch_size}")
        return {"boost.lm": self.cfg.lm, "boost.lm_random": "1" if lm_is_random(self.cfg.lm) else "0",
                "boost.steps": ",".join(steps), "boost.samples": ",".join(seen), "boost.variant": self.cfg.variant,
                "boost.run_id": parent_rid or self.pipeline["runs"].get("parent") or "",
                "boost.config_hash": self.hash, **data_tags(self.stage_data_paths())}

    def _grad_ckpt(self) -> bool:
        return self.cfg.grad_checkpointing == "on" or (self.cfg.grad_checkpointing == "auto"
                                                        and self.device.type == "cuda")

    def _prefetch_depth(self) -> int:
        p = self.cfg.prefetch_steps
        return p if p is not None else (2 if self.device.type == "cuda" else 0)

    # ---------------------------------------------------------------------------- data
    def data_for(self, stage: int) -> ConversationData:
        sc: StageConfig = getattr(self.cfg, f"stage{stage}")
        path = sc.data or self.cfg.data
        if not path:
            from harness.config import ConfigError
            raise ConfigError(f"stage {stage} has no data: set data=FILE (or stage{stage}.data=FILE)")
        if path not in self._data_cache:
            from .llava import load_stage_data
            self._data_cache[path] = load_stage_data(
                path, self.vlm.tokenizer, self.vlm.tokens_per_image(self.image_size), self.cfg.max_length,
                self.cfg.overflow, self.cfg.image_root)
        return self._data_cache[path]

    # ---------------------------------------------------------------------------- which parameters train
    def apply_variant(self) -> None:
        """Stage-3 encoder set-up (once): dual-channel wrap, LoRA, or full fine-tuning."""
        if self.variant_applied:
            return
        bb = backbone_of(self.vlm.encoder)
        if self.cfg.variant == "dual":
            dc = dual_cfg(self.cfg, self.vlm.encoder.info.num_layers, self.vlm.feature_layer)
            rep = wrap_dual_channel(bb, dc)
            self.variant_report = {"variant": "dual", "wrapper": dual_cfg_dict(dc), **rep.to_dict()}
            self.echo(rep.summary())
        elif self.cfg.variant == "lora":
            rep = apply_lora(bb, r=self.cfg.lora_r, alpha=self.cfg.lora_alpha)
            self.variant_report = {"variant": "lora", "wrapper": {"r": self.cfg.lora_r,
                                                                  "alpha": self.cfg.lora_alpha,
                                                                  "targets": rep.targets}, **rep.to_dict()}
        else:
            rep = apply_full_finetune(bb)
            self.variant_report = {"variant": "full", "wrapper": {}, **rep.to_dict()}
        self.vlm.encoder.to(self.device)
        self.vlm.encoder._fingerprint = None
        self.variant_applied = True

    def encoder_trainable(self) -> list[nn.Parameter]:
        bb = backbone_of(self.vlm.encoder)
        if self.cfg.variant == "dual":
            return list(dual_channel_parameters(bb))
        if self.cfg.variant == "lora":
            return [p for n, p in bb.named_parameters() if "lora_" in n]
        return list(bb.parameters())

    def set_trainable(self, stage: int) -> list[nn.Parameter]:
        for p in self.vlm.parameters():
            p.requires_grad_(False)
        params: list[nn.Parameter] = []
        if stage in (1, 2) or self.cfg.stage3_projector:
            params += list(self.vlm.projector.parameters())
        if stage == 2:
            params += list(self.vlm.lm.parameters())
        if stage == 3:
            params += self.encoder_trainable()
        for p in params:
            p.requires_grad_(True)
        return params

    def saved_names(self) -> list[str]:
        """Parameters stored in checkpoints: everything trained so far (projector, LM after stage 2, the
        encoder's trainable parameters after stage 3). Tied weights appear once (named_parameters dedups)."""
        names = []
        enc_ids = {id(p) for p in self.encoder_trainable()} if self.variant_applied else set()
        for n, p in self.vlm.named_parameters():
            if n.startswith("projector.") or (self.trained_lm and n.startswith("lm.")) or id(p) in enc_ids:
                names.append(n)
        return names

    # ---------------------------------------------------------------------------- checkpoints
    def save_checkpoint(self, stage: int, step: int, opt: torch.optim.Optimizer, state: dict) -> Path:
        """Full (unsharded) parameters + name-keyed optimiser state: resumable with any world size."""
        final = stage_dir(self.run_dir, stage) / f"ckpt-{step:07d}"
        if fsdp.is_sharded(self.vlm):               # collectives: every rank takes part, rank 0 gets the tensors
            tensors = fsdp.full_params(self.vlm, self.saved_names())
            opt_state = fsdp.full_optimizer_state(self.vlm, opt)
        elif self.dist.main:
            named = dict(self.vlm.named_parameters())
            tensors = {n: named[n] for n in self.saved_names()}
            opt_state = fsdp.optimizer_state_by_name(self.vlm, opt)
        if self.dist.main:
            write_checkpoint(final, tensors, opt_state, {**state, "world_size": self.dist.world},
                             self.cfg.keep_checkpoints)
        self.dist.barrier()
        return final

    def load_params(self, ckpt: Path) -> None:
        if any(n.startswith("lm.") for n in load_params(self.vlm, ckpt)):
            self.trained_lm = True

    # ---------------------------------------------------------------------------- the loop
    def train_stage(self, stage: int, parent_rid: str | None, resume_from: Path | None) -> StageResult:
        cfg, sc = self.cfg, getattr(self.cfg, f"stage{stage}")
        data = self.data_for(stage)
        W = self.dist.world
        if sc.batch_size % (W * sc.micro_batch_size):
            raise ValueError(f"stage{stage}.batch_size={sc.batch_size} must be a multiple of processes ({W}) x "
                             f"stage{stage}.micro_batch_size={sc.micro_batch_size}")
        n = len(data)
        spe = math.ceil(n / sc.batch_size)
        total = sc.max_steps if sc.max_steps > 0 else max(1, math.ceil(sc.epochs * spe))
        if stage == 3:
            self.apply_variant()
        params = self.set_trainable(stage)
        if stage == 2:
            self.trained_lm = True
        if resume_from is not None:             # before wrapping: FSDP shards (and DDP broadcasts) these values
            self.load_params(resume_from)
        sharded = stage == 2 and cfg.strategy == "fsdp" and self.dist.initialised
        if sharded:
            if not self.built_here:
                raise ValueError("strategy=fsdp needs a VLM the trainer builds itself (it rebuilds it after stage 2)")
            model = fsdp.shard_vlm(self.vlm, W, self.device, self.precision)
            params = [p for p in self.vlm.parameters() if p.requires_grad]
        else:
            fsdp.set_param_dtypes(self.vlm, self.precision)
            model = self.dist.wrap(self.vlm, self.device)
        opt = torch.optim.AdamW(params, lr=sc.lr, betas=(0.9, 0.999), weight_decay=sc.weight_decay)
        start, losses, step_s = 0, [], []
        if resume_from is not None:
            start, losses = restore_training_state(resume_from, opt, self.device, self.vlm)
            self.echo(f"stage {stage}: resumed from {resume_from.name} (step {start}/{total}, written by "
                      f"{read_state(resume_from).get('world_size', 1)} process(es), now {W})")
        rid = self.records.start_run(f"stage{stage}", f"stage{stage}", {"stage": stage, "encoder": self.base_spec,
                                                           "encoder_fingerprint": self.base_fingerprint,
                                                           "lm": cfg.lm, "variant": cfg.variant,
                                                           "dataset": str(data.path), "dataset_id": data.id},
                        {"stage": stage, "lr": sc.lr, "batch_size": sc.batch_size, "epochs": sc.epochs,
                         "micro_batch_size": sc.micro_batch_size, "world_size": W, "total_steps": total,
                         "data": str(data.path), "dataset_id": data.id, "samples": len(data),
                         "variant": cfg.variant, "feature_layer": cfg.feature_layer,
                         "precision": self.precision}, parent_rid)
        if rid is not None:
            self.tracker.client.log_text(rid, json.dumps(data.stats.to_dict()), "data_stats.json")
            if stage == 3:
                self.tracker.client.log_text(rid, json.dumps(self.variant_report, default=str),
                                             "variant.json")
        loader = ImageLoader(self.image_size, self.vlm.encoder.info.mean, self.vlm.encoder.info.std, data.stats)
        pad = self.vlm.tokenizer.pad_token_id or 0
        bar = None
        if cfg.progress and self.dist.main:
            from tqdm.auto import tqdm
            bar = tqdm(total=total, initial=start, desc=f"stage {stage}", unit="step", dynamic_ncols=True)
        self.vlm.train()
        self.vlm.encoder.eval()                 # no dropout / stochastic depth in the encoder
        self.vlm.lm.train(fsdp.lm_train_mode(self.vlm.lm, stage, self._grad_ckpt()))
        step_batches = StepBatches(data, loader, pad, sc.batch_size, sc.micro_batch_size,
                                   cfg.seed * 100003 + stage * 1009, self.dist.rank, W)
        last_ckpt = resume_from
        prefetch = BatchPrefetcher(step_batches, total, self._prefetch_depth())
        try:
            for step in range(start, total):
                t0 = time.perf_counter()
                batches = prefetch.get(step)
                n_tok = sum(b.answer_tokens for b in batches)
                denom = max(n_tok, 1)
                lr = lr_at(step, total, sc.lr, sc.warmup_ratio)
                for gparam in opt.param_groups:
                    gparam["lr"] = lr
                loss_sum, tokens = 0.0, 0
                for k, b in enumerate(batches):
                    b = b.to(self.device)
                    last = k == len(batches) - 1
                    with (fsdp.grad_sync(model, last) if sharded else self.dist.sync(model, last)):
                        from harness.device import autocast
                        with autocast(self.device, self.precision):
                            s, _ = model(b)
                        (s / denom).backward()
                    loss_sum += float(s.detach())
                    tokens += int(b.attention_mask.sum())
                if sc.max_grad_norm > 0:
                    torch.nn.utils.clip_grad_norm_(params, sc.max_grad_norm)
                opt.step()
                opt.zero_grad(set_to_none=True)
                stats = torch.tensor([loss_sum, float(n_tok), float(tokens)], dtype=torch.float64)
                stats = self.dist.all_reduce_sum(stats, self.device)
                loss = float(stats[0] / max(stats[1], 1))
                losses.append(loss)
                dt = time.perf_counter() - t0
                step_s.append(dt)
                if cfg.throttle_s:
                    time.sleep(cfg.throttle_s)
                if bar is not None:
                    bar.update(1)
                    bar.set_postfix(loss=f"{loss:.4f}", lr=f"{lr:.2e}")
                if rid is not None and ((step + 1) % cfg.log_every == 0 or step + 1 == total):
                    m = {"loss": loss, "lr": lr, "tokens_per_s": float(stats[2]) / dt,
                         "answer_tokens": float(stats[1]), "epoch": step / spe}
                    if stage == 3 and cfg.variant == "dual":
                        for name, (mean, lo, hi) in alpha_stats(backbone_of(self.vlm.encoder)).items():
                            m[f"alpha/{name}/mean"], m[f"alpha/{name}/min"], m[f"alpha/{name}/max"] = mean, lo, hi
                    self.records.log(rid, m, step + 1)
                if (step + 1) % cfg.checkpoint_every == 0 or step + 1 == total:
                    last_ckpt = self.save_checkpoint(stage, step + 1, opt, {
                        "stage": stage, "step": step + 1, "total_steps": total, "losses": losses,
                        "config_hash": self.hash, "done": step + 1 == total, "data_id": data.id})
        finally:
            prefetch.close()
        if bar is not None:
            bar.close()
        self.vlm.eval()
        if sharded:                 # back to an unsharded model for what follows (stage 3, the export)
            self.vlm = build_vlm(cfg, self.ws).to(self.device)
            if self._grad_ckpt():
                self.vlm.lm.gradient_checkpointing_enable(gradient_checkpointing_kwargs={"use_reentrant": False})
            self.load_params(last_ckpt)
        if self.dist.initialised and not sharded:
            digest = params_digest({n: p for n, p in self.vlm.named_parameters() if p.requires_grad})
            atomic_write_json(self.run_dir / f"stage{stage}-rank{self.dist.rank}.json",
                              {"rank": self.dist.rank, "digest": digest}, default=str)
        if rid is not None:
            self.records.log(rid, {"final_loss": losses[-1] if losses else float("nan"),
                            "bad_images": data.stats.bad_images})
            self.tracker.client.set_terminated(rid, "FINISHED")
        return StageResult(stage, total, losses, rid, last_ckpt, data.stats.to_dict(), step_s)

    def run(self) -> str | None:
        """Run the configured stages (resuming); export the boosted encoder after stage 3. An exception marks
        every run this call left RUNNING as FAILED (KILLED on Ctrl-C / SIGTERM) and is re-raised."""
        try:
            return self._run_stages()
        except BaseException as e:
            self.records.mark_unfinished(e)
            raise

    def _run_stages(self) -> str | None:
        cfg = self.cfg
        tags = self.run_tags()
        parent = self.records.start_run("parent", f"boost {self.base_spec}",
                           {"encoder": self.base_spec, "encoder_fingerprint": self.base_fingerprint,
                            "lm": cfg.lm, "variant": cfg.variant, "kind": "spatialboost-boost",
                            **{k: v for k, v in tags.items() if k != "boost.run_id"},
                            **({"data_warnings": " | ".join(self.warnings)[:4000]} if self.warnings else {})},
                           {"encoder": self.base_spec, "lm": cfg.lm, "stages": ",".join(map(str, cfg.stages)),
                            "variant": cfg.variant, "config_hash": self.hash,
                            **{f"stage{st}.data": p for st, p in self.stage_data_paths().items()}}, None)
        self.tags = self.run_tags(parent)
        if parent is not None:
            self.tracker.client.set_tag(parent, "boost.run_id", parent)
        prev_final: Path | None = None
        in_memory = True            # the model in memory holds the last finished stage's weights
        self.results: dict[int, StageResult] = {}
        for stage in cfg.stages:
            if stage == 3:
                self.apply_variant()
            ck = latest_checkpoint(self.run_dir, stage) if cfg.resume else None
            state = read_state(ck) if ck else None
            if state and state.get("done"):
                self.echo(f"stage {stage}: already done ({ck})")
                prev_final, in_memory = ck, False
                if stage == 2:
                    self.trained_lm = True
                continue
            if ck is None and prev_final is not None and not in_memory:
                self.load_params(prev_final)
            res = self.train_stage(stage, parent, ck)
            self.results[stage] = res
            if stage not in self.pipeline["completed"]:
                self.pipeline["completed"].append(stage)
            self.records.save()
            prev_final, in_memory = res.checkpoint, True
        if prev_final is not None and not in_memory:
            self.load_params(prev_final)
        spec = None
        if 3 in cfg.stages:
            from .export import export_boosted
            out = self.run_dir / "boosted"
            stage_runs = {k: v for k, v in self.pipeline["runs"].items() if k.startswith("stage")}
            data_ids = {f"stage{s}": self.data_for(s).id for s in cfg.stages}
            if self.dist.main:
                export_boosted(self, out, data_ids=data_ids, run_ids=stage_runs)
                if self.tracked and self.pipeline["runs"].get("stage3"):
                    self.tracker.client.log_artifacts(self.pipeline["runs"]["stage3"], str(out), "encoder")
            self.dist.barrier()
            spec = f"boosted:{out}"
        if parent is not None:
            if spec:
                self.tracker.client.set_tag(parent, "boosted_spec", spec)
                if self.pipeline["runs"].get("stage3"):
                    self.tracker.client.set_tag(parent, "boosted_uri",
                                                f"boosted:runs:/{self.pipeline['runs']['stage3']}/encoder")
            self.tracker.client.set_terminated(parent, "FINISHED")
        return spec


def build_vlm(cfg: BoostConfig, workspace) -> SpatialVLM:
    from harness.registry import build_encoder
    from .lm import load_lm
    enc = build_encoder(cfg.encoder, workspace)
    lm = load_lm(cfg.lm, seed=cfg.seed, models_dir=workspace.models)
    return SpatialVLM(enc, lm, feature_layer=cfg.feature_layer, seed=cfg.seed)


def run_boost(cfg: BoostConfig, echo: Callable[[str], None] = print) -> str | None:
    trainer = BoostTrainer(cfg, echo=echo)
    try:
        return trainer.run()
    finally:
        trainer.dist.shutdown()
