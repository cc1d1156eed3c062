"""Timbre augmentation of rendered stems: a random effect chain per stem, then a random gain.

Each stem class gets effects a producer would plausibly put on it (pedalboard plug-ins):
EQ shelves and compression on all of them, drive on guitar (and lightly on bass), chorus on
guitar, room reverb on piano, guitar and drums. Every choice derives from the generator it
is given, so a track stays a function of (seed, index).

Loudness policy (what sets a stem's level in the corpus): FluidSynth's gain and the composed
velocities set the level; the effect chain is then made loudness-neutral (the stem's RMS is
restored to its pre-effect value); a random gain of `GAIN_DB` (uniform in dB) follows; the
corpus writer finally scales all stems of a track alike so the mixture peaks at most 0.95.
"""

from __future__ import annotations

from typing import Any

import numpy as np

GAIN_DB: tuple[float, float] = (-6.0, 6.0)
"""Range of the per-stem random gain in dB (uniform)."""

_REVERB_P = {"bass": 0.0, "drums": 0.4, "guitar": 0.5, "piano": 0.6}
_DRIVE_P = {"bass": 0.2, "drums": 0.0, "guitar": 0.5, "piano": 0.0}
_CHORUS_P = {"bass": 0.0, "drums": 0.0, "guitar": 0.3, "piano": 0.1}


def _effects(stem: str, rng: np.random.Generator) -> list[tuple[str, dict[str, float]]]:
    """The drawn chain for `stem`: [(plug-in name, parameters)], in processing order."""
    u = lambda lo, hi: round(float(rng.uniform(lo, hi)), 3)  # noqa: E731 (a local shorthand)
    chain: list[tuple[str, dict[str, float]]] = []
    if rng.random() < _DRIVE_P[stem]:
        chain.append(("Distortion", {"drive_db": u(4.0, 18.0) if stem == "guitar" else u(2.0, 8.0)}))
    chain.append(("LowShelfFilter", {"cutoff_frequency_hz": u(80.0, 300.0), "gain_db": u(-5.0, 5.0)}))
    chain.append(("HighShelfFilter", {"cutoff_frequency_hz": u(2000.0, 8000.0), "gain_db": u(-6.0, 4.0)}))
    if rng.random() < 0.5:
        chain.append(("Compressor", {"threshold_db": u(-24.0, -8.0), "ratio": u(1.5, 5.0),
                                     "attack_ms": u(2.0, 30.0), "release_ms": u(50.0, 300.0)}))
    if rng.random() < _CHORUS_P[stem]:
        chain.append(("Chorus", {"rate_hz": u(0.3, 2.0), "depth": u(0.1, 0.4), "mix": u(0.2, 0.5)}))
    if rng.random() < _REVERB_P[stem]:
        chain.append(("Reverb", {"room_size": u(0.1, 0.6), "wet_level": u(0.05, 0.3),
                                 "dry_level": u(0.7, 1.0), "damping": u(0.3, 0.8)}))
    return chain


def augment_stem(audio: np.ndarray, stem: str, sample_rate: int,
                 rng: np.random.Generator) -> tuple[np.ndarray, dict[str, Any]]:
    """Returns (augmented float32 audio [N], a record of what was applied).

    Silence stays silence (no effect runs on an all-zero stem, and its gain is recorded as 0 dB).
    """
    import pedalboard  # optional: only corpus rendering with augmentation needs it

    chain = _effects(stem, rng)
    gain_db = round(float(rng.uniform(*GAIN_DB)), 2)
    rms = float(np.sqrt(np.mean(np.square(audio, dtype=np.float64)))) if audio.size else 0.0
    if rms == 0.0:
        return audio.astype(np.float32), {"effects": [], "gain_db": 0.0}
    board = pedalboard.Pedalboard([getattr(pedalboard, name)(**params) for name, params in chain])
    out = board(audio.astype(np.float32)[None, :], sample_rate, reset=True)[0]
    out_rms = float(np.sqrt(np.mean(np.square(out, dtype=np.float64))))
    scale = (rms / out_rms if out_rms > 0 else 1.0) * 10.0 ** (gain_db / 20.0)
    record = {"effects": [{"name": n, **p} for n, p in chain], "gain_db": gain_db}
    return (out * np.float32(scale)).astype(np.float32), record
