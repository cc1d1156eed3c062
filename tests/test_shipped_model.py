"""The shipped model, as a musician meets it: do the given stems steer what it makes?

The key contrast (`msldm.eval.contrast`): the same drums and seed, the given piano in its own
key and a tritone away; each generated bass should hold more chord tones of its own piano's
chords than of the other key's. This tests a property of the bundled weights, not plumbing:
a model that ignores its given stems fails it."""

from __future__ import annotations

import pytest

from msldm.data.synth.render import fluidsynth_available

pytestmark = [pytest.mark.slow, pytest.mark.fluidsynth,
              pytest.mark.skipif(not fluidsynth_available(), reason="libfluidsynth or GM soundfont missing")]


def test_bass_follows_the_key_of_the_given_piano() -> None:
    from msldm.eval.contrast import key_contrast
    from server.cli import default_bundle

    rows = key_contrast(default_bundle(), songs=2, seed=0, seconds=8.0)
    for r in rows:
        assert r["original_note_seconds"] > 1.0 and r["tritone_note_seconds"] > 1.0  # it plays notes
        assert r["original_own"] > r["original_other"], r
        assert r["tritone_own"] > r["tritone_other"], r
