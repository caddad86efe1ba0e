"""Deterministic, resumable data order: a per-epoch seeded permutation split over ranks, restartable mid-epoch."""

from __future__ import annotations

import torch
from torch.utils.data import DataLoader, Dataset, Sampler

from ..errors import DataError


class ResumableDistributedSampler(Sampler[int]):
    """Like ``DistributedSampler(shuffle=True, drop_last=True)`` plus ``start``: skip this rank's first ``start``
    indices of the epoch (to continue after a resume without loading the skipped items)."""

    def __init__(self, size: int, num_replicas: int, rank: int, seed: int, shuffle: bool = True):
        self.size, self.num_replicas, self.rank, self.seed, self.shuffle = size, num_replicas, rank, seed, shuffle
        self.per_rank = size // num_replicas
        self.epoch = 0
        self.start = 0

    def set_epoch(self, epoch: int, start: int = 0) -> None:
        self.epoch, self.start = epoch, start

    def __iter__(self):
        if self.shuffle:
            g = torch.Generator().manual_seed(self.seed + self.epoch)
            order = torch.randperm(self.size, generator=g)
        else:
            order = torch.arange(self.size)
        mine = order[: self.per_rank * self.num_replicas][self.rank :: self.num_replicas]
        return iter(mine[self.start :].tolist())

    def __len__(self) -> int:
        return self.per_rank - self.start


class EpochLoader:
    """Endless iterator over per-process micro-batches that knows its position ``(epoch, batches consumed)``."""

    def __init__(self, dataset: Dataset, batch_size: int, rank: int, world_size: int, seed: int, num_workers: int,
                 pin_memory: bool = False):
        self.dataset, self.batch_size, self.num_workers, self.pin = dataset, batch_size, num_workers, pin_memory
        self.seed, self.rank = seed, rank
        self.sampler = ResumableDistributedSampler(len(dataset), world_size, rank, seed)
        self.batches_per_epoch = self.sampler.per_rank // batch_size
        if self.batches_per_epoch < 1:
            raise DataError(f"dataset has {len(dataset)} items: too few for batch size {batch_size} x {world_size} "
                            "processes; lower training.batch_size or add data")
        self.epoch, self.consumed = 0, 0
        self._it = None

    def state_dict(self) -> dict:
        return {"epoch": self.epoch, "consumed": self.consumed}

    def load_state_dict(self, state: dict) -> None:
        epoch, consumed = int(state["epoch"]), int(state["consumed"])
        if epoch < 0 or consumed < 0:
            raise ValueError(f"sampler position epoch={epoch}, consumed={consumed} is negative")
        self.epoch, self.consumed = epoch, consumed
        self._it = None

    def _start_epoch(self) -> None:
        self.sampler.set_epoch(self.epoch, self.consumed * self.batch_size)
        if hasattr(self.dataset, "set_epoch"):  # per-epoch view sampling (wildrayzer.data datasets)
            self.dataset.set_epoch(self.epoch)
        # Own generator per (seed, epoch, rank): creating the iterator never draws from the global RNG.
        g = torch.Generator().manual_seed((self.seed * 1_000_003 + self.epoch * 1009 + self.rank) % 2**63)
        loader = DataLoader(self.dataset, batch_size=self.batch_size, sampler=self.sampler, drop_last=True,
                            num_workers=self.num_workers, generator=g, pin_memory=self.pin,
                            persistent_workers=False)
        self._it = iter(loader)

    def __next__(self) -> dict:
        if self.consumed >= self.batches_per_epoch:
            self.epoch, self.consumed, self._it = self.epoch + 1, 0, None
        if self._it is None:
            self._start_epoch()
        batch = next(self._it)
        self.consumed += 1
        return batch

    def __iter__(self):
        return self
