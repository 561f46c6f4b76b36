"""Frame strips for the MLflow UI (``figures/rollouts.png`` of a CortexBench run).

One row per task: a few frames of one evaluation rollout of the encoder's policy (the first evaluation
env seed, the last evaluation epoch, the first training seed: the same episode for every encoder), evenly
spaced over the episode plus its last frame. The frames are the ones the rollout rendered for the policy
anyway (no extra simulation). Borders: green from the first successful step on, red on the last frame
of an episode that ended without success, grey otherwise. A plain ``matplotlib.figure.Figure``.
"""
from __future__ import annotations

import numpy as np

__all__ = ["FRAMES", "frame_colour", "rollout_strip"]

FRAMES = 6
THUMB = 128
COLOURS = {"success": "#2ca02c", "failure": "#d62728", "neutral": "#999999"}


def frame_colour(step: int, row: dict, metric: str) -> str:
    """``success`` at and after the first successful step (for ``success``, which is scored at the last
    step, only where that last step succeeds: a success lost again is not marked on later frames)."""
    first = int(row["first_success"])
    ended_ok = bool(row["reached"] if metric == "success_reached" else row["success"])
    last = step == int(row["steps"]) - 1
    if first >= 0 and step >= first and (ended_ok or not last):
        return "success"
    return "failure" if last and not ended_ok else "neutral"


def rollout_strip(shown: dict[str, dict], metric: str):
    """shown[task] = a rollout row (``first_success``, ``steps``, ``success``, ``reached``, ``seed``) with
    its ``frames`` [(step, HxWx3 uint8)], plus ``epoch`` and ``policy_seed``."""
    from matplotlib.figure import Figure
    if not shown:
        raise ValueError("rollout_strip needs at least one task")
    cols = max(len(r["frames"]) for r in shown.values())
    fig = Figure(figsize=(1.45 * cols, 1.75 * len(shown) + 0.3))
    axes = fig.subplots(len(shown), cols, squeeze=False)
    for row_axes, (task, row) in zip(axes, shown.items()):
        ok = bool(row["reached"] if metric == "success_reached" else row["success"])
        for c, ax in enumerate(row_axes):
            ax.set_xticks([])
            ax.set_yticks([])
            if c >= len(row["frames"]):
                ax.set_axis_off()
                continue
            step, frame = row["frames"][c]
            colour = COLOURS[frame_colour(step, row, metric)]
            frame = np.asarray(frame)
            k = -(-frame.shape[0] // THUMB)                 # every k-th pixel: at most THUMB px shown
            ax.imshow(frame[::k, ::k])
            for s in ax.spines.values():
                s.set_edgecolor(colour)
                s.set_linewidth(4)
            ax.set_title(f"t={step}", fontsize=7, color=colour)
        first = int(row["first_success"])
        verdict = ("SUCCESS" if ok else "FAILURE") + (f" (first at t={first})" if first >= 0 else "")
        row_axes[0].set_ylabel(f"{task}\n{verdict}", fontsize=7)
        row_axes[0].yaxis.label.set_color(COLOURS["success" if ok else "failure"])
    one = next(iter(shown.values()))
    fig.suptitle(f"{metric}: env seed {one['seed']}, policy seed {one['policy_seed']}, epoch {one['epoch']} "
                 f"(green: succeeding, red: failed at the end)", fontsize=8)
    fig.subplots_adjust(left=0.06, right=0.99, bottom=0.02, top=1 - 0.45 / fig.get_figheight(), wspace=0.08,
                        hspace=0.3)   # fixed margins: tight_layout costs more than drawing the frames
    return fig
