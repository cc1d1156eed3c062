"""Reconstruction guidance in imputation (`msldm.sampling.Imputation`'s `reconstruction`), on
the analytic Gaussian of tests/test_sampling.py: the exact denoiser is linear with a symmetric
Jacobian, so the finite difference the sampler takes is the gradient Ho et al. take."""

from __future__ import annotations

import numpy as np
import pytest

from msldm import sampling
from msldm.config import SamplerConfig
from tests.test_sampling import GIVEN, MISSING, SIGMA_4D, Z_GIVEN, conditional_law, denoiser_matrix

N = 4000


def _denoise(x: np.ndarray, s: float) -> np.ndarray:
    return x @ denoiser_matrix(SIGMA_4D, s).T


def _given() -> tuple[np.ndarray, np.ndarray]:
    mask = np.zeros((1, 4))
    mask[0, GIVEN] = 1.0
    given = np.zeros((N, 4))
    given[:, GIVEN] = Z_GIVEN[GIVEN]
    return given, mask


def test_one_call_adds_w_times_the_gradient_of_the_given_parts_reconstruction_error():
    """D_gen + w * d/dz_gen (-1/2 |given - D_given(z)|^2), the gradient written out with the
    denoiser's matrix M (D_given = M[given, :] z): -(-M[given, gen]^T e) = M[given, gen]^T e."""
    given, mask = _given()
    rng = np.random.default_rng(0)
    state = rng.standard_normal((N, 4))
    draws = []

    def randn(like):
        draws.append(rng.standard_normal(like.shape))
        return draws[-1]

    s, w = 0.7, 2.5
    out = sampling.Imputation(_denoise, given, mask, randn, reconstruction=w)(state, s)
    assert len(draws) == 1 and draws[0].shape == (N, 2)  # one draw for the given part, used twice
    M = denoiser_matrix(SIGMA_4D, s)
    z = state.copy()
    z[:, GIVEN] = Z_GIVEN[GIVEN] + draws[0] * s  # the input the call saw (Eq. 5)
    d = z @ M.T
    e = Z_GIVEN[GIVEN] - d[:, GIVEN]
    grad = e @ M[np.ix_(GIVEN, MISSING)]  # M[given, gen]^T e, row by row
    np.testing.assert_allclose(out[:, MISSING], d[:, MISSING] + w * grad, rtol=1e-10, atol=1e-12)


def test_a_reconstruction_mask_keeps_only_its_positions_error():
    """e counts only where `reconstruction_mask` is 1: the gradient of the first given channel's
    error alone; a mask of ones is the default, a mask of zeros plain imputation's estimate."""
    given, mask = _given()
    state = np.random.default_rng(1).standard_normal((N, 4))
    s, w = 0.9, 2.0

    def estimate(rmask, w=w):
        rng = np.random.default_rng(2)  # the same given-part noise for every variant
        return sampling.Imputation(_denoise, given, mask, lambda like: rng.standard_normal(like.shape),
                                   reconstruction=w, reconstruction_mask=rmask)(state, s)

    first = np.zeros((1, 4))
    first[0, GIVEN[0]] = 1.0
    out = estimate(first)
    M = denoiser_matrix(SIGMA_4D, s)
    z = state.copy()
    z[:, GIVEN] = Z_GIVEN[GIVEN] + np.random.default_rng(2).standard_normal((N, 2)) * s
    d = z @ M.T
    e = Z_GIVEN[GIVEN[0]] - d[:, GIVEN[0]]
    np.testing.assert_allclose(out[:, MISSING], d[:, MISSING] + w * np.outer(e, M[GIVEN[0], MISSING]),
                               rtol=1e-10, atol=1e-12)
    np.testing.assert_array_equal(estimate(np.ones((1, 4))), estimate(None))
    np.testing.assert_allclose(estimate(np.zeros((1, 4)))[:, MISSING], d[:, MISSING], rtol=1e-12, atol=1e-12)
    # a mask outside the given part changes nothing: there is no error to count there
    outside = np.zeros((1, 4))
    outside[0, MISSING] = 1.0
    np.testing.assert_allclose(estimate(outside)[:, MISSING], d[:, MISSING], rtol=1e-12, atol=1e-12)


def test_guidance_moves_the_generated_mean_towards_the_true_conditional():
    """Plain imputation with the deterministic sampler recovers little of the conditional mean's
    shift; reconstruction guidance recovers more the stronger it is, and leaves the spread."""
    true_m, true_S = conditional_law(SIGMA_4D, MISSING, GIVEN, Z_GIVEN)
    given, mask = _given()

    def recovered(w: float) -> tuple[float, np.ndarray]:
        rng = np.random.default_rng(0)
        x = sampling.generate(_denoise, rng.standard_normal((N, 4)), sampling.karras_sigmas(25), randn=lambda
                              like: rng.standard_normal(like.shape), given=given, mask=mask, reconstruction=w)
        m = x[:, MISSING].mean(0)
        return float(m @ true_m / (true_m @ true_m)), x[:, MISSING].var(0)

    plain, v0 = recovered(0.0)
    one, _ = recovered(1.0)
    three, v3 = recovered(3.0)
    assert plain < 0.4 and plain + 0.08 < one and one + 0.15 < three
    assert np.allclose(v3, v0, rtol=0.15) and np.all(v3 >= 0.5 * np.diag(true_S))


def test_off_is_plain_imputation_bit_for_bit_and_calls_are_counted():
    given, mask = _given()
    sig = sampling.karras_sigmas(12)
    calls = []

    def run(**kw):
        rng = np.random.default_rng(3)

        def den(x, s):
            calls.append(s)
            return _denoise(x, s)

        calls.clear()
        out = sampling.generate(den, rng.standard_normal((N, 4)), sig,
                                randn=lambda like: rng.standard_normal(like.shape), given=given, mask=mask,
                                S_churn=2.0, resample=2, resample_tmin=0.5, **kw)
        return out, len(calls)

    (a, na), (b, nb) = run(), run(reconstruction=0.0, reconstruction_tmin=0.3)
    assert np.array_equal(a, b) and na == nb
    c, nc = run(reconstruction=2.0, reconstruction_tmin=0.3)
    assert not np.allclose(a, c)
    assert nc == sampling.calls_for_sigmas("euler", sig, 2, 0.5, S_churn=2.0, reconstruction=2.0,
                                           reconstruction_tmin=0.3) > na
    cfg = SamplerConfig(steps=12, resample=2, resample_tmin=0.5, S_churn=2.0, reconstruction=2.0,
                        reconstruction_tmin=0.3)
    assert cfg.partial_calls(sig) == nc and cfg.sampling_kwargs()["reconstruction"] == 2.0


def test_fields_are_checked_and_exclude_given_part_guidance():
    with pytest.raises(ValueError, match="reconstruction must be"):
        SamplerConfig(reconstruction=-1.0)
    with pytest.raises(ValueError, match="set one"):
        SamplerConfig(reconstruction=2.0, guidance=3.0)
    with pytest.raises(ValueError, match="use one"):
        sampling.Imputation(_denoise, *_given(), lambda like: like, guidance=2.0, reconstruction=1.0)


def test_a_requests_guidance_replaces_the_manifests_reconstruction(monkeypatch):
    from server.runtime import Bundle, LATER_SAMPLER_FIELDS

    assert LATER_SAMPLER_FIELDS["reconstruction"] == 0.0
    seen = {}

    def fake_generate(denoise, noise, sigmas, **kw):
        seen.update(kw)
        return noise

    monkeypatch.setattr(sampling, "generate", fake_generate)
    joint = type("JointBundle", (Bundle,), {"conditional": False})
    b = joint.__new__(joint)
    b.sampler_defaults = SamplerConfig(steps=4, reconstruction=3.0, reconstruction_tmin=0.3)
    b.denoise = None
    b.sigmas = lambda steps=None, schedule=None: sampling.karras_sigmas(4)
    shape = (1, 4, 2)
    mask = np.ones(shape)
    b.generate(shape, seed=0, given=np.zeros(shape), mask=mask)
    assert seen["reconstruction"] == 3.0 and seen["guidance"] == 1.0
    b.generate(shape, seed=0, given=np.zeros(shape), mask=mask, guidance=3.0)
    assert seen["reconstruction"] == 0.0 and seen["guidance"] == 3.0
