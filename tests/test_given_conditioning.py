"""Given-stem conditioning: a denoiser that reads the given stems clean as well as noised.

The warm start from a joint model, the training masks and loss, the sampler's calls, the
exported graph with its two extra inputs, and the daemon's windows feeding them. The model
is the tiny preset with random weights: plumbing, not quality.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from safetensors import safe_open
from torch import nn

from msldm import sampling
from msldm.config import ModelConfig, get_preset
from msldm.edm import EDMDenoiser, edm_loss, random_given_mask, sample_training_sigma
from msldm.train.runs import warm_start_conditional

torch.set_num_threads(1)


def _pair(seed: int = 0) -> tuple[EDMDenoiser, EDMDenoiser, ModelConfig]:
    torch.manual_seed(seed)
    joint = EDMDenoiser(get_preset("tiny").diffusion).eval()
    cfg = get_preset("tiny_given")
    given = EDMDenoiser(cfg.diffusion).eval()
    warm_start_conditional(given, joint.state_dict())
    return joint, given, cfg


def test_preset_adds_the_given_latents_and_a_mask_per_stem():
    cfg = get_preset("cpu_given")
    assert cfg.diffusion.conditional and not get_preset("cpu").diffusion.conditional
    assert cfg.diffusion.unet.cond_channels == 4 * 80 + 4
    assert cfg.diffusion.unet.channels == get_preset("cpu").diffusion.unet.channels
    assert get_preset("gpu_given").diffusion.unet.channels == get_preset("gpu").diffusion.unet.channels
    assert ModelConfig.from_json(cfg.to_json()) == cfg


def test_warm_start_from_a_joint_model_computes_its_function():
    joint, given, cfg = _pair()
    x, sigma = torch.randn(2, 320, 16), torch.tensor([0.3, 2.0])
    mask = random_given_mask(cfg.diffusion, 2, 16, 1.0, torch.Generator().manual_seed(1))
    with torch.no_grad():
        ref = joint(x, sigma)
        torch.testing.assert_close(given(x, sigma), ref, rtol=0, atol=0)
        torch.testing.assert_close(given(x, sigma, torch.randn_like(x), mask), ref, rtol=0, atol=0)
        with torch.no_grad():  # once the conditioning has weights, the given part changes the output
            given.unet.cond.weight.normal_()
        assert not torch.allclose(given(x, sigma, torch.randn_like(x), mask), ref)
        assert torch.equal(given(x, sigma), given(x, sigma, torch.zeros_like(x), torch.zeros_like(x)))


def test_warm_start_refuses_weights_of_another_model():
    _, given, _ = _pair()
    other = EDMDenoiser(get_preset("cpu").diffusion).state_dict()
    with pytest.raises(RuntimeError):
        warm_start_conditional(given, other)
    state = dict(given.state_dict())
    state.pop("unet.head.2.weight")
    with pytest.raises(RuntimeError, match="head"):
        warm_start_conditional(given, state)


def test_training_masks_give_some_stems_never_all_and_sometimes_a_prefix():
    d = get_preset("tiny_given").diffusion
    g = torch.Generator().manual_seed(0)
    m = random_given_mask(d, 4000, 32, 0.5, g)
    assert m.shape == (4000, 320, 32) and set(m.unique().tolist()) <= {0.0, 1.0}
    per_stem = m.reshape(4000, 4, 80, 32)
    assert torch.equal(per_stem, per_stem[:, :, :1].expand_as(per_stem))  # a stem's channels agree
    stems = per_stem[:, :, 0]  # [B, K, T]
    given_rows = stems.flatten(1).any(1)
    assert 0.4 < given_rows.float().mean() < 0.6  # given_prob, less the rows that drew nothing
    assert not stems.all(dim=(1, 2)).any()  # never everything given
    whole = stems.all(dim=2)  # stems given over every frame
    partial_rows = (stems.any(dim=2) & ~whole).any(1)
    assert 0.05 < partial_rows.float().mean() < 0.25  # continuation in time: 0.25 of the given rows
    for b in torch.nonzero(partial_rows)[:50, 0]:  # the span is the same prefix of every other stem
        rest = stems[b][~whole[b]]  # [stems not wholly given, T]
        n = int(rest[0].sum())
        assert 1 <= n <= 16 and rest[:, :n].all() and not rest[:, n:].any()
    assert not random_given_mask(d, 64, 32, 0.0, g).any()


class _Stub(nn.Module):
    """A 'denoiser' whose output is a parameter: the loss's gradient shows what it scores."""

    def __init__(self, cfg, shape):
        super().__init__()
        self.cfg, self.out, self.seen = cfg, nn.Parameter(torch.zeros(shape)), None

    def forward(self, x, sigma, given=None, mask=None):
        self.seen = (given, mask)
        return self.out + 0 * x


def test_loss_scores_only_the_generated_part_and_shows_the_given_part_clean():
    d = get_preset("tiny_given").diffusion
    z0 = torch.randn(2, 320, 8)
    mask = torch.zeros(2, 320, 8)
    mask[:, 80:160] = 1.0  # drums given
    mask[1, :, :3] = 1.0  # and, in row 1, the first 3 frames of every stem
    stub = _Stub(d, z0.shape)
    edm_loss(stub, z0, torch.Generator().manual_seed(0), mask=mask).backward()
    grad = stub.out.grad
    assert torch.all(grad[mask > 0] == 0) and torch.all(grad[mask == 0] != 0)
    given, seen_mask = stub.seen
    assert torch.equal(given, z0) and torch.equal(seen_mask, mask)
    # the joint model's loss with a mask scores the same positions, without the clean input
    joint = _Stub(get_preset("tiny").diffusion, z0.shape)
    edm_loss(joint, z0, torch.Generator().manual_seed(0), mask=mask).backward()
    assert joint.seen == (None, None) and torch.equal(joint.out.grad != 0, mask == 0)


def test_conditional_training_runs_from_a_joint_checkpoint(tmp_path: Path):
    from msldm.checkpoint import load_diffusion, save_checkpoint
    from msldm.train.distributed import DistInfo
    from msldm.train.tasks import DiffusionTask

    joint, _, cfg = _pair()
    stats = {"latent_mean": torch.zeros(80), "latent_std": torch.ones(80)}
    task = DiffusionTask(cfg, DistInfo(), stats, lr=1e-3, amp=False, given_prob=1.0)
    warm_start_conditional(task.modules["denoiser"], joint.state_dict())
    batch = torch.randn(4, 4, 80, 16)
    before = task.modules["denoiser"].unet.cond.weight.detach().clone()
    logs = [task.train_step(batch, i) for i in range(3)]
    assert all(np.isfinite(v["loss"]) for v in logs)
    assert not torch.equal(task.modules["denoiser"].unet.cond.weight, before)  # it learns to read them
    val = task.val_step(batch)
    assert set(val) == {"loss", "loss_bg", "loss_s0.1"} and all(np.isfinite(v) for v in val.values())
    groups = task.optimizers["denoiser"].param_groups
    assert len(groups) == 1 and groups[0]["lr"] == 1e-3
    adapter = DiffusionTask(cfg, DistInfo(), stats, lr=1e-4, amp=False, cond_lr=3e-3)
    g0, g1 = adapter.optimizers["denoiser"].param_groups  # the conditioning input at its own rate
    assert (g0["lr"], g1["lr"]) == (1e-4, 3e-3)
    cond = {id(p) for p in adapter.modules["denoiser"].unet.cond.parameters()}
    assert {id(p) for p in g1["params"]} == cond and not cond & {id(p) for p in g0["params"]}
    assert len(g0["params"]) + len(g1["params"]) == len(list(adapter.modules["denoiser"].parameters()))
    path = save_checkpoint(tmp_path / "d.safetensors", "diffusion", cfg, task.modules["denoiser"], extra=stats)
    model, cfg2, _, _ = load_diffusion(path)
    assert cfg2.diffusion.conditional and model.unet.cond is not None


def test_imputation_calls_a_conditional_denoiser_with_the_given_part_and_its_mask():
    calls = []

    def denoise(x, sigma, *cond):
        calls.append(cond)
        return x * 0.5

    rng = np.random.default_rng(0)
    given = rng.standard_normal((1, 8, 6)).astype(np.float32)
    mask = np.zeros((1, 8, 1), np.float32)
    mask[:, :4] = 1.0

    def randn(like):
        return rng.standard_normal(like.shape).astype(np.float32)

    sigmas = sampling.karras_sigmas(3)
    noise = randn(given)
    out = sampling.generate(denoise, noise, sigmas, randn=randn, given=given, mask=mask, conditional=True)
    assert len(calls) == 3 and all(len(c) == 2 for c in calls)
    g, m = calls[0]
    assert m.shape == given.shape and np.array_equal(m[:, :4], np.ones((1, 4, 6)))
    assert np.array_equal(g, given * m) and not g[:, 4:].any()
    np.testing.assert_array_equal(out[:, :4], given[:, :4])
    calls.clear()  # a joint denoiser (the default) gets two arguments; total generation too
    sampling.generate(denoise, noise, sigmas, randn=randn, given=given, mask=mask)
    sampling.generate(denoise, noise, sigmas, randn=randn, conditional=True)
    assert calls == [()] * 6


@pytest.fixture(scope="module")
def given_bundle(tmp_path_factory) -> Path:
    from export.onnx_export import ExportOptions, export_bundle
    from export.parity import random_checkpoints

    ckpts = random_checkpoints("tiny_given", tmp_path_factory.mktemp("ckpt"), seed=0)
    out = tmp_path_factory.mktemp("bundle") / "tiny_given"
    export_bundle(*ckpts, out, ExportOptions(parity_frames=(4, 10), parity_steps=3))  # raises beyond parity
    return out


def test_exported_conditional_denoiser_takes_the_given_part(given_bundle: Path):
    from export.manifest import verify_bundle
    from server.runtime import Bundle

    m = verify_bundle(given_bundle)
    assert m["io"]["denoiser"] == {"inputs": ["x", "sigma", "given", "mask"], "output": "denoised"}
    b = Bundle.load(given_bundle, providers=["CPUExecutionProvider"])
    assert b.conditional
    rng = np.random.default_rng(0)
    x = rng.standard_normal((2, 320, 8)).astype(np.float32)
    given = rng.standard_normal(x.shape).astype(np.float32)
    mask = b.stem_mask(["drums"], 8)
    plain = b.denoise(x, 0.7)
    np.testing.assert_array_equal(plain, b.denoise(x, 0.7, given, np.zeros_like(x)))
    assert np.abs(b.denoise(x, 0.7, given, mask) - plain).max() > 1e-4
    # only the given part is read: what `given` holds elsewhere does not matter
    np.testing.assert_array_equal(b.denoise(x, 0.7, given, mask), b.denoise(x, 0.7, given * mask, mask))


def test_daemon_windows_feed_the_given_stems_and_the_continued_frames(given_bundle: Path, monkeypatch):
    from server.runtime import Bundle
    from server.windowing import default_overlap, generate_region

    b = Bundle.load(given_bundle, providers=["CPUExecutionProvider"])
    W, C, D = b.window_frames, b.C, b.D
    seen = []
    real = b.denoise

    def spy(x, sigma, given=None, mask=None):
        seen.append((given, mask))
        return real(x, sigma, given, mask)

    monkeypatch.setattr(b, "denoise", spy)
    n = int(1.5 * W * D)
    bass = np.random.default_rng(2).standard_normal(n).astype(np.float32) * 0.1
    pieces = list(generate_region(b, {"bass": bass}, ["drums"], n, seed=1, steps=2, silent_retries=0))
    assert len(pieces) == 2 and sum(len(p.stems["drums"]) for p in pieces) == n
    assert all(g is not None and m is not None for g, m in seen)
    O = default_overlap(W)
    first, last = seen[0][1], seen[-1][1]
    assert first[0, :C].all() and not first[0, C:].any()  # window 0: the bass
    assert last[0, :C].all() and last[0, C:2 * C, :O].all() and not last[0, C:2 * C, O:].any()
    assert not last[0, 2 * C:].any()  # guitar and piano neither given nor requested


def test_loss_at_a_fixed_noise_level_uses_the_drawn_runs_noise():
    d = get_preset("tiny").diffusion
    z0 = torch.randn(3, 320, 8)
    stub = _Stub(d, z0.shape)
    with torch.no_grad():
        stub.out.normal_()
        fixed = edm_loss(stub, z0, torch.Generator().manual_seed(4), sigma=0.7)
    w = (0.7 ** 2 + 0.16) / (0.7 * 0.4) ** 2
    assert float(fixed) == pytest.approx(float((w * (stub.out.detach() - z0) ** 2).mean()), rel=1e-6)

    class Echo(_Stub):  # returns its noisy input: the loss then reads the noise it was given
        def forward(self, x, sigma, given=None, mask=None):
            return x

    g1, g2 = torch.Generator().manual_seed(4), torch.Generator().manual_seed(4)
    a = edm_loss(Echo(d, z0.shape), z0, g1, sigma=0.7)
    sample_training_sigma(d, 3, g2)  # a drawn run's draws, in order: levels, then noise
    noise = torch.randn(z0.shape, generator=g2)
    assert float(a.detach()) == pytest.approx(float((w * (0.7 * noise) ** 2).mean()), rel=1e-6)


def test_conditional_options_on_a_joint_model_are_a_clear_error(tmp_path: Path):
    from msldm.train import cli
    from msldm.train.distributed import DistInfo
    from msldm.train.tasks import DiffusionTask

    stats = {"latent_mean": torch.zeros(80), "latent_std": torch.ones(80)}
    with pytest.raises(ValueError, match="conditional preset"):
        DiffusionTask(get_preset("tiny"), DistInfo(), stats, lr=1e-3, amp=False, cond_lr=3e-3)
    for flag in (["--cond-lr", "1e-3"], ["--given-prob", "0.3"]):
        with pytest.raises(SystemExit, match="conditional preset"):
            cli.main(["train", "diffusion", "--preset", "tiny", "--latents", str(tmp_path / "none"),
                      "--out", str(tmp_path / "run"), "--steps", "1", *flag])


def test_validation_scores_bass_and_guitar_given_drums_and_piano_only_where_the_stems_allow():
    import dataclasses

    from msldm.train.distributed import DistInfo
    from msldm.train.tasks import DiffusionTask

    stats = {"latent_mean": torch.zeros(80), "latent_std": torch.ones(80)}
    cfg = get_preset("tiny")
    assert set(DiffusionTask(cfg, DistInfo(), stats, amp=False).val_step(torch.randn(2, 4, 80, 16))) == {
        "loss", "loss_bg", "loss_s0.1"}
    one = dataclasses.replace(cfg, diffusion=dataclasses.replace(
        cfg.diffusion, stems=("bass",), unet=dataclasses.replace(cfg.diffusion.unet, in_channels=80)))
    assert set(DiffusionTask(one, DistInfo(), stats, amp=False).val_step(torch.randn(2, 1, 80, 16))) == {"loss", "loss_s0.1"}


def test_interpolated_weights_run_from_the_joint_model_to_the_conditional_one(tmp_path: Path):
    from script_loader import load_script

    from msldm.checkpoint import load_diffusion, save_checkpoint

    joint, given, cfg = _pair()
    with torch.no_grad():
        for q in given.parameters():
            q.add_(0.01 * torch.randn_like(q))  # a fine-tune: every weight moved, the new input too
    stats = {"latent_mean": torch.zeros(80), "latent_std": torch.ones(80)}
    a = save_checkpoint(tmp_path / "a.safetensors", "diffusion", get_preset("tiny"), joint, extra=stats)
    b = save_checkpoint(tmp_path / "b.safetensors", "diffusion", cfg, given, extra=stats)
    mod = load_script("interpolate_weights")
    x, s = torch.randn(1, 320, 16), torch.tensor([1.0])
    mask = random_given_mask(cfg.diffusion, 1, 16, 1.0, torch.Generator().manual_seed(0))
    outs = {}
    for w in (0.0, 0.5, 1.0):
        mod.interpolate(str(a), str(b), w, str(tmp_path / f"w{w}.safetensors"))
        model = load_diffusion(tmp_path / f"w{w}.safetensors")[0]
        with torch.no_grad():
            outs[w] = model(x, s, x, mask)
        assert not (tmp_path / f"w{w}.partial").exists()
    with safe_open(str(tmp_path / "w0.5.safetensors"), framework="pt") as f:
        meta = json.loads(f.metadata()["meta"])
    assert "step" not in meta  # a mix has no single training step; it says what was mixed
    assert meta["interpolated"]["weight_b"] == 0.5
    assert meta["interpolated"]["a"]["file"] == "a.safetensors" and meta["interpolated"]["b"]["file"] == "b.safetensors"
    mod.interpolate(str(a), str(tmp_path / "w0.5.safetensors"), 0.5, str(tmp_path / "ww.safetensors"))
    with safe_open(str(tmp_path / "ww.safetensors"), framework="pt") as f:  # a mix of a mix nests
        assert json.loads(f.metadata()["meta"])["interpolated"]["b"]["interpolated"]["weight_b"] == 0.5
    with torch.no_grad():
        torch.testing.assert_close(outs[0.0], joint(x, s), rtol=1e-5, atol=1e-6)
        torch.testing.assert_close(outs[1.0], given(x, s, x, mask), rtol=1e-5, atol=1e-6)
    assert not torch.allclose(outs[0.5], outs[0.0]) and not torch.allclose(outs[0.5], outs[1.0])
    other = save_checkpoint(tmp_path / "o.safetensors", "diffusion", get_preset("cpu"),
                            EDMDenoiser(get_preset("cpu").diffusion), extra=stats)
    with pytest.raises(SystemExit, match="shape|lacks"):
        mod.interpolate(str(other), str(b), 0.5, str(tmp_path / "bad.safetensors"))
    assert not (tmp_path / "bad.safetensors").exists()


def test_denoise_check_reads_the_noise_a_denoiser_leaves(tmp_path: Path, capsys):
    from msldm.checkpoint import save_checkpoint
    from script_loader import load_script

    check = load_script("denoise_check")
    zn = torch.randn(2, 8, 32).cumsum(-1) * 0.1  # smooth in time, as latents are

    class Identity(torch.nn.Module):  # takes nothing out
        def forward(self, x, sigma):
            return x

    class Oracle(torch.nn.Module):  # takes it all out
        def forward(self, x, sigma):
            return zn

    left, avg = check.noise_left(Identity(), zn, 0.1, seed=0)
    assert left == pytest.approx(1.0) and 0.2 < avg < 0.6  # the average halves white noise, and blurs a little
    assert check.noise_left(Oracle(), zn, 0.1, seed=0)[0] == pytest.approx(0.0, abs=1e-12)
    # end to end on a tiny model's checkpoint and a latents folder of two tracks
    (tmp_path / "lat" / "validation").mkdir(parents=True)
    for i, T in enumerate((40, 12)):
        np.save(tmp_path / "lat" / "validation" / f"T{i}.npy", np.random.randn(4, 80, T).astype(np.float32))
    np.save(tmp_path / "lat" / "validation" / "T0.rms.npy", np.ones((4, 40), np.float32))
    cfg = get_preset("tiny")
    path = save_checkpoint(tmp_path / "d.safetensors", "diffusion", cfg, EDMDenoiser(cfg.diffusion),
                           extra={"latent_mean": torch.zeros(80), "latent_std": torch.ones(80)})
    check.main([str(path), "--latents", str(tmp_path / "lat"), "--start", "4", "--frames", "32",
                "--sigmas", "0.1,1"])
    out = capsys.readouterr().out
    assert "1 windows of 32 frames" in out and "d.safetensors |" in out and "moving average |" in out
    # --sample: partial generation with the sampler changed, decoded with the VAE
    from export.parity import random_checkpoints

    vae, den = random_checkpoints("tiny", tmp_path / "ckpt", seed=0)
    check.main([str(den), "--latents", str(tmp_path / "lat"), "--start", "4", "--frames", "32", "--sigmas", "1",
                "--vae", str(vae), "--sample", "S_churn=0,steps=3", "--sample", "steps=2", "--generate", "guitar"])
    out = capsys.readouterr().out
    assert "sampled, S_churn=0,steps=3:" in out and "sampled, steps=2:" in out
    assert out.count("guitar: level vs real") == 2 and "latent energy x" in out
    for bad, words in ((["--sample", "S_churn=0"], "needs --vae"), (["--vae", str(vae), "--sample", "churn=2"],
                                                                   "unknown sampler field")):
        with pytest.raises(SystemExit):
            check.main([str(den), "--latents", str(tmp_path / "lat")] + bad)
        assert words in capsys.readouterr().err
