"""End to end on a REAL exported bundle: torch checkpoints -> export -> daemon -> bridge.

The bundle is the `tiny` preset with random weights: this checks the plumbing (shapes,
rates, lengths, streaming, the given stems untouched), not musical quality. The server
tests use a hand-built ONNX bundle for speed; these use what `msldm export` writes.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf

from msldm.demo import EXAMPLE_DIR, run_demo


@pytest.fixture(scope="module")
def exported_tiny(tmp_path_factory: pytest.TempPathFactory) -> Path:
    from export.onnx_export import export_bundle
    from msldm.generate import init_random_checkpoints

    root = tmp_path_factory.mktemp("e2e")
    vae, diff = init_random_checkpoints("tiny", root / "ckpt", seed=1)
    export_bundle(vae, diff, root / "bundle")
    return root / "bundle"


def test_manifest_of_exported_bundle(exported_tiny: Path) -> None:
    m = json.loads((exported_tiny / "manifest.json").read_text())
    assert m["stems"] == ["bass", "drums", "guitar", "piano"]
    assert (m["sample_rate"], m["hop"], m["latent_dim"]) == (22050, 320, 80)
    assert m["opset"] >= 17 and set(m["files"]) == {"encoder", "denoiser", "decoder"}
    assert m["sampler"]["schedule"] == "karras"  # the config's schedule is the bundle's default


def test_eval_generator_passes_the_schedule(exported_tiny: Path) -> None:
    from msldm.eval.generators import BundleGenerator
    gen = BundleGenerator(exported_tiny)
    drums = np.random.default_rng(0).standard_normal(4000).astype(np.float32) * 0.1
    run = {s: gen({"drums": drums}, ["bass"], n_samples=4000, seed=1, steps=3, sampler="euler", schedule=s)["bass"]
           for s in ("karras", "melody")}
    default = gen({"drums": drums}, ["bass"], n_samples=4000, seed=1, steps=3, sampler="euler")["bass"]
    np.testing.assert_array_equal(default, run["karras"])
    assert not np.allclose(run["karras"], run["melody"])


def test_eval_generator_takes_sampler_fields_as_the_manifest_would(exported_tiny: Path) -> None:
    from msldm.eval.cli import _sampler_fields
    from msldm.eval.generators import BundleGenerator

    drums = np.random.default_rng(0).standard_normal(4000).astype(np.float32) * 0.1
    kw = dict(n_samples=4000, seed=1, steps=3, sampler="euler")
    plain = BundleGenerator(exported_tiny)({"drums": drums}, ["bass"], **kw)["bass"]
    guided_gen = BundleGenerator(exported_tiny, sampler_fields=_sampler_fields(["guidance=3"]))
    assert guided_gen.bundle.sampler_defaults.guidance == 3.0
    guided = guided_gen({"drums": drums}, ["bass"], **kw)["bass"]
    assert not np.allclose(plain, guided)
    with pytest.raises(SystemExit, match="unknown sampler field"):
        _sampler_fields(["guidence=3"])
    with pytest.raises(SystemExit, match="guidance must"):
        _sampler_fields(["guidance=20"])


def test_eval_refuses_a_sampler_field_the_bundle_defaults_contradict(tmp_path: Path) -> None:
    from msldm.cli import main
    from server.cli import default_bundle

    # resample_tmax 0.5 is a valid field alone, but under the shipped bundle's resample_tmin (0.6)
    with pytest.raises(SystemExit, match="msldm eval: need 0 <= resample_tmin <= resample_tmax, got 0.6, 0.5"):
        main(["eval", "--bundle", str(default_bundle()), "--data", str(tmp_path), "--out", str(tmp_path / "r"),
              "--sampler-field", "resample_tmax=0.5"])
    assert not (tmp_path / "r").exists()  # refused before anything is written


def test_demo_through_daemon_on_exported_bundle(exported_tiny: Path, tmp_path: Path) -> None:
    report = run_demo(tmp_path / "demo", bundle=exported_tiny, seed=3, steps=2, progress=False)
    region = json.loads((EXAMPLE_DIR / "region.json").read_text())
    n = int(round(12.0 * region["sample_rate"]))
    for name in ("bass", "guitar", "drums", "piano", "mixture"):
        audio, rate = sf.read(report.files[name], dtype="float32")
        assert rate == region["sample_rate"] and len(audio) == n, name
        assert np.isfinite(audio).all()
    for name in region["generate"]:
        audio, _ = sf.read(report.files[name], dtype="float32")
        assert np.abs(audio).max() > 0, f"{name} came back silent"
    for name, file in region["given"].items():  # the given stems go back untouched
        original, _ = sf.read(EXAMPLE_DIR / file, dtype="float32")
        written, _ = sf.read(report.files[name], dtype="float32")
        assert np.abs(original - written).max() < 1e-4
    record = json.loads((tmp_path / "demo" / "demo.json").read_text())
    assert record["steps"] == 2 and record["seed"] == 3 and record["schedule"] == "karras"
    assert record["silent_retries"] == 2 and record["silent_rerolls"] == (report.silent_rerolls or 0)
    assert ("sampling(s) repeated" in str(report)) == bool(report.silent_rerolls)
    t = record["timings_s"]
    assert 0 < t["first_audio"] <= t["end_to_end"]


def test_demo_same_seed_same_stems(exported_tiny: Path, tmp_path: Path) -> None:
    a = run_demo(tmp_path / "a", bundle=exported_tiny, seed=5, steps=2, progress=False)
    b = run_demo(tmp_path / "b", bundle=exported_tiny, seed=5, steps=2, progress=False)
    for stem in ("bass", "guitar"):
        assert np.array_equal(sf.read(a.files[stem])[0], sf.read(b.files[stem])[0])
    # at 2 steps both schedules are [sigma_max, sigma_min, 0]; at 3 they differ
    k = run_demo(tmp_path / "k", bundle=exported_tiny, seed=5, steps=3, progress=False, schedule="karras")
    m = run_demo(tmp_path / "m", bundle=exported_tiny, seed=5, steps=3, progress=False, schedule="melody")
    assert json.loads((tmp_path / "m" / "demo.json").read_text())["schedule"] == "melody"
    assert not np.array_equal(sf.read(k.files["bass"])[0], sf.read(m.files["bass"])[0])
    # guidance reaches the daemon: recorded, and the stems move
    g = run_demo(tmp_path / "g", bundle=exported_tiny, seed=5, steps=2, progress=False, guidance=3.0)
    assert json.loads((tmp_path / "g" / "demo.json").read_text())["guidance"] == 3.0
    assert json.loads((tmp_path / "a" / "demo.json").read_text())["guidance"] == 1.0
    assert not np.array_equal(sf.read(a.files["bass"])[0], sf.read(g.files["bass"])[0])


def test_demo_without_bundle_says_so(tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError, match="no model bundle"):
        run_demo(tmp_path / "out", bundle=tmp_path / "missing", progress=False)


def test_region_json_names_the_stems_to_generate_and_reads_the_old_key(tmp_path: Path) -> None:
    """The example region says `generate` (the protocol's name); a region.json with `make`,
    its name before one name per concept, reads the same."""
    from msldm.demo import read_region
    bundled = json.loads((EXAMPLE_DIR / "region.json").read_text())
    assert bundled["generate"] == ["bass", "guitar"] and "make" not in bundled
    old = {k: v for k, v in bundled.items() if k != "generate"} | {"make": ["bass"]}
    (tmp_path / "region.json").write_text(json.dumps(old))
    region = read_region(tmp_path / "region.json")
    assert region["generate"] == ["bass"] and "make" not in region
    assert read_region(EXAMPLE_DIR / "region.json") == bundled
