"""Training: tiny VAE and diffusion runs on a toy corpus, exact resume, baselines, CLI, DDP."""

from __future__ import annotations

import dataclasses
import json
import os
import socket
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.multiprocessing as mp

from corpus_fixtures import SR, write_corpus
from msldm.checkpoint import load_diffusion, load_vae, save_checkpoint
from msldm.config import STEMS, ModelConfig, get_preset
from msldm.data.latents import extract_latents
from msldm.data.slakh import ActivityFilter
from msldm.train.baselines import baseline_config
from msldm.train.distributed import DistInfo, init_distributed
from msldm.train.loop import TrainConfig
from msldm.data.latents import load_stats
from msldm.train.loop import train
from msldm.train.runs import diffusion_datasets, train_diffusion, train_vae, vae_datasets
from msldm.train.tasks import DiffusionTask, SpectralVAETask, VAETask

torch.set_num_threads(1)  # the test machine is shared: threads only contend
SECONDS = 8 * 320 / SR  # VAE segments of 8 latent frames


def tiny_config(window_frames: int = 16) -> ModelConfig:
    """The tiny preset with a cheaper loss (two mel scales, two periods, one STFT scale)."""
    c = get_preset("tiny")
    loss = dataclasses.replace(c.vae_loss, mel_windows=(64, 256), mel_bands=(10, 40),
                               periods=(2, 3), stft_ffts=(256,))
    return dataclasses.replace(c, vae_loss=loss,
                               diffusion=dataclasses.replace(c.diffusion, window_frames=window_frames))


@pytest.fixture(scope="module")
def corpus(tmp_path_factory: pytest.TempPathFactory) -> dict:
    base = tmp_path_factory.mktemp("train")
    write_corpus(base / "data", {"train": 3, "validation": 1})
    torch.manual_seed(0)
    config = tiny_config()
    from msldm.vae import SourceVAE
    vae = SourceVAE(config.vae).eval()
    ckpt = save_checkpoint(base / "vae0.safetensors", "vae", config, vae)
    extract_latents(vae, base / "data", base / "latents", stems=STEMS, batch=8,
                    window_frames=32, progress=False,
                    meta={"config": config.to_dict(), "vae_checkpoint": str(ckpt)})
    return {"base": base, "data": base / "data", "latents": base / "latents", "vae": ckpt}


def _cfg(out: Path, steps: int, **kw) -> TrainConfig:
    base = dict(out=str(out), steps=steps, batch=2, log_every=2, val_every=steps, val_batches=1,
                ckpt_every=steps, ema_decay=0.9, progress=False, tensorboard=False)
    return TrainConfig(**{**base, **kw})


def _early_late(values: list[float], n: int) -> tuple[float, float]:
    return float(np.mean(values[:n])), float(np.mean(values[-n:]))


def test_vae_training_loss_falls_and_exports(corpus: dict, tmp_path: Path) -> None:
    hist = train_vae(tiny_config(), corpus["data"], _cfg(tmp_path, 12, tensorboard=True,
                     media_every=12), DistInfo(), lr=1e-3, seconds=SECONDS)
    early, late = _early_late([h["mel"] for h in hist], 3)
    assert len(hist) == 12 and "adv" in hist[0] and late < early
    vae, config, meta = load_vae(tmp_path / "vae.safetensors")
    assert meta["step"] == 12 and config.vae == tiny_config().vae
    assert list((tmp_path / "tb").glob("events.*"))


def test_diffusion_training_loss_falls_and_exports(corpus: dict, tmp_path: Path) -> None:
    cfg = _cfg(tmp_path, 40, batch=4, log_every=10, tensorboard=True, media_every=40)
    hist = train_diffusion(tiny_config(), corpus["latents"], cfg, DistInfo(), lr=3e-3,
                           vae_path=str(corpus["vae"]), activity=ActivityFilter(threshold=0))
    early, late = _early_late([h["loss"] for h in hist], 10)
    assert late < 0.8 * early, (early, late)
    model, config, meta, stats = load_diffusion(tmp_path / "diffusion.safetensors")
    assert meta["step"] == 40 and config.diffusion.window_frames == 16
    assert stats["latent_std"].shape == (80,) and not torch.allclose(stats["latent_std"], torch.ones(80))


def test_resident_windows_train_the_same_run(corpus: dict, tmp_path: Path) -> None:
    """Windows held on the device (what a GPU run uses) give the DataLoader's batches: the same
    losses and weights, validation included."""
    def run(out: Path, resident: bool) -> list[dict[str, float]]:
        cfg = _cfg(out, 4, batch=3, val_every=2, val_batches=1, ckpt_every=4)
        return train_diffusion(tiny_config(), corpus["latents"], cfg, DistInfo(), lr=1e-3,
                               activity=ActivityFilter(threshold=0), resident=resident)

    loader, resident = run(tmp_path / "a", False), run(tmp_path / "b", True)
    assert [h["loss"] for h in resident] == [h["loss"] for h in loader]
    vals = [[json.loads(l)["val"] for l in (tmp_path / d / "log.jsonl").read_text().splitlines()
             if "val" in json.loads(l)] for d in "ab"]
    assert vals[0] == vals[1] and len(vals[0]) == 2
    wa = load_diffusion(tmp_path / "a" / "diffusion.safetensors")[0].state_dict()
    wb = load_diffusion(tmp_path / "b" / "diffusion.safetensors")[0].state_dict()
    assert all(torch.equal(wa[k], wb[k]) for k in wa)


@pytest.mark.parametrize("kind", ["vae", "diffusion"])
def test_resume_continues_exactly(corpus: dict, tmp_path: Path, kind: str) -> None:
    def run(out: Path, steps: int, resume: bool) -> list[dict[str, float]]:
        cfg = _cfg(out, steps, ckpt_every=3, resume=resume, val_every=0)
        if kind == "vae":
            return train_vae(tiny_config(), corpus["data"], cfg, DistInfo(), lr=1e-3,
                             seconds=SECONDS, adversarial_start=1)
        return train_diffusion(tiny_config(), corpus["latents"], cfg, DistInfo(), lr=1e-3,
                               activity=ActivityFilter(threshold=0))

    straight = run(tmp_path / "a", 5, False)
    run(tmp_path / "b", 3, False)
    resumed = run(tmp_path / "b", 5, True)
    assert len(resumed) == 2
    assert [h["loss"] for h in resumed] == [h["loss"] for h in straight[3:]]
    a = load_vae if kind == "vae" else load_diffusion
    wa, wb = a(tmp_path / "a" / f"{kind}.safetensors")[0], a(tmp_path / "b" / f"{kind}.safetensors")[0]
    for (k, x), y in zip(wa.state_dict().items(), wb.state_dict().values()):
        assert torch.equal(x, y), k


def test_baselines_build_and_take_a_step() -> None:
    base = tiny_config()
    isldm = baseline_config(base, "isldm")
    assert [c.diffusion.stems for c in isldm] == [(s,) for s in STEMS]
    assert all(c.diffusion.unet.in_channels == 80 for c in isldm)
    mix = baseline_config(base, "mixldm")
    assert mix.vae.latent_dim == mix.diffusion.latent_dim == mix.diffusion.unet.in_channels == 320
    assert baseline_config(base, "msldm") == base
    with pytest.raises(ValueError):
        baseline_config(base, "msdm")
    torch.manual_seed(0)
    for config in (isldm[0], mix):
        C, K = config.diffusion.latent_dim, config.diffusion.K
        stats = {"latent_mean": torch.zeros(C), "latent_std": torch.ones(C)}
        task = DiffusionTask(config, DistInfo(), stats, lr=1e-3)
        logs = task.train_step(torch.randn(2, K, C, 16) * 0.4, 0)
        assert np.isfinite(logs["loss"])
    vae_logs = VAETask(mix, DistInfo(), lr=1e-3).train_step(torch.randn(2, 1, 2560) * 0.1, 0)
    assert np.isfinite(vae_logs["loss"])


def test_cli_trains_isldm_models(corpus: dict, tmp_path: Path) -> None:
    from msldm.train.cli import main

    main(["train", "diffusion", "--preset", "tiny", "--baseline", "isldm", "--stem", "bass",
          "--latents", str(corpus["latents"]), "--out", str(tmp_path), "--steps", "2",
          "--batch", "2", "--workers", "0", "--no-progress", "--device", "cpu",
          "--silence-threshold", "0"])
    model, config, meta, _ = load_diffusion(tmp_path / "bass" / "diffusion.safetensors")
    assert config.diffusion.stems == ("bass",) and meta["baseline"] == "isldm"
    assert not (tmp_path / "drums").exists()


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _ddp_worker(rank: int, port: int, data: str, latents: str, out: str) -> None:
    """One of 2 gloo processes: 3 VAE steps (discriminator from step 1), 3 steps of the spectral
    VAE with its discriminator, and 3 diffusion steps; saves (steps run, sum of every raw weight)
    per kind so the test can compare the ranks."""
    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port), RANK=str(rank),
                      WORLD_SIZE="2", LOCAL_RANK=str(rank))
    torch.set_num_threads(1)
    info = init_distributed("cpu")
    config, sums = tiny_config(), []
    for kind in ("vae", "spectral", "diffusion"):
        cfg = _cfg(Path(out) / kind, 3, val_every=3)
        if kind == "vae":
            train_set, val_set = vae_datasets(config, data, SECONDS)
            task = VAETask(config, info, lr=1e-3, adversarial_start=1)
        elif kind == "spectral":
            spectral = _adversarial_spectral()
            train_set, val_set = vae_datasets(spectral, data, SECONDS)
            torch.manual_seed(rank)  # different initial weights: the task makes them rank 0's
            task = SpectralVAETask(spectral, info, lr=1e-3, adversarial_start=1)
        else:
            train_set, val_set = diffusion_datasets(config, latents, ActivityFilter(threshold=0))
            task = DiffusionTask(config, info, load_stats(latents), lr=1e-3)
        hist = train(task, train_set, cfg, info, val_set)
        weights = [p.detach().double().sum() for m in task.modules.values() for p in m.parameters()]
        sums.append([len(hist), float(sum(weights))])
    np.save(Path(out) / f"rank{rank}.npy", np.array(sums))
    torch.distributed.destroy_process_group()


def test_ddp_two_cpu_processes(corpus: dict, tmp_path: Path) -> None:
    mp.spawn(_ddp_worker, nprocs=2, args=(_free_port(), str(corpus["data"]),
                                          str(corpus["latents"]), str(tmp_path)))
    r0, r1 = np.load(tmp_path / "rank0.npy"), np.load(tmp_path / "rank1.npy")
    assert (r0[:, 0] == 3).all() and (r1[:, 0] == 3).all()
    np.testing.assert_array_equal(r0[:, 1], r1[:, 1])  # gradients were averaged: same weights
    for kind in ("vae", "spectral", "diffusion"):
        assert (tmp_path / kind / "train_state.rng1.safetensors").is_file()
        assert (tmp_path / kind / f"{'vae' if kind == 'spectral' else kind}.safetensors").is_file()


def test_decoder_only_training_keeps_the_encoder_and_its_latents(corpus: dict, tmp_path: Path) -> None:
    # --freeze-encoder: the latents a denoiser was trained on stay exactly the same, while the
    # decoder learns.
    from msldm.spectral_vae import SpectralVAE

    config = get_preset("tiny_spectral")
    torch.manual_seed(1)
    init = save_checkpoint(tmp_path / "init.safetensors", "vae", config, SpectralVAE(config.vae))
    before = load_vae(init)[0]
    train_vae(config, corpus["data"], _cfg(tmp_path / "run", 4, ema_decay=0.0), DistInfo(),
              lr=1e-3, seconds=SECONDS, init=init, freeze_encoder=True)
    after = load_vae(tmp_path / "run" / "vae.safetensors")[0]
    enc0, enc1 = before.encoder.state_dict(), after.encoder.state_dict()
    assert all(torch.equal(enc0[k], enc1[k]) for k in enc0)
    dec0, dec1 = before.decoder.state_dict(), after.decoder.state_dict()
    assert any(not torch.equal(dec0[k], dec1[k]) for k in dec0)
    audio = torch.randn(1, 1, 16 * 320) * 0.1
    with torch.no_grad():
        assert torch.equal(before.encode(audio)[0], after.encode(audio)[0])


def test_decoder_only_training_of_an_encoder_that_reads_the_low_band(corpus: dict, tmp_path: Path) -> None:
    # a frozen encoder_low encoder needs an init that has one: one widened with zeros could
    # never learn its new inputs
    from msldm.spectral_vae import SpectralVAE

    base = get_preset("tiny_spectral")
    config = dataclasses.replace(base, vae=dataclasses.replace(base.vae, low_n_fft=1280, encoder_low=True))
    torch.manual_seed(2)
    plain = save_checkpoint(tmp_path / "plain.safetensors", "vae", base, SpectralVAE(base.vae))
    with pytest.raises(ValueError, match="low band"):
        train_vae(config, corpus["data"], _cfg(tmp_path / "bad", 1), DistInfo(), lr=1e-3, seconds=SECONDS,
                  init=plain, freeze_encoder=True)
    assert not (tmp_path / "bad").exists()  # refused before anything was written
    init = save_checkpoint(tmp_path / "init.safetensors", "vae", config, SpectralVAE(config.vae))
    train_vae(config, corpus["data"], _cfg(tmp_path / "run", 2, ema_decay=0.0), DistInfo(),
              lr=1e-3, seconds=SECONDS, init=init, freeze_encoder=True)
    enc0, enc1 = load_vae(init)[0].encoder.state_dict(), load_vae(tmp_path / "run" / "vae.safetensors")[0].encoder.state_dict()
    assert all(torch.equal(enc0[k], enc1[k]) for k in enc0)


def test_cli_frame_threshold_reaches_the_window_filter(monkeypatch, tmp_path: Path) -> None:
    import msldm.train.runs as runs
    from msldm.train.cli import main

    seen = []
    monkeypatch.setattr(runs, "train_diffusion", lambda *a, **k: seen.append(k["activity"]) or [])
    base = ["train", "diffusion", "--preset", "tiny", "--latents", str(tmp_path), "--out", str(tmp_path / "o"),
            "--steps", "1", "--no-progress", "--device", "cpu", "--min-frame-share", "0.6"]
    main(base)
    main(base + ["--frame-threshold-db", "-50"])
    assert seen[0].frame_threshold == 3e-4 and seen[0].min_frame_share == 0.6  # the default, as before
    assert seen[1].frame_threshold == pytest.approx(10 ** -2.5)
    assert seen[0].stem_frame_share == ()
    main(base + ["--stem-frame-share", "guitar=0.8", "--stem-frame-share", "bass=0.5"])
    assert seen[2].stem_frame_share == (("guitar", 0.8), ("bass", 0.5)) and seen[2].min_frame_share == 0.6
    for bad in ("guitar", "flute=0.5", "guitar=1.5", "guitar=x"):
        with pytest.raises(SystemExit):
            main(base + ["--stem-frame-share", bad])
    for bad in ("nan", "inf", "3"):
        with pytest.raises(SystemExit):
            main(base + ["--frame-threshold-db", bad])


def _recording_cli(monkeypatch, tmp_path: Path, trainer: str, head: list[str]):
    """(`msldm train` main, the configs it hands `msldm.train.runs.<trainer>` (which then does
    nothing), the argv of a one-step run on the CPU starting with `head`)."""
    import msldm.train.runs as runs
    from msldm.train.cli import main

    seen: list = []
    monkeypatch.setattr(runs, trainer, lambda config, *a, **k: seen.append(config) or [])
    return main, seen, ["train", *head, "--out", str(tmp_path / "o"), "--steps", "1", "--no-progress", "--device", "cpu"]


def test_cli_train_sigma_and_channel_filters_reach_the_denoiser_config(monkeypatch, tmp_path: Path) -> None:
    main, seen, base = _recording_cli(monkeypatch, tmp_path, "train_diffusion",
                                      ["diffusion", "--preset", "tiny", "--latents", str(tmp_path)])
    main(base)
    main(base + ["--train-sigma", "mixed"])
    assert seen[0].diffusion.train_sigma == "uniform" and seen[1].diffusion.train_sigma == "mixed"
    with pytest.raises(SystemExit):
        main(base + ["--train-sigma", "cosine"])
    main(base + ["--channel-filters", "4"])
    assert seen[-1].diffusion.unet.channel_filters == 4 and seen[0].diffusion.unet.channel_filters == 0
    with pytest.raises(SystemExit):
        main(base + ["--channel-filters", "-1"])


def test_mixed_training_sigma_covers_the_low_levels_and_keeps_the_high_ones() -> None:
    from msldm.config import DiffusionConfig
    from msldm.edm import sample_training_sigma

    n = 40000
    draws = {}
    for kind in ("uniform", "lognormal", "mixed"):
        cfg = dataclasses.replace(DiffusionConfig(), train_sigma=kind)
        draws[kind] = sample_training_sigma(cfg, n, torch.Generator().manual_seed(0))
        assert draws[kind].shape == (n,) and bool((draws[kind] > 0).all())
    low = {k: float((v < 0.1).float().mean()) for k, v in draws.items()}
    high = {k: float((v > 1.5).float().mean()) for k, v in draws.items()}
    assert low["uniform"] == pytest.approx(0.1 / 3.0, abs=0.005)
    assert low["mixed"] == pytest.approx((low["uniform"] + low["lognormal"]) / 2, abs=0.01)
    assert low["mixed"] > 2.5 * low["uniform"]  # the levels the sampler ends on
    assert high["mixed"] == pytest.approx((high["uniform"] + high["lognormal"]) / 2, abs=0.01)
    assert float(draws["mixed"].max()) > 2.9  # the uniform half still reaches train_sigma_max
    same = sample_training_sigma(dataclasses.replace(DiffusionConfig(), train_sigma="mixed"), n,
                                 torch.Generator().manual_seed(0))
    assert torch.equal(same, draws["mixed"])  # a resumed run draws the same levels
    with pytest.raises(ValueError, match="unknown train_sigma"):
        sample_training_sigma(dataclasses.replace(DiffusionConfig(), train_sigma="cosine"), 4)


def test_cli_flux_and_phase_grad_reach_the_vae_loss(monkeypatch, tmp_path: Path) -> None:
    main, seen, base = _recording_cli(monkeypatch, tmp_path, "train_vae",
                                      ["vae", "--preset", "tiny_spectral", "--data", str(tmp_path)])
    main(base)
    main(base + ["--flux-weight", "0.5"])
    assert seen[0].vae_loss.lambda_flux == 0.0 and seen[1].vae_loss.lambda_flux == 0.5
    for bad in ("nan", "-1"):
        with pytest.raises(SystemExit):
            main(base + ["--flux-weight", bad])
    with pytest.raises(SystemExit):  # the DAC-style VAE has no such term
        main(["train", "vae", "--preset", "tiny", "--data", str(tmp_path), "--out", str(tmp_path / "p"),
              "--steps", "1", "--no-progress", "--device", "cpu", "--flux-weight", "1"])
    main(base + ["--phase-weight", "4"])
    assert seen[-1].vae_loss.lambda_phase == 4.0 and seen[0].vae_loss.lambda_phase == 1.0
    with pytest.raises(SystemExit):
        main(base + ["--phase-weight", "-2"])
    main(base + ["--phase-error", "l1"])
    assert seen[-1].vae_loss.phase_error == "l1" and seen[0].vae_loss.phase_error == "cos"
    main(base + ["--level-weight", "4"])
    assert seen[-1].vae_loss.lambda_level == 4.0 and seen[0].vae_loss.lambda_level == 0.0
    with pytest.raises(SystemExit):
        main(base + ["--level-weight", "-1"])
    main(base + ["--phase-grad-frames", "4"])
    assert seen[-1].vae_loss.phase_grad_frames == 4 and seen[0].vae_loss.phase_grad_frames == 0
    for bad in (["--phase-grad-frames", "-1"], ["--phase-grad-frames", "4", "--vae-phase", "free"]):
        with pytest.raises(SystemExit):
            main(base + bad)


def test_resume_reseeds_a_generator_saved_on_another_kind_of_device(tmp_path: Path, capsys) -> None:
    from msldm.train.state import load_train_state, save_train_state

    class CudaLike:  # a CUDA generator's state is 16 bytes (Philox), a CPU one's 5056 (Mersenne Twister)
        def __init__(self) -> None:
            self.seeds: list[int] = []

        def initial_seed(self) -> int:
            return 1001  # seed 1, rank 1

        def get_state(self) -> torch.Tensor:
            return torch.zeros(16, dtype=torch.uint8)

        def set_state(self, state: torch.Tensor) -> None:
            raise AssertionError("a CPU generator's state cannot drive this one")

        def manual_seed(self, seed: int) -> "CudaLike":
            self.seeds.append(seed)
            return self

    model = torch.nn.Linear(2, 2)
    opt = torch.optim.SGD(model.parameters(), lr=0.1)
    cpu = torch.Generator().manual_seed(3)
    save_train_state(tmp_path, 7, {"m": model}, {"m": opt}, {}, {}, {"noise": cpu})
    other = CudaLike()
    load_train_state(tmp_path, {"m": model}, {"m": opt}, {}, {}, {"noise": other})
    assert other.seeds == [1001 * 1_000_003 + 7]
    assert "not exact" in capsys.readouterr().err
    same = torch.Generator()
    load_train_state(tmp_path, {"m": model}, {"m": opt}, {}, {}, {"noise": same})
    assert torch.equal(same.get_state(), cpu.get_state())  # the same kind of device: exact


def test_training_on_latents_imports_without_soundfile() -> None:
    """A lent GPU box has torch but no soundfile: the trainer and its data modules must import."""
    import subprocess
    import sys

    code = ("import sys; sys.modules['soundfile'] = None; "
            "import msldm.train.runs, msldm.train.cli, msldm.train.loop, msldm.train.state")
    subprocess.run([sys.executable, "-c", code], check=True)


def test_denoiser_noise_is_drawn_on_the_training_device() -> None:
    task = DiffusionTask(tiny_config(), DistInfo(), {"latent_mean": torch.zeros(80), "latent_std": torch.ones(80)})
    assert task.generators["noise"].device == task.info.device


def _adversarial_spectral(**loss) -> ModelConfig:
    """tiny_spectral with a cheap discriminator (width 2, one period, one STFT size)."""
    c = get_preset("tiny_spectral")
    kw = dict(lambda_spectral_adversarial=0.5, lambda_spectral_feature=1.0, discriminator_channels=2,
              periods=(2,), stft_ffts=(256,), **loss)
    return dataclasses.replace(c, vae_loss=dataclasses.replace(c.vae_loss, **kw))


def test_cli_adversarial_options_reach_the_spectral_vae_loss(monkeypatch, tmp_path: Path) -> None:
    main, seen, base = _recording_cli(monkeypatch, tmp_path, "train_vae",
                                      ["vae", "--preset", "tiny_spectral", "--data", str(tmp_path)])
    main(base)
    assert not seen[0].vae_loss.spectral_adversarial
    main(base + ["--adversarial-weight", "0.5", "--feature-weight", "1", "--disc-channels", "4",
                 "--disc-periods", "none", "--disc-ffts", "1024,512", "--disc-lr", "2e-4"])
    loss = seen[-1].vae_loss
    assert loss.spectral_adversarial and loss.lambda_spectral_adversarial == 0.5
    assert (loss.lambda_spectral_feature, loss.discriminator_channels) == (1.0, 4)
    assert loss.periods == () and loss.stft_ffts == (1024, 512)
    for bad in (["--adversarial-weight", "-1"], ["--feature-weight", "nan"], ["--disc-channels", "0"],
                ["--disc-periods", "1"], ["--disc-ffts", "32"], ["--disc-periods", "2,x"],
                ["--disc-lr", "1e-4"]):  # a learning rate for a discriminator nobody asked for
        with pytest.raises(SystemExit):
            main(base + bad)
    with pytest.raises(SystemExit):  # the DAC-style VAE trains its own GAN, with its own weights
        main(["train", "vae", "--preset", "tiny", "--data", str(tmp_path), "--out", str(tmp_path / "p"),
              "--steps", "1", "--no-progress", "--device", "cpu", "--adversarial-weight", "1"])


def test_adversarial_terms_reach_the_vae_or_the_discriminator_never_both() -> None:
    from msldm.discriminators import Discriminator
    from msldm.spectral_losses import adversarial_terms

    torch.manual_seed(0)
    disc = Discriminator(_adversarial_spectral().vae_loss)
    audio = torch.randn(2, 1, 2048) * 0.1
    recon = (torch.randn(2, 1, 2048) * 0.1).requires_grad_(True)
    loss_d, adv, feat = adversarial_terms(disc, audio, recon)
    loss_d.backward()
    assert recon.grad is None  # the discriminator's loss sees the reconstruction detached
    assert all(p.grad is not None and bool(p.grad.abs().sum() > 0) for p in disc.parameters())
    disc.zero_grad(set_to_none=True)
    (adv + feat).backward()
    assert all(p.grad is None for p in disc.parameters())  # frozen for the generator's terms
    assert recon.grad is not None and bool(recon.grad.abs().sum() > 0)
    assert all(p.requires_grad for p in disc.parameters())  # and unfrozen afterwards


def test_spectral_task_adds_the_gan_terms_from_adversarial_start() -> None:
    from msldm.train.tasks import SpectralVAETask

    config = _adversarial_spectral()
    torch.manual_seed(0)
    task = SpectralVAETask(config, DistInfo(), lr=1e-3, adversarial_start=1, freeze_encoder=True)
    batch = torch.randn(2, 4, 8 * 320) * 0.1
    cfg = config.vae_loss
    disc0 = {k: v.clone() for k, v in task.disc.state_dict().items()}
    for step in (0, 1):
        logs = task.train_step(batch, step)
        regression = (cfg.lambda_logmag * logs["logmag"] + cfg.lambda_phase * logs["phase"]
                      + cfg.lambda_stft * logs["stft"] + cfg.lambda_spectral_mel * logs["mel"]
                      + cfg.lambda_flux * logs["flux"] + cfg.lambda_spectral_kl * logs["kl"])
        gan = cfg.lambda_spectral_adversarial * logs["adv"] + cfg.lambda_spectral_feature * logs["feat"]
        expected = regression + (gan if step >= 1 else 0.0)
        assert logs["loss"] == pytest.approx(expected, rel=1e-5), step
        assert logs["disc"] > 0 and logs["grad_norm_d"] > 0
    # the discriminator learns from the first step, while its terms wait for adversarial_start
    assert any(not torch.equal(disc0[k], v) for k, v in task.disc.state_dict().items())
    assert "disc" in task.modules and "disc" in task.optimizers  # saved and resumed with the run
    assert SpectralVAETask(get_preset("tiny_spectral"), DistInfo()).disc is None  # off by default


def test_adversarial_decoder_fine_tune_resumes_exactly(corpus: dict, tmp_path: Path) -> None:
    from msldm.spectral_vae import SpectralVAE

    config = _adversarial_spectral()
    torch.manual_seed(1)
    init = save_checkpoint(tmp_path / "init.safetensors", "vae", config, SpectralVAE(config.vae))

    def run(out: Path, steps: int, resume: bool) -> list[dict[str, float]]:
        cfg = _cfg(out, steps, ckpt_every=2, resume=resume, val_every=0, log_every=1)
        return train_vae(config, corpus["data"], cfg, DistInfo(), lr=1e-3, seconds=SECONDS, init=init,
                         freeze_encoder=True, adversarial_start=1, disc_lr=1e-3)

    straight = run(tmp_path / "a", 4, False)
    run(tmp_path / "b", 2, False)
    resumed = run(tmp_path / "b", 4, True)
    assert [h["disc"] for h in resumed] == [h["disc"] for h in straight[2:]]  # the discriminator too
    assert [h["loss"] for h in resumed] == [h["loss"] for h in straight[2:]]
    wa = load_vae(tmp_path / "a" / "vae.safetensors")[0].state_dict()
    wb = load_vae(tmp_path / "b" / "vae.safetensors")[0].state_dict()
    assert all(torch.equal(wa[k], wb[k]) for k in wa)
    enc0 = load_vae(init)[0].encoder.state_dict()
    assert all(torch.equal(enc0[k], wa["encoder." + k]) for k in enc0)  # the latents stay valid
