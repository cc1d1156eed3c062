"""Density: how much of the time a stem is audible, and when a stem counts as empty.

The paper's listening test rates 'density' (how present the generated instruments are)
and notes that MSDM "often generates ... even empty sources"; these are the objective
counterparts.

Definitions (documented constants):
- a frame (2048 samples, hop 512: 93 ms / 23 ms at 22.05 kHz) is *audible* when its RMS
  is above `AUDIBLE_DBFS` = -50 dB relative to full scale (a full-scale sine is -3 dBFS);
- `audible_fraction` = audible frames / frames;
- a stem *is empty* when `audible_fraction < EMPTY_FRACTION` (5 %: less than ~0.6 s of
  sound in a 12 s clip), which also covers silence and near-silent hiss;
- `empty_rate` = fraction of stems that are empty.
"""

from __future__ import annotations

from typing import Iterable

import numpy as np

from msldm.eval.dsp import frame_rms_db

AUDIBLE_DBFS = -50.0
EMPTY_FRACTION = 0.05
FRAME = 2048
HOP = 512


def audible_mask(x: np.ndarray, threshold_db: float = AUDIBLE_DBFS) -> np.ndarray:
    """Per-frame audibility `[T]` (bool): frame RMS above `threshold_db` dBFS."""
    return frame_rms_db(x, FRAME, HOP) > threshold_db


def audible_fraction(x: np.ndarray, threshold_db: float = AUDIBLE_DBFS) -> float:
    """Fraction of frames whose RMS is above `threshold_db` dBFS (0.0 for empty input)."""
    if np.asarray(x).size == 0:
        return 0.0
    return float(np.mean(audible_mask(x, threshold_db)))


def is_empty(x: np.ndarray, threshold_db: float = AUDIBLE_DBFS,
             min_fraction: float = EMPTY_FRACTION) -> bool:
    """True when fewer than `min_fraction` of the frames are audible."""
    return audible_fraction(x, threshold_db) < min_fraction


def empty_rate(stems: Iterable[np.ndarray], threshold_db: float = AUDIBLE_DBFS,
               min_fraction: float = EMPTY_FRACTION) -> float:
    """Fraction of the given stems that are empty (NaN for no stems)."""
    flags = [is_empty(s, threshold_db, min_fraction) for s in stems]
    return float(np.mean(flags)) if flags else float("nan")
