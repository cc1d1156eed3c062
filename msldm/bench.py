"""`msldm bench`: time a 12 s partial generation (2 given stems, 2 generated) on onnxruntime
(the server's `Bundle`) and on PyTorch eager, on the same machine.

Each (backend, allocator setting) runs in a fresh child process (`python -m msldm.bench
--worker ...`), because glibc reads its malloc tunables at start-up: "default" is glibc as is,
"tuned" sets `MALLOC_MMAP_MAX_=0 MALLOC_TRIM_THRESHOLD_=100000000000` (large audio tensors
otherwise go through mmap/munmap on every call). Both backends get the same thread count.
Reported per stage: median over `repeats` runs of encode (the 2 given stems), one denoiser
step (sampling time / denoiser calls), total sampling, decode (the 2 generated stems), the
end-to-end sum and its real-time factor, after one untimed warm-up run (time / audio length; < 1 is faster than real time).

This module imports nothing heavy at module level; torch only in the PyTorch worker.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import math
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path
from typing import Any, Callable

MALLOC_SETTINGS: dict[str, dict[str, str]] = {
    "default": {},
    "tuned": {"MALLOC_MMAP_MAX_": "0", "MALLOC_TRIM_THRESHOLD_": "100000000000"},
}
STAGES = ("encode", "step", "sample", "decode", "total")
EXAMPLE = """examples:
  msldm bench --bundle bundles/small --vae ckpt/vae.safetensors --diffusion ckpt/diffusion.safetensors
  msldm bench --bundle bundles/small            # onnxruntime only (no checkpoints to compare)
  msldm bench --daemon --bundle bundles/small   # the daemon end to end (server helper)
"""


def _stage_times(encode: Callable, sample: Callable, decode: Callable, calls: int) -> dict:
    t0 = time.perf_counter()
    z = encode()
    t1 = time.perf_counter()
    lat = sample(z)
    t2 = time.perf_counter()
    decode(lat)
    t3 = time.perf_counter()
    return {"encode": t1 - t0, "sample": t2 - t1, "step": (t2 - t1) / calls, "decode": t3 - t2,
            "total": t3 - t0}


def _median_runs(run: Callable[[], dict], repeats: int) -> dict[str, float]:
    """One untimed warm-up run (first-call allocations, lazy init), then `repeats` runs."""
    run()
    runs = [run() for _ in range(repeats)]
    return {k: statistics.median(r[k] for r in runs) for k in STAGES}


def time_onnxruntime(spec: dict[str, Any]) -> dict[str, Any]:
    """Worker: median stage times of the bundle on onnxruntime (the server's runtime)."""
    import numpy as np

    import server.runtime
    from msldm import sampling
    from server.runtime import Bundle

    server.runtime.SPIN = bool(spec.get("spin", server.runtime.SPIN))  # before the sessions open
    b = Bundle.load(spec["bundle"], threads=spec["threads"])
    steps = spec["steps"] or b.sampler_defaults.steps
    T = _frames(spec["seconds"], b.sample_rate, b.D, b.frame_multiple)
    rng = np.random.default_rng(0)
    audio = (0.1 * rng.standard_normal((2, 1, T * b.D))).astype(np.float32)
    mask = b.stem_mask(b.stems[:2], T)

    def sample(z_given: np.ndarray) -> np.ndarray:
        given = np.zeros((1, b.K * b.C, T), np.float32)
        given[:, : 2 * b.C] = z_given.reshape(1, 2 * b.C, T)  # [2, C, T] -> [1, 2C, T]
        return b.generate(given.shape, seed=0, steps=steps, given=given, mask=mask)

    def decode(lat: np.ndarray) -> np.ndarray:
        return b.decode(lat[:, 2 * b.C:].reshape(2, b.C, T))  # generated stems as a batch

    d = b.sampler_defaults
    calls = d.partial_calls(b.sigmas(steps))
    res = _median_runs(lambda: _stage_times(lambda: b.encode(audio), sample, decode, calls),
                       spec["repeats"])
    return {**res, "providers": sorted(set(b.providers.values())), "frames": T, "steps": steps}


def time_torch(spec: dict[str, Any]) -> dict[str, Any]:
    """Worker: the same work on the PyTorch pipeline (eager, weight norm folded, no_grad)."""
    import torch

    from msldm import sampling
    from msldm.pipeline import TorchPipeline

    torch.set_num_threads(spec["threads"] or os.cpu_count() or 1)
    pipe = TorchPipeline.from_checkpoints(spec["vae"], spec["diffusion"])
    pipe.vae.fold_weight_norm()
    cfg, sc = pipe.config, pipe.config.sampler
    C, K, D = cfg.vae.latent_dim, len(pipe.stems), cfg.vae.hop
    steps = spec["steps"] or sc.steps
    T = _frames(spec["seconds"], cfg.vae.sample_rate, D, cfg.diffusion.unet.total_factor)
    gen = torch.Generator().manual_seed(0)
    audio = 0.1 * torch.randn(2, 1, T * D, generator=gen)
    mask = torch.zeros(1, K * C, 1)
    mask[:, : 2 * C] = 1.0
    sigmas = dataclasses.replace(sc, steps=steps).sigmas(cfg.diffusion.sigma_data)

    def sample(z_given: torch.Tensor) -> torch.Tensor:
        given = torch.zeros(1, K * C, T)
        given[:, : 2 * C] = z_given.reshape(1, 2 * C, T)
        with torch.no_grad():
            return sampling.generate(pipe.denoise, torch.randn(given.shape, generator=gen), sigmas,
                                     randn=lambda x: torch.randn(x.shape, generator=gen),
                                     given=given, mask=mask, conditional=pipe.conditional,
                                     **sc.sampling_kwargs())

    calls = sc.partial_calls(sigmas)
    res = _median_runs(lambda: _stage_times(
        lambda: pipe.encode(audio), sample,
        lambda lat: pipe.decode(lat[:, 2 * C:].reshape(2, C, T)), calls), spec["repeats"])
    return {**res, "providers": [f"torch {torch.__version__} eager, {torch.get_num_threads()} threads"],
            "frames": T, "steps": steps}


def machine_speed(repeats: int = 7, n: int = 768) -> dict[str, Any]:
    """A reference figure of this machine, to read timings of different sessions against each
    other (on the shared 2-core machines the same bundle has run 2.5x faster or slower from one
    day to the next): the best of `repeats` float32 matmuls of n x n by numpy, in GFLOP/s, the
    CPU model, and the cores this process may use."""
    import numpy as np

    a = np.random.default_rng(0).standard_normal((n, n)).astype(np.float32)
    a @ a  # warm-up: thread pool start
    best = math.inf
    for _ in range(repeats):
        t0 = time.perf_counter()
        a @ a
        best = min(best, time.perf_counter() - t0)
    model = "unknown CPU"
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                model = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)
    return {"matmul_gflops": 2.0 * n ** 3 / best / 1e9, "cpu": model, "cores": cores, "repeats": repeats}


def format_machine(m: dict[str, Any]) -> str:
    """One line naming the machine a table was measured on."""
    return (f"machine: {m['cpu']}, {m['cores']} cores, float32 matmul {m['matmul_gflops']:.0f} GFLOP/s "
            f"(numpy, best of {m['repeats']}; compare timings of different sessions by it)")


def _frames(seconds: float, sr: int, D: int, multiple: int) -> int:
    T = math.ceil(seconds * sr / D)
    return max(multiple, math.ceil(T / multiple) * multiple)


WORKERS: dict[str, Callable[[dict], dict]] = {"onnxruntime": time_onnxruntime, "torch": time_torch}


def run_worker(backend: str, malloc: str, spec: dict[str, Any]) -> dict[str, Any]:
    """Run one backend in a fresh process with the malloc setting; returns its JSON result."""
    env = {k: v for k, v in os.environ.items() if k not in MALLOC_SETTINGS["tuned"]}
    env.update(MALLOC_SETTINGS[malloc])
    root = Path(__file__).resolve().parents[1]
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(root), env.get("PYTHONPATH")]))
    cmd = [sys.executable, "-m", "msldm.bench", "--worker", backend, json.dumps(spec)]
    r = subprocess.run(cmd, env=env, capture_output=True, text=True)
    if r.returncode != 0:
        raise RuntimeError(f"{backend} worker failed:\n{r.stderr[-3000:]}")
    spin = ("on" if spec["spin"] else "off") if backend == "onnxruntime" else "-"
    return {**json.loads(r.stdout.strip().splitlines()[-1]), "backend": backend, "malloc": malloc, "spin": spin}


def bench(bundle: Path, vae: Path | None, diffusion: Path | None, *, seconds: float = 12.0,
          steps: int | None = None, repeats: int = 3, threads: int = 0,
          mallocs: tuple[str, ...] = ("default", "tuned"),
          spins: tuple[bool, ...] = (False,)) -> list[dict[str, Any]]:
    """All rows: onnxruntime always (once per `spins` setting: its threads busy-waiting between
    runs or not, `server.runtime.SPIN`), PyTorch when both checkpoints are given."""
    spec = {"bundle": str(bundle), "vae": str(vae) if vae else None,
            "diffusion": str(diffusion) if diffusion else None, "seconds": seconds,
            "steps": steps, "repeats": repeats, "threads": threads or (os.cpu_count() or 1)}
    runs = [("onnxruntime", m, s) for m in mallocs for s in spins]
    runs += [("torch", m, False) for m in mallocs] if vae and diffusion else []
    return [run_worker(b, m, spec | {"spin": s}) | {"seconds": seconds} for b, m, s in runs]


def format_table(rows: list[dict[str, Any]]) -> str:
    """A markdown table of the rows (seconds; RTF = total / audio length)."""
    head = ("| backend | malloc | spin | encode | step | sampling | decode | end-to-end | RTF |\n"
            "|---|---|---|---|---|---|---|---|---|")
    lines = [head]
    for r in rows:
        lines.append(f"| {r['backend']} ({', '.join(r['providers'])}) | {r['malloc']} | {r['spin']} | "
                     + " | ".join(f"{r[k]:.3f}" for k in ("encode", "step", "sample", "decode", "total"))
                     + f" | {r['total'] / r['seconds']:.2f} |")
    r0 = rows[0]
    lines.append(f"\n{r0['seconds']:g} s region, {r0['frames']} latent frames, {r0['steps']} steps, "
                 f"2 given + 2 generated stems; median of runs; malloc tuned = "
                 + " ".join(f"{k}={v}" for k, v in MALLOC_SETTINGS["tuned"].items()))
    return "\n".join(lines)


def register(subparsers: argparse._SubParsersAction) -> None:
    """Add `msldm bench` (`--daemon`, formerly `--server`, dispatches to the server helper's
    daemon benchmark)."""
    p = subparsers.add_parser("bench", help="time onnxruntime vs PyTorch on a 12 s region",
                              epilog=EXAMPLE, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--bundle", type=Path, default=None, help="model bundle folder")
    p.add_argument("--vae", type=Path, default=None, help="SourceVAE checkpoint (PyTorch side)")
    p.add_argument("--diffusion", type=Path, default=None, help="diffusion checkpoint (PyTorch side)")
    p.add_argument("--seconds", type=float, default=12.0)
    p.add_argument("--steps", type=int, default=None, help="sampler steps (default: the bundle's)")
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--threads", type=int, default=0, help="threads per backend (default: all cores)")
    p.add_argument("--malloc", choices=["default", "tuned", "both"], default="both")
    p.add_argument("--spin", choices=["off", "on", "both"], default="off",
                   help="onnxruntime's threads busy-wait between runs (its own default) or not "
                        "(the daemon's); both: a row each")
    try:
        from server.cli import add_bench_arguments
        add_bench_arguments(p)
    except ImportError:
        p.add_argument("--daemon", "--server", action="store_true", help=argparse.SUPPRESS)
    p.set_defaults(func=run_bench)


def run_bench(args: argparse.Namespace) -> int:
    if getattr(args, "daemon", False):
        from server.cli import run_bench as run_server_bench
        return run_server_bench(args)
    if args.bundle is None:
        raise ValueError("--bundle is required (or --daemon)")
    if (args.vae is None) != (args.diffusion is None):
        raise ValueError("give both --vae and --diffusion for the PyTorch side, or neither")
    mallocs = ("default", "tuned") if args.malloc == "both" else (args.malloc,)
    machine = machine_speed()
    rows = bench(args.bundle, args.vae, args.diffusion, seconds=args.seconds, steps=args.steps,
                 repeats=args.repeats, threads=args.threads, mallocs=mallocs,
                 spins={"off": (False,), "on": (True,), "both": (False, True)}[args.spin])
    print(format_table(rows))
    print(format_machine(machine))
    if args.vae is None:
        print("PyTorch not timed: no --vae/--diffusion checkpoints given (onnxruntime only).")
    return 0


def _worker_main(argv: list[str]) -> int:
    backend, spec = argv[1], json.loads(argv[2])
    print(json.dumps(WORKERS[backend](spec)))
    return 0


if __name__ == "__main__":
    if len(sys.argv) == 4 and sys.argv[1] == "--worker":
        sys.exit(_worker_main(sys.argv[1:]))
    sys.exit("usage: python -m msldm.bench --worker BACKEND SPEC_JSON (use `msldm bench`)")
