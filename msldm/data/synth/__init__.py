"""Synthetic Slakh-like corpus: procedural multi-track MIDI rendered per instrument by FluidSynth.

Modules: `theory` (keys, chords, progression families), `styles` (grooves, programs),
`bass` / `comping` / `drums` (part families), `arrange` (who plays when), `compose`
(one song from (seed, index), humanised), `midi` (all_src.mid), `render` (FluidSynth via
ctypes), `corpus` (layout, splits, workers), `stats`, `cli`. Composition needs numpy + mido
only; nothing here imports torch.
"""

from .compose import Song, compose_song
from .corpus import CorpusSummary, render_corpus, split_of
from .stats import corpus_statistics, format_statistics

__all__ = ["CorpusSummary", "Song", "compose_song", "corpus_statistics", "format_statistics",
           "render_corpus", "split_of"]
