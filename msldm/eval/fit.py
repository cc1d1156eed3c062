"""Fit of a generated stem to its context, raw and normalised between two references.

The context of a partial-generation task is what the given stems fix: the chords per
beat and the metrical grid. They come from the region's annotation when there is one
(`annotation.json`, times relative to the region) or are estimated from the given audio
(`estimate_chords`, `estimate_grid`). Each fit score s is reported raw and normalised
between two references scored the same way in the same context:

    normalised = (s - s_mismatched) / (s_real - s_mismatched)

s_real: the real stem of that track (-> 1.0); s_mismatched: a real stem of the same class
from another track in another key and tempo (-> 0.0). When s_real - s_mismatched <
`MIN_GAP` (0.05) the references do not separate and the normalised value is NaN (not
clipped otherwise: a generated stem can beat the real one or fall below the mismatched one).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Mapping, Sequence

import numpy as np

from msldm.eval.harmony import PITCHED_STEMS, estimate_chords, harmonic_fit
from msldm.eval.rhythm import (Grid, choose_subdivision, context_profile, estimate_grid, grid_from_annotation,
                               rhythmic_fit)

MIN_GAP = 0.05
FIT_KEYS: tuple[str, ...] = ("harmonic", "rhythmic")


@dataclass(frozen=True)
class Context:
    """Harmonic and metrical context of a region: beats (s), chords (annotation schema,
    None: unknown), grid (None: unknown), the given stems' metrical profile (None: none)."""

    beats: np.ndarray
    chords: list[dict] | None
    grid: Grid | None
    profile: np.ndarray | None
    source: str  # "annotation" or "estimated"


def build_context(given: Mapping[str, np.ndarray], sr: int, annotation: Mapping | None = None) -> Context:
    """Context of a region from its annotation (preferred) or from the given stems' audio.

    `annotation`: contract-schema dict whose times are relative to the region start
    (see `msldm.eval.data.crop_annotation`). With neither an annotation nor given stems
    the context is empty (fit scores are then NaN).
    """
    if annotation is not None and len(annotation.get("beats", [])) > 1:
        grid = grid_from_annotation(annotation["beats"], annotation.get("downbeats", []),
                                    annotation.get("meter", (4, 4)))
        if given:
            grid = choose_subdivision(grid, given, sr)
        chords = list(annotation.get("chords", [])) or None
        source = "annotation"
    elif given:
        grid = estimate_grid(given, sr)
        pitched = {s: a for s, a in given.items() if s in PITCHED_STEMS}
        chords = estimate_chords(pitched, grid.beats, sr) if pitched else None
        source = "estimated"
    else:
        return Context(np.zeros(0), None, None, None, "none")
    profile = context_profile(given, sr, grid) if given else None
    return Context(np.asarray(grid.beats), chords, grid, profile, source)


def fit_scores(audio: np.ndarray, sr: int, stem: str, ctx: Context) -> dict[str, float]:
    """Raw fit scores of one stem `audio [N]` in a context: {"harmonic", "rhythmic"}
    (harmonic only for pitched stems; NaN where the context lacks chords or a grid)."""
    out = {"harmonic": float("nan"), "rhythmic": float("nan")}
    if stem in PITCHED_STEMS and ctx.chords:
        out["harmonic"] = harmonic_fit(audio, sr, ctx.chords).score
    if ctx.grid is not None:
        out["rhythmic"] = rhythmic_fit(audio, sr, ctx.grid, ctx.profile, stem=stem).score
    return out


def normalise(score: float, real: float, mismatched: float, min_gap: float = MIN_GAP) -> float:
    """(score - mismatched) / (real - mismatched); NaN when any is NaN or the gap < min_gap."""
    gap = real - mismatched
    if not all(np.isfinite([score, real, mismatched])) or gap < min_gap:
        return float("nan")
    return float((score - mismatched) / gap)


def normalised_fit(generated: np.ndarray, real: np.ndarray, mismatched: np.ndarray, sr: int,
                   stem: str, ctx: Context,
                   references: Mapping[str, Mapping[str, float]] | None = None) -> dict[str, float]:
    """Raw and normalised fit of a generated stem, with the two references.

    `references`: precomputed {"real": fit_scores(real), "mismatched": fit_scores(mism)} in
    this same context (saves recomputation across tasks). Returns a flat dict:
    {key, key + "_real", key + "_mismatched", key + "_norm"} for key in FIT_KEYS.
    """
    refs = references or {"real": fit_scores(real, sr, stem, ctx),
                          "mismatched": fit_scores(mismatched, sr, stem, ctx)}
    gen = fit_scores(generated, sr, stem, ctx)
    out: dict[str, float] = {}
    for key in FIT_KEYS:
        r, m = refs["real"][key], refs["mismatched"][key]
        out.update({key: gen[key], f"{key}_real": r, f"{key}_mismatched": m,
                    f"{key}_norm": normalise(gen[key], r, m)})
    return out


def mean_ignore_nan(values: Sequence[float]) -> float:
    """Mean of the finite values (NaN when there are none)."""
    a = np.asarray([v for v in values if v is not None], dtype=np.float64)
    a = a[np.isfinite(a)]
    return float(a.mean()) if a.size else float("nan")
