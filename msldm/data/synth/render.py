"""Offline FluidSynth rendering through ctypes (libfluidsynth 2.x/3), one fresh synth per stem.

No audio driver is opened: the synth is driven directly, writing float samples in blocks
between note events with `fluid_synth_write_float`. Reverb and chorus are off and the synth
is single-threaded, so the output is a deterministic function of (notes, program, soundfont).
Sample data is loaded on demand (`synth.dynamic-sample-loading`), which keeps a fresh synth
per stem cheap even with the 140 MB FluidR3 soundfont.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import os
from functools import lru_cache
from pathlib import Path
from typing import Sequence

import numpy as np

from .compose import TimedNote

SOUNDFONT_CANDIDATES: tuple[str, ...] = (
    "/usr/share/sounds/sf2/FluidR3_GM.sf2",
    "/usr/share/sounds/sf2/TimGM6mb.sf2",
)
DRUM_CHANNEL = 9
SYNTH_GAIN = 0.5
_VP = ctypes.c_void_p
_INT = ctypes.c_int
_SIGNATURES: dict[str, tuple[object, list[object]]] = {
    "new_fluid_settings": (_VP, []),
    "delete_fluid_settings": (None, [_VP]),
    "fluid_settings_setnum": (_INT, [_VP, ctypes.c_char_p, ctypes.c_double]),
    "fluid_settings_setint": (_INT, [_VP, ctypes.c_char_p, _INT]),
    "new_fluid_synth": (_VP, [_VP]),
    "delete_fluid_synth": (None, [_VP]),
    "fluid_synth_sfload": (_INT, [_VP, ctypes.c_char_p, _INT]),
    "fluid_synth_get_sfont_by_id": (_VP, [_VP, _INT]),
    "fluid_sfont_get_preset": (_VP, [_VP, _INT, _INT]),
    "fluid_synth_program_select": (_INT, [_VP, _INT, _INT, _INT, _INT]),
    "fluid_synth_noteon": (_INT, [_VP, _INT, _INT, _INT]),
    "fluid_synth_noteoff": (_INT, [_VP, _INT, _INT]),
    "fluid_synth_write_float": (_INT, [_VP, _INT, _VP, _INT, _INT, _VP, _INT, _INT]),
    "fluid_set_log_function": (_VP, [_INT, _VP, _VP]),
    "fluid_version_str": (ctypes.c_char_p, []),
}


class FluidSynthUnavailable(RuntimeError):
    """libfluidsynth or a GM soundfont cannot be found."""


@lru_cache(maxsize=1)
def load_library() -> ctypes.CDLL:
    """Returns libfluidsynth with typed signatures; raises FluidSynthUnavailable if absent."""
    names = [n for n in ("libfluidsynth.so.3", ctypes.util.find_library("fluidsynth"),
                         "libfluidsynth.dylib", "libfluidsynth-3.dll") if n]
    for name in names:
        try:
            lib = ctypes.CDLL(name)
        except OSError:
            continue
        for func, (restype, argtypes) in _SIGNATURES.items():
            getattr(lib, func).restype = restype
            getattr(lib, func).argtypes = argtypes
        for level in (1, 2, 3, 4):  # keep FLUID_PANIC(0) only; missing-preset warnings are handled here
            lib.fluid_set_log_function(level, None, None)
        return lib
    raise FluidSynthUnavailable("libfluidsynth not found: install libfluidsynth3 (Debian/Ubuntu) "
                                "or fluidsynth (Homebrew/conda)")


def find_soundfont(path: str | os.PathLike | None = None) -> Path:
    """Returns the soundfont to use: `path` if given, else FluidR3_GM, else TimGM6mb."""
    if path is not None:
        if not Path(path).is_file():
            raise FluidSynthUnavailable(f"soundfont not found: {path}")
        return Path(path)
    for candidate in SOUNDFONT_CANDIDATES:
        if Path(candidate).is_file():
            return Path(candidate)
    raise FluidSynthUnavailable("no GM soundfont found (tried " + ", ".join(SOUNDFONT_CANDIDATES)
                                + "); install fluid-soundfont-gm or pass --soundfont PATH")


def fluidsynth_available() -> bool:
    """Returns True when libfluidsynth and a default soundfont are both present."""
    try:
        load_library()
        find_soundfont()
    except FluidSynthUnavailable:
        return False
    return True


def _new_synth(lib: ctypes.CDLL, sample_rate: int, soundfont: Path) -> tuple[int, int, int]:
    """Returns (settings, synth, sfont_id) for a fresh offline synth."""
    settings = lib.new_fluid_settings()
    lib.fluid_settings_setnum(settings, b"synth.sample-rate", float(sample_rate))
    lib.fluid_settings_setnum(settings, b"synth.gain", SYNTH_GAIN)
    for name, value in ((b"synth.reverb.active", 0), (b"synth.chorus.active", 0),
                        (b"synth.cpu-cores", 1), (b"synth.threadsafe-api", 0),
                        (b"synth.dynamic-sample-loading", 1)):
        lib.fluid_settings_setint(settings, name, value)
    synth = lib.new_fluid_synth(settings)
    sfont_id = lib.fluid_synth_sfload(synth, str(soundfont).encode(), 1)
    if sfont_id < 0:
        lib.delete_fluid_synth(synth)
        lib.delete_fluid_settings(settings)
        raise FluidSynthUnavailable(f"FluidSynth could not load soundfont {soundfont}")
    return settings, synth, sfont_id


class SoundfontIncomplete(ValueError):
    """A soundfont without the General MIDI presets the corpus needs (it would render silence)."""


def _select_program(lib: ctypes.CDLL, synth: int, sfont_id: int, channel: int, program: int,
                    soundfont: Path | str = "the soundfont", kit: bool = False) -> int:
    """Selects `program` (a drum kit on the drum channel); falls back to preset 0. Returns the used one.

    With `kit`, the soundfont is a drum kit alone (Debian's avldrums: one preset in bank 0, the
    General MIDI drum map), and its bank 0 is played on the drum channel.
    Raises `SoundfontIncomplete` when the bank has neither: FluidSynth would then play every
    note as silence (FluidR3_GS.sf2 is such a file: GS variation banks only, meant to be
    loaded over FluidR3_GM.sf2)."""
    bank = 128 if channel == DRUM_CHANNEL and not kit else 0
    sfont = lib.fluid_synth_get_sfont_by_id(synth, sfont_id)
    if not lib.fluid_sfont_get_preset(sfont, bank, program):
        if not lib.fluid_sfont_get_preset(sfont, bank, 0):
            wanted = "no preset 0" if program == 0 else f"neither preset {program} nor preset 0"
            what = "a drum-kit soundfont" if kit else "a complete General MIDI soundfont"
            raise SoundfontIncomplete(f"{soundfont} has {wanted} in bank {bank}: it is not {what} "
                                      f"and would render silence")
        program = 0
    lib.fluid_synth_program_select(synth, channel, sfont_id, bank, program)
    return program


def check_soundfont(soundfont: str | os.PathLike | None = None) -> Path:
    """Returns the soundfont's path (`find_soundfont`'s choice for None) if it holds a GM
    melodic bank and a drum kit (bank 0 and bank 128, preset 0); raises `SoundfontIncomplete`
    otherwise, so that a corpus is refused before anything is rendered."""
    return _check_presets(soundfont, ((0, False), (DRUM_CHANNEL, False)))


def check_drum_kit(soundfont: str | os.PathLike) -> Path:
    """Returns the path of a drum-kit soundfont (a preset 0 in bank 0, played on the drum channel
    with the General MIDI drum map); raises `SoundfontIncomplete` for a file without one."""
    return _check_presets(soundfont, ((DRUM_CHANNEL, True),))


def _check_presets(soundfont: str | os.PathLike | None, selections: tuple[tuple[int, bool], ...]) -> Path:
    """Loads the soundfont into a throwaway synth and selects preset 0 for each (channel, kit)."""
    path = find_soundfont(soundfont)
    lib = load_library()
    settings, synth, sfont_id = _new_synth(lib, 22050, path)
    try:
        for channel, kit in selections:
            _select_program(lib, synth, sfont_id, channel, 0, path, kit)
    finally:
        lib.delete_fluid_synth(synth)
        lib.delete_fluid_settings(settings)
    return path


def _events(notes: Sequence[TimedNote], sample_rate: int) -> list[tuple[int, int, int, int]]:
    """Returns (sample, is_on, pitch, velocity) sorted, note-offs before note-ons on a sample."""
    events = []
    for note in notes:
        on = int(round(note.start * sample_rate))
        off = max(on + 1, int(round(note.end * sample_rate)))
        events += [(on, 1, note.pitch, note.vel), (off, 0, note.pitch, 0)]
    return sorted(events)


def render_notes(notes: Sequence[TimedNote], program: int, channel: int, n_samples: int,
                 sample_rate: int, soundfont: Path, kit: bool = False) -> tuple[np.ndarray, int]:
    """Renders one instrument with a fresh synth. Returns (mono float32 audio [n_samples], program used).
    With `kit`, `soundfont` is a drum kit alone (`check_drum_kit`) and the program is ignored.

    Mono is the mean of FluidSynth's left and right outputs (centre-panned voices).
    """
    lib = load_library()
    settings, synth, sfont_id = _new_synth(lib, sample_rate, soundfont)
    try:
        used = _select_program(lib, synth, sfont_id, channel, 0 if kit else program, soundfont, kit)
        left = np.zeros(n_samples, dtype=np.float32)
        right = np.zeros(n_samples, dtype=np.float32)
        position = 0
        for sample, is_on, pitch, vel in _events(notes, sample_rate) + [(n_samples, 0, -1, 0)]:
            sample = min(sample, n_samples)
            if sample > position:
                count = sample - position
                lib.fluid_synth_write_float(synth, count, left[position:].ctypes.data, 0, 1,
                                            right[position:].ctypes.data, 0, 1)
                position = sample
            if pitch < 0 or position >= n_samples:
                break
            if is_on:
                lib.fluid_synth_noteon(synth, channel, pitch, vel)
            else:
                lib.fluid_synth_noteoff(synth, channel, pitch)
    finally:
        lib.delete_fluid_synth(synth)
        lib.delete_fluid_settings(settings)
    mono = (left + right) * np.float32(0.5)
    return mono.astype(np.float32), used


def gate_inactive(audio: np.ndarray, active: list[bool], bar_times: list[float], duration: float,
                  sample_rate: int, release: float, fade: float = 0.05, margin: float = 0.03) -> np.ndarray:
    """Returns `audio` [N] silenced in inactive bars after the release allowance.

    In each run of inactive bars [t0, t1) the tail is kept for `release` s, faded out over
    `fade` s, and exact zeros follow until `margin` s before the next active bar (humanised
    onsets may come up to 20 ms early).
    """
    out = audio.copy()
    ends = list(bar_times[1:]) + [duration]
    bar = 0
    while bar < len(active):
        if active[bar]:
            bar += 1
            continue
        last = bar
        while last + 1 < len(active) and not active[last + 1]:
            last += 1
        t0, t1 = bar_times[bar], ends[last]
        a = int(round((t0 + release) * sample_rate))
        b = min(int(round((t0 + release + fade) * sample_rate)), len(out))
        z = int(round((t1 - margin) * sample_rate)) if last + 1 < len(active) else len(out)
        if a < min(b, z):
            b = min(b, z)
            out[a:b] *= np.linspace(1.0, 0.0, b - a, dtype=np.float32)
            out[b:z] = 0.0
        bar = last + 1
    return out
