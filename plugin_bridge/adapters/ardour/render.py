"""Render a track's time range from its regions' source files (no Ardour export needed).

Ardour's own export can crash while a headless session tears down (see
docs/daw.md), so the adapter reads the regions' source files for the range instead. The
Lua side writes a plan (JSON) listing, per track, each region's position, length, offset
into its sources (`start`), layer, mute, opacity, gain and source file paths (one per
channel); this module paints the regions bottom layer first (an opaque region hides what
lies under it, a transparent one adds to it) and writes one WAV per track.

Not rendered: plugins, faders, region fades and gain envelopes (the raw material is what
the model is conditioned on).
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import soundfile as sf

from plugin_bridge import wavio


@dataclass(frozen=True)
class RegionRef:
    position: int
    length: int
    start: int
    layer: int
    muted: bool
    opaque: bool
    gain: float
    sources: tuple[Path, ...]

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> "RegionRef":
        return cls(int(d["position"]), int(d["length"]), int(d["start"]), int(d.get("layer", 0)),
                   bool(d.get("muted", False)), bool(d.get("opaque", True)), float(d.get("gain", 1.0)),
                   tuple(Path(p) for p in d["sources"]))


def _read_span(path: Path, offset: int, frames: int, sample_rate: int) -> np.ndarray:
    """`[frames]` float32 from a mono source file, zero-padded past its end."""
    info = sf.info(str(path))
    if info.samplerate != sample_rate:
        raise ValueError(f"source {path} is {info.samplerate} Hz, the session {sample_rate} Hz")
    data, _ = sf.read(str(path), start=offset, frames=frames, dtype="float32", always_2d=True)
    out = np.zeros(frames, dtype=np.float32)
    out[: data.shape[0]] = data.mean(axis=1)
    return out


def render_track(regions: list[RegionRef], start: int, end: int, sample_rate: int) -> np.ndarray:
    """The track's audio over samples `[start, end)`: `[end-start]` mono or `[end-start, 2]`.

    Returns the painted regions (layer order); silence where no region plays."""
    channels = max((len(r.sources) for r in regions), default=1)
    channels = 1 if channels == 1 else 2
    out = np.zeros((end - start, channels), dtype=np.float32)  # [N, ch]
    for r in sorted(regions, key=lambda r: r.layer):
        a, b = max(start, r.position), min(end, r.position + r.length)
        if r.muted or b <= a:
            continue
        offset = r.start + (a - r.position)
        for ch in range(channels):
            src = r.sources[min(ch, len(r.sources) - 1)]
            span = _read_span(src, offset, b - a, sample_rate) * r.gain
            if r.opaque:
                out[a - start:b - start, ch] = span
            else:
                out[a - start:b - start, ch] += span
    return out[:, 0] if channels == 1 else out


def given_path(out_dir: str | Path, stem: str) -> Path:
    """Where the rendered given stem for `stem` goes: `<out_dir>/given.<stem>.wav`."""
    return Path(out_dir) / f"given.{stem}.wav"


def render_plan(plan: dict[str, Any], out_dir: str | Path) -> dict[str, Path]:
    """Render every track of `plan` over `[plan.start, plan.end)` to `given.<stem>.wav`
    (32-bit float, session rate). Returns `{stem: path}`."""
    start, end, sr = int(plan["start"]), int(plan["end"]), int(plan["sample_rate"])
    if end <= start:
        raise ValueError(f"empty range [{start}, {end})")
    written = {}
    for track in plan["tracks"]:
        regions = [RegionRef.from_dict(r) for r in track["regions"]]
        audio = render_track(regions, start, end, sr)
        written[track["stem"]] = wavio.write_wav_atomic(given_path(out_dir, track["stem"]), audio, sr, "32f")
    return written


def load_plan(path: str | Path) -> dict[str, Any]:
    """Read a plan written by the Lua script."""
    with open(path, encoding="utf-8") as f:
        return json.load(f)
