"""One training process or several: the little that PyTorch DDP needs, in one place.

Under ``torchrun`` (which sets ``RANK``, ``WORLD_SIZE``, ``LOCAL_RANK``, ``MASTER_ADDR`` and
``MASTER_PORT``) :func:`from_env` joins the process group: ``gloo`` on CPUs, ``nccl`` when
there are GPUs (one per process, ``cuda:LOCAL_RANK``). Without those variables it is a single
process and every collective below is a no-op, so the training code reads the same both ways.

How the trainers use it (data parallelism, "one copy of the model per process"):

* every rank builds the same data and draws the same *global* batch for a step (from the
  seed and the step number alone), then keeps its rows ``rank::world`` (:meth:`Dist.shard`);
* a rank's loss is its share of the global loss (its token losses summed, divided by the
  global batch's token count) times ``world``, because DistributedDataParallel *averages*
  the gradients over ranks: the average of ``world * local_sum / N`` is ``global_sum / N``,
  exactly the single-process gradient of the same global batch;
* rank 0 alone writes files (run files, weights, state) and decides when to stop; the
  decision is broadcast each step (:meth:`Dist.broadcast_floats`), so all ranks stop at
  the same step.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from dataclasses import dataclass

import torch


@dataclass
class Dist:
    """This process's place among the training processes (``world == 1``: alone)."""

    rank: int = 0
    world: int = 1
    local_rank: int = 0
    device: torch.device = torch.device("cpu")
    backend: str = ""

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    @property
    def distributed(self) -> bool:
        return self.world > 1

    def shard(self, items: Sequence) -> list:
        """This rank's part of a global batch: items ``rank``, ``rank + world``, ..."""
        return list(items[self.rank::self.world])

    def all_reduce_sum(self, values: Sequence[float]) -> list[float]:
        """The sums over all ranks of a few numbers (float64 on the wire)."""
        if not self.distributed:
            return [float(v) for v in values]
        import torch.distributed as dist

        t = torch.tensor([float(v) for v in values], dtype=torch.float64, device=self._wire_device())
        dist.all_reduce(t)
        return t.cpu().tolist()

    def broadcast_floats(self, values: Sequence[float]) -> list[float]:
        """Rank 0's numbers on every rank (a stop decision, the step count of a schedule)."""
        if not self.distributed:
            return [float(v) for v in values]
        import torch.distributed as dist

        t = torch.tensor([float(v) for v in values], dtype=torch.float64, device=self._wire_device())
        dist.broadcast(t, src=0)
        return t.cpu().tolist()

    def barrier(self) -> None:
        if self.distributed:
            import torch.distributed as dist

            if self.backend == "nccl":
                dist.barrier(device_ids=[self.local_rank])
            else:
                dist.barrier()

    def wrap(self, model: torch.nn.Module, find_unused_parameters: bool = False) -> torch.nn.Module:
        """``model`` in DistributedDataParallel (itself when alone)."""
        if not self.distributed:
            return model
        from torch.nn.parallel import DistributedDataParallel

        ids = [self.local_rank] if self.device.type == "cuda" else None
        return DistributedDataParallel(model, device_ids=ids, find_unused_parameters=find_unused_parameters)

    def close(self) -> None:
        if self.distributed:
            import torch.distributed as dist

            if dist.is_initialized():
                dist.destroy_process_group()

    def _wire_device(self) -> torch.device:
        return self.device if self.backend == "nccl" else torch.device("cpu")


def launched_by_torchrun() -> bool:
    return "RANK" in os.environ and "WORLD_SIZE" in os.environ


def pick_device(choice: str = "auto", local_rank: int = 0) -> torch.device:
    """``auto``: the process's GPU when there is one, else the CPU; or ``cpu`` / ``cuda``."""
    if choice not in ("auto", "cpu", "cuda"):
        raise ValueError(f"the device must be auto, cpu or cuda, not {choice!r}")
    if choice == "cpu" or (choice == "auto" and not torch.cuda.is_available()):
        return torch.device("cpu")
    if not torch.cuda.is_available():
        raise ValueError("--device cuda was asked for, but PyTorch sees no GPU")
    return torch.device("cuda", local_rank % max(1, torch.cuda.device_count()))


def from_env(device: str = "auto") -> Dist:
    """Join the torchrun process group when launched by torchrun, else a single process."""
    if not launched_by_torchrun() or int(os.environ["WORLD_SIZE"]) <= 1:
        return Dist(device=pick_device(device))
    import torch.distributed as dist

    rank, world = int(os.environ["RANK"]), int(os.environ["WORLD_SIZE"])
    local_rank = int(os.environ.get("LOCAL_RANK", rank))
    dev = pick_device(device, local_rank)
    backend = "nccl" if dev.type == "cuda" else "gloo"
    if dev.type == "cuda":
        torch.cuda.set_device(dev)
    if not dist.is_initialized():
        dist.init_process_group(backend=backend, rank=rank, world_size=world)
    return Dist(rank=rank, world=world, local_rank=local_rank, device=dev, backend=backend)
