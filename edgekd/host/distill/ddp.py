"""DistributedDataParallel plumbing for ``torchrun`` (gloo on CPU, NCCL on CUDA).

``torchrun --nproc_per_node 2 -m edgekd.cli train ...`` sets RANK/WORLD_SIZE;
:func:`init_distributed` joins the process group from those variables and is a
no-op (rank 0 of 1) for a plain run. Each rank trains on its shard of the
shuffled indices; only rank 0 writes logs and checkpoints.
"""

from __future__ import annotations

import dataclasses
import logging
import os
from typing import Any

import torch
import torch.distributed as dist
from torch import nn

log = logging.getLogger(__name__)


@dataclasses.dataclass(frozen=True)
class DistInfo:
    rank: int = 0
    world_size: int = 1
    local_rank: int = 0

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    @property
    def enabled(self) -> bool:
        return self.world_size > 1


def init_distributed(device: str = "cpu") -> DistInfo:
    """Join the process group described by torchrun's environment (or return a single-process info)."""
    world = int(os.environ.get("WORLD_SIZE", "1"))
    if world <= 1:
        return DistInfo()
    rank, local_rank = int(os.environ["RANK"]), int(os.environ.get("LOCAL_RANK", "0"))
    if not dist.is_initialized():
        backend = "nccl" if device.startswith("cuda") else "gloo"
        dist.init_process_group(backend=backend)
        log.info("joined %s process group: rank %d of %d", backend, rank, world)
    return DistInfo(rank=rank, world_size=world, local_rank=local_rank)


def wrap(module: nn.Module, info: DistInfo, device: torch.device) -> nn.Module:
    """DDP-wrap ``module`` when running distributed (parameters and buffers start from rank 0's)."""
    if not info.enabled:
        return module
    from torch.nn.parallel import DistributedDataParallel

    ids = [device.index if device.index is not None else info.local_rank] if device.type == "cuda" else None
    return DistributedDataParallel(module, device_ids=ids)


def shard(indices, info: DistInfo):
    """This rank's equal-length, strided share of ``indices``.

    Strided, so that batch ``i`` of all ranks together is exactly ``indices[i*B*W:(i+1)*B*W]``: with DDP's
    gradient averaging, W ranks at batch B take the same steps as one process at batch B*W. The remainder
    is dropped so every rank runs as many steps (DDP would hang otherwise).
    """
    if not info.enabled:
        return indices
    per_rank = len(indices) // info.world_size
    return indices[info.rank:per_rank * info.world_size:info.world_size]


def gather_objects(obj: Any, info: DistInfo) -> list[Any]:
    """Every rank's ``obj``, in rank order, on every rank."""
    if not info.enabled:
        return [obj]
    out: list[Any] = [None] * info.world_size
    dist.all_gather_object(out, obj)
    return out


def barrier(info: DistInfo) -> None:
    if info.enabled:
        dist.barrier()


def broadcast_object(obj: Any, info: DistInfo) -> Any:
    """Rank 0's ``obj`` on every rank."""
    if not info.enabled:
        return obj
    box = [obj]
    dist.broadcast_object_list(box, src=0)
    return box[0]


def shutdown(info: DistInfo) -> None:
    if info.enabled and dist.is_initialized():
        dist.destroy_process_group()
