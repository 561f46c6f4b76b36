"""Multi-process training (torchrun + DDP): who this process is, and the few collective steps the trainer takes.

Without ``WORLD_SIZE`` (or with 1) the trainer gets a single-process :class:`Dist` whose collectives do nothing.
Under torchrun every process trains on every W-th sample of each global batch; DDP averages the gradients,
and :meth:`Dist.all_reduce_sum` adds up the logged loss statistics.
"""
from __future__ import annotations

import contextlib
import os
from dataclasses import dataclass

import torch
from torch import nn


@dataclass
class Dist:
    rank: int = 0
    world: int = 1
    local_rank: int = 0
    initialised: bool = False

    @property
    def main(self) -> bool:
        return self.rank == 0

    def barrier(self):
        if self.initialised:
            torch.distributed.barrier()

    def local_device(self, device: torch.device) -> torch.device:
        """This process's GPU under torchrun (``cuda:<LOCAL_RANK>``, made current); ``device`` otherwise."""
        if self.initialised and device.type == "cuda":
            device = torch.device("cuda", self.local_rank)
            torch.cuda.set_device(device)
        return device

    def wrap(self, model: nn.Module, device: torch.device) -> nn.Module:
        """``model`` inside DistributedDataParallel when several processes train, else ``model`` itself."""
        if not self.initialised:
            return model
        from torch.nn.parallel import DistributedDataParallel as DDP
        return DDP(model, device_ids=[device.index] if device.type == "cuda" else None)

    def sync(self, model: nn.Module, last_micro_batch: bool):
        """Gradient accumulation: DDP synchronises only on the last micro-batch of a step."""
        if last_micro_batch or not self.initialised:
            return contextlib.nullcontext()
        return model.no_sync()

    def all_reduce_sum(self, t: torch.Tensor, device: torch.device) -> torch.Tensor:
        """Sum of ``t`` over the processes (on the CPU, as given)."""
        if not self.initialised:
            return t
        t = t.to(device)
        torch.distributed.all_reduce(t)
        return t.cpu()

    def shutdown(self) -> None:
        if self.initialised:
            torch.distributed.destroy_process_group()


def init_distributed(device: torch.device) -> Dist:
    world = int(os.environ.get("WORLD_SIZE", "1"))
    if world <= 1:
        return Dist()
    import torch.distributed as td
    rank, local = int(os.environ["RANK"]), int(os.environ.get("LOCAL_RANK", "0"))
    if not td.is_initialized():
        td.init_process_group("nccl" if device.type == "cuda" else "gloo")
    return Dist(rank, world, local, True)
