"""The REAPER adapter's logic, written against a small part of the ReaScript Python API.

`generate(api, settings)` renders the time selection of the selected tracks (REAPER's
own renderer: "stems only", bounds = time selection, WAV), runs `msldm-bridge generate`
on them, and inserts each generated stem on a new track below the selection, at the
selection's start, in one undo step. With several takes, each stem's item holds them as
REAPER takes (named `<region>.seed<seed>.<stem>`, the file's name; the daemon's best-ranked
take first and active), so switching takes
auditions them; every take has its own files, so a later run never overwrites one. `api` is anything with REAPER's `RPR_*` functions
as attributes (inside REAPER: the `reaper_python` module); tests pass a fake. This module
imports only the standard library, so it runs in REAPER's embedded Python without numpy.

ReaScript's Python calling convention: a function with output parameters returns a tuple
of (return value, *all parameters) — or only the parameters when it returns void (e.g.
`RPR_GetSet_LoopTimeRange(False, False, 0.0, 0.0, False)` -> `(isSet, isLoop, start,
end, allowautoseek)`).
"""

from __future__ import annotations

import os
import re
import shlex
import subprocess
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any, Callable, Optional

SECTION = "MSLDM"
STEMS = ("bass", "drums", "guitar", "piano")
CMD_RENDER_AUTOCLOSE = 42230  # File: Render project, using the most recent render settings, auto-close dialog
RENDER_STEMS_ONLY = 2          # RENDER_SETTINGS &2: selected tracks (stems)
RENDER_BOUNDS_TIME_SEL = 2     # RENDER_BOUNDSFLAG 2: time selection
INSERT_AT_TRACK_INDEX = 512    # InsertMedia mode &512: high word is the absolute track index
RENDER_NUM_KEYS = ("RENDER_SETTINGS", "RENDER_BOUNDSFLAG", "RENDER_CHANNELS", "RENDER_SRATE", "RENDER_ADDTOPROJ")
RENDER_STR_KEYS = ("RENDER_FILE", "RENDER_PATTERN", "RENDER_FORMAT")
RENDER_PATTERN = "msldm-given-$tracknumber"
STEM_WORDS = {"drums": ("drum", "kit", "perc", "kick", "snare", "beat"), "bass": ("bass",),
              "guitar": ("guitar", "gtr"), "piano": ("piano", "keys", "rhodes", "organ", "synth", "pad")}


class UserError(Exception):
    """Something the user can fix (shown in a message box)."""


@dataclass(frozen=True)
class Settings:
    """What to generate and how. `bridge`: the command that runs msldm-bridge."""

    generate: tuple[str, ...] = ()  # empty: every stem not selected
    server: str = "tcp://127.0.0.1:5555"
    bridge: tuple[str, ...] = ("msldm-bridge",)
    steps: Optional[int] = None
    seed: Optional[int] = None
    bit_depth: str = "24"
    takes: int = 1
    length: str = "region"  # "bars": the stems end on a bar line
    candidates: Optional[int] = None  # given bass and drums alone: candidates per window (None: the model's)
    guidance: Optional[float] = None  # how closely the generated stems follow the given ones' timing (None: the model's)


@dataclass(frozen=True)
class SelectedTrack:
    track: Any
    index: int  # 0-based position in the project
    name: str
    stem: str


@dataclass(frozen=True)
class Selection:
    start: float
    end: float
    tracks: tuple[SelectedTrack, ...]


def stem_for_track(name: str) -> Optional[str]:
    """The stem a track's name suggests ("Drum Bus" -> drums, "Keys L" -> piano), else None."""
    low = name.lower()
    if low in STEMS:
        return low
    for stem, words in STEM_WORDS.items():
        if any(w in low for w in words):
            return stem
    return None


class Reaper:
    """The few REAPER calls the adapter makes, with ReaScript's tuple returns unpacked."""

    def __init__(self, api: Any) -> None:
        self.api = api

    def time_selection(self) -> tuple[float, float]:
        _, _, start, end, _ = self.api.RPR_GetSet_LoopTimeRange(False, False, 0.0, 0.0, False)
        return float(start), float(end)

    def set_time_selection(self, start: float, end: float) -> None:
        self.api.RPR_GetSet_LoopTimeRange(True, False, start, end, False)

    def track_name(self, track: Any) -> str:
        return self.api.RPR_GetSetMediaTrackInfo_String(track, "P_NAME", "", False)[3]

    def selected_tracks(self) -> list[tuple[Any, int, str]]:
        """[(track, 0-based index, name)] of the selected tracks, in project order."""
        out = []
        for i in range(self.api.RPR_CountSelectedTracks(0)):
            tr = self.api.RPR_GetSelectedTrack(0, i)
            number = int(self.api.RPR_GetMediaTrackInfo_Value(tr, "IP_TRACKNUMBER"))
            out.append((tr, number - 1, self.track_name(tr)))
        return sorted(out, key=lambda t: t[1])

    def info(self, key: str) -> float:
        return float(self.api.RPR_GetSetProjectInfo(0, key, 0.0, False))

    def set_info(self, key: str, value: float) -> None:
        self.api.RPR_GetSetProjectInfo(0, key, value, True)

    def info_str(self, key: str) -> str:
        return self.api.RPR_GetSetProjectInfo_String(0, key, "", False)[3]

    def set_info_str(self, key: str, value: str) -> None:
        self.api.RPR_GetSetProjectInfo_String(0, key, value, True)

    def context_at(self, t: float) -> dict[str, Any]:
        """{tempo, meter [num, den], start_bar (1-based)} at time `t`. REAPER's tempo counts
        quarter notes per minute; the daemon's counts beats of the meter's unit (6/8 at 60
        quarter notes a minute is 120 eighth notes a minute), so it is converted here."""
        _, _, num, den, tempo = self.api.RPR_TimeMap_GetTimeSigAtTime(0, t, 0, 0, 0.0)
        measures = self.api.RPR_TimeMap2_timeToBeats(0, t, 0, 0, 0.0, 0)[3]
        return {"tempo": float(tempo) * int(den) / 4.0, "meter": [int(num), int(den)],
                "start_bar": int(measures) + 1}

    def project_dir(self) -> Path:
        return Path(self.api.RPR_GetProjectPath("", 4096)[0])

    def message(self, text: str) -> None:
        self.api.RPR_ShowMessageBox(text, "MSLDM", 0)


def read_selection(rp: Reaper) -> Selection:
    """The time selection and the selected tracks with their stems; UserError if unusable."""
    start, end = rp.time_selection()
    if end - start <= 1e-3:
        raise UserError("Make a time selection first: it is the region to accompany.")
    tracks = []
    for tr, index, name in rp.selected_tracks():
        stem = stem_for_track(name)
        if stem is None:
            raise UserError(f"Track '{name}': cannot tell its instrument. Put one of "
                            f"{', '.join(STEMS)} (or drum/keys/gtr...) in its name.")
        tracks.append(SelectedTrack(tr, index, name, stem))
    if not tracks:
        raise UserError("Select the tracks to accompany (drums, keys, ...) first.")
    if len({t.stem for t in tracks}) != len(tracks):
        raise UserError("Two selected tracks map to the same instrument; select one per instrument.")
    return Selection(start, end, tuple(tracks))


def _number_in(path: str) -> Optional[int]:
    m = re.search(r"msldm-given-0*(\d+)", os.path.basename(path))
    return int(m.group(1)) if m else None


def render_given(rp: Reaper, sel: Selection, folder: Path) -> dict[str, Path]:
    """Render each selected track over the time selection to `folder` (REAPER's renderer,
    previous render settings restored afterwards). Returns `{stem: wav path}`."""
    saved_num = {k: rp.info(k) for k in RENDER_NUM_KEYS}
    saved_str = {k: rp.info_str(k) for k in RENDER_STR_KEYS}
    folder.mkdir(parents=True, exist_ok=True)
    try:
        for key, value in (("RENDER_SETTINGS", RENDER_STEMS_ONLY), ("RENDER_BOUNDSFLAG", RENDER_BOUNDS_TIME_SEL),
                           ("RENDER_CHANNELS", 2), ("RENDER_SRATE", 0), ("RENDER_ADDTOPROJ", 0)):
            rp.set_info(key, value)
        for key, text in (("RENDER_FILE", str(folder)), ("RENDER_PATTERN", RENDER_PATTERN), ("RENDER_FORMAT", "evaw")):
            rp.set_info_str(key, text)
        targets = [t for t in rp.info_str("RENDER_TARGETS").split(";") if t]
        rp.api.RPR_Main_OnCommand(CMD_RENDER_AUTOCLOSE, 0)
    finally:
        for k, v in saved_num.items():
            rp.set_info(k, v)
        for k, s in saved_str.items():
            rp.set_info_str(k, s)
    by_number = {_number_in(t): Path(t) for t in targets}
    out = {}
    for t in sel.tracks:
        path = by_number.get(t.index + 1)
        if path is None or not path.is_file():
            raise UserError(f"REAPER did not render track '{t.name}' (expected in {folder}).")
        out[t.stem] = path
    return out


def bridge_command(settings: Settings, given: dict[str, Path], generate: tuple[str, ...], out_dir: Path,
                   region: str, context: dict[str, Any], sample_rate: Optional[int]) -> list[str]:
    """The `msldm-bridge generate` command line for one region."""
    cmd = [*settings.bridge, "--server", settings.server, "generate"]
    for stem, path in given.items():
        cmd += ["--given", f"{stem}={path}"]
    cmd += ["--generate", ",".join(generate), "--out", str(out_dir), "--region", region, "--bit-depth", settings.bit_depth,
            "--tempo", f"{context['tempo']:g}", "--meter", "{}/{}".format(*context["meter"]),
            "--start-bar", str(context["start_bar"]), "--quiet"]
    for flag, value in (("--steps", settings.steps), ("--seed", settings.seed),
                        ("--candidates", settings.candidates), ("--guidance", settings.guidance),
                        ("--output-sample-rate", sample_rate)):
        if value is not None:
            cmd += [flag, str(value)]
    if settings.takes != 1:
        cmd += ["--takes", str(settings.takes)]
    if settings.length != "region":
        cmd += ["--length", settings.length]
    return cmd


def run_bridge(cmd: list[str], runner: Callable[..., Any] = subprocess.run) -> list[dict[str, Path]]:
    """Run the bridge; returns one `{stem: path}` per take from its output lines (a take's
    `stem<TAB>path` lines, then its `sidecar<TAB>path`), in the bridge's order: the daemon's
    best-ranked take first when it ranked several."""
    r = runner(cmd, capture_output=True, text=True)
    if r.returncode != 0:
        raise UserError("msldm-bridge failed:\n" + (r.stderr or r.stdout).strip()[-1500:])
    takes: list[dict[str, Path]] = [{}]
    for line in r.stdout.splitlines():
        stem, sep, path = line.partition("\t")
        if sep and stem == "sidecar":
            takes.append({})
        elif sep:
            takes[-1][stem] = Path(path)
    return [t for t in takes if t]


def insert_stems(rp: Reaper, sel: Selection, takes: list[dict[str, Path]]) -> list[Any]:
    """New tracks "MSLDM <stem>" right below the last selected track, each holding one item
    at the selection's start whose takes are the stem's takes, named after their files.
    Returns the new tracks."""
    api, new = rp.api, []
    index = max(t.index for t in sel.tracks) + 1
    for stem in takes[0]:
        paths = [t[stem] for t in takes]
        for path in paths:
            if not path.is_file():
                raise UserError(f"msldm-bridge reported {path}, but it does not exist.")
        api.RPR_InsertTrackAtIndex(index, True)
        track = api.RPR_GetTrack(0, index)
        api.RPR_GetSetMediaTrackInfo_String(track, "P_NAME", f"MSLDM {stem}", True)
        api.RPR_SetEditCurPos(sel.start, False, False)
        api.RPR_InsertMedia(str(paths[0]), INSERT_AT_TRACK_INDEX | (index << 16))
        item = api.RPR_GetTrackMediaItem(track, 0)
        for path in paths[1:]:
            take = api.RPR_AddTakeToMediaItem(item)
            api.RPR_SetMediaItemTake_Source(take, api.RPR_PCM_Source_CreateFromFile(str(path)))
        for k, path in enumerate(paths):
            api.RPR_GetSetMediaItemTakeInfo_String(api.RPR_GetTake(item, k), "P_NAME", path.stem, True)
        api.RPR_SetActiveTake(api.RPR_GetTake(item, 0))  # the first (best-ranked) take plays; T cycles the rest
        api.RPR_UpdateItemInProject(item)
        new.append(track)
        index += 1
    return new


def generate(api: Any, settings: Settings, runner: Callable[..., Any] = subprocess.run) -> list[dict[str, Path]]:
    """The whole action (see module doc); one undo step. Returns `[{stem: inserted file}]`,
    one per take."""
    rp = Reaper(api)
    sel = read_selection(rp)
    stems_to_generate = settings.generate or tuple(s for s in STEMS if s not in {t.stem for t in sel.tracks})
    work = rp.project_dir() / "msldm"
    cursor = api.RPR_GetCursorPosition()
    region = f"msldm-{sel.start:.3f}s".replace(".", "_")
    given = render_given(rp, sel, work / "given")
    rate = int(rp.info("PROJECT_SRATE")) if rp.info("PROJECT_SRATE_USE") else None
    cmd = bridge_command(settings, given, stems_to_generate, work, region, rp.context_at(sel.start), rate)
    stems = run_bridge(cmd, runner)
    api.RPR_Undo_BeginBlock()
    try:
        insert_stems(rp, sel, stems)
    finally:
        rp.set_time_selection(sel.start, sel.end)
        api.RPR_SetEditCurPos(cursor, False, False)
        api.RPR_Undo_EndBlock("MSLDM: generate " + ", ".join(stems_to_generate), -1)
        api.RPR_UpdateArrange()
    return stems


DIALOG_FIELDS = ("Stems (blank: all missing)", "Steps (blank: model)", "Seed (blank: random)",
                 "Takes (blank: 1)", "End on a bar line (y/n)")


def settings_from_user(api: Any) -> Optional[Settings]:
    """Ask for stems / steps / seed / takes / bar length (defaults remembered in REAPER's
    ExtState, section "MSLDM"; keys `generate`, `steps`, `seed`, `takes`, `bars`, `server`,
    `bridge`, `candidates`, `guidance` (the last four set outside the dialog; a `make` remembered
    by an earlier version stands in for `generate`). None if
    cancelled. REAPER separates the answers with commas, so stems are separated by spaces or
    "/"."""
    def ext(key: str, default: str) -> str:
        return api.RPR_GetExtState(SECTION, key) or default

    keys = ("generate", "steps", "seed", "takes", "bars")
    defaults = ",".join([ext("generate", ext("make", "")), ext("steps", ""), ext("seed", ""), ext("takes", ""),
                         ext("bars", "")])
    r = api.RPR_GetUserInputs("MSLDM: generate accompaniment", len(DIALOG_FIELDS), ",".join(DIALOG_FIELDS),
                              defaults, 512)
    if not r[0]:
        return None
    answers = (r[4].split(",") + [""] * len(keys))[:len(keys)]
    stems, steps, seed, takes, bars = answers
    for key, value in (*zip(keys, answers), ("make", "")):
        api.RPR_SetExtState(SECTION, key, value, True)  # "make" emptied: a blank answer stays blank
    if bars.strip().lower() not in ("", "y", "yes", "n", "no"):
        raise UserError("End on a bar line: answer y or n.")
    try:
        settings = Settings(generate=tuple(s for s in re.split(r"[\s/;+]+", stems.lower()) if s),
                            server=ext("server", Settings.server),
                            bridge=tuple(shlex.split(ext("bridge", "msldm-bridge"))),
                            steps=int(steps) if steps.strip() else None, seed=int(seed) if seed.strip() else None,
                            takes=int(takes) if takes.strip() else 1,
                            length="bars" if bars.strip().lower() in ("y", "yes") else "region",
                            candidates=int(ext("candidates", "0")) or None)
    except ValueError:
        raise UserError("Steps, seed, takes and the ExtState candidates must be whole numbers.") from None
    guidance = ext("guidance", "").strip()
    if guidance:
        try:
            settings = replace(settings, guidance=float(guidance))
        except ValueError:
            raise UserError(f"The ExtState guidance must be a number (blank: the model's), not {guidance!r}.") from None
    if not 1 <= settings.takes <= 8:
        raise UserError("Takes: 1 to 8.")
    return settings


def main(api: Any) -> None:
    """Entry point of the ReaScript: ask, run, and report problems in a message box."""
    try:
        settings = settings_from_user(api)
        if settings is not None:
            generate(api, settings)
    except UserError as e:
        Reaper(api).message(str(e))
