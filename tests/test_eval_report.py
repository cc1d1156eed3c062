"""The report pipeline end to end with fake generators, into a tmp dir."""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf

from msldm.eval.cli import config_from_args, register
from msldm.eval.data import load_segments, pick_mismatched
from msldm.eval.generators import OracleGenerator, SilenceGenerator
from msldm.eval.pipeline import EvalConfig
from msldm.eval.report import write_report
from msldm.eval.toy import write_toy_corpus

SECONDS = 3.0


@pytest.fixture(scope="module")
def corpus(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("toy")
    write_toy_corpus(root, n_tracks=3, seconds=6.0)
    return root


def _cfg(**kw: object) -> EvalConfig:
    base = dict(n=4, seconds=SECONDS, subsets=("B", "DG", "BDGP"), steps=4, sweep_steps=(2,),
                sweep_samplers=("euler", "heun"), sweep_n=2, recon_n=1, save_examples=1)
    return EvalConfig(**{**base, **kw})


def test_segments_and_mismatch(corpus: Path) -> None:
    segs = load_segments(corpus, 4, SECONDS)
    assert len(segs) == 4 and all(len(s.stems["bass"]) == int(SECONDS * 22050) for s in segs)
    assert all(c["time"] < SECONDS for s in segs for c in s.annotation["chords"])
    for i, s in enumerate(segs):
        j = pick_mismatched(segs, i)
        assert segs[j].track != s.track and segs[j].key_pc != s.key_pc and segs[j].tempo != s.tempo


def test_a_track_without_stem_files_is_an_error_not_silence(tmp_path: Path) -> None:
    track = tmp_path / "test" / "Track00001" / "stems"  # the original Slakh release's layout
    track.mkdir(parents=True)
    sf.write(str(track / "S00.flac"), np.zeros(22050, np.float32), 22050)
    with pytest.raises(ValueError, match="paper's layout"):
        load_segments(tmp_path, 1, 0.5)


def test_report_end_to_end(corpus: Path, tmp_path: Path) -> None:
    segs = load_segments(corpus, 4, SECONDS)
    out = tmp_path / "report"
    metrics = write_report(OracleGenerator(segs), corpus, out, _cfg(sweep_schedules=("karras", "melody")),
                           "oracle")
    for name in ("report.md", "metrics.json", "figures/B_000.png", "figures/BDGP_000.png",
                 "audio/DG/000_drums.wav", "audio/DG/000_mixture.wav"):
        assert (out / name).is_file(), name
    saved = json.loads((out / "metrics.json").read_text())
    assert set(saved["tasks"]) == {"B", "DG", "BDGP"}
    assert saved["tasks"]["B"]["subfad"] == pytest.approx(0.0, abs=1e-6)  # the real stems
    assert saved["tasks"]["B"]["stems"]["bass"]["harmonic_norm"] == pytest.approx(1.0)
    assert saved["tasks"]["DG"]["stems"]["drums"]["rhythmic_norm"] == pytest.approx(1.0)
    bass = saved["tasks"]["B"]["stems"]["bass"]   # the real stem on every clip: no spread
    assert bass["harmonic_norm_se"] == pytest.approx(0.0, abs=1e-9) and bass["level_db_se"] > 0.0
    assert len(saved["sweep"]) == 4 and saved["reconstruction"]["bass"]["logmel_l1"] == 0.0
    assert [(r["sampler"], r["schedule"]) for r in saved["sweep"]] == [
        ("euler", "karras"), ("euler", "melody"), ("heun", "karras"), ("heun", "melody")]
    report = (out / "report.md").read_text()
    assert "| Model | B | D | G | P |" in report and "NOT comparable" in report
    assert "| heun | melody | 1 | bundle's | 2 |" in report
    assert metrics["tasks"]["BDGP"]["fad_stems"]["bass"] == pytest.approx(0.0, abs=1e-6)


class _StepsLevel:
    """Every target is a constant at steps / 100: tells the main run's audio from the sweep's."""

    def __call__(self, given, targets, *, n_samples, seed, steps, sampler, schedule="karras", resample=1, churn=None):
        return {s: np.full(n_samples, steps / 100, np.float32) for s in targets}


def test_sweep_does_not_overwrite_the_main_runs_examples(corpus: Path, tmp_path: Path) -> None:
    out = tmp_path / "report"
    write_report(_StepsLevel(), corpus, out, _cfg(steps=4, sweep_steps=(2,), sweep_samplers=("euler",)), "levels")
    audio, _ = sf.read(str(out / "audio" / "B" / "000_bass.wav"), dtype="float32")  # sweep segment 0 makes B too
    assert np.allclose(audio, 0.04, atol=1e-3)


def test_report_flags_silence(corpus: Path, tmp_path: Path) -> None:
    cfg = _cfg(subsets=("G",), sweep_n=0, save_examples=0)
    metrics = write_report(SilenceGenerator(), corpus, tmp_path / "r", cfg, "silence")
    for task in ("G",):
        for m in metrics["tasks"][task]["stems"].values():
            assert m["empty_rate"] == 1.0 and m["audible_fraction"] == 0.0
    assert metrics["tasks"]["G"]["subfad"] > 0.0 and metrics["reconstruction"] is None
    assert np.isnan(metrics["tasks"]["G"]["stems"]["guitar"]["harmonic"])  # nothing voiced


def test_cli_parses(tmp_path: Path) -> None:
    parser = argparse.ArgumentParser(prog="msldm")
    register(parser.add_subparsers(dest="command"))
    args = parser.parse_args(["eval", "--bundle", "b", "--data", "d", "--out", str(tmp_path), "--n", "8",
                              "--steps", "5,10,20", "--subsets", "B,DG"])
    cfg = config_from_args(args)
    assert cfg.steps == 20 and cfg.sweep_steps == (5, 10, 20) and cfg.subsets == ("B", "DG") and cfg.n == 8
    assert args.func is not None and cfg.silent_retries is None and args.threads == 0
    args = parser.parse_args(["eval", "--bundle", "b", "--data", "d", "--out", str(tmp_path),
                              "--silent-retries", "0", "--threads", "1"])
    assert config_from_args(args).silent_retries == 0 and args.threads == 1
    assert cfg.save_examples == 2 and config_from_args(parser.parse_args(
        ["eval", "--bundle", "b", "--data", "d", "--out", str(tmp_path), "--save-examples", "24"])).save_examples == 24
    for bad in (["--silent-retries", "5"], ["--silent-retries", "-1"], ["--threads", "-2"], ["--save-examples", "-1"]):
        with pytest.raises(SystemExit):
            parser.parse_args(["eval", "--bundle", "b", "--data", "d", "--out", str(tmp_path), *bad])


class _ChurnLevel:
    """Every target is a constant at churn / 100 (the bundle's default, None, as 0.5)."""

    def __init__(self) -> None:
        self.seen: list = []

    def __call__(self, given, targets, *, n_samples, seed, steps, sampler, schedule="karras", resample=1, churn=None):
        self.seen.append(churn)
        return {s: np.full(n_samples, 0.5 if churn is None else churn / 100, np.float32) for s in targets}


def test_churn_reaches_the_generator_in_the_main_run_and_the_sweep(corpus: Path, tmp_path: Path) -> None:
    args = argparse.ArgumentParser(prog="msldm")
    register(args.add_subparsers(dest="command"))
    cfg = config_from_args(args.parse_args(["eval", "--bundle", "b", "--data", "d", "--out", str(tmp_path),
                                            "--n", "2", "--steps", "2", "--churn", "5", "--churns", "0,bundle,40",
                                            "--samplers", "euler", "--subsets", "B", "--sweep-n", "1"]))
    assert cfg.churn == 5.0 and cfg.sweep_churns == (0.0, None, 40.0)
    gen = _ChurnLevel()
    metrics = write_report(gen, corpus, tmp_path / "r", _cfg(**{k: getattr(cfg, k) for k in (
        "churn", "sweep_churns", "subsets", "sweep_n", "steps", "sweep_steps", "sweep_samplers")}), "churn")
    assert [r["churn"] for r in metrics["sweep"]] == [0.0, None, 40.0]
    assert set(gen.seen[:-3]) == {5.0} and gen.seen[-3:] == [0.0, None, 40.0]  # main run, then sweep


class _Seeds:
    """Records the seed of every call; every target is silence."""

    def __init__(self) -> None:
        self.seeds: list[int] = []

    def __call__(self, given, targets, *, n_samples, seed, steps, sampler, schedule="karras", resample=1, churn=None):
        self.seeds.append(seed)
        return {s: np.zeros(n_samples, np.float32) for s in targets}


def test_a_draw_keeps_the_clips_and_changes_every_generation_seed(corpus: Path, tmp_path: Path) -> None:
    args = argparse.ArgumentParser(prog="msldm")
    register(args.add_subparsers(dest="command"))
    assert config_from_args(args.parse_args(["eval", "--bundle", "b", "--data", "d", "--out", str(tmp_path),
                                             "--draw", "2"])).draw == 2
    runs = {}
    for draw in (0, 1):
        gen = _Seeds()
        runs[draw] = (write_report(gen, corpus, tmp_path / f"d{draw}", _cfg(draw=draw, subsets=("B",), sweep_n=0),
                                   "seeds"), gen.seeds)
    (m0, s0), (m1, s1) = runs[0], runs[1]
    assert m0["segments"] == m1["segments"] and len(s0) == len(s1) == 4
    assert not set(s0) & set(s1)
    assert "draw 1." in (tmp_path / "d1" / "report.md").read_text()


def test_summary_gives_the_standard_error_of_the_main_fields() -> None:
    from msldm.eval.pipeline import standard_error, summarise_records

    assert standard_error([1.0, 2.0, 3.0, float("nan"), None]) == pytest.approx(1.0 / np.sqrt(3.0))
    assert np.isnan(standard_error([1.0]))
    recs = [{"harmonic_norm": v, "level_db": -30.0, "empty": 0.0} for v in (0.5, 0.7, 0.9)]
    out = summarise_records({"bass": recs})["bass"]
    assert out["harmonic_norm"] == pytest.approx(0.7) and out["harmonic_norm_se"] == pytest.approx(0.2 / np.sqrt(3))
    assert out["level_db_se"] == 0.0 and "rhythmic_norm_se" not in out and out["clips"] == 3


def test_per_clip_records_and_the_paired_table(corpus: Path, tmp_path: Path) -> None:
    # the oracle against silence, on the same clips: per-clip lists, and paired differences
    # of exactly (silence - real) per clip
    from msldm.eval.report import paired_table

    cfg = _cfg(subsets=("G",), sweep_n=0, save_examples=0, recon_n=0)
    segs = load_segments(corpus, cfg.n, cfg.seconds)
    real = write_report(OracleGenerator(segs), corpus, tmp_path / "real", cfg, "real")
    quiet = write_report(SilenceGenerator(), corpus, tmp_path / "quiet", cfg, "quiet")
    clips = real["tasks"]["G"]["per_clip"]["guitar"]
    assert len(clips["level_db"]) == real["tasks"]["G"]["stems"]["guitar"]["clips"] == len(segs)
    assert np.mean(clips["level_db"]) == pytest.approx(real["tasks"]["G"]["stems"]["guitar"]["level_db"])
    assert clips["empty"] == [0.0] * len(segs) and quiet["tasks"]["G"]["per_clip"]["guitar"]["empty"] == [1.0] * len(segs)
    table = paired_table({"real": real, "quiet": quiet})
    want = np.mean(np.subtract(quiet["tasks"]["G"]["per_clip"]["guitar"]["level_db"], clips["level_db"]))
    row = next(line for line in table.splitlines() if line.startswith("| G / guitar / level_db |"))
    assert f"{want:.3f} ± " in row and "| G / guitar / empty | 1.000 ± 0.000 |" in table
    saved = json.loads((tmp_path / "quiet" / "metrics.json").read_text())
    assert saved["tasks"]["G"]["per_clip"]["guitar"]["empty"] == [1.0] * len(segs)
    assert "pairs)" in table  # silence has no harmonic fit: fewer pairs than clips, and it says so
    assert len(clips["rhythmic"]) == len(segs) and "| G / guitar / rhythmic |" in table  # raw fits too
    # the real stem's share at the comb's pitch, beside the generated one: the oracle's are equal,
    # and silence (no notes) has none of its own but the same real one
    assert clips["comb_share_real"] == clips["comb_share"] and len(clips["comb_share"]) == len(segs)
    assert quiet["tasks"]["G"]["per_clip"]["guitar"]["comb_share_real"] == clips["comb_share_real"]
    assert all(np.isnan(quiet["tasks"]["G"]["per_clip"]["guitar"]["comb_share"]))
    assert "comb share (real)" in (tmp_path / "real" / "report.md").read_text()
    other = dict(quiet, config={**quiet["config"], "seed": 1})
    with pytest.raises(ValueError, match="clips"):
        paired_table({"real": real, "other seed": other})


def test_pooled_norm_is_not_swayed_by_one_clip_with_a_small_gap() -> None:
    from msldm.eval.pipeline import pooled_norm, summarise_records

    clip = {"rhythmic": 0.5, "rhythmic_real": 0.7, "rhythmic_mismatched": 0.3, "rhythmic_norm": 0.5}
    tiny = {"rhythmic": 0.0, "rhythmic_real": 0.36, "rhythmic_mismatched": 0.3, "rhythmic_norm": -5.0}
    nan = {"rhythmic": float("nan"), "rhythmic_real": 0.7, "rhythmic_mismatched": 0.3, "rhythmic_norm": float("nan")}
    recs = [clip] * 9 + [tiny, nan]
    out = summarise_records({"bass": recs})["bass"]
    assert out["rhythmic_norm"] == pytest.approx(-0.05)  # (9 * 0.5 - 5) / 10: one clip sinks the mean
    # means over the 10 finite clips: (0.45 - 0.3) / (0.666 - 0.3)
    assert out["rhythmic_norm_pooled"] == pytest.approx((0.45 - 0.3) / (0.666 - 0.3))
    assert "harmonic_norm_pooled" not in out
    assert np.isnan(pooled_norm([nan], "rhythmic"))


def test_vae_ceiling_scores_the_real_stems_through_a_round_trip(corpus: Path, tmp_path: Path) -> None:
    cfg = _cfg(subsets=("G",), sweep_n=0, save_examples=0, recon_n=0)
    segs = load_segments(corpus, cfg.n, cfg.seconds)
    seen = []

    def half(audio):  # a 'VAE' that halves the level: -6 dB, the same notes and onsets
        seen.append(len(audio))
        return 0.5 * audio

    real = write_report(OracleGenerator(segs), corpus, tmp_path / "real", cfg, "real")
    ceil = write_report(OracleGenerator(segs, round_trip=half), corpus, tmp_path / "ceil", cfg, "ceiling")
    assert len(seen) == len(segs)  # once per clip and generated stem
    r, c = real["tasks"]["G"]["stems"]["guitar"], ceil["tasks"]["G"]["stems"]["guitar"]
    assert c["level_db"] == pytest.approx(r["level_db"] - 20 * np.log10(2), abs=1e-3)
    assert c["rhythmic_norm_pooled"] == pytest.approx(1.0, abs=0.02)


def test_cli_vae_ceiling_runs_the_bundles_round_trip(corpus: Path, tmp_path: Path, monkeypatch, capsys) -> None:
    from server_fixtures import build_tiny_bundle

    from msldm.eval import cli
    from msldm.eval.generators import BundleGenerator

    bundle = build_tiny_bundle(tmp_path / "bundle")
    calls = []
    real = BundleGenerator.reconstruct

    def spy(self, audio):
        calls.append(len(audio))
        return real(self, audio)

    def no_sampling(*a, **k):
        raise AssertionError("the ceiling samples nothing")

    monkeypatch.setattr(BundleGenerator, "reconstruct", spy)
    monkeypatch.setattr(BundleGenerator, "__call__", no_sampling)
    argv = ["eval", "--bundle", str(bundle), "--data", str(corpus), "--out", str(tmp_path / "out"),
            "--n", "3", "--seconds", str(SECONDS), "--subsets", "G", "--steps", "2", "--sweep-n", "0",
            "--recon-n", "0", "--vae-ceiling", "--draw", "2"]
    assert cli.main(argv) == 0
    assert calls == [int(SECONDS * 22050)] * 3
    saved = json.loads((tmp_path / "out" / "metrics.json").read_text())
    assert "ceiling" in (tmp_path / "out" / "report.md").read_text()
    assert saved["tasks"]["G"]["stems"]["guitar"]["clips"] == 3
    assert saved["config"]["silent_retries"] == 0 and saved["config"]["draw"] == 2  # nothing was sampled
    with pytest.raises(SystemExit, match="--bundle"):
        cli.main(["eval", "--vae", "v.safetensors", "--data", str(corpus), "--out", str(tmp_path / "x"),
                  "--vae-ceiling"])


def test_vae_ceiling_follows_the_clips_of_any_draw(corpus: Path) -> None:
    from msldm.eval.cli import _vae_ceiling
    from msldm.eval.pipeline import DRAW_STRIDE

    class Fake:
        def reconstruct(self, audio):
            return -audio

    cfg = _cfg(n=3, draw=2, seed=5)
    segs = load_segments(corpus, cfg.n, cfg.seconds, split=cfg.split, seed=cfg.seed)
    gen = _vae_ceiling(Fake(), str(corpus), cfg)
    for i, seg in enumerate(segs):
        out = gen({}, ["guitar"], n_samples=len(seg.stems["guitar"]), seed=cfg.seed + i + 2 * DRAW_STRIDE,
                  steps=1, sampler="euler")
        np.testing.assert_array_equal(out["guitar"], -seg.stems["guitar"])
