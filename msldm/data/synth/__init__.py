"""Synthetic Slakh-like corpus: procedural multi-track MIDI rendered per instrument by FluidSynth.

Modules: `theory` (keys, chords, progression families), `styles` (grooves, programs),
`bass` / `comping` / `drums` (part families), `arrange` (who plays when), `compose`
(one song from (seed, index), humanised), `heldout` / `heldout_parts` (a differently
composed held-out set: jazz seventh chords, swing, bossa, 6/8, slow blues), `midi`
(all_src.mid), `render` (FluidSynth via ctypes), `corpus` (layout, splits, workers, the
`COMPOSERS` registry), `stats`, `cli`. Composition needs numpy + mido
only; nothing here imports torch.
"""

from .compose import Song, compose_song
from .corpus import COMPOSERS, CorpusSummary, render_corpus, split_of
from .heldout import compose_heldout
from .stats import corpus_statistics, format_statistics

__all__ = ["COMPOSERS", "CorpusSummary", "Song", "compose_heldout", "compose_song", "corpus_statistics",
           "format_statistics", "render_corpus", "split_of"]
