"""Synthetic Slakh-like corpus: procedural multi-track MIDI rendered per instrument by FluidSynth.

Modules: `theory` (keys, chords, progression families), `styles` (grooves, programs),
`bass` / `comping` / `drums` (part families), `arrange` (who plays when), `compose`
(one song from (seed, index), humanised), `heldout` / `heldout_parts` (a differently
composed held-out set: jazz seventh chords, swing, bossa, 6/8, slow blues), `midi`
(all_src.mid), `render` (FluidSynth via ctypes), `corpus` (layout, splits, workers, the
`COMPOSERS` registry), `stats`, `cli`. Composition needs numpy + mido
only; nothing here imports torch. The names below are loaded on first use, so importing the
package (as `msldm --help` does, for `msldm data synth`) needs neither mido nor soundfile.
"""

from __future__ import annotations

import importlib
from typing import Any

_WHERE = {"Song": "compose", "compose_song": "compose", "COMPOSERS": "corpus", "CorpusSummary": "corpus",
          "render_corpus": "corpus", "split_of": "corpus", "compose_heldout": "heldout",
          "corpus_statistics": "stats", "format_statistics": "stats"}


def __getattr__(name: str) -> Any:
    """Lazy re-exports (PEP 562): `msldm.data.synth.render_corpus` imports `corpus` when asked."""
    if name in _WHERE:
        return getattr(importlib.import_module(f".{_WHERE[name]}", __name__), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


__all__ = ["COMPOSERS", "CorpusSummary", "Song", "compose_heldout", "compose_song", "corpus_statistics",
           "format_statistics", "render_corpus", "split_of"]
