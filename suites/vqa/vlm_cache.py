"""One trained VLM per (encoder fingerprint, LM, training data, stages + recipe): the LLaVA-1.5 recipe is the
SpatialBoost trainer's stages 1-2 with the encoder frozen (stage 1 trains the projector, stage 2 projector +
LM), so this module only keys, runs and reloads the trainer (through lazy registry strings: suites do not
import the trainer package). The run folder ``<workspace>/vqa/vlm/<key>/`` is the trainer's own (checkpoints,
``pipeline.json``); a second suite or a second task with the same key reuses it, and a killed training resumes.
"""
from __future__ import annotations

import hashlib
import json
from dataclasses import asdict, dataclass
from pathlib import Path

from harness.registry import Described, build_lm

_MOD = "encoders.spatialboost"


def _get(path: str):
    return Described(f"{_MOD}.{path}", "").load()


@dataclass(frozen=True)
class VLMRecipe:
    lm: str
    feature_layer: int
    image_size: int
    stage1_steps: int
    stage1_batch: int
    stage1_lr: float
    stage2_steps: int
    stage2_batch: int
    stage2_lr: float
    micro_batch: int
    max_length: int
    seed: int
    precision: str = "fp32"


def vlm_key(encoder_fingerprint: str, recipe: VLMRecipe, data_id: str) -> str:
    blob = json.dumps({"encoder": encoder_fingerprint, "recipe": asdict(recipe), "data": data_id, "stages": [1, 2]},
                      sort_keys=True)
    return hashlib.sha256(blob.encode()).hexdigest()[:16]


def file_digest(*paths: Path) -> str:
    h = hashlib.sha256()
    for p in paths:
        h.update(Path(p).read_bytes())
    return h.hexdigest()[:16]


def build_vlm(encoder, lm_spec: str, feature_layer: int, workspace, seed: int = 0):
    lm = build_lm(lm_spec, workspace, seed=seed)
    return _get("vlm:SpatialVLM")(encoder, lm, feature_layer=feature_layer, seed=seed)


def train_or_load(encoder, recipe: VLMRecipe, stage1: Path, stage2: Path, workspace, device: str = "cpu",
                  echo=print, grad_checkpointing: str = "auto", progress: bool = False,
                  prefetch_steps: int | None = None) -> tuple[object, dict]:
    """The stage-2 VLM of ``encoder`` (frozen) trained on ``stage1`` / ``stage2`` conversation files, trained
    once per key; returns (vlm, info) with info = key, run_dir, per-stage losses and step walls of this call,
    seconds.
    ``grad_checkpointing`` (the trainer's auto/on/off) and ``prefetch_steps`` change speed and memory, not the
    VLM: not in the key;
    ``progress`` shows the trainer's per-stage step bars (minutes to hours on a CPU)."""
    import time
    key = vlm_key(encoder.fingerprint(), recipe, file_digest(stage1, stage2))
    run_dir = Path(workspace.root) / "vqa" / "vlm" / key
    BoostConfig, Stage1Config, Stage2Config = (_get(f"boost_config:{n}") for n in
                                                ("BoostConfig", "Stage1Config", "Stage2Config"))
    cfg = BoostConfig(
        encoder=encoder.info.spec, lm=recipe.lm, data=str(stage2), stages=(1, 2),
        feature_layer=recipe.feature_layer, image_size=recipe.image_size, max_length=recipe.max_length,
        stage1=Stage1Config(lr=recipe.stage1_lr, batch_size=recipe.stage1_batch, max_steps=recipe.stage1_steps,
                            data=str(stage1), micro_batch_size=min(recipe.micro_batch, recipe.stage1_batch)),
        stage2=Stage2Config(lr=recipe.stage2_lr, batch_size=recipe.stage2_batch, max_steps=recipe.stage2_steps,
                              micro_batch_size=min(recipe.micro_batch, recipe.stage2_batch)),
        seed=recipe.seed, device=device, precision=recipe.precision, workspace=str(workspace.root),
        run_dir=str(run_dir), tracking=False, progress=progress, checkpoint_every=10_000, keep_checkpoints=1,
        grad_checkpointing=grad_checkpointing, prefetch_steps=prefetch_steps)
    vlm = build_vlm(encoder, recipe.lm, recipe.feature_layer, workspace, recipe.seed)
    t0 = time.perf_counter()
    trainer = _get("trainer:BoostTrainer")(cfg, vlm=vlm, echo=echo)
    try:
        trainer.run()
    finally:
        trainer.dist.shutdown()
    results = getattr(trainer, "results", {})
    info = {"key": key, "run_dir": str(run_dir), "seconds": time.perf_counter() - t0,
            "trained_stages": sorted(results), "losses": {s: list(r.losses) for s, r in results.items()},
            "step_seconds": {s: list(r.step_seconds) for s, r in results.items()}}
    for p in trainer.vlm.parameters():
        p.requires_grad_(False)
    return trainer.vlm.eval(), info


def load_trained_vlm(run_dir: str | Path, encoder_spec: str, lm_spec: str, feature_layer: int = -1,
                     workspace=None, seed: int = 0):
    """A finished stage-2 VLM from a trainer run folder (what ``lmms-eval --model spatialboost_vlm`` loads)."""
    from harness.errors import UserError
    from harness.registry import build_encoder
    from harness.workspace import open_workspace
    ws = workspace if hasattr(workspace, "root") else open_workspace(workspace)
    ck = _get("checkpoints:latest_checkpoint")(Path(run_dir), 2)
    if ck is None:
        raise UserError(f"run_dir='{run_dir}' holds no stage-2 checkpoint (stage2/ckpt-*)")
    vlm = build_vlm(build_encoder(encoder_spec, ws), lm_spec, feature_layer, ws, seed)
    _get("checkpoints:load_params")(vlm, ck)
    return vlm.eval()
