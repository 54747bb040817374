"""torch.distributed wiring for ``torchrun`` launches (one process per GPU, or several CPU processes).

``torchrun`` sets ``RANK``, ``WORLD_SIZE``, ``LOCAL_RANK``, ``MASTER_ADDR`` and ``MASTER_PORT``; without
them training runs as a single process and nothing here touches torch.distributed.
"""

from __future__ import annotations

import datetime
import logging
import os
from dataclasses import dataclass
from typing import Optional

import torch
import torch.distributed as dist

from orcnn_core.engine.predictor import resolve_device  # noqa: F401  (one resolver, re-exported)
from orcnn_core.errors import ConfigError

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class DistributedContext:
    """Where this process stands in the job."""

    rank: int = 0
    world_size: int = 1
    local_rank: int = 0

    @property
    def is_main(self) -> bool:
        """Only the main process writes checkpoints, logs and plots."""
        return self.rank == 0

    @property
    def enabled(self) -> bool:
        return self.world_size > 1


def _env_int(name: str, default: int) -> int:
    value = os.environ.get(name)
    if value is None:
        return default
    try:
        return int(value)
    except ValueError as exc:
        raise ConfigError(f"environment variable {name} must be an integer (got {value!r})") from exc


def context_from_env() -> DistributedContext:
    """This process's place in the job from ``torchrun``'s ``RANK``, ``WORLD_SIZE``, ``LOCAL_RANK``."""
    return DistributedContext(rank=_env_int("RANK", 0), world_size=_env_int("WORLD_SIZE", 1),
                              local_rank=_env_int("LOCAL_RANK", 0))


def init_distributed(device: torch.device, timeout_s: float = 3600.0,
                     context: Optional[DistributedContext] = None) -> DistributedContext:
    """Join the process group ``torchrun`` describes (nccl on CUDA, gloo on CPU); no-op for one process.

    The timeout bounds every collective, including the wait of the other ranks while rank 0 evaluates.
    ``context`` defaults to ``context_from_env()``.
    """
    context = context_from_env() if context is None else context
    world_size = context.world_size
    if world_size <= 1:
        return context
    if not dist.is_available():
        raise ConfigError("WORLD_SIZE > 1 but this torch build has no torch.distributed")
    if not dist.is_initialized():
        backend = "nccl" if device.type == "cuda" else "gloo"
        if device.type == "cuda":
            torch.cuda.set_device(device)
        dist.init_process_group(backend=backend, init_method="env://", rank=context.rank,
                                world_size=world_size, timeout=datetime.timedelta(seconds=timeout_s))
        logger.info("joined process group: rank %d of %d (%s)", context.rank, world_size, backend)
    return context


def barrier(context: DistributedContext) -> None:
    """Wait for all processes (no-op for one process)."""
    if context.enabled and dist.is_initialized():
        dist.barrier()


def _comm_device() -> torch.device:
    # nccl only reduces CUDA tensors; gloo takes CPU ones.
    if dist.get_backend() == "nccl":
        return torch.device("cuda", torch.cuda.current_device())
    return torch.device("cpu")


def reduce_mean(values: dict[str, float], context: DistributedContext) -> dict[str, float]:
    """Average scalar metrics over processes, so the log shows the job's losses rather than rank 0's."""
    if not context.enabled or not values:
        return values
    keys = sorted(values)
    stacked = torch.tensor([values[k] for k in keys], dtype=torch.float64, device=_comm_device())
    dist.all_reduce(stacked)
    stacked /= context.world_size
    return dict(zip(keys, stacked.cpu().tolist()))


def broadcast_flag(flag: bool, context: DistributedContext) -> bool:
    """True on every rank when ``flag`` is true on any rank (e.g. a non-finite loss)."""
    if not context.enabled:
        return flag
    value = torch.tensor([1.0 if flag else 0.0], device=_comm_device())
    dist.all_reduce(value, op=dist.ReduceOp.MAX)
    return bool(value.item() > 0)


def shutdown(context: DistributedContext) -> None:
    """Leave the process group."""
    if context.enabled and dist.is_initialized():
        dist.destroy_process_group()
