"""Multi-GPU / multi-node through ``torchrun`` (DDP); the same code runs single-process on a CPU.

``torchrun --nproc_per_node=G -m vppkit train ...`` sets ``WORLD_SIZE``, ``RANK``, ``LOCAL_RANK`` (and
``MASTER_ADDR`` / ``MASTER_PORT``); :func:`init_distributed` then joins the process group (NCCL on GPUs, Gloo on
CPU). Without those variables (or with ``WORLD_SIZE=1``) nothing is initialised. Only rank 0 writes files
(:func:`is_main`).
"""

from __future__ import annotations

import os
from dataclasses import dataclass

import torch
import torch.distributed as dist


@dataclass(frozen=True)
class DistInfo:
    """Where this process sits: ``rank`` of ``world_size`` processes, ``local_rank`` on its node, ``device``."""

    rank: int = 0
    world_size: int = 1
    local_rank: int = 0
    device: str = "cpu"

    @property
    def is_main(self) -> bool:
        return self.rank == 0


def init_distributed(device: str | None = None) -> DistInfo:
    """Initialise DDP from ``torchrun`` env vars when ``WORLD_SIZE > 1``; otherwise return a single-process info.

    Args:
        device: "cpu", "cuda" or None (cuda when available).

    Raises:
        RuntimeError: ``WORLD_SIZE > 1`` but ``RANK`` / ``LOCAL_RANK`` are missing.
    """
    want_cuda = torch.cuda.is_available() if device is None else device.startswith("cuda")
    world = int(os.environ.get("WORLD_SIZE", "1"))
    if world <= 1:
        return DistInfo(device="cuda" if want_cuda else "cpu")
    if "RANK" not in os.environ or "LOCAL_RANK" not in os.environ:
        raise RuntimeError("WORLD_SIZE > 1 but RANK / LOCAL_RANK are not set: launch with torchrun")
    rank, local = int(os.environ["RANK"]), int(os.environ["LOCAL_RANK"])
    if want_cuda:
        torch.cuda.set_device(local)
    if not dist.is_initialized():
        dist.init_process_group(backend="nccl" if want_cuda else "gloo")
    return DistInfo(rank, world, local, f"cuda:{local}" if want_cuda else "cpu")


def barrier(info: DistInfo) -> None:
    """Synchronise all ranks (no-op single-process)."""
    if info.world_size > 1 and dist.is_initialized():
        dist.barrier()


def all_reduce_mean(value: torch.Tensor, info: DistInfo) -> torch.Tensor:
    """Mean of a tensor over ranks (returns the input single-process)."""
    if info.world_size > 1 and dist.is_initialized():
        value = value.clone()
        dist.all_reduce(value)
        value /= info.world_size
    return value


def cleanup(info: DistInfo) -> None:
    """Leave the process group."""
    if info.world_size > 1 and dist.is_initialized():
        dist.destroy_process_group()
