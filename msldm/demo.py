"""`msldm demo`: the main job end to end, through the daemon.

Starts the daemon on the bundled default model (loopback, a free port), sends the bundled
example region (drums and piano given) with the bridge exactly as a DAW would, writes the
generated bass and guitar at the region's sample rate, the given stems and the mixture,
and prints where they are and how long each stage took. Imports no torch.
"""

from __future__ import annotations

import json
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np

EXAMPLE_DIR = Path(__file__).parent / "assets" / "example"


@dataclass(frozen=True)
class DemoReport:
    out: Path
    files: dict[str, Path]
    timings: dict[str, float]
    seconds: float
    providers: dict[str, str]
    model: str
    silent_rerolls: int | None = None  # windows the daemon sampled again for a silent, buried or blown part
    tamed_windows: int | None = None  # windows it turned down after every sampling came out blown

    def __str__(self) -> str:
        lines = [f"accompaniment for the example region ({self.seconds:.1f} s) by model "
                 f"{self.model!r} on {', '.join(sorted(set(self.providers.values())))}:"]
        lines += [f"  {name:<8} {path}" for name, path in self.files.items()]
        t = self.timings
        stages = ("load", "encode", "sample", "decode", "convert_rate", "first_audio", "daemon_total",
                  "end_to_end")
        lines.append("  time: " + ", ".join(f"{k} {t[k]:.2f} s" for k in stages if k in t))
        lines.append(f"  real-time factor {t['end_to_end'] / self.seconds:.2f} "
                     f"(end to end / region length)")
        if self.silent_rerolls:
            lines.append(f"  {self.silent_rerolls} window sampling(s) repeated because a generated part came "
                         "out silent, buried under the given stems or blown")
        if self.tamed_windows:
            lines.append(f"  {self.tamed_windows} window(s) turned down because a generated part came out blown "
                         "at every sampling: listen before keeping")
        return "\n".join(lines)


def run_demo(out: Path, bundle: Path | None = None, seed: int = 0, steps: int | None = None,
             example: Path = EXAMPLE_DIR, progress: bool = True, schedule: str | None = None,
             resample: int | None = None, guidance: float | None = None) -> DemoReport:
    """Generate accompaniment for the example region into `out`; returns what was written."""
    from msldm import wavio
    from msldm.cli_common import ProgressBar
    from plugin_bridge.client import Chunk, Client, GenerateRequest, GivenStem, Progress
    from server.cli import default_bundle
    from server.daemon import Daemon, DaemonConfig

    region = read_region(example / "region.json")
    bundle = Path(bundle) if bundle else default_bundle()
    if not (bundle / "manifest.json").is_file():
        raise FileNotFoundError(f"no model bundle at {bundle}: export one with `msldm export` "
                                "or name it with --bundle")
    t0 = time.perf_counter()
    daemon = Daemon(DaemonConfig(bundle=bundle, zmq="tcp://127.0.0.1:0")).start()
    t_load = time.perf_counter() - t0
    try:
        files = {s: wavio.read_audio(example / f) for s, f in region["given"].items()}
        request = GenerateRequest(
            given=tuple(GivenStem(s, a.audio, a.sample_rate) for s, a in files.items()),
            generate=tuple(region["generate"]), seed=seed, steps=steps, schedule=schedule, resample=resample,
            guidance=guidance,
            region={"tempo": region["tempo"], "meter": region["meter"],
                    "start_bar": region["start_bar"]})
        t1 = time.perf_counter()
        first: list[float] = []
        bar = ProgressBar() if progress else None

        def on_event(event) -> None:
            if isinstance(event, Chunk) and not first:
                first.append(time.perf_counter() - t1)
            if bar is not None and isinstance(event, Progress):
                bar.update(event)

        with Client(daemon.endpoint) as client:
            hello = client.hello()
            try:
                result = client.generate_blocking(request, on_event=on_event)
            finally:
                if bar is not None:
                    bar.close()
        t_e2e = time.perf_counter() - t1
    finally:
        daemon.stop()
    timings = {"load": t_load, "first_audio": first[0] if first else t_e2e, "end_to_end": t_e2e}
    return _write(out, files, result, hello, timings, region)


def read_region(path: Path) -> dict:
    """An example region's description. The stems to generate are under `generate` (the
    protocol's name); a `region.json` written before that, with `make`, reads the same."""
    region = json.loads(Path(path).read_text())
    if "generate" not in region and "make" in region:
        region["generate"] = region.pop("make")
    return region


def _write(out: Path, files: dict, result, hello: dict, timings: dict[str, float],
           region: dict) -> DemoReport:
    from msldm import wavio

    rate, n = result.sample_rate, result.done.frames
    out.mkdir(parents=True, exist_ok=True)
    written: dict[str, Path] = {}
    stems: dict[str, np.ndarray] = {}
    for stem, f in files.items():
        stems[stem] = _mono(f.audio)[:n]
    stems.update({s: a[:n] for s, a in result.stems.items()})
    for stem, audio in stems.items():
        written[stem] = wavio.write_wav_atomic(out / f"{stem}.wav", audio, rate, "24")
    mix = np.sum([np.pad(a, (0, n - len(a))) for a in stems.values()], axis=0)
    peak = float(np.abs(mix).max()) or 1.0
    written["mixture"] = wavio.write_wav_atomic(out / "mixture.wav", mix / max(1.0, peak / 0.99),
                                                rate, "24")
    daemon_t = result.done.timings
    timings = {**timings, **{k: float(v) for k, v in daemon_t.items() if k not in ("total", "resample")},
               "daemon_total": float(daemon_t.get("total", 0.0))}
    record = {"region": region, "model": hello.get("model"), "providers": hello.get("providers"),
              "seed": result.done.seed, "steps": result.done.steps,
              "schedule": result.done.schedule, "resample": result.done.resample,
              "guidance": result.done.guidance,
              "silent_retries": result.done.silent_retries, "silent_rerolls": sum(result.done.take_rerolls),
              "tamed_windows": sum(result.done.take_tamed),
              "timings_s": timings,
              "files": {k: str(v) for k, v in written.items()}}
    wavio.write_json_atomic(out / "demo.json", record)
    return DemoReport(out, written, timings, n / rate, hello.get("providers", {}),
                      str(hello.get("model")), sum(result.done.take_rerolls), sum(result.done.take_tamed))


def _mono(audio: np.ndarray) -> np.ndarray:
    return audio.mean(axis=1) if audio.ndim == 2 else audio
