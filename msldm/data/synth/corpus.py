"""Render the synthetic Slakh-like corpus: layout, splits, workers and progress.

Layout (docs/data.md): `<out>/{train,validation,test}/TrackNNNNN/{bass,drums,guitar,piano}.wav`,
`mixture.wav`, `all_src.mid`, `annotation.json`. WAVs are mono float32 (IEEE float WAV, soundfile subtype FLOAT)
and the mixture is the float32 sum of the stems in STEMS order, so it equals the stems' sum
exactly. Track `i` (0-based) is named `Track{i+1:05d}`, derives from (seed, i) only, and goes
to a split by `i % 10`: 0-7 train, 8 validation, 9 test.
"""

from __future__ import annotations

import json
import multiprocessing
import os
import shutil
import struct
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

import numpy as np

from ...config import STEMS
from .arrange import FULL_MOVES
from .comping import GUITAR_FAMILIES_INVERTED, PIANO_FAMILIES_RIGHT_HAND
from .compose import RELEASE_ALLOWANCE, Song, compose_song
from .heldout import compose_heldout
from .midi import CHANNELS, write_midi
from .render import check_drum_kit, check_soundfont, gate_inactive, render_notes
from .theory import CHANGES_PROGRESSIONS, SEVENTHS_PROGRESSIONS

SPLITS: tuple[str, ...] = ("train", "validation", "test")
PEAK_LIMIT = 0.95  # the mixture is scaled down (all stems alike) when it would peak above this


def compose_full(seed: int, index: int, seconds: float = 15.0) -> Song:
    """The "synth" composer with `arrange.FULL_MOVES`: every stem plays (nearly) throughout."""
    return compose_song(seed, index, seconds, FULL_MOVES)


def compose_changes(seed: int, index: int, seconds: float = 15.0) -> Song:
    """"synth-full" with a chord every half bar (`theory.CHANGES_PROGRESSIONS`): the training
    composer's styles, parts and triads at twice its usual harmonic rhythm."""
    return compose_song(seed, index, seconds, FULL_MOVES, CHANGES_PROGRESSIONS)


def compose_voicings(seed: int, index: int, seconds: float = 15.0) -> Song:
    """"synth-full" with the piano's right hand alone (no left-hand root octave) and the
    guitar's strums and arpeggios on first inversions: the same songs, but the lowest note of
    the pitched parts is often not the chord's root."""
    return compose_song(seed, index, seconds, FULL_MOVES,
                        registries={"guitar": GUITAR_FAMILIES_INVERTED, "piano": PIANO_FAMILIES_RIGHT_HAND})


VOICING_SALT = 0x766F  # seeds each track's voicing draw apart from its song's, which stays as it was


def compose_varied(seed: int, index: int, seconds: float = 15.0) -> Song:
    """"synth-full" with each track's voicings drawn: the piano with or without its left-hand
    root octave, the guitar's strums and arpeggios on root position or first inversions (each
    half the time, independently): training music in which the lowest note of the pitched parts
    is not always the root, so that a model reads the chord from the whole voicing. The draw
    comes from its own generator, so the songs are "synth-full"'s."""
    rng = np.random.default_rng([seed, index, VOICING_SALT])
    right_hand, inverted = bool(rng.random() < 0.5), bool(rng.random() < 0.5)
    registries = {"guitar": GUITAR_FAMILIES_INVERTED} if inverted else {}
    if right_hand:
        registries["piano"] = PIANO_FAMILIES_RIGHT_HAND
    return compose_song(seed, index, seconds, FULL_MOVES, registries=registries)


def compose_sevenths(seed: int, index: int, seconds: float = 15.0) -> Song:
    """"synth-full" on seventh chords (`theory.SEVENTHS_PROGRESSIONS`), a chord a bar."""
    return compose_song(seed, index, seconds, FULL_MOVES, SEVENTHS_PROGRESSIONS)


#: Registry of composers (name -> compose(seed, index, seconds) -> Song). "synth" writes the
#: training corpus; "synth-full" the same music with few drop-outs (denoiser training data);
#: "synth-changes" that music with a chord every half bar, "synth-sevenths" on seventh chords (two
#: probes of what the held-out composer's music asks of a model), "synth-voicings" it with no
#: root under the piano's and some guitars' chords (a third), "synth-varied" a training mix of both
#: voicings (drawn per track); "heldout" writes differently
#: composed music (see `heldout`) in the same layout.
COMPOSERS: dict[str, Callable[[int, int, float], Song]] = {
    "synth": compose_song, "synth-full": compose_full, "synth-changes": compose_changes,
    "synth-sevenths": compose_sevenths, "synth-voicings": compose_voicings, "synth-varied": compose_varied,
    "heldout": compose_heldout}


@dataclass(frozen=True)
class TrackResult:
    """One rendered track: where it went and how long it took."""

    index: int
    name: str
    split: str
    seconds: float
    render_seconds: float  # wall clock
    cpu_seconds: float     # CPU time of the rendering process


@dataclass
class CorpusSummary:
    """What `render_corpus` did: track counts per split, audio seconds, wall time, speed."""

    root: Path
    tracks: int
    splits: dict[str, int] = field(default_factory=dict)
    audio_seconds: float = 0.0
    wall_seconds: float = 0.0
    cpu_seconds: float = 0.0  # summed per-track CPU time over all workers
    kept: int = 0  # tracks found whole and kept (resume); audio and CPU seconds count only new ones

    @property
    def realtime_per_core(self) -> float:
        """Returns rendered audio seconds per CPU second (x real time on one core)."""
        return self.audio_seconds / max(self.cpu_seconds, 1e-9)


def split_of(index: int) -> str:
    """Returns the split of track `index` (0-based): 80/10/10 train/validation/test by index % 10."""
    rest = index % 10
    return "train" if rest < 8 else ("validation" if rest == 8 else "test")


def track_name(index: int) -> str:
    """Returns the folder name of track `index` (0-based), e.g. "Track00001"."""
    return f"Track{index + 1:05d}"


def write_float_wav(path: Path, audio: np.ndarray, sample_rate: int) -> None:
    """Writes mono float32 PCM WAV (IEEE float, with a `fact` chunk) to `path`, byte-deterministic.

    libsndfile adds a PEAK chunk with a wall-clock timestamp to float WAVs, so two identical
    renders would differ in bytes; this writer has no timestamp. soundfile reads it as FLOAT.
    """
    data = np.ascontiguousarray(audio, dtype="<f4").tobytes()
    fmt = struct.pack("<HHIIHHH", 3, 1, sample_rate, sample_rate * 4, 4, 32, 0)
    chunks = (b"fmt " + struct.pack("<I", len(fmt)) + fmt
              + b"fact" + struct.pack("<II", 4, len(audio))
              + b"data" + struct.pack("<I", len(data)))
    Path(path).write_bytes(b"RIFF" + struct.pack("<I", 4 + len(chunks) + len(data)) + b"WAVE" + chunks + data)


@dataclass(frozen=True)
class RenderPlan:
    """How a corpus is rendered: composer, soundfonts per split, and whether stems are augmented.

    Each stem of a training track draws its soundfont from `soundfonts`; validation and test
    tracks use `holdout` when it is given (a soundfont never heard in training), else they
    draw from `soundfonts` like training tracks. With `augment`, every stem goes through
    `augment.augment_stem` (effects and gain; its loudness policy). All draws come from
    `default_rng([seed, index, RENDER_STREAM])`, apart from the composition's own stream.
    `composer` names the entry of `COMPOSERS` that writes the music. The drums of training tracks
    draw from `soundfonts` and `drum_kits` together (soundfonts holding a drum kit alone, as
    Debian's avldrums); with no kits every draw is what it was before kits existed.
    """

    soundfonts: tuple[str, ...]
    holdout: str | None = None
    augment: bool = False
    composer: str = "synth"
    drum_kits: tuple[str, ...] = ()

    def fonts_for(self, split: str, stem: str | None = None) -> tuple[str, ...]:
        """The soundfonts the tracks of `split` draw from (for `stem`'s part, where given)."""
        if split != "train" and self.holdout:
            return (self.holdout,)
        return self.soundfonts + (self.drum_kits if stem == "drums" else ())


RENDER_STREAM = 7919
"""Third seed word of the rendering generator (soundfont and effect draws)."""


def render_song(song: Song, sample_rate: int, fonts: dict[str, Path],
                kits: frozenset[str] = frozenset()) -> tuple[dict[str, np.ndarray], dict[str, int]]:
    """Renders and gates every stem of `song`, stem `s` with soundfont `fonts[s]` (a drum kit
    alone where its path is in `kits`). Returns ({stem: float32 [N]}, {stem: program used})."""
    n_samples = int(round(song.duration * sample_rate))
    stems: dict[str, np.ndarray] = {}
    programs: dict[str, int] = {}
    for stem in STEMS:
        audio, programs[stem] = render_notes(song.notes[stem], song.programs[stem], CHANNELS[stem],
                                             n_samples, sample_rate, fonts[stem],
                                             kit=str(fonts[stem]) in kits)
        stems[stem] = gate_inactive(audio, song.active_bars[stem], song.bar_times(), song.duration,
                                    sample_rate, RELEASE_ALLOWANCE)
    return stems, programs


def mix(stems: dict[str, np.ndarray]) -> np.ndarray:
    """Returns the float32 sum of the stems, added in STEMS order (the exact mixture)."""
    total = stems[STEMS[0]].astype(np.float32).copy()
    for stem in STEMS[1:]:
        total += stems[stem].astype(np.float32)
    return total


def render_track(out: Path, index: int, seed: int, sample_rate: int, plan: RenderPlan,
                 seconds: float) -> TrackResult:
    """Composes, renders and writes track `index`. Returns its TrackResult."""
    start, cpu_start = time.perf_counter(), time.process_time()
    song = COMPOSERS[plan.composer](seed, index, seconds)
    split = split_of(index)
    rng = np.random.default_rng([seed, index, RENDER_STREAM])
    fonts = {}
    for stem in STEMS:
        choices = plan.fonts_for(split, stem)
        fonts[stem] = Path(choices[int(rng.integers(len(choices)))])
    stems, programs = render_song(song, sample_rate, fonts, frozenset(plan.drum_kits))
    render: dict[str, dict] = {stem: {"soundfont": fonts[stem].name} for stem in STEMS}
    if plan.augment:
        from .augment import augment_stem
        for stem in STEMS:
            stems[stem], record = augment_stem(stems[stem], stem, sample_rate, rng)
            render[stem].update(record)
    peak = float(np.max(np.abs(mix(stems)))) if stems else 0.0
    if peak > PEAK_LIMIT:
        scale = np.float32(PEAK_LIMIT / peak)
        stems = {k: v * scale for k, v in stems.items()}
    name = track_name(index)
    final = Path(out) / split / name
    folder = final.with_name(f".{name}.partial")  # renamed when whole: a killed run leaves no TrackNNNNN
    shutil.rmtree(folder, ignore_errors=True)   # half-written (loaders skip dot-folders)
    folder.mkdir(parents=True)
    for stem, audio in stems.items():
        write_float_wav(folder / f"{stem}.wav", audio, sample_rate)
    write_float_wav(folder / "mixture.wav", mix(stems), sample_rate)
    song.programs = programs
    write_midi(song, folder / "all_src.mid", programs)
    annotation = song.annotation(name, sample_rate)
    annotation.update({"seed": seed, "index": index, "composer": plan.composer, "render": render})
    (folder / "annotation.json").write_text(json.dumps(annotation, indent=1) + "\n")
    shutil.rmtree(final, ignore_errors=True)
    os.replace(folder, final)
    return TrackResult(index, name, split, seconds, time.perf_counter() - start,
                       time.process_time() - cpu_start)


TRACK_FILES: tuple[str, ...] = tuple(f"{stem}.wav" for stem in STEMS) + ("mixture.wav", "all_src.mid",
                                                                       "annotation.json")
"""The files `render_track` writes into every track folder."""


def already_rendered(out: Path, index: int, seed: int, sample_rate: int, plan: RenderPlan,
                     seconds: float) -> bool:
    """True when track `index` of `out` is whole and was rendered with these settings: every file
    present, and its annotation's seed, index, sample rate, duration, composer (where recorded)
    and soundfonts agree with the plan. Anything else is rendered again."""
    final = Path(out) / split_of(index) / track_name(index)
    if not all((final / name).is_file() for name in TRACK_FILES):
        return False
    try:
        note = json.loads((final / "annotation.json").read_text())
    except (OSError, ValueError):
        return False
    fonts = {s: {Path(f).name for f in plan.fonts_for(split_of(index), s)} for s in STEMS}
    render = note.get("render") or {}
    return (note.get("seed") == seed and note.get("index") == index
            and note.get("sample_rate") == sample_rate and note.get("duration") == float(seconds)
            and note.get("composer", plan.composer) == plan.composer
            and set(render) == set(STEMS) and all(render[s].get("soundfont") in fonts[s] for s in STEMS)
            and all(("gain_db" in render[s]) == plan.augment for s in STEMS))


def _render_job(job: tuple[str, int, int, int, RenderPlan, float]) -> TrackResult:
    """Pool entry point (module level, so it pickles under spawn)."""
    out, index, seed, sample_rate, plan, seconds = job
    return render_track(Path(out), index, seed, sample_rate, plan, seconds)


def _report(done: int, total: int, wall: float, audio: float, stream: object) -> None:
    """Prints one progress line: tracks done / total, tracks per second, x real time."""
    rate = done / max(wall, 1e-9)
    print(f"[synth] {done}/{total} tracks  {rate:.2f} tracks/s  {audio / max(wall, 1e-9):.1f}x real time",
          file=stream, flush=True)


def render_corpus(out: Path, tracks: int, seed: int, sample_rate: int = 22050,
                  soundfont: str | Path | None = None, workers: int = 1, seconds: float = 15.0,
                  progress: bool = True, soundfonts: tuple[str | Path, ...] = (),
                  holdout_soundfont: str | Path | None = None, augment: bool = False,
                  composer: str = "synth", resume: bool = False,
                  splits: tuple[str, ...] | None = None,
                  drum_kits: tuple[str | Path, ...] = ()) -> CorpusSummary:
    """Renders `tracks` tracks into `out` (layout in the module docstring). Returns a CorpusSummary.

    Training tracks draw each stem's soundfont from `soundfonts` (default: `soundfont` alone);
    validation and test tracks use `holdout_soundfont` when given (see `RenderPlan`). The drums
    of training tracks also draw from `drum_kits` (soundfonts holding a drum kit alone).
    `composer` picks the music from `COMPOSERS` ("synth", the training corpus, "synth-full",
    the same with every stem playing nearly throughout, or "heldout").
    Output depends on (composer, seed, track index, sample_rate, soundfonts, drum kits, seconds, augment)
    only, never on `workers`. Workers use the spawn start method. With `resume`, tracks that
    `already_rendered` finds whole are kept and counted in `summary.kept`, and only the others are
    rendered (a killed render continues where it stopped, with the same result). With `splits`,
    only tracks of those splits are rendered (each the same as in the whole corpus: the test split
    alone is enough to evaluate on).
    """
    if tracks < 0 or workers < 1 or seconds <= 0:
        raise ValueError("tracks >= 0, workers >= 1 and seconds > 0 required")
    if splits is not None and (not splits or not set(splits) <= set(SPLITS)):
        raise ValueError(f"splits must be a non-empty subset of {', '.join(SPLITS)}; got {splits}")
    if composer not in COMPOSERS:
        raise ValueError(f"unknown composer {composer!r}; known: {', '.join(sorted(COMPOSERS))}")
    fonts = tuple(str(check_soundfont(f)) for f in soundfonts) or (str(check_soundfont(soundfont)),)
    holdout = str(check_soundfont(holdout_soundfont)) if holdout_soundfont else None
    if holdout and holdout in fonts:
        raise ValueError(f"the held-out soundfont {holdout} is also a training soundfont")
    kits = tuple(str(check_drum_kit(f)) for f in drum_kits)
    if holdout and holdout in kits:
        raise ValueError(f"the held-out soundfont {holdout} is also a training drum kit")
    if set(kits) & set(fonts):
        raise ValueError(f"{', '.join(sorted(set(kits) & set(fonts)))} named both as a soundfont and as a drum kit")
    plan = RenderPlan(fonts, holdout, augment, composer, kits)
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    summary = CorpusSummary(out, tracks, {s: 0 for s in SPLITS})
    jobs = []
    for i in range(tracks):
        if splits is not None and split_of(i) not in splits:
            continue
        if resume and already_rendered(out, i, seed, sample_rate, plan, seconds):
            summary.kept += 1
            summary.splits[split_of(i)] += 1
        else:
            jobs.append((str(out), i, seed, sample_rate, plan, float(seconds)))
    summary.tracks = len(jobs) + summary.kept  # fewer than `tracks` when `splits` leaves some out
    start = time.perf_counter()
    todo = len(jobs)
    every = max(1, todo // 20)

    def account(result: TrackResult, done: int) -> None:
        summary.splits[result.split] += 1
        summary.audio_seconds += result.seconds
        summary.cpu_seconds += result.cpu_seconds
        if progress and (done % every == 0 or done == todo):
            _report(done, todo, time.perf_counter() - start, summary.audio_seconds, sys.stderr)

    if workers == 1:
        for done, job in enumerate(jobs, 1):
            account(_render_job(job), done)
    else:
        with multiprocessing.get_context("spawn").Pool(workers) as pool:
            for done, result in enumerate(pool.imap_unordered(_render_job, jobs), 1):
                account(result, done)
    summary.wall_seconds = time.perf_counter() - start
    return summary
