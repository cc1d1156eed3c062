"""The REAPER adapter's logic against a fake of the part of the ReaScript API it uses
(real function names, parameter lists and tuple returns), with the real bridge CLI and a
live daemon. The fake renders like REAPER's "stems only / time selection" render."""

from __future__ import annotations

import json

import functools
import os
import shlex
import socket
import subprocess
import sys
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import soundfile as sf

from plugin_bridge.adapters.reaper import logic
from server_fixtures import tiny_bundle  # noqa: F401  (fixture)
from test_bridge_client import live_daemon  # noqa: F401  (fixture)

ROOT = Path(__file__).resolve().parents[1]
SR = 48000


class FakeTake:
    def __init__(self, file: str):
        self.file, self.name = file, Path(file).name  # REAPER names a new take after its file


class FakeItem:
    def __init__(self, position: float, file: str):
        info = sf.info(file)
        self.position, self.length = position, info.frames / info.samplerate
        self.takes = [FakeTake(file)]


class FakeTrack:
    def __init__(self, name: str, audio: np.ndarray, selected: bool = False):
        self.name, self.audio, self.selected = name, audio, selected
        self.items: list[FakeItem] = []


class FakeReaper:
    """Enough of REAPER for the adapter. Calls are logged in `calls`."""

    def __init__(self, tracks: list[FakeTrack], project_dir: Path, selection: tuple[float, float]):
        self.tracks, self.project_dir = tracks, project_dir
        self.sel, self.cursor = selection, 7.0
        self.num = {"RENDER_SETTINGS": 0.0, "RENDER_BOUNDSFLAG": 1.0, "RENDER_CHANNELS": 2.0, "RENDER_SRATE": 0.0,
                    "RENDER_ADDTOPROJ": 0.0, "PROJECT_SRATE": float(SR), "PROJECT_SRATE_USE": 1.0}
        self.str = {"RENDER_FILE": "/old/render", "RENDER_PATTERN": "$project", "RENDER_FORMAT": "l3pm"}
        self.ext: dict[tuple[str, str], str] = {}
        self.undo: list[str] = []
        self.undo_open = 0
        self.messages: list[str] = []
        self.user_answer: tuple[int, str] = (1, "bass,,5,,")

    # -- ReaScript functions (names and parameters as in REAPER's Python API) ----------
    def RPR_GetSet_LoopTimeRange(self, isSet, isLoop, startOut, endOut, allowautoseek):
        if isSet:
            self.sel = (startOut, endOut)
        return (isSet, isLoop, self.sel[0], self.sel[1], allowautoseek)

    def RPR_CountSelectedTracks(self, proj):
        return sum(t.selected for t in self.tracks)

    def RPR_GetSelectedTrack(self, proj, seltrackidx):
        return [t for t in self.tracks if t.selected][seltrackidx]

    def RPR_GetTrack(self, proj, trackidx):
        return self.tracks[trackidx]

    def RPR_GetMediaTrackInfo_Value(self, tr, parmname):
        assert parmname == "IP_TRACKNUMBER"
        return float(self.tracks.index(tr) + 1)

    def RPR_GetSetMediaTrackInfo_String(self, tr, parmname, stringNeedBig, setNewValue):
        assert parmname == "P_NAME"
        if setNewValue:
            tr.name = stringNeedBig
        return (True, tr, parmname, tr.name, setNewValue)

    def RPR_GetSetProjectInfo(self, project, desc, value, is_set):
        if is_set:
            self.num[desc] = float(value)
        return self.num[desc]

    def RPR_GetSetProjectInfo_String(self, project, desc, valuestrNeedBig, is_set):
        if desc == "RENDER_TARGETS":
            assert not is_set
            return (True, project, desc, ";".join(str(p) for p, _ in self._targets()), is_set)
        if is_set:
            self.str[desc] = valuestrNeedBig
        return (True, project, desc, self.str[desc], is_set)

    def _targets(self) -> list[tuple[Path, FakeTrack]]:
        assert int(self.num["RENDER_SETTINGS"]) & 2, "not a stems render"
        out = []
        for i, t in enumerate(self.tracks):
            if t.selected:
                name = self.str["RENDER_PATTERN"].replace("$tracknumber", f"{i + 1:02d}")
                out.append((Path(self.str["RENDER_FILE"]) / f"{name}.wav", t))
        return out

    def RPR_Main_OnCommand(self, command, flag):
        assert command == 42230 and self.str["RENDER_FORMAT"] == "evaw"
        assert int(self.num["RENDER_BOUNDSFLAG"]) == 2, "render bounds are not the time selection"
        rate = int(self.num["RENDER_SRATE"]) or SR
        a, b = int(round(self.sel[0] * rate)), int(round(self.sel[1] * rate))
        for path, t in self._targets():
            x = t.audio[a:b]
            x = np.stack([x] * int(self.num["RENDER_CHANNELS"]), axis=1)
            sf.write(str(path), x, rate, subtype="PCM_24")

    def RPR_TimeMap_GetTimeSigAtTime(self, proj, time, timesig_numOut, timesig_denomOut, tempoOut):
        return (proj, time, 3, 4, 96.0)

    def RPR_TimeMap2_timeToBeats(self, proj, tpos, measuresOutOptional, cmlOutOptional, fullbeatsOutOptional,
                                 cdenomOutOptional):
        beats = tpos * 96.0 / 60.0
        return (beats % 3, proj, tpos, int(beats // 3), 3, beats, 4)

    def RPR_GetProjectPath(self, buf, buf_sz):
        return (str(self.project_dir), buf_sz)

    def RPR_GetCursorPosition(self):
        return self.cursor

    def RPR_SetEditCurPos(self, time, moveview, seekplay):
        self.cursor = time

    def RPR_InsertTrackAtIndex(self, idx, wantDefaults):
        self.tracks.insert(idx, FakeTrack("", np.zeros(0, np.float32)))

    def RPR_InsertMedia(self, file, mode):
        assert mode & 512 and mode & 3 == 0
        self.tracks[mode >> 16].items.append(FakeItem(self.cursor, file))
        return 1

    def RPR_GetTrackMediaItem(self, tr, itemidx):
        return tr.items[itemidx]

    def RPR_AddTakeToMediaItem(self, item):
        item.takes.append(FakeTake.__new__(FakeTake))  # an empty take: no source yet
        item.takes[-1].file, item.takes[-1].name = None, ""
        return item.takes[-1]

    def RPR_PCM_Source_CreateFromFile(self, filename):
        assert Path(filename).is_file()
        return ("source", filename)

    def RPR_SetMediaItemTake_Source(self, take, source):
        take.file = source[1]
        return True

    def RPR_GetTake(self, item, takeidx):
        return item.takes[takeidx]

    def RPR_GetSetMediaItemTakeInfo_String(self, tk, parmname, stringNeedBig, setNewValue):
        assert parmname == "P_NAME"
        if setNewValue:
            tk.name = stringNeedBig
        return (True, tk, parmname, tk.name, setNewValue)

    def RPR_SetActiveTake(self, take):
        for t in self.tracks:
            for item in t.items:
                if take in item.takes:
                    item.active = item.takes.index(take)

    def RPR_UpdateItemInProject(self, item):
        pass

    def RPR_Undo_BeginBlock(self):
        self.undo_open += 1

    def RPR_Undo_EndBlock(self, descchange, extraflags):
        self.undo_open -= 1
        self.undo.append(descchange)

    def RPR_UpdateArrange(self):
        pass

    def RPR_ShowMessageBox(self, msg, title, type):
        self.messages.append(msg)
        return 1

    def RPR_GetExtState(self, section, key):
        return self.ext.get((section, key), "")

    def RPR_SetExtState(self, section, key, value, persist):
        self.ext[(section, key)] = value

    def RPR_GetUserInputs(self, title, num_inputs, captions_csv, retvals_csv, retvals_csv_sz):
        assert len(captions_csv.split(",")) == num_inputs
        return (self.user_answer[0], title, num_inputs, captions_csv, self.user_answer[1], retvals_csv_sz)


def _tone(freq: float, seconds: float = 4.0) -> np.ndarray:
    t = np.arange(int(seconds * SR)) / SR
    return (0.3 * np.sin(2 * np.pi * freq * t)).astype(np.float32)


@pytest.fixture()
def fake(tmp_path) -> FakeReaper:
    tracks = [FakeTrack("Drums", _tone(110), True), FakeTrack("Keys", _tone(330), True), FakeTrack("Vox", _tone(440))]
    return FakeReaper(tracks, tmp_path / "project", (1.0, 2.5))


RUNNER = functools.partial(subprocess.run, env=dict(os.environ, PYTHONPATH=str(ROOT)))
BRIDGE = (sys.executable, "-m", "plugin_bridge.cli")


def test_generate_inserts_stems_below_selection_at_its_start(fake, live_daemon):  # noqa: F811
    settings = logic.Settings(generate=("bass", "guitar"), server=live_daemon.endpoint, bridge=BRIDGE, seed=1)
    [stems] = logic.generate(fake, settings, runner=RUNNER)
    assert [t.name for t in fake.tracks] == ["Drums", "Keys", "MSLDM bass", "MSLDM guitar", "Vox"]
    for track, stem in zip(fake.tracks[2:4], ("bass", "guitar")):
        [item] = track.items
        [take] = item.takes
        file = take.file
        assert item.position == 1.0 and file == str(stems[stem]) and Path(file).is_file()
        assert take.name == Path(file).stem and "seed1" in take.name
        assert item.length == pytest.approx(1.5, abs=1 / SR)
        assert sf.info(file).samplerate == SR and sf.info(file).subtype == "PCM_24"
    # what the model was given is the render of each selected track over the selection
    given, rate = sf.read(str(fake.project_dir / "msldm" / "given" / "msldm-given-01.wav"), dtype="float32")
    np.testing.assert_allclose(given[:, 0], fake.tracks[0].audio[SR:int(2.5 * SR)], atol=1e-6)
    # the user's state is back as it was: render settings, time selection, cursor; one undo step
    assert fake.num["RENDER_BOUNDSFLAG"] == 1.0 and fake.str["RENDER_PATTERN"] == "$project"
    assert fake.str["RENDER_FORMAT"] == "l3pm" and fake.sel == (1.0, 2.5) and fake.cursor == 7.0
    assert fake.undo == ["MSLDM: generate bass, guitar"] and fake.undo_open == 0
    sidecar = next((fake.project_dir / "msldm").glob("*.msldm.json")).read_text()
    assert '"tempo": 96.0' in sidecar and '"start_bar": 1' in sidecar  # 1.0 s at 96 BPM in 3/4: bar 1


def test_default_generate_is_every_stem_not_given(fake, live_daemon):  # noqa: F811
    [stems] = logic.generate(fake, logic.Settings(server=live_daemon.endpoint, bridge=BRIDGE), runner=RUNNER)
    assert sorted(stems) == ["bass", "guitar"]  # drums and keys (piano) are given


def test_takes_become_reaper_takes_named_by_region_stem_and_seed(fake, live_daemon):  # noqa: F811
    settings = logic.Settings(generate=("bass",), server=live_daemon.endpoint, bridge=BRIDGE, seed=40, takes=3)
    takes = logic.generate(fake, settings, runner=RUNNER)
    assert len(takes) == 3
    [item] = fake.tracks[2].items
    assert [t.file for t in item.takes] == [str(t["bass"]) for t in takes] and item.active == 0
    assert sorted(t.name for t in item.takes) == [f"msldm-1_000s.seed{s}.bass" for s in (40, 41, 42)]
    # the takes in the daemon's rank order: the one it estimates fits best plays first
    ranks = [json.loads(Path(t.file).with_name(Path(t.file).name.replace(".bass.wav", ".msldm.json")).read_text())
             ["fit"]["rank"] for t in item.takes]
    assert ranks == [1, 2, 3]
    audio = [sf.read(t.file, dtype="float32")[0] for t in item.takes]
    assert np.abs(audio[0] - audio[1]).max() > 1e-3 and np.abs(audio[1] - audio[2]).max() > 1e-3
    # the same selection again, new seeds: new files beside the old ones, none overwritten
    before = {t.file: Path(t.file).read_bytes() for t in item.takes}
    logic.generate(fake, logic.Settings(generate=("bass",), server=live_daemon.endpoint, bridge=BRIDGE, seed=50),
                   runner=RUNNER)
    assert all(Path(f).read_bytes() == b for f, b in before.items())
    assert len(list((fake.project_dir / "msldm").glob("msldm-1_000s.seed*.bass.wav"))) == 4


def test_bars_and_six_eight_tempo_reach_the_bridge_in_the_daemons_units(fake, live_daemon, monkeypatch):  # noqa: F811
    # REAPER's tempo counts quarter notes; the daemon's counts beats of the meter's unit
    monkeypatch.setattr(fake, "RPR_TimeMap_GetTimeSigAtTime", lambda proj, t, a, b, c: (proj, t, 6, 8, 60.0))
    settings = logic.Settings(generate=("bass",), server=live_daemon.endpoint, bridge=BRIDGE, seed=1,
                              length="bars")
    [stems] = logic.generate(fake, settings, runner=RUNNER)
    # 6/8 at 60 quarter notes a minute: 120 eighths a minute, 3 s bars; the 1.5 s selection
    # rounds to one whole bar
    assert sf.info(str(stems["bass"])).frames == 3 * SR


def test_main_asks_and_reports_errors_in_a_message_box(fake, live_daemon):  # noqa: F811
    fake.ext[("MSLDM", "server")] = live_daemon.endpoint
    fake.ext[("MSLDM", "bridge")] = shlex.join(BRIDGE)
    fake.sel = (0.0, 0.0)
    logic.main(fake)
    assert fake.messages == ["Make a time selection first: it is the region to accompany."]
    assert fake.ext[("MSLDM", "generate")] == "bass" and fake.ext[("MSLDM", "seed")] == "5"
    fake.user_answer = (0, "")  # the user cancelled the dialog: nothing happens
    logic.main(fake)
    assert len(fake.messages) == 1 and len(fake.tracks) == 3


def test_settings_from_user_parses_answers(fake):
    fake.user_answer = (1, "bass / guitar,12,,4,y")
    s = logic.settings_from_user(fake)
    assert s is not None and s.generate == ("bass", "guitar") and s.steps == 12 and s.seed is None
    assert s.takes == 4 and s.length == "bars"
    fake.user_answer = (1, "bass,,,,")
    s = logic.settings_from_user(fake)
    assert s.takes == 1 and s.length == "region"
    fake.user_answer = (1, "bass,many,")
    with pytest.raises(logic.UserError, match="whole numbers"):
        logic.settings_from_user(fake)
    fake.user_answer = (1, "bass,,,9,")
    with pytest.raises(logic.UserError, match="1 to 8"):
        logic.settings_from_user(fake)
    # candidates: set in the ExtState (blank: the model's)
    fake.user_answer = (1, "bass,,,,")
    assert logic.settings_from_user(fake).candidates is None
    fake.ext[("MSLDM", "candidates")] = "1"
    assert logic.settings_from_user(fake).candidates == 1
    fake.ext[("MSLDM", "candidates")] = "one"
    with pytest.raises(logic.UserError, match="candidates"):
        logic.settings_from_user(fake)
    # guidance: set in the ExtState too (blank: the model's)
    fake.ext[("MSLDM", "candidates")] = ""
    assert logic.settings_from_user(fake).guidance is None
    fake.ext[("MSLDM", "guidance")] = "2.5"
    assert logic.settings_from_user(fake).guidance == 2.5
    fake.ext[("MSLDM", "guidance")] = "tight"
    with pytest.raises(logic.UserError, match="guidance"):
        logic.settings_from_user(fake)


def test_stems_remembered_as_make_by_an_earlier_version_are_offered(fake, monkeypatch):
    """One name per concept: the ExtState key is `generate` now; an old `make` is the
    dialog's default once, then emptied, so a blank answer stays blank next time."""
    fake.ext[("MSLDM", "make")] = "guitar"
    offered = []
    ask = fake.RPR_GetUserInputs
    monkeypatch.setattr(fake, "RPR_GetUserInputs", lambda *a: offered.append(a[3]) or ask(*a))
    fake.user_answer = (1, ",,,,")
    assert logic.settings_from_user(fake).generate == ()
    assert offered == ["guitar,,,,"]
    assert fake.ext[("MSLDM", "generate")] == "" and fake.ext[("MSLDM", "make")] == ""
    logic.settings_from_user(fake)
    assert offered[1] == ",,,,"


def test_bridge_command_uses_the_current_option_names(tmp_path):
    cmd = logic.bridge_command(logic.Settings(generate=("bass", "guitar"), seed=3), {"drums": tmp_path / "d.wav"},
                               ("bass", "guitar"), tmp_path, "r", {"tempo": 120.0, "meter": [4, 4], "start_bar": 1},
                               48000)
    assert cmd[cmd.index("--generate") + 1] == "bass,guitar" and "--make" not in cmd
    assert cmd[cmd.index("--output-sample-rate") + 1] == "48000" and "--sample-rate" not in cmd
    from plugin_bridge.cli import build_parser
    args = build_parser().parse_args(cmd[1:])  # what the bridge parses out of it
    assert args.generate == ["bass", "guitar"] and args.output_sample_rate == 48000 and args.seed == 3
    assert args.candidates is None and args.guidance is None  # the model's, unless the ExtState sets them
    cmd = logic.bridge_command(logic.Settings(generate=("guitar",), candidates=1, guidance=2.5),
                               {"bass": tmp_path / "b.wav"}, ("guitar",), tmp_path, "r",
                               {"tempo": 120.0, "meter": [4, 4], "start_bar": 1}, None)
    args = build_parser().parse_args(cmd[1:])
    assert args.candidates == 1 and args.guidance == 2.5


def test_selection_problems_are_user_errors(fake):
    fake.tracks[1].name = "Track 2"
    with pytest.raises(logic.UserError, match="cannot tell its instrument"):
        logic.read_selection(logic.Reaper(fake))
    fake.tracks[1].name = "Drum room"
    with pytest.raises(logic.UserError, match="same instrument"):
        logic.read_selection(logic.Reaper(fake))
    for t in fake.tracks:
        t.selected = False
    with pytest.raises(logic.UserError, match="Select the tracks"):
        logic.read_selection(logic.Reaper(fake))


def test_bridge_failure_is_reported_and_nothing_inserted(fake, tmp_path):
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    settings = logic.Settings(generate=("bass",), server=f"tcp://127.0.0.1:{port}", bridge=BRIDGE)
    with pytest.raises(logic.UserError, match="start it with `msldm serve`"):
        logic.generate(fake, settings, runner=RUNNER)
    assert [t.name for t in fake.tracks] == ["Drums", "Keys", "Vox"] and fake.undo == []
    assert fake.str["RENDER_PATTERN"] == "$project"  # render settings restored even so


@pytest.mark.parametrize("name,stem", [("Drums", "drums"), ("Kick In", "drums"), ("Bass DI", "bass"),
                                       ("Rhodes", "piano"), ("GTR L", "guitar"), ("Vocals", None)])
def test_stem_for_track(name: str, stem: Any):
    assert logic.stem_for_track(name) == stem


def test_reascript_is_thin_and_logic_is_stdlib_only():
    from plugin_bridge.adapters.reaper import REASCRIPT
    text = REASCRIPT.read_text()
    assert "main(reaper_python)" in text and len(text.splitlines()) < 40
    code = ("import sys; import plugin_bridge.adapters.reaper.logic; "
            "bad = [m for m in ('numpy', 'zmq', 'soundfile') if m in sys.modules]; print(bad); sys.exit(bool(bad))")
    r = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True)
    assert r.returncode == 0, r.stdout + r.stderr

