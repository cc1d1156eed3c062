"""Exact-resume training state: EMA, the data order, RNG states, optimisers, without pickle.

`save_train_state` writes `<out>/train_state.safetensors` (every tensor: raw weights, EMA
weights, optimiser moments), `<out>/train_state.json` (every scalar: step, optimiser
hyper-parameters, scheduler state) and one `<out>/train_state.rng<rank>.safetensors` per
process (torch / CUDA RNG bytes and generator states as tensors, numpy / python RNG states as
JSON lists in its metadata). All are written atomically, the JSON last; each file names the
step it belongs to, and loading checks they agree. Nothing is pickled.
"""

from __future__ import annotations

import json
import random
import sys
from pathlib import Path
from typing import Any, Iterator

import numpy as np
import torch
from safetensors import safe_open
from safetensors.torch import save_file
from torch import nn
from torch.utils.data import Sampler

from msldm.atomic import atomic_path, atomic_write_text

STATE_TENSORS = "train_state.safetensors"
STATE_JSON = "train_state.json"


class EMA:
    """Exponential moving average of a module's floating-point state: e <- d e + (1 - d) w."""

    def __init__(self, module: nn.Module, decay: float = 0.999):
        self.decay = decay
        self.shadow = {k: v.detach().clone() for k, v in module.state_dict().items()}

    @torch.no_grad()
    def update(self, module: nn.Module) -> None:
        for k, v in module.state_dict().items():
            if v.dtype.is_floating_point:
                self.shadow[k].lerp_(v.detach(), 1.0 - self.decay)
            else:
                self.shadow[k].copy_(v)

    def state_dict(self) -> dict[str, torch.Tensor]:
        return self.shadow

    def load_state_dict(self, state: dict[str, torch.Tensor]) -> None:
        for k in self.shadow:
            self.shadow[k].copy_(state[k])


class StreamSampler(Sampler[list[int]]):
    """An endless, resumable stream of batches of `batch` indices for one rank.

    Epoch e is a permutation of range(n) drawn from `seed + e`; rank r takes every
    `world`-th item of it (n // world each). Batch b of the stream is items [bB, (b+1)B) of
    the rank's concatenated epochs, so starting at `start_batch` reproduces the same order.
    """

    def __init__(self, n: int, batch: int, seed: int = 0, rank: int = 0, world: int = 1,
                 start_batch: int = 0, shuffle: bool = True):
        if n // world < 1:
            raise ValueError(f"{n} items cannot be shared by {world} processes")
        self.n, self.batch, self.seed, self.rank, self.world = n, batch, seed, rank, world
        self.start_batch, self.shuffle = start_batch, shuffle

    def _epoch(self, e: int) -> list[int]:
        if self.shuffle:
            order = torch.randperm(self.n, generator=torch.Generator().manual_seed(self.seed + e))
        else:
            order = torch.arange(self.n)
        return order[self.rank::self.world][: self.n // self.world].tolist()

    def __iter__(self) -> Iterator[list[int]]:
        per = self.n // self.world
        pos = self.start_batch * self.batch
        epoch, offset = divmod(pos, per)
        items = self._epoch(epoch)[offset:]
        while True:
            while len(items) < self.batch:
                epoch += 1
                items += self._epoch(epoch)
            yield items[: self.batch]
            items = items[self.batch:]


def rng_state() -> tuple[dict[str, torch.Tensor], dict[str, Any]]:
    """Global RNG states as (tensors, JSON-able scalars): torch CPU / CUDA, numpy, python."""
    tensors = {"rng.torch": torch.get_rng_state()}
    if torch.cuda.is_available() and torch.cuda.is_initialized():
        for i, s in enumerate(torch.cuda.get_rng_state_all()):
            tensors[f"rng.cuda.{i}"] = s
    kind, keys, pos, has_gauss, gauss = np.random.get_state()
    py_version, py_state, py_gauss = random.getstate()
    scalars = {"numpy": [kind, keys.tolist(), pos, has_gauss, gauss],
               "python": [py_version, list(py_state), py_gauss]}
    return tensors, scalars


def set_rng_state(tensors: dict[str, torch.Tensor], scalars: dict[str, Any]) -> None:
    """Restore what `rng_state` returned."""
    torch.set_rng_state(tensors["rng.torch"])
    cuda = sorted(k for k in tensors if k.startswith("rng.cuda."))
    if cuda and torch.cuda.is_available():
        torch.cuda.set_rng_state_all([tensors[k] for k in cuda])
    kind, keys, pos, has_gauss, gauss = scalars["numpy"]
    np.random.set_state((kind, np.asarray(keys, dtype=np.uint32), pos, has_gauss, gauss))
    v, st, g = scalars["python"]
    random.setstate((v, tuple(st), g))


def _flatten_optimizer(name: str, opt: torch.optim.Optimizer) -> tuple[dict, dict]:
    """Optimizer state -> (tensors "opt.<name>.<param>.<key>", JSON scalars)."""
    sd = opt.state_dict()
    tensors, scalars = {}, {"param_groups": sd["param_groups"], "state": {}}
    for pid, st in sd["state"].items():
        for key, v in st.items():
            if torch.is_tensor(v):
                tensors[f"opt.{name}.{pid}.{key}"] = v
            else:
                scalars["state"].setdefault(str(pid), {})[key] = v
    return tensors, scalars


def _unflatten_optimizer(name: str, opt: torch.optim.Optimizer, tensors: dict[str, torch.Tensor],
                         scalars: dict) -> None:
    state: dict[int, dict[str, Any]] = {}
    prefix = f"opt.{name}."
    for k, v in tensors.items():
        if k.startswith(prefix):
            pid, key = k[len(prefix):].split(".", 1)
            state.setdefault(int(pid), {})[key] = v
    for pid, st in scalars["state"].items():
        state.setdefault(int(pid), {}).update(st)
    groups = [{k: tuple(v) if k == "betas" else v for k, v in g.items()}
              for g in scalars["param_groups"]]
    opt.load_state_dict({"state": state, "param_groups": groups})


def _rng_file(out: Path, rank: int) -> Path:
    return out / f"train_state.rng{rank}.safetensors"


def save_train_state(out: str | Path, step: int, modules: dict[str, nn.Module],
                     optimizers: dict[str, torch.optim.Optimizer], schedulers: dict[str, Any],
                     emas: dict[str, EMA], generators: dict[str, torch.Generator],
                     extra: dict[str, Any] | None = None, rank: int = 0) -> None:
    """Write everything needed to continue exactly after `step` (see the module docstring).

    Every rank writes its own RNG file (`train_state.rng<rank>.safetensors`: global RNG
    states and the task's generators); rank 0 also writes weights, EMA and optimisers.
    """
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    rng_tensors, rng_scalars = rng_state()
    rng_tensors.update({f"gen.{name}": g.get_state() for name, g in generators.items()})
    _save_tensors(_rng_file(out, rank), rng_tensors,
                  {"step": str(step), "rng": json.dumps(rng_scalars)})
    if rank != 0:
        return
    scalars = {"step": step, "optimizers": {}, "extra": extra or {},
               "schedulers": {k: s.state_dict() for k, s in schedulers.items()}}
    tensors: dict[str, torch.Tensor] = {}
    for name, m in modules.items():
        tensors.update({f"model.{name}.{k}": v for k, v in m.state_dict().items()})
    for name, e in emas.items():
        tensors.update({f"ema.{name}.{k}": v for k, v in e.state_dict().items()})
    for name, opt in optimizers.items():
        t, s = _flatten_optimizer(name, opt)
        tensors.update(t)
        scalars["optimizers"][name] = s
    _save_tensors(out / STATE_TENSORS, tensors, {"step": str(step)})
    atomic_write_text(out / STATE_JSON, json.dumps(scalars))


def _save_tensors(path: Path, tensors: dict[str, torch.Tensor], metadata: dict[str, str]) -> None:
    with atomic_path(path) as tmp:
        save_file({k: v.detach().cpu().contiguous() for k, v in tensors.items()}, str(tmp),
                  metadata=metadata)


def _read_tensors(path: Path, step: int) -> tuple[dict[str, torch.Tensor], dict[str, str]]:
    with safe_open(str(path), framework="pt") as f:
        meta = f.metadata() or {}
        if meta.get("step") != str(step):
            raise ValueError(f"{path} belongs to step {meta.get('step')}, not {step}")
        return {k: f.get_tensor(k) for k in f.keys()}, meta


def load_train_state(out: str | Path, modules: dict[str, nn.Module],
                     optimizers: dict[str, torch.optim.Optimizer], schedulers: dict[str, Any],
                     emas: dict[str, EMA], generators: dict[str, torch.Generator],
                     rank: int = 0) -> dict:
    """Restore a `save_train_state` folder in place (this rank's RNG included).

    Returns the JSON dict (`step`, `extra`, ...). A rank without its own RNG file (the
    world size grew) takes rank 0's.
    """
    out = Path(out)
    scalars = json.loads((out / STATE_JSON).read_text())
    tensors, _ = _read_tensors(out / STATE_TENSORS, scalars["step"])
    rng_path = _rng_file(out, rank) if _rng_file(out, rank).is_file() else _rng_file(out, 0)
    rng, rng_meta = _read_tensors(rng_path, scalars["step"])

    def part(prefix: str) -> dict[str, torch.Tensor]:
        return {k[len(prefix):]: v for k, v in tensors.items() if k.startswith(prefix)}

    for name, m in modules.items():
        m.load_state_dict(part(f"model.{name}."))
    for name, e in emas.items():
        e.load_state_dict(part(f"ema.{name}."))
    for name, opt in optimizers.items():
        _unflatten_optimizer(name, opt, tensors, scalars["optimizers"][name])
    for name, s in schedulers.items():
        s.load_state_dict(scalars["schedulers"][name])
    for name, g in generators.items():
        saved = rng[f"gen.{name}"]
        if saved.numel() == g.get_state().numel():
            g.set_state(saved)
        else:  # written on another kind of device (CPU <-> CUDA): its stream cannot continue here
            g.manual_seed(g.initial_seed() * 1_000_003 + int(scalars["step"]))  # per seed and rank
            print(f"train state: generator {name!r} was saved on another kind of device; "
                  f"reseeded from its seed and the step ({scalars['step']}), so this resume is not "
                  "exact", file=sys.stderr)
    set_rng_state(rng, json.loads(rng_meta["rng"]))
    return scalars


def has_train_state(out: str | Path) -> bool:
    """Whether `out` holds a complete train state."""
    return (Path(out) / STATE_JSON).is_file() and (Path(out) / STATE_TENSORS).is_file()
