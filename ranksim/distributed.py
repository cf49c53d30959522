"""Process-group helpers for ``torchrun`` (DistributedDataParallel); no-ops in a single process.

``torchrun --nproc_per_node=N train.py -c CONFIG`` sets ``RANK``, ``WORLD_SIZE`` and
``LOCAL_RANK``; :func:`init_distributed` joins the group (NCCL on CUDA, gloo on CPU). Every
helper here works unchanged without a process group, so the training loop has one code path for
one CPU, one GPU and many GPUs (STYLE rule 7).

Shards for the FDS statistics pass and for evaluation are strided and *not padded*
(:func:`shard_indices`), unlike ``DistributedSampler``, whose padding repeats samples: a repeated
sample would bias the per-bucket statistics and the metrics.
"""

from __future__ import annotations

import gc
import os

import torch
import torch.distributed as dist


def is_distributed() -> bool:
    return dist.is_available() and dist.is_initialized()


def get_rank() -> int:
    return dist.get_rank() if is_distributed() else 0


def get_world_size() -> int:
    return dist.get_world_size() if is_distributed() else 1


def is_main_process() -> bool:
    return get_rank() == 0


def init_distributed(device_name: str) -> torch.device | None:
    """Join the process group if launched by torchrun; return this process's device (or None).

    ``device_name`` is the config's ``device``; under torchrun, ``cuda`` means ``cuda:LOCAL_RANK``.
    """
    if "WORLD_SIZE" not in os.environ or int(os.environ["WORLD_SIZE"]) <= 1 or is_distributed():
        return None
    local_rank = int(os.environ.get("LOCAL_RANK", 0))
    use_cuda = device_name != "cpu" and torch.cuda.is_available()
    if use_cuda:
        torch.cuda.set_device(local_rank)
    dist.init_process_group(backend="nccl" if use_cuda else "gloo")
    return torch.device("cuda", local_rank) if use_cuda else torch.device("cpu")


def barrier() -> None:
    if is_distributed():
        dist.barrier()


def shard_indices(length: int) -> range:
    """This process's strided share of ``range(length)``, without padding."""
    return range(get_rank(), length, get_world_size())


def all_reduce_sum(tensor: torch.Tensor) -> torch.Tensor:
    """Sum ``tensor`` over processes in place (and return it); identity without a group."""
    if is_distributed():
        dist.all_reduce(tensor, op=dist.ReduceOp.SUM)
    return tensor


def all_gather_cat(tensor: torch.Tensor) -> list[torch.Tensor]:
    """Every process's ``tensor`` (sizes may differ along dim 0), in rank order, without gradients."""
    if not is_distributed():
        return [tensor]
    sizes = [torch.zeros(1, dtype=torch.long, device=tensor.device) for _ in range(get_world_size())]
    dist.all_gather(sizes, torch.tensor([tensor.shape[0]], device=tensor.device))
    longest = int(max(s.item() for s in sizes))
    padded = torch.zeros((longest, *tensor.shape[1:]), dtype=tensor.dtype, device=tensor.device)
    padded[: tensor.shape[0]] = tensor
    gathered = [torch.empty_like(padded) for _ in sizes]
    dist.all_gather(gathered, padded.contiguous())
    return [g[: int(s.item())] for g, s in zip(gathered, sizes)]


def gather_shards(tensor: torch.Tensor, length: int) -> torch.Tensor:
    """Reassemble a tensor computed on :func:`shard_indices` shards into dataset order ``(length, ...)``."""
    parts = all_gather_cat(tensor)
    if len(parts) == 1:
        return parts[0]
    out = torch.empty((length, *tensor.shape[1:]), dtype=tensor.dtype, device=tensor.device)
    for rank, part in enumerate(parts):
        out[rank::len(parts)] = part
    return out


def gather_with_local_grad(tensor: torch.Tensor) -> tuple[torch.Tensor, slice]:
    """Concatenate every process's ``tensor`` along dim 0, keeping autograd on the local part.

    Returns the concatenation and the slice of it that is this process's tensor. Only the local
    slice carries gradients; the caller scales its loss by the world size so that DDP's gradient
    averaging gives the gradient of the loss on the concatenated batch.
    """
    parts = all_gather_cat(tensor.detach())
    rank = get_rank()
    start = sum(p.shape[0] for p in parts[:rank])
    parts[rank] = tensor
    return torch.cat(parts), slice(start, start + tensor.shape[0])


def broadcast_buffers(module: torch.nn.Module) -> None:
    """Overwrite every buffer of ``module`` (BatchNorm running statistics, FDS, ...) with process
    0's, in place; nothing without a group."""
    if is_distributed():
        for buffer in module.buffers():
            dist.broadcast(buffer, src=0)


def broadcast_object(obj):
    """Rank 0's ``obj`` on every process (e.g. the run folder, whose name has a timestamp)."""
    if not is_distributed():
        return obj
    box = [obj]
    dist.broadcast_object_list(box, src=0)
    return box[0]


def cleanup(finished: bool = False) -> None:
    """Leave the process group. ``finished``: every process got here without an error, so they
    meet at a barrier first. Otherwise a process that is done could tear the group down (rank 0
    hosts its TCP store) while another is still using it; a barrier after a failure could wait
    for a process that has died, so it is skipped then.

    Garbage is collected first. A DistributedDataParallel is cyclic garbage once unreferenced, and
    the trainer holding it outlives its run as such too (tracebacks of exceptions raised while
    matplotlib's pyparsing is imported lazily hold frames that chain back to the trainer's).
    Uncollected, they keep the DDP reducer, and through it the gloo group and its threads, alive
    into interpreter shutdown, where their destructors can abort the process."""
    if is_distributed():
        gc.collect()
        if finished:
            dist.barrier()
        dist.destroy_process_group()
