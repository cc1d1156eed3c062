"""Data parallelism through `torchrun` (PyTorch DDP); the same code runs as one CPU process.

`torchrun --nproc_per_node=G [--nnodes=M ...] -m msldm.cli train ...` sets RANK, WORLD_SIZE,
LOCAL_RANK, MASTER_ADDR and MASTER_PORT; without them the run is a single process.
The backend is nccl on CUDA and gloo on CPU.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from typing import Any

import torch
import torch.distributed as dist
from torch import nn
from torch.nn.parallel import DistributedDataParallel

from msldm.checkpoint import pick_device


@dataclass(frozen=True)
class DistInfo:
    """Where this process sits: `rank` of `world_size`, on `device`."""

    rank: int = 0
    world_size: int = 1
    local_rank: int = 0
    device: torch.device = torch.device("cpu")

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    @property
    def distributed(self) -> bool:
        return self.world_size > 1


def init_distributed(device: str | None = None) -> DistInfo:
    """Join the process group described by torchrun's environment (no-op when absent)."""
    world = int(os.environ.get("WORLD_SIZE", "1"))
    rank = int(os.environ.get("RANK", "0"))
    local = int(os.environ.get("LOCAL_RANK", "0"))
    dev = pick_device(device)
    if dev.type == "cuda" and dev.index is None:
        dev = torch.device("cuda", local % max(torch.cuda.device_count(), 1))
    if dev.type == "cuda":
        torch.cuda.set_device(dev)
    if world > 1 and not dist.is_initialized():
        dist.init_process_group("nccl" if dev.type == "cuda" else "gloo", rank=rank,
                                world_size=world)
    return DistInfo(rank, world, local, dev)


def cleanup() -> None:
    """Leave the process group, if any."""
    if dist.is_available() and dist.is_initialized():
        dist.destroy_process_group()


class DDP(DistributedDataParallel):
    """DDP that forwards unknown attributes (`cfg`, `hop`, ...) to the wrapped module, so
    library functions written for the bare model (`vae_train_step`) take the wrapper."""

    def __getattr__(self, name: str) -> Any:
        try:
            return super().__getattr__(name)
        except AttributeError:
            return getattr(self.module, name)


def wrap(module: nn.Module, info: DistInfo, find_unused: bool = False) -> nn.Module:
    """`module` wrapped in DDP when distributed, else itself."""
    if not info.distributed:
        return module
    ids = [info.device.index] if info.device.type == "cuda" else None
    return DDP(module, device_ids=ids, find_unused_parameters=find_unused)


def broadcast_parameters(module: nn.Module, info: DistInfo) -> None:
    """Give every process rank 0's parameters and buffers (no-op when not distributed)."""
    if not info.distributed:
        return
    with torch.no_grad():
        for t in list(module.parameters()) + list(module.buffers()):
            dist.broadcast(t.data, src=0)


def average_gradients(params: list[nn.Parameter], info: DistInfo) -> None:
    """Average the gradients of `params` over all processes, in one all-reduce (no-op when not
    distributed). For a task whose loss calls several methods of its module rather than its
    forward, where DDP's hooks do not fire; a parameter without a gradient counts as zero."""
    if not info.distributed:
        return
    grads = [p.grad if p.grad is not None else torch.zeros_like(p) for p in params]
    flat = torch.cat([g.reshape(-1) for g in grads])
    dist.all_reduce(flat)
    flat /= info.world_size
    i = 0
    for p, g in zip(params, grads):  # views into the one reduced buffer
        p.grad = flat[i:i + g.numel()].view_as(p)
        i += g.numel()


def mean_over_ranks(values: dict[str, float], info: DistInfo) -> dict[str, float]:
    """Average scalar logs over all processes (identity when not distributed)."""
    if not info.distributed or not values:
        return values
    keys = sorted(values)
    t = torch.tensor([values[k] for k in keys], dtype=torch.float64, device=info.device)
    dist.all_reduce(t)
    return {k: float(v) / info.world_size for k, v in zip(keys, t.tolist())}
