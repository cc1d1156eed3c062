"""Write a composed song as a type-1 multi-track MIDI file (mido): one track per instrument."""

from __future__ import annotations

from pathlib import Path

import mido

from ...config import STEMS
from .compose import Song, TimedNote

TICKS_PER_BEAT = 480
#: Stem -> MIDI channel (0-based; 9 is the GM percussion channel 10).
CHANNELS: dict[str, int] = {"bass": 0, "guitar": 1, "piano": 2, "drums": 9}


def _note_messages(notes: list[TimedNote], channel: int, ticks_per_second: float) -> list[mido.Message]:
    """Returns the notes as delta-timed note_on/note_off messages (offs before ons on a tick)."""
    events: list[tuple[int, int, int, int]] = []  # (tick, is_on, pitch, velocity)
    for note in notes:
        on = round(note.start * ticks_per_second)
        off = max(on + 1, round(note.end * ticks_per_second))
        events += [(on, 1, note.pitch, note.vel), (off, 0, note.pitch, 0)]
    events.sort()
    messages, last = [], 0
    for tick, is_on, pitch, vel in events:
        kind = "note_on" if is_on else "note_off"
        messages.append(mido.Message(kind, channel=channel, note=pitch, velocity=vel, time=tick - last))
        last = tick
    return messages


def song_to_midi(song: Song, programs: dict[str, int] | None = None) -> mido.MidiFile:
    """Returns the song as a MidiFile: a conductor track, then one track per stem.

    Timing uses the rounded MIDI tempo, so ticks reproduce the rendered seconds to < 1 tick.
    The time signature is `song.meter`; the MIDI tempo is in quarter notes (`song.tempo`
    counts beats of 1/meter[1], e.g. eighth notes in 6/8).
    """
    programs = programs or song.programs
    numerator, denominator = song.meter
    tempo_us = mido.bpm2tempo(song.tempo * 4 / denominator)  # MIDI tempo counts quarter notes
    ticks_per_second = TICKS_PER_BEAT * 1e6 / tempo_us
    midi = mido.MidiFile(type=1, ticks_per_beat=TICKS_PER_BEAT)
    conductor = mido.MidiTrack([
        mido.MetaMessage("track_name", name=f"Track{song.index + 1:05d}", time=0),
        mido.MetaMessage("set_tempo", tempo=tempo_us, time=0),
        mido.MetaMessage("time_signature", numerator=numerator, denominator=denominator, time=0),
        mido.MetaMessage("key_signature", key=song.key.midi_name, time=0),
        mido.MetaMessage("end_of_track", time=0),
    ])
    midi.tracks.append(conductor)
    for stem in STEMS:
        channel = CHANNELS[stem]
        track = mido.MidiTrack([
            mido.MetaMessage("track_name", name=stem, time=0),
            mido.Message("program_change", channel=channel, program=programs[stem], time=0),
        ])
        track += _note_messages(song.notes[stem], channel, ticks_per_second)
        track.append(mido.MetaMessage("end_of_track", time=0))
        midi.tracks.append(track)
    return midi


def write_midi(song: Song, path: Path, programs: dict[str, int] | None = None) -> None:
    """Writes `all_src.mid` style MIDI for `song` to `path`."""
    song_to_midi(song, programs).save(str(path))
