"""Put audio files on tracks of a saved Ardour 7 session by editing its `.ardour` XML.

Ardour's headless Lua interpreter cannot import audio (the import call lives in the GUI's
editor), so the adapter closes the session and adds, per file: a `<Source>`, a whole-file
`<Region>` (the region list), and a `<Region>` in the track's `<Playlist>` at the wanted
position; then raises the session's `id-counter` and its session range. Times in the XML
are superclock ticks (`a<ticks>`; 282240000 per second in Ardour 7, i.e. 5880 per sample
at 48 kHz; read from `<TempoMap superclocks-per-second>`); a region's `length` is
`a<length>@a<position>`.

Files are first copied into `interchange/<session>/audiofiles/` (what Ardour's own
import does with "copy files to session"), so the session stays self-contained. Ardour
loads a missing source file as silence without a word, so every copied file is checked.
"""

from __future__ import annotations

import shutil
import xml.etree.ElementTree as ET
from dataclasses import dataclass
from pathlib import Path

import soundfile as sf

from plugin_bridge import wavio

SUPERCLOCK_DEFAULT = 282_240_000
"""Ardour 7's superclock ticks per second (used when the session does not say)."""


class SessionEditError(RuntimeError):
    """The session XML or a file to place on a track is not usable."""


@dataclass(frozen=True)
class Placement:
    """Put `path` on the track named `track` at sample `position` (session rate)."""

    track: str
    path: Path
    position: int


@dataclass(frozen=True)
class PlacedRegion:
    track: str
    region_name: str
    source_path: Path
    position: int
    length: int


def session_file(session_dir: str | Path, name: str) -> Path:
    """`<session_dir>/<name>.ardour`."""
    return Path(session_dir) / f"{name}.ardour"


def audiofiles_dir(session_dir: str | Path, name: str) -> Path:
    """Where Ardour keeps a session's audio: `interchange/<name>/audiofiles`."""
    return Path(session_dir) / "interchange" / name / "audiofiles"


class ArdourSession:
    """A parsed `.ardour` file that can take new regions and be saved back atomically."""

    def __init__(self, path: str | Path) -> None:
        self.path = Path(path)
        self.tree = ET.parse(self.path)
        self.root = self.tree.getroot()
        if self.root.tag != "Session":
            raise SessionEditError(f"{self.path} is not an Ardour session file")
        self.name = self.root.get("name", self.path.stem)
        self.sample_rate = int(self.root.get("sample-rate", "0"))
        tempo_map = self.root.find("TempoMap")
        sc = tempo_map.get("superclocks-per-second") if tempo_map is not None else None
        self.superclock = int(sc) if sc else SUPERCLOCK_DEFAULT
        self._next_id = int(self.root.get("id-counter", "1"))

    # -- small helpers ------------------------------------------------------------

    def ticks(self, samples: int) -> int:
        """Samples at the session rate -> superclock ticks."""
        return samples * self.superclock // self.sample_rate

    def new_id(self) -> str:
        self._next_id += 1
        return str(self._next_id)

    def _section(self, tag: str) -> ET.Element:
        el = self.root.find(tag)
        if el is None:
            el = ET.SubElement(self.root, tag)
        return el

    def playlist_of(self, track: str) -> ET.Element:
        """The `<Playlist>` of the audio track named `track`."""
        routes = [r for r in self.root.iter("Route") if r.get("name") == track]
        if len(routes) != 1:
            raise SessionEditError(f"expected one track named {track!r}, found {len(routes)}")
        pid = routes[0].get("audio-playlist")
        for pl in self._section("Playlists").iter("Playlist"):
            if pl.get("id") == pid:
                return pl
        raise SessionEditError(f"track {track!r} has no audio playlist (id {pid!r}) in {self.path}")

    # -- editing -------------------------------------------------------------------

    def _region(self, name: str, source_id: str, length: int, position: int, whole_file: bool) -> ET.Element:
        return ET.Element("Region", {
            "name": name, "muted": "0", "opaque": "1", "locked": "0", "video-locked": "0",
            "automatic": "0", "whole-file": "1" if whole_file else "0", "import": "0",
            "external": "0", "sync-marked": "0", "left-of-split": "0", "right-of-split": "0",
            "hidden": "0", "position-locked": "0", "valid-transients": "0",
            "start": "a0", "length": f"a{self.ticks(length)}@a{self.ticks(position)}",
            "sync-position": "a0", "ancestral-start": "a0", "ancestral-length": "a0@a0",
            "stretch": "1", "shift": "1", "layering-index": "0", "tags": "", "contents": "0",
            "envelope-active": "0", "default-fade-in": "0", "default-fade-out": "0",
            "fade-in-active": "1", "fade-out-active": "1", "scale-amplitude": "1",
            "id": self.new_id(), "type": "audio", "first-edit": "nothing",
            "source-0": source_id, "master-source-0": source_id, "channels": "1"})

    def add_region(self, track: str, audio_path: Path, position: int) -> PlacedRegion:
        """Place the mono file `audio_path` (already inside the session's audiofiles folder,
        at the session rate) on `track` at sample `position`."""
        info = sf.info(str(audio_path))
        if info.samplerate != self.sample_rate:
            raise SessionEditError(f"{audio_path} is {info.samplerate} Hz, the session {self.sample_rate} Hz")
        if info.channels != 1:
            raise SessionEditError(f"{audio_path} has {info.channels} channels; one mono file per track")
        playlist = self.playlist_of(track)
        source_id = self.new_id()
        ET.SubElement(self._section("Sources"), "Source", {
            "name": audio_path.name, "take-id": "", "type": "audio", "flags": "", "id": source_id,
            "channel": "0", "origin": "", "gain": "1"})
        name = audio_path.stem
        self._section("Regions").append(self._region(name, source_id, info.frames, 0, True))
        playlist.append(self._region(f"{name}.1", source_id, info.frames, position, False))
        self._extend_session_range(position + info.frames)
        return PlacedRegion(track, f"{name}.1", audio_path, position, info.frames)

    def _extend_session_range(self, end_sample: int) -> None:
        locations = self._section("Locations")
        for loc in locations.iter("Location"):
            if "IsSessionRange" in loc.get("flags", ""):
                cur_end = int(loc.get("end", "a0").lstrip("a") or 0)
                loc.set("end", f"a{max(cur_end, self.ticks(end_sample))}")
                return
        ET.SubElement(locations, "Location", {
            "id": self.new_id(), "name": "session", "start": "a0", "end": f"a{self.ticks(end_sample)}",
            "flags": "IsSessionRange", "locked": "0", "timestamp": "0", "cue": "0"})

    def save(self) -> Path:
        """Write the edited XML back (atomically; the previous file is kept as `.msldm-bak`)."""
        self.root.set("id-counter", str(self._next_id + 1))
        shutil.copy2(self.path, self.path.with_name(self.path.name + ".msldm-bak"))
        wavio.atomic_write(self.path, lambda f: self.tree.write(f, encoding="UTF-8", xml_declaration=True))
        return self.path


def copy_into_session(session_dir: str | Path, name: str, src: str | Path) -> Path:
    """Copy `src` into the session's audiofiles folder under a name not yet taken, check
    the copy is a readable audio file, and return its path."""
    folder = audiofiles_dir(session_dir, name)
    folder.mkdir(parents=True, exist_ok=True)
    src_p = Path(src)
    if not src_p.is_file():
        raise SessionEditError(f"generated file {src_p} does not exist")
    dst, n = folder / src_p.name, 1
    while dst.exists():
        dst, n = folder / f"{src_p.stem}-{n}{src_p.suffix}", n + 1
    wavio.atomic_write(dst, lambda f: f.write(src_p.read_bytes()))
    if sf.info(str(dst)).frames != sf.info(str(src_p)).frames:
        raise SessionEditError(f"copy of {src_p} into {folder} is incomplete")
    return dst


def place_files(session_dir: str | Path, name: str, placements: list[Placement]) -> list[PlacedRegion]:
    """Copy each file into the (closed) session and put it on its track; saves the session.

    Returns what was placed. Raises SessionEditError before writing anything if a track
    or a file is missing."""
    session = ArdourSession(session_file(session_dir, name))
    for p in placements:
        session.playlist_of(p.track)  # fail early on unknown tracks
        if not Path(p.path).is_file():
            raise SessionEditError(f"generated file {p.path} does not exist")
    placed = [session.add_region(p.track, copy_into_session(session_dir, name, p.path), p.position)
              for p in placements]
    session.save()
    for r in placed:
        if not r.source_path.is_file():
            raise SessionEditError(f"source {r.source_path} vanished after saving the session")
    return placed
