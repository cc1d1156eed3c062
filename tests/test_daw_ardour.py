"""The Ardour adapter end to end, headless: a real Ardour 7 session, a live daemon with the
tiny bundle, `msldm_generate.lua` run by `ardour7-lua`, and the saved session reloaded by
Ardour to read the new tracks' regions back (position, length, source file, and a
non-zero peak read by Ardour itself, so the source is not the silent stand-in Ardour
uses for missing files)."""

from __future__ import annotations

import json
import os
import shutil
import socket
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf

from plugin_bridge.adapters.ardour import LUA_SCRIPT
from plugin_bridge.adapters.ardour.render import RegionRef, render_track
from plugin_bridge.adapters.ardour.session_xml import ArdourSession, SessionEditError, place_files, Placement
from server_fixtures import tiny_bundle  # noqa: F401  (fixture)
from test_bridge_client import live_daemon  # noqa: F401  (fixture)

ROOT = Path(__file__).resolve().parents[1]
ARDOUR = shutil.which("ardour7-lua")
needs_ardour = pytest.mark.skipif(ARDOUR is None, reason="ardour7-lua not installed (apt-get install ardour): "
                                  "the headless Ardour test cannot run")
SR = 48000

CREATE_LUA = """
AudioEngine:set_backend("None (Dummy)", "", "")
local s = create_session(arg[1], arg[2], %d)
if not s then os.exit(1) end
for i = 3, #arg do
  s:new_audio_track(1, 2, nil, 1, arg[i], ARDOUR.PresentationInfo.max_order, ARDOUR.TrackMode.Normal, true)
end
s:save_state("", false, false, false, false, false)
close_session()
""" % SR

READ_LUA = """
AudioEngine:set_backend("None (Dummy)", "", "")
local s = load_session(arg[1], arg[2])
if not s then os.exit(1) end
for t in s:get_tracks():iter() do
  for r in t:to_track():playlist():region_list():iter() do
    print(string.format("REGION\\t%s\\t%d\\t%d\\t%d\\t%.6f\\t%s", t:name(), r:position():samples(),
      r:length():samples(), r:start():samples(), r:to_audioregion():maximum_amplitude(nil),
      r:source(0):to_filesource():path()))
  end
end
close_session()
"""


def _ardour(tmp: Path, script: str | Path, *args: str, timeout: float = 60) -> subprocess.CompletedProcess:
    """Run `ardour7-lua` on a script file (Path) or on Lua source text (str)."""
    if not isinstance(script, Path):
        lua = tmp / f"script{len(list(tmp.glob('script*.lua')))}.lua"
        lua.write_text(script)
        script = lua
    env = dict(os.environ, XDG_CONFIG_HOME=str(tmp / "xdg"), PYTHONPATH=str(ROOT))
    return subprocess.run(["timeout", str(int(timeout)), str(ARDOUR), str(script), *args], cwd=tmp, env=env,
                          capture_output=True, text=True)


def _regions(tmp: Path, session_dir: Path, name: str) -> dict[str, list[tuple]]:
    r = _ardour(tmp, READ_LUA, str(session_dir), name)
    assert r.returncode == 0, r.stdout + r.stderr
    out: dict[str, list[tuple]] = {}
    for line in r.stdout.splitlines():
        if line.startswith("REGION\t"):
            _, track, pos, length, start, peak, path = line.split("\t")
            out.setdefault(track, []).append((int(pos), int(length), int(start), float(peak), Path(path)))
    return out


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _tone(path: Path, freq: float, seconds: float) -> np.ndarray:
    t = np.arange(int(seconds * SR)) / SR
    x = (0.3 * np.sin(2 * np.pi * freq * t)).astype(np.float32)
    sf.write(str(path), x, SR, subtype="FLOAT")
    return x


@pytest.fixture(scope="module")
def base_session(tmp_path_factory) -> tuple[Path, dict[str, np.ndarray]]:
    """Built once: a saved session with tracks Drums and Keys holding 3 s tones from sample 24000."""
    tmp = tmp_path_factory.mktemp("ardour")
    sdir = tmp / "song"
    r = _ardour(tmp, CREATE_LUA, str(sdir), "song", "Drums", "Keys")
    assert r.returncode == 0 and (sdir / "song.ardour").is_file(), r.stdout + r.stderr
    tones = {"Drums": _tone(tmp / "drums.wav", 110, 3.0), "Keys": _tone(tmp / "keys.wav", 330, 3.0)}
    place_files(sdir, "song", [Placement("Drums", tmp / "drums.wav", 24000),
                               Placement("Keys", tmp / "keys.wav", 24000)])
    return sdir, tones


@pytest.fixture()
def session(tmp_path, base_session) -> tuple[Path, str, dict[str, np.ndarray]]:
    """A private copy of the base session (Ardour sessions are relocatable folders)."""
    sdir = tmp_path / "song"
    shutil.copytree(base_session[0], sdir)
    return sdir, "song", base_session[1]


@needs_ardour
@pytest.mark.slow
def test_generate_script_adds_tracks_at_range_start(tmp_path, session, live_daemon):  # noqa: F811
    sdir, name, tones = session
    start, end = 48000, 120000
    r = _ardour(tmp_path, LUA_SCRIPT, str(sdir), name, "given=Drums:drums,Keys:piano",
                "generate=bass,guitar", f"start={start}", f"end={end}", f"server={live_daemon.endpoint}", "seed=3",
                f"bridge={sys.executable} -m plugin_bridge.cli", f"python={sys.executable}", "region=take1",
                timeout=120)
    assert r.returncode == 0, r.stdout + r.stderr
    assert " --generate 'bass,guitar' " in r.stdout and f" --output-sample-rate {SR} " in r.stdout
    # the given stem the model saw is the track over the range, read from its source file
    given, _ = sf.read(str(sdir / "msldm" / "given.drums.wav"), dtype="float32")
    np.testing.assert_array_equal(given, tones["Drums"][start - 24000:end - 24000])
    regions = _regions(tmp_path, sdir, name)
    assert sorted(regions) == ["Drums", "Keys", "MSLDM bass seed3", "MSLDM guitar seed3"]
    d_pos, d_len, d_off, d_peak, d_path = regions["Drums"][0]
    assert (d_pos, d_len, d_off) == (24000, 3 * SR, 0)  # the given tracks are untouched
    assert d_path.is_file() and d_path.parent == sdir / "interchange" / "song" / "audiofiles"
    assert d_peak == pytest.approx(0.3, abs=1e-3)  # Ardour reads the files placed by XML editing
    for stem in ("bass", "guitar"):
        [(pos, length, offset, peak, path)] = regions[f"MSLDM {stem} seed3"]
        assert (pos, length, offset) == (start, end - start, 0)
        assert path.is_file() and path.name == f"take1.seed3.{stem}.wav"
        assert sf.info(str(path)).samplerate == SR and sf.info(str(path)).frames == end - start
        assert peak > 1e-3  # not the silence Ardour substitutes for a missing file
    assert (sdir / "msldm" / "take1.seed3.msldm.json").is_file()


def _generate(tmp_path: Path, sdir: Path, name: str, endpoint: str, *args: str) -> subprocess.CompletedProcess:
    r = _ardour(tmp_path, LUA_SCRIPT, str(sdir), name, "given=Drums:drums,Keys:piano", "start=48000",
                "end=120000", f"server={endpoint}", f"bridge={sys.executable} -m plugin_bridge.cli",
                f"python={sys.executable}", *args, timeout=120)
    assert r.returncode == 0, r.stdout + r.stderr
    return r


@needs_ardour
@pytest.mark.slow
def test_two_takes_over_the_same_selection_both_stay_in_the_session(tmp_path, session, live_daemon):  # noqa: F811
    # one run with two takes, then another run over the same range: three takes, none lost
    sdir, name, _ = session
    _generate(tmp_path, sdir, name, live_daemon.endpoint, "generate=bass", "seed=5", "takes=2")
    _generate(tmp_path, sdir, name, live_daemon.endpoint, "generate=bass", "seed=9")
    regions = _regions(tmp_path, sdir, name)
    takes = {f"MSLDM bass seed{s}": s for s in (5, 6, 9)}
    assert sorted(regions) == sorted(["Drums", "Keys", *takes])
    audio = []
    for track, seed in takes.items():
        [(pos, length, offset, peak, path)] = regions[track]
        assert (pos, length) == (48000, 72000) and peak > 1e-3
        assert path.is_file() and path.name == f"msldm-48000.seed{seed}.bass.wav"
        audio.append(sf.read(str(path), dtype="float32")[0])
    assert np.abs(audio[0] - audio[1]).max() > 1e-3 and np.abs(audio[1] - audio[2]).max() > 1e-3


@needs_ardour
@pytest.mark.slow
def test_redo_a_range_of_a_generated_track(tmp_path, session, live_daemon):  # noqa: F811
    sdir, name, _ = session
    _generate(tmp_path, sdir, name, live_daemon.endpoint, "generate=bass", "seed=5")
    _generate(tmp_path, sdir, name, live_daemon.endpoint, "redo=MSLDM bass seed5:bass", "redo_start=72000",
              "redo_end=96000", "seed=11")
    regions = _regions(tmp_path, sdir, name)
    [(_, _, _, _, old_path)] = regions["MSLDM bass seed5"]
    [(pos, length, _, peak, new_path)] = regions["MSLDM bass seed5 redo seed11"]
    assert (pos, length) == (48000, 72000) and peak > 1e-3
    old, new = sf.read(str(old_path), dtype="float32")[0], sf.read(str(new_path), dtype="float32")[0]
    a, b = 72000 - 48000, 96000 - 48000  # the redone span, from the region start
    assert np.array_equal(new[:a], old[:a]) and np.array_equal(new[b:], old[b:])
    assert np.abs(new[a:b] - old[a:b]).max() > 1e-3


@needs_ardour
@pytest.mark.slow
def test_generate_script_passes_candidates_and_guidance_to_the_bridge(tmp_path, session, live_daemon):  # noqa: F811
    # `candidates=N` and `guidance=W` reach the daemon: out of range, each is refused there (by
    # name), and the session is left as it was; in range, each is recorded in the sidecar
    sdir, name, _ = session
    before = (sdir / f"{name}.ardour").read_bytes()
    for bad, field in (("candidates=9", "candidates"), ("guidance=9", "guidance")):
        r = _ardour(tmp_path, LUA_SCRIPT, str(sdir), name, "given=Drums:drums,Keys:piano", "start=48000",
                    "end=120000", f"server={live_daemon.endpoint}", f"bridge={sys.executable} -m plugin_bridge.cli",
                    f"python={sys.executable}", "generate=bass", bad, timeout=120)
        assert r.returncode != 0 and field in r.stdout + r.stderr
        assert (sdir / f"{name}.ardour").read_bytes() == before
    _generate(tmp_path, sdir, name, live_daemon.endpoint, "generate=bass", "seed=5", "candidates=1", "guidance=2")
    meta = json.loads(next((sdir / "msldm").glob("*.seed5.msldm.json")).read_text())
    assert meta["candidates"] == 1 and "--candidates 1" in meta["command"]
    assert meta["guidance"] == 2 and "--guidance 2" in meta["command"]


@needs_ardour
@pytest.mark.slow
def test_generate_script_fails_cleanly_without_daemon(tmp_path, session):
    sdir, name, _ = session
    before = (sdir / f"{name}.ardour").read_bytes()
    # `make=`, the old name of `generate=`, still works: the script gets as far as the bridge
    r = _ardour(tmp_path, LUA_SCRIPT, str(sdir), name, "given=Drums:drums", "make=bass",
                "start=48000", "end=96000", f"server=tcp://127.0.0.1:{_free_port()}", f"python={sys.executable}",
                f"bridge={sys.executable} -m plugin_bridge.cli")
    assert r.returncode != 0
    assert "start it with `msldm serve`" in r.stderr
    assert (sdir / f"{name}.ardour").read_bytes() == before  # nothing added to the session


@needs_ardour
def test_lua_scripts_compile_in_ardours_interpreter(tmp_path):
    from plugin_bridge.adapters.ardour import EDITOR_ACTION
    check = "for i = 1, #arg do assert(loadfile(arg[i])) end print('COMPILED')"
    r = _ardour(tmp_path, check, str(LUA_SCRIPT), str(EDITOR_ACTION))
    assert r.returncode == 0 and "COMPILED" in r.stdout, r.stdout + r.stderr


def test_session_edit_refuses_unknown_track_and_missing_file(tmp_path):
    xml = ('<?xml version="1.0" encoding="UTF-8"?>\n<Session name="s" sample-rate="48000" id-counter="10">'
           '<Sources/><Regions/><Locations/><Routes><Route id="1" name="A" audio-playlist="2"/></Routes>'
           '<Playlists><Playlist id="2" name="A"/></Playlists></Session>')
    (tmp_path / "s.ardour").write_text(xml)
    _tone(tmp_path / "x.wav", 220, 0.1)
    with pytest.raises(SessionEditError, match="one track named 'B'"):
        place_files(tmp_path, "s", [Placement("B", tmp_path / "x.wav", 0)])
    with pytest.raises(SessionEditError, match="does not exist"):
        place_files(tmp_path, "s", [Placement("A", tmp_path / "missing.wav", 0)])
    assert (tmp_path / "s.ardour").read_text() == xml  # untouched
    place_files(tmp_path, "s", [Placement("A", tmp_path / "x.wav", 480)])
    s = ArdourSession(tmp_path / "s.ardour")
    [region] = s.playlist_of("A").findall("Region")
    assert region.get("length") == f"a{4800 * 5880}@a{480 * 5880}"  # 5880 superclock ticks per sample
    assert int(s.root.get("id-counter")) > 10


def test_render_track_paints_layers_and_range(tmp_path):
    a = _tone(tmp_path / "a.wav", 100, 1.0)
    b = _tone(tmp_path / "b.wav", 200, 1.0)
    regions = [RegionRef(0, SR, 0, 0, False, True, 1.0, (tmp_path / "a.wav",)),
               RegionRef(SR // 2, SR // 4, 100, 1, False, True, 0.5, (tmp_path / "b.wav",)),
               RegionRef(0, SR, 0, 2, True, True, 1.0, (tmp_path / "b.wav",))]  # muted: ignored
    out = render_track(regions, 1000, SR + 1000, SR)
    assert out.shape == (SR,)
    np.testing.assert_allclose(out[: SR // 2 - 1000], a[1000:SR // 2])
    np.testing.assert_allclose(out[SR // 2 - 1000: 3 * SR // 4 - 1000], 0.5 * b[100:100 + SR // 4], rtol=1e-6)
    np.testing.assert_array_equal(out[SR - 1000:], 0.0)  # past the regions: silence
