"""The one training loop shared by the SourceVAE and the diffusion model.

Per step: next batch of the resumable data stream (a DataLoader's workers, or one `gather` of a
set held on the training device) -> `task.train_step` -> EMA update. Every
`log_every` steps the losses (averaged over processes) go to TensorBoard and tqdm; every
`val_every` the validation loss; every `media_every` audio and spectrograms (rank 0); every
`ckpt_every` (and at the end) the EMA weights are exported as a checkpoint
(`<out>/<kind>.safetensors`, `msldm.checkpoint` format) and the exact-resume train state is
written (`msldm.train.state`). `resume=True` continues from that state: the next step gives
the same loss as an uninterrupted run.
"""

from __future__ import annotations

import copy
import json
import random
import signal
import threading
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.distributed as dist
from torch import nn
from torch.utils.data import DataLoader, Dataset
from tqdm import tqdm

from msldm.train.distributed import DistInfo, mean_over_ranks
from msldm.train.state import EMA, StreamSampler, has_train_state, load_train_state, save_train_state
from msldm.train.tasks import TrainTask


@dataclass(frozen=True)
class TrainConfig:
    """Loop settings; `batch` is per process (global batch = batch * world size)."""

    out: str
    steps: int
    batch: int = 8
    log_every: int = 50
    val_every: int = 1000
    val_batches: int = 4
    media_every: int = 0  # 0: no audio / image logging
    ckpt_every: int = 1000
    ema_decay: float = 0.999
    seed: int = 0
    num_workers: int = 0
    resume: bool = False
    progress: bool = True
    tensorboard: bool = True
    meta: dict[str, Any] = field(default_factory=dict)


def seed_everything(seed: int) -> None:
    """Seed torch, numpy and python (call before building the task: weights are drawn)."""
    torch.manual_seed(seed)
    np.random.seed(seed % 2**32)
    random.seed(seed)


def _stack(dataset: Dataset, items: list[int]) -> torch.Tensor:
    if hasattr(dataset, "gather"):  # a resident set cuts the batch in one operation
        return dataset.gather(items)
    return torch.stack([dataset[i] for i in items])


class _Loop:
    """State of one run (kept in an object so each phase is a short method)."""

    def __init__(self, task: TrainTask, cfg: TrainConfig, info: DistInfo):
        self.task, self.cfg, self.info = task, cfg, info
        self.out = Path(cfg.out)
        self.ema = EMA(task.modules[task.ema_name], cfg.ema_decay)
        self.writer = None
        if info.is_main and cfg.tensorboard:
            from torch.utils.tensorboard import SummaryWriter
            self.writer = SummaryWriter(str(self.out / "tb"))
        self.pending: list[dict[str, float]] = []

    def state_args(self) -> tuple:
        t = self.task
        return (t.modules, t.optimizers, t.schedulers, {t.ema_name: self.ema}, t.generators)

    def resume(self) -> int:
        if not (self.cfg.resume and has_train_state(self.out)):
            return 0
        return int(load_train_state(self.out, *self.state_args(), rank=self.info.rank)["step"])

    def ema_module(self) -> nn.Module:
        m = copy.deepcopy(self.task.modules[self.task.ema_name])
        m.load_state_dict(self.ema.state_dict())
        return m.eval()

    def log(self, step: int, pbar: tqdm) -> dict[str, float]:
        keys = sorted(set().union(*self.pending))
        means = {k: float(np.mean([p[k] for p in self.pending if k in p])) for k in keys}
        means = mean_over_ranks(means, self.info)
        self.pending = []
        if self.writer:
            for k, v in means.items():
                self.writer.add_scalar(f"train/{k}", v, step)
            for name, opt in self.task.optimizers.items():
                self.writer.add_scalar(f"lr/{name}", opt.param_groups[0]["lr"], step)
        pbar.set_postfix({k: f"{v:.4g}" for k, v in means.items() if k in ("loss", "mel")})
        self.append_log({"step": step, "train": means})
        return means

    def append_log(self, record: dict[str, Any]) -> None:
        """One JSON line per log / validation in `<out>/log.jsonl` (rank 0): the run's curve."""
        if self.info.is_main:
            record = {"time": round(time.time(), 1), "cpu_s": round(time.process_time(), 1), **record}
            self.out.mkdir(parents=True, exist_ok=True)
            with open(self.out / "log.jsonl", "a") as f:
                f.write(json.dumps(record) + "\n")

    def validate(self, val_set: Dataset, step: int) -> dict[str, float]:
        """Mean validation terms over this rank's share of the first val batches."""
        n = min(len(val_set), self.cfg.val_batches * self.cfg.batch * self.info.world_size)
        mine = list(range(self.info.rank, n, self.info.world_size))
        logs = [self.task.val_step(_stack(val_set, mine[i:i + self.cfg.batch]))
                for i in range(0, len(mine), self.cfg.batch)]
        keys = sorted(set().union(*logs)) if logs else []
        means = mean_over_ranks({k: float(np.mean([l[k] for l in logs])) for k in keys}, self.info)
        if self.writer:
            for k, v in means.items():
                self.writer.add_scalar(f"val/{k}", v, step)
        self.append_log({"step": step, "val": means})
        return means

    def save(self, step: int) -> None:
        save_train_state(self.out, step, *self.state_args(), rank=self.info.rank,
                         extra={"config": asdict(self.cfg)})
        if self.info.is_main:
            meta = {"step": step, "ema_decay": self.cfg.ema_decay, **self.cfg.meta}
            self.task.export(self.out / f"{self.task.kind}.safetensors", self.ema_module(), meta)
        if self.info.distributed:
            dist.barrier()


def train(task: TrainTask, train_set: Dataset, cfg: TrainConfig, info: DistInfo = DistInfo(),
          val_set: Dataset | None = None) -> list[dict[str, float]]:
    """Run (or resume) `task` up to `cfg.steps` steps. Returns this rank's per-step logs."""
    loop = _Loop(task, cfg, info)
    start = loop.resume()
    sampler = StreamSampler(len(train_set), cfg.batch, cfg.seed, info.rank, info.world_size,
                            start_batch=start)
    if hasattr(train_set, "gather"):  # held on the training device: no workers, no copies
        loader: Any = (train_set.gather(items) for items in sampler)
    else:
        loader = DataLoader(train_set, batch_sampler=sampler, num_workers=cfg.num_workers,
                            generator=torch.Generator().manual_seed(cfg.seed),
                            worker_init_fn=_ignore_stop_signals, pin_memory=info.device.type == "cuda")
    history: list[dict[str, float]] = []
    pbar = tqdm(total=cfg.steps, initial=start, disable=not (cfg.progress and info.is_main),
                desc=f"train {task.kind}", unit="step")
    batches = iter(loader)
    with _StopRequest() as stop:
        for step in range(start, cfg.steps):
            logs = task.train_step(next(batches), step)
            loop.ema.update(task.modules[task.ema_name])
            history.append(logs)
            loop.pending.append(logs)
            done = step + 1
            pbar.update(1)
            _periodic(loop, done, pbar, val_set)
            if stop.requested and done < cfg.steps:  # SIGTERM / SIGINT: finish the step, save, end
                loop.save(done)
                loop.append_log({"step": done, "stopped": stop.requested})
                break
    pbar.close()
    if loop.writer:
        loop.writer.close()
    return history


def _ignore_stop_signals(worker_id: int) -> None:
    """DataLoader workers ignore SIGINT / SIGTERM: a Ctrl-C (sent to the whole process group)
    or a `kill` of the group must reach the main process, which saves and then ends them."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    signal.signal(signal.SIGTERM, signal.SIG_IGN)


class _StopRequest:
    """Turns SIGTERM and SIGINT into a flag the loop reads after each step (main thread only),
    so a stopped run ends on a checkpoint and resumes exactly. Handlers are restored on exit."""

    def __init__(self) -> None:
        self.requested: str | None = None
        self._old: dict[int, Any] = {}

    def __enter__(self) -> "_StopRequest":
        if threading.current_thread() is threading.main_thread():
            for sig in (signal.SIGTERM, signal.SIGINT):
                self._old[sig] = signal.signal(sig, self._handle)
        return self

    def _handle(self, signum: int, frame: Any) -> None:
        self.requested = signal.Signals(signum).name

    def __exit__(self, *exc: Any) -> None:
        for sig, handler in self._old.items():
            signal.signal(sig, handler)


def _periodic(loop: _Loop, done: int, pbar: tqdm, val_set: Dataset | None) -> None:
    """Logging, validation, media and checkpoints after step `done` (1-based)."""
    cfg = loop.cfg
    if cfg.log_every and done % cfg.log_every == 0:
        loop.log(done, pbar)
    if val_set is not None and len(val_set) and cfg.val_every and done % cfg.val_every == 0:
        loop.validate(val_set, done)
    if loop.writer and cfg.media_every and done % cfg.media_every == 0:
        source = val_set if val_set is not None and len(val_set) else None
        batch = _stack(source, [0]) if source is not None else None
        if batch is not None:
            loop.task.log_media(loop.writer, done, loop.ema_module(), batch)
    if (cfg.ckpt_every and done % cfg.ckpt_every == 0) or done == cfg.steps:
        loop.save(done)
