"""Data-parallel evaluation on torch.distributed. Launched by ``torchrun`` (or ``accelerate launch``), which set
``WORLD_SIZE``, ``RANK`` and ``LOCAL_RANK``, every command that evaluates joins one process group (NCCL on
GPUs, gloo on CPUs); each rank evaluates every ``world``-th batch and the counts and loss sums are summed
across ranks, so the report equals the single-process one. Only rank 0 prints and writes. Without a launcher
this is a single process and nothing here does anything."""

from __future__ import annotations

import atexit
import os
from typing import Any


def launched() -> bool:
    """Whether a launcher started several processes."""
    return int(os.environ.get("WORLD_SIZE", "1")) > 1


def init() -> None:
    """Join the process group once, when launched (NCCL when every rank has a GPU, gloo otherwise)."""
    import torch
    import torch.distributed as dist

    if not launched() or (dist.is_available() and dist.is_initialized()):
        return
    backend = "nccl" if torch.cuda.is_available() and torch.cuda.device_count() > local_rank() else "gloo"
    if backend == "nccl":
        torch.cuda.set_device(local_rank())
    dist.init_process_group(backend=backend)
    # Leave the group while the interpreter is whole: gloo's worker threads otherwise abort the process at exit
    # ("terminate called without an active exception", SIGABRT), a crash seen once in CI.
    atexit.register(_leave)


def _leave() -> None:
    import torch.distributed as dist

    if dist.is_initialized():
        dist.destroy_process_group()


def active() -> bool:
    import torch.distributed as dist

    return dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1


def rank() -> int:
    import torch.distributed as dist

    return dist.get_rank() if active() else 0


def world() -> int:
    import torch.distributed as dist

    return dist.get_world_size() if active() else 1


def local_rank() -> int:
    return int(os.environ.get("LOCAL_RANK", "0"))


def is_main() -> bool:
    return rank() == 0


def sum_across(values: list[float], device: str) -> list[float]:
    """Each value summed over the ranks (float64), or as is in one process."""
    if not active():
        return values
    import torch
    import torch.distributed as dist

    tensor = torch.tensor(values, dtype=torch.float64, device=device if device.startswith("cuda") else "cpu")
    dist.all_reduce(tensor, op=dist.ReduceOp.SUM)
    return [float(v) for v in tensor.tolist()]


def broadcast(value: Any) -> Any:
    """Rank 0's ``value`` on every rank (any picklable object)."""
    if not active():
        return value
    import torch.distributed as dist

    box = [value]
    dist.broadcast_object_list(box, src=0)
    return box[0]


def gather(value: Any) -> list[Any]:
    """Every rank's ``value``, in rank order (``[value]`` in one process)."""
    if not active():
        return [value]
    import torch.distributed as dist

    out: list[Any] = [None] * world()
    dist.all_gather_object(out, value)
    return out


def barrier() -> None:
    if active():
        import torch.distributed as dist

        dist.barrier()
