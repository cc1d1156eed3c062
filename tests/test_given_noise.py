"""Given stems shown under less noise: a joint denoiser trained on rows whose given part is
noised at r * sigma (`msldm.edm.edm_loss`'s `given_noise`) and the sampler field that shows
the given part so in imputation (`msldm.sampling.Imputation`, `SamplerConfig.given_noise`).
Stub and tiny random models: plumbing, not quality."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from torch import nn

from msldm import sampling
from msldm.config import SamplerConfig, get_preset
from msldm.edm import edm_loss

torch.set_num_threads(1)


class _Recorder(nn.Module):
    """A joint 'denoiser' that keeps its input and returns a trainable constant."""

    def __init__(self, cfg, shape):
        super().__init__()
        self.cfg, self.out, self.x = cfg, nn.Parameter(torch.zeros(shape)), None

    def forward(self, x, sigma):
        self.x, self.sigma = x.detach().clone(), sigma.detach().clone()
        return self.out + 0 * x


def _noise_of(model: _Recorder, z0: torch.Tensor) -> torch.Tensor:
    """The noise the model was shown, in units of each row's sigma."""
    return (model.x - z0) / model.sigma[:, None, None]


def test_a_fixed_mask_shows_its_given_part_at_given_noise_times_sigma_and_scores_the_rest():
    d = get_preset("tiny").diffusion
    z0 = torch.randn(3, d.K * d.latent_dim, 8) * 0.4
    mask = torch.zeros(1, d.K * d.latent_dim, 1)
    mask[:, d.latent_dim:2 * d.latent_dim] = 1.0  # drums given
    plain, less = _Recorder(d, z0.shape), _Recorder(d, z0.shape)
    edm_loss(plain, z0, torch.Generator().manual_seed(0), mask=mask).backward()
    edm_loss(less, z0, torch.Generator().manual_seed(0), mask=mask, given_noise=0.25).backward()
    at = mask.expand_as(z0) > 0
    n_plain, n_less = _noise_of(plain, z0), _noise_of(less, z0)
    torch.testing.assert_close(n_less[at], 0.25 * n_plain[at])  # the same draw, a quarter as loud
    torch.testing.assert_close(n_less[~at], n_plain[~at])
    assert torch.all(less.out.grad[at] == 0) and torch.all(less.out.grad[~at] != 0)
    clean = _Recorder(d, z0.shape)
    edm_loss(clean, z0, torch.Generator().manual_seed(0), mask=mask, given_noise=0.0)
    torch.testing.assert_close(clean.x[at], z0[at])


def test_training_rows_draw_a_given_part_and_a_noise_share_between_r0_and_1():
    d = get_preset("tiny").diffusion
    B, T = 64, 16
    z0 = torch.randn(B, d.K * d.latent_dim, T) * 0.4
    model = _Recorder(d, z0.shape)
    edm_loss(model, z0, torch.Generator().manual_seed(3), given_prob=0.5, given_noise=0.3).backward()
    unit = _noise_of(model, z0).abs()
    scored = model.out.grad != 0
    shown_less = 0
    for b in range(B):
        given = ~scored[b]
        if not given.any():  # a row with nothing given: total generation, noised at sigma everywhere
            continue
        shown_less += 1
        assert scored[b].any()  # never every position given
        # a given position's noise is r * sigma with one r per row: its ratio to a fresh
        # standard normal is unknown, but a whole given block's spread is r
        r = float(unit[b][given].pow(2).mean().sqrt())
        assert 0.3 * 0.85 <= r <= 1.0 * 1.15
    assert 16 <= shown_less <= 48  # about half the rows


def test_given_noise_must_be_a_share():
    d = get_preset("tiny").diffusion
    z0 = torch.randn(2, d.K * d.latent_dim, 8)
    with pytest.raises(ValueError, match="given_noise"):
        edm_loss(_Recorder(d, z0.shape), z0, torch.Generator().manual_seed(0), given_prob=0.5, given_noise=1.5)
    with pytest.raises(ValueError, match="given_noise"):
        SamplerConfig(given_noise=-0.1)


def test_imputation_shows_the_given_block_at_given_noise_times_sigma():
    rng = np.random.default_rng(1)
    n, d = 20000, 4
    z = np.tile(np.array([[0.5, -1.0, 0.0, 0.0]]), (n, 1))
    mask = np.array([[1.0, 1.0, 0.0, 0.0]])
    seen = []

    def denoise(x: np.ndarray, s: float) -> np.ndarray:
        seen.append(x.copy())
        return x * 0.5

    state = rng.standard_normal((n, d))
    imp = sampling.Imputation(denoise, z, mask, lambda like: rng.standard_normal(like.shape), given_noise=0.2)
    for s in (2.0, 0.3):
        imp(state, s)
        unit = (seen[-1][:, :2] - z[:, :2]) / (0.2 * s)
        assert np.abs(unit.mean(0)).max() < 5 / np.sqrt(n)
        assert np.abs(unit.std(0) - 1).max() < 5 * np.sqrt(0.5 / n)
        assert np.array_equal(seen[-1][:, 2:], state[:, 2:])


def test_given_noise_one_is_eq5_bit_for_bit_and_the_field_reaches_the_sampler():
    def denoise(x, s):  # mixes the channels: the generated part hears the given one
        return (x + x.mean(axis=1, keepdims=True)) / (1.0 + s * s)

    z = np.random.default_rng(0).standard_normal((2, 8, 6)).astype(np.float32)
    mask = np.zeros((1, 8, 1), np.float32)
    mask[:, :4] = 1.0
    sig = sampling.karras_sigmas(6)

    def run(**kw):
        rng = np.random.default_rng(5)
        return sampling.generate(denoise, rng.standard_normal(z.shape).astype(np.float32), sig, given=z, mask=mask,
                                 randn=lambda like: rng.standard_normal(like.shape).astype(np.float32),
                                 S_churn=2.0, resample=2, **kw)

    assert np.array_equal(run(), run(given_noise=1.0))
    assert not np.allclose(run(), run(given_noise=0.3))
    kw = SamplerConfig().with_overrides({"given_noise": "0.3"}).sampling_kwargs()
    assert kw["given_noise"] == 0.3 and SamplerConfig().sampling_kwargs()["given_noise"] == 1.0


def test_a_bundle_written_before_the_field_keeps_eq5():
    from server.runtime import LATER_SAMPLER_FIELDS, sampler_defaults

    assert LATER_SAMPLER_FIELDS["given_noise"] == 1.0
    block = {k: v for k, v in SamplerConfig().__dict__.items() if k != "given_noise"}
    block = {k: (None if isinstance(v, float) and v == float("inf") else v) for k, v in block.items()}
    assert sampler_defaults(block).given_noise == 1.0


def test_a_task_trained_with_given_noise_steps_and_scores_the_readme_request_both_ways():
    from msldm.train.distributed import DistInfo
    from msldm.train.tasks import DiffusionTask

    cfg = get_preset("tiny")
    stats = {"latent_mean": torch.zeros(80), "latent_std": torch.ones(80)}
    task = DiffusionTask(cfg, DistInfo(), stats, lr=1e-3, amp=False, given_noise=0.0)
    batch = torch.randn(4, 4, 80, 16)
    logs = [task.train_step(batch, i) for i in range(2)]
    assert all(np.isfinite(v["loss"]) for v in logs)
    val = task.val_step(batch)
    assert set(val) == {"loss", "loss_s0.1", "loss_bg", "loss_bg_gn"} and val["loss_bg"] != val["loss_bg_gn"]
    with pytest.raises(ValueError, match="given_noise"):
        DiffusionTask(get_preset("tiny_given"), DistInfo(), stats, amp=False, given_noise=0.5)


def test_cli_refuses_given_noise_on_a_conditional_preset_and_given_prob_alone_on_a_joint_one(tmp_path):
    from msldm.cli import main

    base = ["train", "diffusion", "--latents", str(tmp_path), "--out", str(tmp_path / "run"), "--steps", "1"]
    with pytest.raises(SystemExit, match="joint preset"):
        main(base + ["--preset", "tiny_given", "--given-noise", "0.3"])
    with pytest.raises(SystemExit, match="needs --given-noise"):
        main(base + ["--preset", "tiny", "--given-prob", "0.5"])
    with pytest.raises(SystemExit, match="needs --given-noise"):
        main(base + ["--preset", "tiny", "--given-stem-prob", "bass=0.8"])
    with pytest.raises(SystemExit, match=r"\[0, 1\]"):
        main(base + ["--preset", "tiny", "--given-noise", "2"])


def test_stem_probabilities_bias_which_stems_are_given():
    from msldm.edm import random_given_mask

    d = get_preset("tiny").diffusion
    g = torch.Generator().manual_seed(0)
    m = random_given_mask(d, 4000, 8, 1.0, g, prefix_prob=0.0, stem_probs=[0.9, 0.5, 0.1, 0.1])
    given = m[:, ::d.latent_dim, 0]  # [B, K]: one entry per stem block
    share = given.mean(0)
    assert share[0] > 0.85 and abs(float(share[1]) - 0.5) < 0.05 and share[2] < 0.15 and share[3] < 0.15
    assert not given.all(1).any()  # never every stem
    with pytest.raises(ValueError, match="stem_probs"):
        random_given_mask(d, 4, 8, 1.0, g, stem_probs=[0.5, 0.5])
    from msldm.train.distributed import DistInfo
    from msldm.train.tasks import DiffusionTask

    stats = {"latent_mean": torch.zeros(80), "latent_std": torch.ones(80)}
    task = DiffusionTask(get_preset("tiny"), DistInfo(), stats, amp=False, given_noise=0.0, given_stems={"bass": 0.9})
    assert task.stem_probs == [0.9, 0.5, 0.5, 0.5]
    with pytest.raises(ValueError, match="not among"):
        DiffusionTask(get_preset("tiny"), DistInfo(), stats, amp=False, given_noise=0.0, given_stems={"vocals": 0.9})
