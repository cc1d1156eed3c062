"""`msldm-bridge` as a user runs it (a subprocess) against a live daemon."""

from __future__ import annotations

import json
import os
import shlex
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf

from plugin_bridge import cli
from server_fixtures import tiny_bundle  # noqa: F401  (fixture)
from test_bridge_client import daemon_subprocess, free_port, live_daemon, tone  # noqa: F401  (fixture)

ROOT = Path(__file__).resolve().parents[1]
BRIDGE = [sys.executable, "-m", "plugin_bridge.cli"]
ENV = dict(os.environ, PYTHONPATH=str(ROOT))


def _only(folder: Path, pattern: str) -> Path:
    found = sorted(folder.glob(pattern))
    assert len(found) == 1, found
    return found[0]


def _bridge(*args: str, timeout: float = 60) -> subprocess.CompletedProcess:
    return subprocess.run([*BRIDGE, *args], cwd=ROOT, env=ENV, capture_output=True, text=True, timeout=timeout)


@pytest.fixture()
def given(tmp_path) -> dict[str, Path]:
    sf.write(str(tmp_path / "drums.wav"), tone(110, 2.0, 44100), 44100, subtype="PCM_16")
    sf.write(str(tmp_path / "keys.wav"), np.stack([tone(330, 2.0, 44100)] * 2, axis=1), 44100, subtype="PCM_16")
    return {"drums": tmp_path / "drums.wav", "piano": tmp_path / "keys.wav"}


def test_generate_writes_stems_sidecar_and_reports_paths(live_daemon, given, tmp_path):  # noqa: F811
    out = tmp_path / "stems"
    t0 = time.monotonic()
    r = _bridge("--server", live_daemon.endpoint, "generate", "--given", f"drums={given['drums']}",
                "--given", f"piano={given['piano']}", "--generate", "bass,guitar", "--out", str(out),
                "--tempo", "120", "--meter", "4/4", "--start-bar", "9", "--seed", "7", "--steps", "3",
                "--region", "verse")
    elapsed = time.monotonic() - t0
    assert r.returncode == 0, r.stderr
    lines = dict(line.split("\t") for line in r.stdout.splitlines())
    assert lines == {"bass": str(out / "verse.seed7.bass.wav"), "guitar": str(out / "verse.seed7.guitar.wav"),
                     "sidecar": str(out / "verse.seed7.msldm.json")}
    for stem in ("bass", "guitar"):
        info = sf.info(lines[stem])  # session format by default: the given stems' rate and bit depth
        assert (info.samplerate, info.subtype, info.frames, info.channels) == (44100, "PCM_16", 88200, 1)
    assert "100.0%" in r.stderr and "2 stem(s)" in r.stderr
    meta = json.loads(Path(lines["sidecar"]).read_text())
    assert meta["seed"] == 7 and meta["steps"] == 3 and meta["model"] == "handmade-tiny"
    assert meta["region"] == {"tempo": 120.0, "meter": [4, 4], "start_bar": 9, "name": "verse"}
    assert {g["stem"] for g in meta["given"]} == {"drums", "piano"} and len(meta["given"][0]["sha256"]) == 64
    assert meta["timings"]["total"] > 0 and meta["timings"]["bridge_wall"] > 0
    print(f"\nend-to-end bridge command -> stems on disk (2 s region, 2 stems, 3 steps): {elapsed:.2f} s")


def test_sidecar_command_reproduces_the_result(live_daemon, given, tmp_path):  # noqa: F811
    r = _bridge("--server", live_daemon.endpoint, "generate", "--given", f"drums={given['drums']}",
                "--make", "bass", "--out", str(tmp_path / "a"), "--sample-rate", "22050", "--bit-depth", "32f",
                "--schedule", "melody", "--resample", "2", "--silent-retries", "1", "--guidance", "2.5",
                "--level", "model")
    assert r.returncode == 0, r.stderr
    meta = json.loads(_only(tmp_path / "a", "region.seed*.msldm.json").read_text())
    argv = shlex.split(meta["command"])
    assert argv[argv.index("--silent-retries") + 1] == "1" and isinstance(meta["silent_rerolls"], int)
    assert meta["silent_retries"] == 1
    assert argv[argv.index("--level") + 1] == "model" and meta["level"] == "model" and meta["level_gain_db"] == {}
    assert argv[0] == "msldm-bridge" and "--seed" in argv  # a fresh seed was chosen and recorded
    assert meta["schedule"] == "melody" and argv[argv.index("--schedule") + 1] == "melody"
    assert meta["resample"] == 2 and argv[argv.index("--resample") + 1] == "2"
    assert meta["guidance"] == 2.5 and argv[argv.index("--guidance") + 1] == "2.5"
    assert Path(argv[argv.index("--out") + 1]).is_absolute() and argv[argv.index("--sampler") + 1] == "euler"
    # asked with the old names (--make, --sample-rate), reproduced with the current ones
    assert argv[argv.index("--generate") + 1] == "bass" and argv[argv.index("--output-sample-rate") + 1] == "22050"
    assert "--make" not in argv and "--sample-rate" not in argv
    argv[argv.index("--out") + 1] = str(tmp_path / "b")
    assert _bridge(*argv[1:]).returncode == 0
    name = f"region.seed{meta['seed']}.bass.wav"
    a, sr = sf.read(str(tmp_path / "a" / name), dtype="float32")
    b, _ = sf.read(str(tmp_path / "b" / name), dtype="float32")
    assert sr == 22050 and sf.info(str(tmp_path / "b" / name)).subtype == "FLOAT"
    np.testing.assert_array_equal(a, b)


def test_candidates_pass_through_and_are_recorded_for_the_bass_and_drums(live_daemon, given, tmp_path):  # noqa: F811
    bass = tmp_path / "bass.wav"
    sf.write(str(bass), tone(55, 2.0, 44100), 44100, subtype="PCM_16")
    stems = {}
    for c in ("1", None):
        extra = () if c is None else ("--candidates", c)
        out = tmp_path / f"c{c}"
        r = _bridge("--server", live_daemon.endpoint, "generate", "--given", f"drums={given['drums']}",
                    "--given", f"bass={bass}", "--generate", "guitar", "--out", str(out), "--seed", "3", *extra)
        assert r.returncode == 0, r.stderr
        meta = json.loads(_only(out, "region.seed*.msldm.json").read_text())
        argv = shlex.split(meta["command"])
        want = 1 if c else 2  # asked, else the handmade bundle's default
        assert meta["candidates"] == want and argv[argv.index("--candidates") + 1] == str(want)
        stems[c] = sf.read(str(out / "region.seed3.guitar.wav"), dtype="float32")[0]
    assert not np.array_equal(stems["1"], stems[None])
    r = _bridge("--server", live_daemon.endpoint, "generate", "--given", f"bass={bass}", "--generate", "guitar",
                "--out", str(tmp_path / "bad"), "--candidates", "9")
    assert r.returncode != 0 and "candidates" in r.stderr


def test_daemon_down_exit_code_2_and_hint(given, tmp_path):
    t0 = time.monotonic()
    r = _bridge("--server", f"tcp://127.0.0.1:{free_port()}", "generate", "--given", f"drums={given['drums']}",
                "--generate", "bass", "--out", str(tmp_path / "o"))
    assert r.returncode == 2 and "start it with `msldm serve`" in r.stderr
    assert not (tmp_path / "o").exists() and time.monotonic() - t0 < 10
    r = _bridge("--server", f"tcp://127.0.0.1:{free_port()}", "status")
    assert r.returncode == 2 and "no MSLDM daemon answers" in r.stderr


def test_status_shows_model_and_queue(live_daemon):  # noqa: F811
    r = _bridge("--server", live_daemon.endpoint, "status")
    assert r.returncode == 0, r.stderr
    assert "handmade-tiny" in r.stdout and "bass,drums,guitar,piano" in r.stdout and "queue" in r.stdout


def _terminal_sigint() -> None:
    """Ctrl-C as a terminal delivers it: a test run started in the background (as CI may be)
    inherits SIGINT ignored, and Python keeps an inherited SIG_IGN."""
    signal.signal(signal.SIGINT, signal.SIG_DFL)


def test_ctrl_c_cancels_the_job_and_writes_nothing(live_daemon, tmp_path):  # noqa: F811
    sf.write(str(tmp_path / "long.wav"), tone(100, 30.0, 22050), 22050)
    proc = subprocess.Popen([*BRIDGE, "--server", live_daemon.endpoint, "generate", "--given",
                             f"drums={tmp_path / 'long.wav'}", "--generate", "bass", "--steps", "1000",
                             "--out", str(tmp_path / "o")], cwd=ROOT, env=ENV, stderr=subprocess.PIPE, text=True,
                            preexec_fn=_terminal_sigint)
    try:
        assert "step" in proc.stderr.readline()  # the first progress line: the job runs
        proc.send_signal(signal.SIGINT)
        err = proc.communicate(timeout=20)[1]
    finally:
        proc.kill()
    assert proc.returncode == 130 and "cancelled" in err
    assert not (tmp_path / "o").exists() or not any((tmp_path / "o").iterdir())


def test_a_daemon_killed_mid_job_and_restarted_loses_nothing(tiny_bundle, tmp_path):  # noqa: F811
    """The daemon dies mid-job and comes back at the same address (say a supervisor restarts
    it): the bridge resubmits with the same seed and writes the same stems as an
    undisturbed run."""
    sf.write(str(tmp_path / "d.wav"), tone(100, 8.0, 22050), 22050)
    url = f"tcp://127.0.0.1:{free_port()}"
    args = ["--server", url, "generate", "--given", f"drums={tmp_path / 'd.wav'}", "--generate", "bass",
            "--steps", "60", "--seed", "4", "--retry-wait", "30"]
    with daemon_subprocess(tiny_bundle, url) as (first, _):
        proc = subprocess.Popen([*BRIDGE, *args, "--out", str(tmp_path / "a")], cwd=ROOT, env=ENV,
                                stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        try:
            assert "step" in proc.stderr.readline()  # the job runs
            first.kill()
            first.wait(10)
            with daemon_subprocess(tiny_bundle, url):
                out, err = proc.communicate(timeout=60)
                assert proc.returncode == 0, err
                assert "resubmitted" in err
                ref = _bridge(*args, "--out", str(tmp_path / "b"))
                assert ref.returncode == 0, ref.stderr
        finally:
            proc.kill()
    a, _ = sf.read(str(tmp_path / "a" / "region.seed4.bass.wav"), dtype="float32")
    b, _ = sf.read(str(tmp_path / "b" / "region.seed4.bass.wav"), dtype="float32")
    np.testing.assert_array_equal(a, b)


def test_generate_and_output_sample_rate_with_their_old_names():
    """One name per concept: --generate (the protocol's field) and --output-sample-rate;
    --make and --sample-rate, their old names, parse the same and are hidden from help."""
    new = cli.build_parser().parse_args(["generate", "--generate", "bass,guitar", "--output-sample-rate", "48000",
                                         "--out", "x"])
    old = cli.build_parser().parse_args(["generate", "--make", "bass,guitar", "--sample-rate", "48000", "--out", "x"])
    assert vars(new) == vars(old)
    assert new.generate == ["bass", "guitar"] and new.output_sample_rate == 48000
    sub = cli.build_parser()._subparsers._group_actions[0].choices["generate"]
    text = " ".join(sub.format_help().split())
    assert "--generate" in text and "--output-sample-rate" in text
    assert "--make" not in text and "--sample-rate " not in text and "fresh one each run" in text


def test_generate_is_required_under_either_name(capsys):
    with pytest.raises(SystemExit) as e:
        cli.main(["generate", "--given", "drums=a.wav", "--out", "x"])
    assert e.value.code == 2 and "--generate" in capsys.readouterr().err


def test_no_seed_means_a_fresh_one_per_run(monkeypatch):
    """The bridge's seed policy, shared with `msldm generate` (msldm.cli_common)."""
    from msldm import cli_common
    assert cli.build_parser().parse_args(["generate", "--generate", "bass", "--out", "x"]).seed is None
    seeds = iter([11, 12])
    monkeypatch.setattr(cli_common.secrets, "randbelow", lambda n: next(seeds))
    assert [cli_common.seed_or_fresh(None), cli_common.seed_or_fresh(None), cli_common.seed_or_fresh(5)] == [11, 12, 5]


def test_bad_arguments_are_refused():
    with pytest.raises(SystemExit):
        cli.main(["generate", "--given", "drums", "--generate", "bass", "--out", "x"])
    with pytest.raises(SystemExit):
        cli.main(["generate", "--given", "drums=a.wav", "--generate", "bass", "--out", "x", "--meter", "4-4"])
    with pytest.raises(SystemExit):
        cli.main(["generate", "--given", "drums=a.wav", "--generate", "bass", "--out", "x", "--retries", "-1"])
    assert cli.main(["generate", "--given", "drums=/nonexistent.wav", "--generate", "bass", "--out", "x"]) == 1


def test_bridge_reaches_a_curve_daemon_with_keys_from_msldm_keys(tiny_bundle, given, tmp_path):  # noqa: F811
    """Fault 4 of issue 14: `--allow-remote` could not be used from msldm-bridge. Keys made
    by `python -m server keys` (= `msldm keys`); only the allowed client is served."""
    from server.curve import load_secret_key
    from server.daemon import Daemon, DaemonConfig
    keys, allowed = tmp_path / "keys", tmp_path / "keys" / "clients"
    for name in ("server", "laptop", "stranger"):
        r = subprocess.run([sys.executable, "-m", "server", "keys", "--dir", str(keys), "--name", name],
                           cwd=ROOT, env=ENV, capture_output=True, text=True, timeout=60)
        assert r.returncode == 0, r.stderr
    allowed.mkdir()
    (allowed / "laptop.key").write_bytes((keys / "laptop.key").read_bytes())
    cfg = DaemonConfig(bundle=tiny_bundle, zmq="tcp://127.0.0.1:0", allow_remote=True,
                       curve_secret_key=load_secret_key(keys / "server.key_secret"), curve_clients=allowed)
    with Daemon(cfg) as d:
        curve = ["--curve-server-key", str(keys / "server.key")]
        ok = _bridge("--server", d.endpoint, *curve, "--curve-client-key", str(keys / "laptop.key_secret"),
                     "generate", "--given", f"drums={given['drums']}", "--generate", "bass", "--steps", "2",
                     "--out", str(tmp_path / "o"))
        assert ok.returncode == 0, ok.stderr
        meta = json.loads(_only(tmp_path / "o", "region.seed*.msldm.json").read_text())
        assert "--curve-client-key" in meta["command"]
        refused = _bridge("--server", d.endpoint, "--timeout", "1", *curve, "--curve-client-key",
                          str(keys / "stranger.key_secret"), "status")
        assert refused.returncode == 2 and "no MSLDM daemon answers" in refused.stderr
        plain = _bridge("--server", d.endpoint, "--timeout", "1", "status")
        assert plain.returncode == 2


def test_length_bars_reaches_the_request_with_tempo_and_meter() -> None:
    args = cli.build_parser().parse_args(["generate", "--generate", "bass", "--out", "x", "--tempo", "96",
                                          "--meter", "3/4", "--length", "bars", "--duration", "5"])
    h = cli.make_request(args, []).header("j")
    assert h["length"] == "bars" and h["region"]["tempo"] == 96.0 and h["region"]["meter"] == [3, 4]
    plain = cli.build_parser().parse_args(["generate", "--generate", "bass", "--out", "x", "--duration", "5"])
    assert "length" not in cli.make_request(plain, []).header("j")  # "region" is the daemon's default


def test_four_takes_are_four_files_per_stem_named_by_seed_with_their_own_sidecars(live_daemon, given,
                                                                                    tmp_path):  # noqa: F811
    out = tmp_path / "t"
    r = _bridge("--server", live_daemon.endpoint, "generate", "--given", f"drums={given['drums']}",
                "--given", f"piano={given['piano']}",  # a pitched given stem: the takes can be judged and ranked
                "--generate", "bass,guitar", "--takes", "4", "--seed", "20", "--steps", "2", "--out", str(out))
    assert r.returncode == 0, r.stderr
    lines = [line.split("\t") for line in r.stdout.splitlines()]
    assert [k for k, _ in lines] == ["bass", "guitar", "sidecar"] * 4
    metas = [json.loads(Path(p).read_text()) for k, p in lines if k == "sidecar"]
    # the takes come best-ranked first (the daemon's estimate of their fit); each sidecar keeps its
    # take's fit and rank, and stderr lists them in that order
    assert [m["fit"]["rank"] for m in metas] == [1, 2, 3, 4]
    assert sorted(m["seed"] for m in metas) == [20, 21, 22, 23] and all(m["take"] == m["seed"] - 20 for m in metas)
    assert [Path(p).name for k, p in lines if k == "bass"] == [f"region.seed{m['seed']}.bass.wav" for m in metas]
    assert "best first: " + ", ".join(f"seed {m['seed']} ({m['fit']['fit']:.2f})" for m in metas) in r.stderr
    assert "give --tempo" in r.stderr  # no tempo was given: the bridge says what would rank better
    by_seed = {m["seed"]: p for m, (k, p) in zip(metas, [x for x in lines if x[0] == "bass"])}
    audio = [sf.read(by_seed[s], dtype="float32")[0] for s in (20, 21, 22, 23)]
    assert all(np.abs(audio[i] - audio[j]).max() > 1e-3 for i in range(4) for j in range(i + 1, 4))
    # each sidecar's command remakes its own take alone
    argv = shlex.split(next(m for m in metas if m["seed"] == 22)["command"])
    assert "--takes" not in argv and argv[argv.index("--seed") + 1] == "22"
    argv[argv.index("--out") + 1] = str(tmp_path / "again")
    assert _bridge(*argv[1:]).returncode == 0
    again, _ = sf.read(str(tmp_path / "again" / "region.seed22.bass.wav"), dtype="float32")
    np.testing.assert_allclose(again, audio[2], atol=1e-4)
    # a second run over the same region adds files, it never overwrites the first run's
    r2 = _bridge("--server", live_daemon.endpoint, "generate", "--given", f"drums={given['drums']}",
                 "--generate", "bass", "--seed", "30", "--steps", "2", "--out", str(out))
    assert r2.returncode == 0, r2.stderr
    assert len(list(out.glob("region.seed*.bass.wav"))) == 5


def test_redo_bars_keeps_the_rest_of_the_stem(live_daemon, tmp_path):  # noqa: F811
    rate = 44100
    bass = tone(55, 4.0, rate)
    sf.write(str(tmp_path / "bass.wav"), bass, rate, subtype="FLOAT")
    sf.write(str(tmp_path / "drums.wav"), tone(110, 4.0, rate), rate, subtype="FLOAT")
    r = _bridge("--server", live_daemon.endpoint, "generate", "--given", f"bass={tmp_path / 'bass.wav'}",
                "--given", f"drums={tmp_path / 'drums.wav'}", "--redo", "bass", "--bars", "6-6", "--tempo", "120",
                "--meter", "4/4", "--start-bar", "5", "--seed", "3", "--steps", "2", "--out", str(tmp_path / "o"))
    assert r.returncode == 0, r.stderr
    lines = dict(line.split("\t") for line in r.stdout.splitlines())
    assert Path(lines["bass"]).name == "region.redo-bass-bars6-6.seed3.bass.wav"
    out, sr = sf.read(lines["bass"], dtype="float32")
    assert sr == rate and sf.info(lines["bass"]).subtype == "FLOAT"  # the redone stem's own format
    a, b = 2 * rate, 4 * rate  # bar 6 of a region starting at bar 5: [2, 4) s
    assert np.array_equal(out[:a], bass[:a]) and not np.array_equal(out[a:b], bass[a:b])
    meta = json.loads(Path(lines["sidecar"]).read_text())
    assert meta["redo"] == {"stem": "bass", "start": 2.0, "end": 4.0}
    argv = shlex.split(meta["command"])
    assert argv[argv.index("--redo") + 1] == "bass" and argv[argv.index("--bars") + 1] == "6-6"


@pytest.mark.parametrize("extra,words", [
    (["--redo", "bass", "--bars", "1-2", "--tempo", "120"], "give that stem too"),
    (["--redo", "drums", "--generate", "bass", "--range", "0-1"], "drop --generate"),
    (["--redo", "drums"], "exactly one of"),
    (["--redo", "drums", "--bars", "1-2"], "needs --tempo"),
    (["--generate", "bass", "--range", "0-1"], "go with --redo"),
])
def test_bad_redo_arguments_are_refused_before_anything_is_sent(capsys, extra, words):
    with pytest.raises(SystemExit) as e:
        cli.main(["--server", "tcp://127.0.0.1:1", "generate", "--given", "drums=a.wav", "--out", "x", *extra])
    assert e.value.code == 2 and words in capsys.readouterr().err
