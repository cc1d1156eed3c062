"""Fit metrics on the FluidSynth-rendered synthetic corpus (skipped without libfluidsynth)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from msldm.eval.data import load_segments, pick_mismatched
from msldm.eval.fit import build_context, fit_scores

pytestmark = pytest.mark.fluidsynth


def test_real_beats_mismatched_on_rendered_corpus(tmp_path: Path) -> None:
    corpus = pytest.importorskip("msldm.data.synth.corpus")
    render = pytest.importorskip("msldm.data.synth.render")
    try:
        render.find_soundfont()
        corpus.render_corpus(tmp_path, tracks=3, seed=0, seconds=8.0, progress=False)
    except render.FluidSynthUnavailable as e:
        pytest.skip(str(e))
    segs = load_segments(tmp_path, 3, 6.0, split="train", require_all=False)  # tracks 0-2: train
    gaps = []
    for i, seg in enumerate(segs):
        j = pick_mismatched(segs, i)
        for stem in ("bass", "guitar", "piano"):
            ctx = build_context({s: a for s, a in seg.stems.items() if s != stem}, 22050, seg.annotation)
            real = fit_scores(seg.stems[stem], 22050, stem, ctx)
            mism = fit_scores(segs[j].stems[stem], 22050, stem, ctx)
            gaps.append((real["harmonic"] - mism["harmonic"], real["rhythmic"] - mism["rhythmic"]))
    gaps = np.asarray(gaps, dtype=np.float64)
    print("harmonic / rhythmic gaps (real - mismatched):", np.round(gaps, 2).tolist())
    assert np.nanmean(gaps[:, 0]) > 0.2 and np.nanmean(gaps[:, 1]) > 0.1
