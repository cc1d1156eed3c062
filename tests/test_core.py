"""Core model plumbing: configs, checkpoints, the U-Net/EDM denoiser and the torch pipeline.

These run tiny random models: they check plumbing and invariants, not musical quality."""

from __future__ import annotations

import json
import math
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
import torch

from msldm.checkpoint import (CheckpointError, join_shards, load_diffusion, read_checkpoint,
                              save_checkpoint, write_shards)
from msldm.config import PRESETS, ModelConfig, get_preset
from msldm.edm import EDMDenoiser, edm_coefficients, edm_loss
from msldm.generate import init_random_checkpoints
from msldm.pipeline import TorchPipeline
from msldm.vae import SourceVAE


@pytest.fixture(scope="module")
def tiny_ckpt(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    out = tmp_path_factory.mktemp("ckpt")
    vae, diff = init_random_checkpoints("tiny", out, seed=0)
    return vae, diff


@pytest.fixture(scope="module")
def tiny_pipe(tiny_ckpt: tuple[Path, Path]) -> TorchPipeline:
    return TorchPipeline.from_checkpoints(*tiny_ckpt)


@pytest.mark.parametrize("name", sorted(PRESETS))
def test_config_json_round_trip(name: str) -> None:
    cfg = get_preset(name)
    assert ModelConfig.from_json(cfg.to_json()) == cfg


@pytest.mark.parametrize("name", sorted(PRESETS))
def test_denoiser_shapes_every_preset(name: str) -> None:
    """The paper-size presets run on the meta device (shapes only, no memory)."""
    cfg = get_preset(name)
    device = "meta" if name.startswith("paper") else "cpu"
    T = 2 * cfg.diffusion.unet.total_factor * (4 if device == "cpu" else 8)
    with torch.device(device):
        model = EDMDenoiser(cfg.diffusion)
        x = torch.randn(2, cfg.diffusion.K * cfg.diffusion.latent_dim, T)
        with torch.no_grad():
            y = model(x, torch.tensor([0.3, 2.0]))
    assert y.shape == x.shape


def test_gpu_preset_swaps_in_for_cpu_and_its_half_weights_travel() -> None:
    """The gpu preset differs from cpu only in its U-Net (same VAE, window and sampler, so its
    bundle serves the same requests), and its float16 weights fit one 16 MiB file, the most the
    device tool brings back."""
    cpu, gpu = get_preset("cpu"), get_preset("gpu")
    assert (gpu.vae, gpu.sampler, gpu.diffusion.window_frames) == (cpu.vae, cpu.sampler, cpu.diffusion.window_frames)
    with torch.device("meta"):
        sizes = [sum(p.numel() for p in EDMDenoiser(c.diffusion).parameters()) for c in (cpu, gpu)]
    assert sizes[1] > 1.5 * sizes[0] and 2 * sizes[1] < 16 * 2**20


@pytest.mark.parametrize("name", sorted(PRESETS))
@pytest.mark.parametrize("n", [1001, 320 * 7 + 13])
def test_vae_shapes_every_preset_odd_lengths(name: str, n: int) -> None:
    cfg = get_preset(name)
    device = "cpu" if name in ("tiny",) else "meta"
    with torch.device(device):
        vae = SourceVAE(cfg.vae)
        with torch.no_grad():
            mean, logvar = vae.encode(torch.randn(1, 1, n))
            audio = vae.decode(mean)
    T = math.ceil(n / cfg.vae.hop)
    assert mean.shape == logvar.shape == (1, cfg.vae.latent_dim, T)
    assert audio.shape == (1, 1, T * cfg.vae.hop)


def test_edm_preconditioning_limits() -> None:
    """c_skip -> 1, c_out -> 0 as sigma -> 0: D(x; 0) = x (Table 1 of Karras et al.)."""
    c_skip, c_out, c_in, _ = edm_coefficients(torch.tensor([1e-6, 0.4, 100.0]), 0.4)
    assert c_skip[0] == pytest.approx(1.0) and c_out[0] == pytest.approx(0.0, abs=1e-5)
    assert c_skip[1] == pytest.approx(0.5) and c_in[1] == pytest.approx(1 / (0.4 * math.sqrt(2)))
    assert c_out[2] == pytest.approx(0.4, rel=1e-3)


def test_tiny_denoiser_overfits_one_batch() -> None:
    """The tiny U-Net drives the EDM loss on one fixed batch (and 4 fixed noise draws) down
    by 10x on CPU in seconds."""
    torch.manual_seed(0)
    cfg = get_preset("tiny").diffusion
    model = EDMDenoiser(cfg)
    z0 = torch.randn(4, cfg.K * cfg.latent_dim, 16) * 0.4
    opt = torch.optim.Adam(model.parameters(), lr=5e-3)

    def fixed_loss() -> float:
        with torch.no_grad():
            return sum(edm_loss(model, z0, torch.Generator().manual_seed(s)).item()
                       for s in range(4))

    first = fixed_loss()
    for step in range(1000):
        loss = edm_loss(model, z0, generator=torch.Generator().manual_seed(step % 4))
        opt.zero_grad()
        loss.backward()
        opt.step()
    last = fixed_loss()
    assert last < first / 10, (first, last)


def test_checkpoint_round_trip_and_errors(tmp_path: Path, tiny_ckpt) -> None:
    model, cfg, meta, stats = load_diffusion(tiny_ckpt[1])
    assert cfg == get_preset("tiny") and meta["seed"] == 0
    assert torch.equal(stats["latent_std"], torch.ones(80))
    path = save_checkpoint(tmp_path / "d.safetensors", "diffusion", cfg, model,
                           extra={"latent_mean": torch.full((80,), 0.5),
                                  "latent_std": torch.full((80,), 2.0)})
    again, _, _, stats = load_diffusion(path)
    assert all(torch.equal(a, b) for a, b in zip(model.state_dict().values(),
                                                  again.state_dict().values()))
    assert torch.equal(stats["latent_mean"], torch.full((80,), 0.5))
    with pytest.raises(CheckpointError, match="holds a diffusion model"):
        read_checkpoint(path, "vae")
    bad = tmp_path / "bad.safetensors"
    bad.write_bytes(b"not a checkpoint")
    with pytest.raises(CheckpointError):
        read_checkpoint(bad)


def _tone(n: int, f: float, sr: int = 22050) -> torch.Tensor:
    return 0.3 * torch.sin(2 * math.pi * f * torch.arange(n) / sr)


def test_partial_generation_keeps_given_stems_exactly(tiny_pipe: TorchPipeline) -> None:
    n = 22050 + 77  # odd length
    given = {"drums": _tone(n, 110.0), "piano": _tone(n, 440.0)}
    res = tiny_pipe.generate(given, ["bass", "guitar"], n, seed=3)
    C = tiny_pipe.config.vae.latent_dim
    T = res.latent.shape[-1]
    for name, audio in given.items():
        k = tiny_pipe.stems.index(name)
        enc = tiny_pipe.encode(torch.nn.functional.pad(audio, (0, T * 320 - n))[None, None])
        assert torch.equal(res.latent[:, k * C:(k + 1) * C], enc)
    assert set(res.stems) == {"bass", "guitar"}
    assert all(a.shape == (n,) for a in res.stems.values())
    assert all(torch.isfinite(a).all() for a in res.stems.values())


def test_same_seed_same_output(tiny_pipe: TorchPipeline) -> None:
    n = 8000
    given = {"drums": _tone(n, 110.0)}
    a = tiny_pipe.generate(given, ["bass"], n, seed=5)
    b = tiny_pipe.generate(given, ["bass"], n, seed=5)
    c = tiny_pipe.generate(given, ["bass"], n, seed=6)
    assert torch.equal(a.stems["bass"], b.stems["bass"])
    assert not torch.equal(a.stems["bass"], c.stems["bass"])


def test_total_generation_and_bad_requests(tiny_pipe: TorchPipeline) -> None:
    res = tiny_pipe.generate({}, list(tiny_pipe.stems), 5000, seed=0)
    assert set(res.stems) == set(tiny_pipe.stems)
    with pytest.raises(ValueError, match="unknown stem"):
        tiny_pipe.generate({}, ["vocals"], 5000)
    with pytest.raises(ValueError, match="both given and requested"):
        tiny_pipe.generate({"bass": _tone(5000, 50.0)}, ["bass"], 5000)
    with pytest.raises(ValueError, match="nothing requested"):
        tiny_pipe.generate({}, [], 5000)


def test_generate_cli_writes_stems(tmp_path: Path, tiny_ckpt) -> None:
    sr = 44100
    t = np.arange(int(1.5 * sr)) / sr
    sf.write(tmp_path / "drums.wav", (0.2 * np.sin(2 * np.pi * 80 * t)).astype(np.float32), sr)
    out = tmp_path / "out"
    cmd = [sys.executable, "-m", "msldm", "generate", "--vae", str(tiny_ckpt[0]),
           "--diffusion", str(tiny_ckpt[1]), "--given", f"drums={tmp_path / 'drums.wav'}",
           "--generate", "bass,piano", "--steps", "3", "--out", str(out)]
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr
    for stem in ("bass", "piano", "drums", "mixture"):
        audio, rate = sf.read(out / f"{stem}.wav")
        assert rate == 22050 and len(audio) == int(round(1.5 * 22050))
    meta = json.loads((out / "generation.json").read_text())  # no --seed: a fresh one, printed and recorded
    assert f"seed {meta['seed']} (--seed {meta['seed']} repeats this take)" in proc.stdout
    assert meta["generate"] == ["bass", "piano"] and meta["duration"] == pytest.approx(1.5, abs=1e-4)
    bad = subprocess.run(cmd[:-2] + ["--make", "drums", "--out", str(out)],  # --make: the old name
                         capture_output=True, text=True, timeout=120)
    assert bad.returncode == 2 and "both given and requested" in bad.stderr
    missing = [a.replace(str(tmp_path / "drums.wav"), str(tmp_path / "nope.wav")) for a in cmd]
    bad = subprocess.run(missing[:-1] + [str(tmp_path / "out2")], capture_output=True, text=True, timeout=120)
    assert bad.returncode == 2 and "--given drums: cannot read" in bad.stderr and "Traceback" not in bad.stderr
    assert not (tmp_path / "out2").exists()


def test_generate_options_one_name_per_concept(monkeypatch) -> None:
    """`msldm generate` says --generate and --duration, as the protocol and the bridge do;
    --make and --seconds, the old names, parse the same and are hidden. No --seed: a fresh
    one per run (the bridge's policy), resolved when the request is built."""
    from msldm.cli import build_parser
    from msldm import cli_common
    from msldm.generate import PipelineRequest

    base = ["generate", "--vae", "v", "--diffusion", "d", "--out", "o"]
    new = build_parser().parse_args(base + ["--generate", "bass", "--duration", "4"])
    old = build_parser().parse_args(base + ["--make", "bass", "--seconds", "4"])
    assert vars(new) == vars(old) and (new.generate, new.duration, new.seed) == ("bass", 4.0, None)
    sub = build_parser()._subparsers._group_actions[0].choices["generate"]
    text = " ".join(sub.format_help().split())
    assert "--generate" in text and "--duration" in text and "fresh one each run" in text
    assert "--make" not in text and "--seconds" not in text
    seeds = iter([21, 22])
    monkeypatch.setattr(cli_common.secrets, "randbelow", lambda n: next(seeds))
    make = (lambda seed: PipelineRequest.from_cli([], new.generate, new.duration, seed, None, None))
    assert [make(None).seed, make(None).seed, make(7).seed] == [21, 22, 7]
    assert make(7).generate == ("bass",) and make(7).duration == 4.0


def test_weights_that_do_not_fit_their_config_are_a_checkpoint_error(tmp_path: Path) -> None:
    from msldm.checkpoint import load_vae
    from msldm.vae import SourceVAE
    path = save_checkpoint(tmp_path / "v.safetensors", "vae", get_preset("tiny"), SourceVAE(get_preset("preview").vae))
    with pytest.raises(CheckpointError, match="do not fit"):
        load_vae(path)


def test_checkpoint_shards_round_trip(tmp_path: Path, tiny_ckpt) -> None:
    shards = write_shards(tiny_ckpt[1], tmp_path / "shards", max_bytes=200_000, half=True)
    assert len(shards) > 1 and all(p.stat().st_size <= 200_000 for p in shards)
    joined = join_shards(shards, tmp_path / "joined.safetensors")
    a, _, _, _ = load_diffusion(tiny_ckpt[1])
    b, cfg, _, _ = load_diffusion(joined)
    assert cfg == get_preset("tiny")
    for (k, x), y in zip(a.state_dict().items(), b.state_dict().values()):
        assert torch.allclose(x, y, atol=2e-3 * x.abs().max().item() + 1e-6), k
    with pytest.raises(CheckpointError, match="shard"):
        join_shards(shards[:-1], tmp_path / "partial.safetensors")
    with pytest.raises(CheckpointError, match="not one whole set"):
        join_shards([shards[0]] * len(shards), tmp_path / "repeated.safetensors")
    assert not (tmp_path / "repeated.safetensors").exists()


def test_the_cli_starts_without_torch() -> None:
    """`msldm --help`, `msldm demo` and `msldm serve` build the whole parser: the areas that
    need torch or scipy import them in their handlers, not at start-up."""
    code = ("import sys, msldm.cli as c; c.build_parser(); "
            "print(sorted(m for m in ('torch', 'scipy') if m in sys.modules))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert out.returncode == 0 and out.stdout.strip() == "[]", out.stdout + out.stderr


def test_train_stem_is_checked_before_any_work(tmp_path: Path) -> None:
    from msldm.train.cli import main
    common = ["train", "diffusion", "--preset", "tiny", "--latents", str(tmp_path), "--out", str(tmp_path / "o"),
              "--steps", "1"]
    with pytest.raises(SystemExit, match="--baseline isldm"):
        main(common + ["--stem", "bass"])
    with pytest.raises(SystemExit, match="not one of the model's stems"):
        main(common + ["--baseline", "isldm", "--stem", "kazoo"])
