"""Given-part guidance in partial generation (msldm.sampling.Imputation's `guidance`): what the
denoiser is called with, what the sampler steps with, how many calls it makes, and how a
bundle's manifest and the evaluation carry the setting."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest

from msldm import sampling
from msldm.config import SamplerConfig

GIVEN = np.arange(1.0, 9.0).reshape(1, 2, 4)  # two "stems" of one channel, 4 frames
MASK = np.array([[[1.0], [0.0]]])  # stem 0 given, stem 1 generated


class Recorder:
    """A linear denoiser D(x; s) = a x + b that records what it is called with."""

    def __init__(self, a: float = 0.5, b: float = 0.25) -> None:
        self.a, self.b, self.calls = a, b, []

    def __call__(self, x, sigma, *cond):
        self.calls.append((np.array(x), float(sigma), cond))
        return self.a * x + self.b


def test_reversed_in_time_is_the_same_for_numpy_and_torch() -> None:
    torch = pytest.importorskip("torch")
    a = np.random.default_rng(0).standard_normal((2, 3, 5)).astype(np.float32)
    assert np.array_equal(sampling.reversed_in_time(a), a[..., ::-1])
    assert np.array_equal(sampling.reversed_in_time(torch.from_numpy(a)).numpy(), a[..., ::-1])


def test_a_guided_call_is_the_contrast_plus_w_times_the_difference() -> None:
    den = Recorder()
    zero = np.zeros_like  # no noise: every input is exact
    imp = sampling.Imputation(den, GIVEN, MASK, zero, guidance=3.0, guidance_reverse=0.5)
    x = np.full((1, 2, 4), 10.0)
    out = imp(x, 1.0)
    (x_d, s_d, _), (x_u, s_u, _) = den.calls
    assert s_d == s_u == 1.0
    assert np.array_equal(x_d[:, 0], GIVEN[:, 0]) and np.array_equal(x_d[:, 1], x[:, 1])
    # the contrast: the given part played backwards, at half its level; the generated part as is
    assert np.array_equal(x_u[:, 0], 0.5 * GIVEN[:, 0, ::-1]) and np.array_equal(x_u[:, 1], x[:, 1])
    d, u = den.a * x_d + den.b, den.a * x_u + den.b
    assert np.allclose(out, u + 3.0 * (d - u))
    # outside the band, and with guidance 1, one plain call
    den.calls.clear()
    banded = sampling.Imputation(den, GIVEN, MASK, zero, guidance=3.0, guidance_tmin=2.0)
    assert np.array_equal(banded(x, 1.0), den.a * x_d + den.b) and len(den.calls) == 1
    assert sampling.Imputation(den, GIVEN, MASK, zero).contrast is None


def test_a_conditional_denoiser_gets_each_branch_clean_with_the_mask() -> None:
    den = Recorder()
    imp = sampling.Imputation(den, GIVEN, MASK, np.zeros_like, conditional=True, guidance=2.0)
    imp(np.zeros((1, 2, 4)), 0.5)
    (_, _, cond_d), (_, _, cond_u) = den.calls
    full = np.broadcast_to(MASK, GIVEN.shape)
    assert np.array_equal(cond_d[0], GIVEN * full) and np.array_equal(cond_d[1], full)
    assert np.array_equal(cond_u[0], GIVEN[..., ::-1] * full) and np.array_equal(cond_u[1], full)


def test_guidance_one_is_plain_imputation_bit_for_bit() -> None:
    def run(**kw) -> np.ndarray:
        rng = np.random.default_rng(3)
        return sampling.generate(lambda x, s: 0.7 * x, rng.standard_normal((1, 2, 4)), sampling.karras_sigmas(8),
                                 randn=lambda like: rng.standard_normal(like.shape), S_churn=5.0,
                                 given=GIVEN, mask=MASK, resample=2, **kw)

    plain = run()
    assert np.array_equal(plain, run(guidance=1.0, guidance_reverse=0.0, guidance_tmin=0.5))
    assert not np.array_equal(plain, run(guidance=2.0))
    # total generation is never guided: nothing is given
    calls = Recorder()
    sampling.generate(calls, np.zeros((1, 2, 4)), sampling.karras_sigmas(5), randn=np.zeros_like, guidance=3.0)
    assert len(calls.calls) == 5


@pytest.mark.parametrize("sampler", ["euler", "heun"])
@pytest.mark.parametrize("churn", [0.0, 30.0])
def test_calls_for_sigmas_counts_the_guided_calls(sampler: str, churn: float) -> None:
    sigmas = sampling.karras_sigmas(12)
    kw = dict(resample=3, resample_tmin=0.6, S_churn=churn, S_tmin=0.3, guidance=2.5, guidance_tmin=0.3,
              guidance_tmax=2.0)
    den = Recorder()
    sampling.generate(den, np.zeros((1, 2, 4)), sigmas, sampler=sampler, randn=np.zeros_like, given=GIVEN,
                      mask=MASK, **kw)
    guided = sum(0.3 <= s <= 2.0 for _, s, _ in den.calls) // 2  # each guided call is recorded twice
    assert guided > 0
    n = sampling.calls_for_sigmas(sampler, sigmas, 3, 0.6, guidance=2.5, guidance_tmin=0.3, guidance_tmax=2.0,
                                  S_churn=churn, S_tmin=0.3)
    assert len(den.calls) == n
    assert n == sampling.calls_for_sigmas(sampler, sigmas, 3, 0.6) + guided
    cfg = SamplerConfig(sampler=sampler, steps=12, S_churn=churn, S_tmin=0.3, resample=3, resample_tmin=0.6,
                        guidance=2.5, guidance_tmin=0.3, guidance_tmax=2.0)
    assert cfg.partial_calls(sigmas) == n


def test_a_sampler_without_call_levels_cannot_count_guidance(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sampling.CALLS, "mine", lambda steps: steps)
    assert sampling.calls_for_sigmas("mine", sampling.karras_sigmas(4)) == 4
    with pytest.raises(ValueError, match="CALL_SIGMAS"):
        sampling.calls_for_sigmas("mine", sampling.karras_sigmas(4), guidance=2.0)


@pytest.mark.parametrize("bad, match", [({"guidance": -1.0}, "guidance must"), ({"guidance": 9.0}, "guidance must"),
                                        ({"guidance_reverse": 1.5}, "guidance_reverse"),
                                        ({"guidance_tmin": 1.0, "guidance_tmax": 0.5}, "guidance_tmin")])
def test_the_config_refuses_guidance_out_of_range(bad: dict, match: str) -> None:
    with pytest.raises(ValueError, match=match):
        SamplerConfig(**bad)


def test_the_config_hands_guidance_to_the_sampler() -> None:
    cfg = SamplerConfig().with_overrides({"guidance": "3", "guidance_tmin": "0.3", "guidance_reverse": "0.5"})
    kw = cfg.sampling_kwargs()
    assert (kw["guidance"], kw["guidance_tmin"], kw["guidance_reverse"], kw["guidance_tmax"]) == (3.0, 0.3, 0.5,
                                                                                                  math.inf)


def test_a_manifest_from_before_guidance_loads_unguided() -> None:
    from server.runtime import sampler_defaults

    block = {"sampler": "euler", "steps": 40, "schedule": "karras", "resample": 3, "resample_tmin": 0.6,
             "resample_tmax": None, "sigma_min": 0.01, "sigma_max": 3.0, "rho": 7.0, "S_churn": 20.0,
             "S_tmin": 0.3, "S_tmax": None, "S_noise": 1.0}
    assert sampler_defaults(block).guidance == 1.0
    guided = sampler_defaults({**block, "guidance": 3.0, "guidance_reverse": 1.0, "guidance_tmin": 0.3,
                               "guidance_tmax": None})
    assert (guided.guidance, guided.guidance_tmin, guided.guidance_tmax) == (3.0, 0.3, math.inf)


def test_the_shipped_manifest_writes_every_guidance_field() -> None:
    from pathlib import Path

    block = json.loads((Path(__file__).resolve().parents[1] / "msldm/assets/bundle/manifest.json").read_text())["sampler"]
    assert {"guidance", "guidance_reverse", "guidance_tmin", "guidance_tmax"} <= set(block)


@pytest.mark.parametrize("conditional", [False, True])
def test_a_batched_guided_call_equals_two_calls(conditional: bool) -> None:
    """With `concat`, a guided call is one denoiser call on both branches (D's rows first, the
    clean inputs of a conditional denoiser joined alike), and the sampler's output is the
    two-call one: the noise is drawn in the same order."""
    given = np.repeat(GIVEN, 2, axis=0)  # two takes

    def run(concat):
        rng, calls = np.random.default_rng(5), Recorder()
        out = sampling.generate(calls, rng.standard_normal((2, 2, 4)), sampling.karras_sigmas(6),
                                randn=lambda like: rng.standard_normal(like.shape), S_churn=10.0, given=given,
                                mask=MASK, resample=2, guidance=2.5, guidance_tmin=0.3, conditional=conditional,
                                concat=concat)
        return out, calls.calls

    two, two_calls = run(None)
    one, one_calls = run(lambda arrays: np.concatenate(arrays, axis=0))
    assert np.array_equal(one, two)
    batched = [c for c in one_calls if c[0].shape[0] == 4]
    assert batched and len(one_calls) + len(batched) == len(two_calls)
    # a batched call holds what the two calls held, D's rows first
    i = next(i for i, c in enumerate(one_calls) if c[0].shape[0] == 4)
    d, u = two_calls[i], two_calls[i + 1]
    assert np.array_equal(one_calls[i][0], np.concatenate([d[0], u[0]]))
    if conditional:
        for k in range(2):
            assert np.array_equal(one_calls[i][2][k], np.concatenate([np.broadcast_to(d[2][k], d[0].shape),
                                                                       np.broadcast_to(u[2][k], u[0].shape)]))

