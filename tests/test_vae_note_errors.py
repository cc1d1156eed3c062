"""scripts/vae_note_errors.py's classification of what a reconstruction has at each original note."""

from __future__ import annotations

import numpy as np

from msldm.eval.transcribe import Note
from tests.script_loader import load_script


def n(start: float, pitch: int) -> Note:
    return Note(start, start + 0.3, pitch, 0.5)


def test_each_original_note_is_classified_by_the_nearest_pitched_onset() -> None:
    kinds = load_script("vae_note_errors").note_kinds
    reference = [n(0.0, 40), n(0.5, 40), n(1.0, 45), n(1.5, 45), n(2.0, 50), n(2.5, 52), n(3.0, 60)]
    estimate = [n(0.02, 40),  # same
                n(0.51, 52),  # an octave up
                n(1.04, 46),  # a semitone
                n(1.5, 52), n(1.52, 33),  # a fifth up and an octave down: the nearest pitch counts
                n(2.2, 50),  # 200 ms late: lost
                n(2.5, 55), n(2.53, 52),  # the same pitch among two onsets
                n(3.0, 84)]  # two octaves
    got = kinds(reference, estimate)
    assert got == {"same": 2, "octave": 2, "semitone": 1, "fifth": 1, "lost": 1}
    assert kinds(reference, estimate, tolerance=0.25)["lost"] == 0
    assert kinds(reference, []) == {"lost": len(reference)}


def test_repeats_counts_restruck_pitches_among_all_and_among_lost_notes() -> None:
    repeats = load_script("vae_note_errors").repeats
    reference = [n(0.0, 40), n(0.5, 40), n(1.0, 40), n(1.5, 43), n(2.0, 43)]
    assert repeats(reference) == (3, 4)  # the first note has none before it
    estimate = [n(0.0, 40), n(1.5, 43)]  # keeps the 1.5 s onset, loses 0.5, 1.0 and 2.0
    assert repeats(reference, estimate) == (3, 3)
    assert repeats(reference, reference) == (0, 0)


def test_spurious_notes_are_split_into_restrikes_and_octaves() -> None:
    spurious = load_script("vae_note_errors").spurious
    reference = [Note(0.0, 2.0, 60, 0.5), Note(3.0, 3.5, 40, 0.5)]
    estimate = [n(0.01, 60),  # matches
                n(0.8, 60),  # struck again inside the sounding 60
                n(1.2, 72),  # an octave of the sounding 60
                n(1.4, 65),  # neither
                n(3.02, 40)]  # matches
    assert spurious(reference, estimate) == (5, 3, 1, 1)
    assert spurious(reference, reference) == (2, 0, 0, 0)


def test_a_wavering_held_note_is_told_from_a_steady_one() -> None:
    held_note_level = load_script("vae_note_errors").held_note_level
    sr = 22050
    t = np.arange(2 * sr) / sr
    steady = (0.3 * np.exp(-t) * np.sin(2 * np.pi * 220 * t)).astype(np.float32)  # A3 decaying
    wavering = steady * (1 + 0.6 * np.sin(2 * np.pi * 4 * t)).astype(np.float32)  # 4 Hz tremolo
    note = [Note(0.0, 1.6, 57, 0.5)]
    sd_a, up_a = held_note_level(steady, note, sr)
    sd_b, up_b = held_note_level(wavering, note, sr)
    assert up_a == [False] and up_b == [True]
    assert sd_b[0] > 3 * sd_a[0]
    assert held_note_level(steady, [Note(0.0, 0.3, 57, 0.5)], sr) == ([], [])  # too short to judge
