"""Data-parallel training with ``torch.distributed``: set-up and the few collectives the loops use.

Launch with ``torchrun`` (see docs/training.md); it sets ``RANK``, ``LOCAL_RANK``,
``WORLD_SIZE``, ``MASTER_ADDR`` and ``MASTER_PORT``, and :func:`init_distributed` joins the
process group from them (gloo on CPU, NCCL on CUDA). Without those variables (or with
``WORLD_SIZE=1``) everything here is a no-op, so the loops call these functions
unconditionally.

Why a manual gradient all-reduce rather than ``DistributedDataParallel``: a GAN step runs D
several times per optimizer step (real, fake, the G step's fake, R1's double backward,
InfoGAN's Q head on D's trunk), with parameters switched between trainable and frozen.
DDP's reducer expects exactly one forward/backward per step over a fixed set of
parameters, and its hooks do not support ``autograd.grad(create_graph=True)`` (R1). One
flattened ``all_reduce`` of the gradients after ``backward`` gives the same averaged
gradients with none of those constraints; its cost is one collective per optimizer step
(DDP would overlap it with the backward pass, which matters little at these model sizes).
Buffers (BatchNorm statistics, StyleGAN's ``w_avg``) are broadcast from rank 0 after each
step, which is what DDP's ``broadcast_buffers=True`` does.
"""

from __future__ import annotations

import datetime
import os
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

import torch
import torch.distributed as dist
from torch import nn

__all__ = [
    "DistInfo",
    "all_reduce_grads",
    "all_reduce_sum",
    "barrier",
    "broadcast_buffers",
    "broadcast_module",
    "broadcast_object",
    "cleanup_distributed",
    "gather_objects",
    "init_distributed",
]


@dataclass(frozen=True)
class DistInfo:
    """Where this process sits in the job. ``world_size == 1`` means not distributed."""

    rank: int = 0
    local_rank: int = 0
    world_size: int = 1
    backend: str = ""
    initialized_here: bool = False

    @property
    def enabled(self) -> bool:
        return self.world_size > 1

    @property
    def is_main(self) -> bool:
        return self.rank == 0


def init_distributed(device_type: str = "cpu", timeout_minutes: float = 30.0) -> DistInfo:
    """Join the process group described by torchrun's environment variables, if any.

    ``device_type`` picks the backend: ``"cuda"`` -> NCCL, anything else -> gloo. An already
    initialised group (e.g. set up by the caller) is reused.
    """
    if dist.is_available() and dist.is_initialized():
        return DistInfo(
            rank=dist.get_rank(),
            local_rank=int(os.environ.get("LOCAL_RANK", 0)),
            world_size=dist.get_world_size(),
            backend=str(dist.get_backend()),
        )
    world_size = int(os.environ.get("WORLD_SIZE", "1"))
    if world_size <= 1:
        return DistInfo()
    if not dist.is_available():
        raise RuntimeError("WORLD_SIZE > 1 but this PyTorch build has no torch.distributed support")
    rank = int(os.environ["RANK"])
    local_rank = int(os.environ.get("LOCAL_RANK", rank))
    backend = "nccl" if device_type == "cuda" else "gloo"
    if backend == "nccl":
        torch.cuda.set_device(local_rank)
    dist.init_process_group(
        backend=backend,
        init_method="env://",
        world_size=world_size,
        rank=rank,
        timeout=datetime.timedelta(minutes=timeout_minutes),
    )
    return DistInfo(
        rank=rank, local_rank=local_rank, world_size=world_size, backend=backend, initialized_here=True
    )


def cleanup_distributed(info: DistInfo) -> None:
    """Leave the process group if :func:`init_distributed` created it."""
    if info.initialized_here and dist.is_initialized():
        dist.destroy_process_group()


def barrier(info: DistInfo) -> None:
    if info.enabled:
        dist.barrier()


@torch.no_grad()
def broadcast_module(module: nn.Module, info: DistInfo, src: int = 0) -> None:
    """Make every rank's parameters and buffers equal to rank ``src``'s."""
    if not info.enabled:
        return
    for t in list(module.parameters()) + list(module.buffers()):
        dist.broadcast(t.data, src)


@torch.no_grad()
def broadcast_buffers(module: nn.Module, info: DistInfo, src: int = 0) -> None:
    """Broadcast buffers (BatchNorm statistics, ``w_avg``) from ``src`` as DDP does."""
    if not info.enabled:
        return
    bufs = [b for b in module.buffers() if b.numel()]
    if not bufs:
        return
    # One collective per dtype instead of one per buffer.
    by_dtype: dict[torch.dtype, list[torch.Tensor]] = {}
    for b in bufs:
        by_dtype.setdefault(b.dtype, []).append(b)
    for group in by_dtype.values():
        flat = torch.cat([b.reshape(-1) for b in group])
        dist.broadcast(flat, src)
        offset = 0
        for b in group:
            b.copy_(flat[offset : offset + b.numel()].view_as(b))
            offset += b.numel()


@torch.no_grad()
def all_reduce_grads(params: Iterable[torch.nn.Parameter], info: DistInfo) -> None:
    """Average ``.grad`` over ranks in one flattened collective (missing grads count as 0)."""
    if not info.enabled:
        return
    params = [p for p in params if p.requires_grad]
    if not params:
        return
    grads = [p.grad if p.grad is not None else torch.zeros_like(p) for p in params]
    flat = torch.cat([g.reshape(-1) for g in grads])
    dist.all_reduce(flat, op=dist.ReduceOp.SUM)
    flat.div_(info.world_size)
    offset = 0
    for p in params:
        n = p.numel()
        avg = flat[offset : offset + n].view(p.shape)
        if p.grad is None:
            p.grad = avg.clone()
        else:
            p.grad.copy_(avg)  # keeps the gradient's memory format (channels_last)
        offset += n


def all_reduce_sum(t: torch.Tensor, info: DistInfo) -> torch.Tensor:
    """Sum ``t`` over ranks in place (identity when not distributed); returns ``t``."""
    if info.enabled:
        dist.all_reduce(t, op=dist.ReduceOp.SUM)
    return t


def broadcast_object(obj: Any, info: DistInfo, src: int = 0) -> Any:
    """Rank ``src``'s ``obj`` on every rank (small Python objects between our own processes)."""
    if not info.enabled:
        return obj
    box = [obj]
    dist.broadcast_object_list(box, src=src)
    return box[0]


def gather_objects(obj: Any, info: DistInfo, dst: int = 0) -> list[Any] | None:
    """Every rank's ``obj`` as a list on rank ``dst`` (None elsewhere); ``[obj]`` if not distributed."""
    if not info.enabled:
        return [obj]
    out: list[Any] | None = [None] * info.world_size if info.rank == dst else None
    dist.gather_object(obj, out, dst=dst)
    return out
