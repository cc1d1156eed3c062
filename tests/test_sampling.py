"""Analytic tests of the one sampler (msldm.sampling), with no training.

For Gaussian data x0 ~ N(0, Sigma) the exact denoiser is linear,
D(x; s) = Sigma (Sigma + s^2 I)^-1 x, so every step of Euler / Heun with churn (and with
imputation of a given block, Eq. 4-6 of the MSLDM paper) is an affine map of the state plus
fresh Gaussian noise. `exact_law` below runs that recursion on (mean, covariance) directly
from Algorithm 2 of Karras et al. 2022, written independently of the sampler code; the
sampler's samples must match it within a tolerance derived from the sample size.
"""

from __future__ import annotations

import math

import numpy as np
import pytest

from msldm import sampling

N_SAMPLES = 4000
Z_TOL = 5.0  # a deviation of 5 standard errors fails


def denoiser_matrix(Sigma: np.ndarray, s: float) -> np.ndarray:
    return Sigma @ np.linalg.inv(Sigma + s * s * np.eye(len(Sigma)))


def exact_law(Sigma: np.ndarray, sigmas: list[float], *, heun: bool, S_churn: float,
              given_idx: list[int] | None = None, z_given: np.ndarray | None = None,
              resample: int = 1) -> tuple[np.ndarray, np.ndarray]:
    """Mean and covariance of the sampler's output, computed by the exact affine recursion.

    State law: x = m + noise with covariance S. With a given block, the denoiser input is
    Pu x + Pg (z + s eps'), with fresh eps' at every call (Eq. 5). With `resample` R, each
    step is taken R times, adding variance s^2 - s_next^2 (back to level s) between takes."""
    d = len(Sigma)
    I = np.eye(d)
    Pg = np.zeros((d, d))
    if given_idx:
        Pg[given_idx, given_idx] = 1.0
    Pu = I - Pg
    z = np.zeros(d) if z_given is None else z_given
    m, S = np.zeros(d), sigmas[0] ** 2 * I
    n = len(sigmas) - 1

    def call(s: float):
        """D(x_in) = M Pu x + M Pg z + s M Pg eps': (matrix on x, constant, noise matrix)."""
        M = denoiser_matrix(Sigma, s)
        return M @ Pu, M @ Pg @ z, s * M @ Pg

    for i in range(n * resample):
        s, s_next = sigmas[i // resample], sigmas[i // resample + 1]
        if i % resample:
            S = S + (s ** 2 - s_next ** 2) * I  # resampling: back to level s
        gamma = min(S_churn / n, math.sqrt(2) - 1) if S_churn > 0 else 0.0
        s_hat = s * (1 + gamma)
        S = S + (s_hat ** 2 - s ** 2) * I  # churn noise
        h = s_next - s_hat
        A1, c1, B1 = call(s_hat)
        # Euler: x' = x + h/s_hat (x - D1)
        A = I + (h / s_hat) * (I - A1)
        b = -(h / s_hat) * c1
        noises = [-(h / s_hat) * B1]
        if heun and s_next > 0:
            A2, c2, B2 = call(s_next)
            # x_next = x + h/2 [ (x - D1)/s_hat + (x' - D2)/s_next ], x' = A x + b + N1 e1
            E = (I - A2) / s_next
            A = I + (h / 2) * ((I - A1) / s_hat + E @ A)
            b = (h / 2) * (-c1 / s_hat + E @ b - c2 / s_next)
            noises = [(h / 2) * (-B1 / s_hat + E @ noises[0]), -(h / 2) * B2 / s_next]
        m = A @ m + b
        S = A @ S @ A.T + sum(N @ N.T for N in noises)
    return m, S


def run_sampler(Sigma: np.ndarray, sigmas: list[float], *, sampler: str, S_churn: float,
                seed: int = 0, given_idx: list[int] | None = None,
                z_given: np.ndarray | None = None, resample: int = 1) -> np.ndarray:
    """Samples `[N_SAMPLES, d]` from msldm.sampling.generate on numpy arrays."""
    rng = np.random.default_rng(seed)
    d = len(Sigma)
    M = {}

    def denoise(x: np.ndarray, s: float) -> np.ndarray:
        if s not in M:
            M[s] = denoiser_matrix(Sigma, s)
        return x @ M[s].T

    def randn(like: np.ndarray) -> np.ndarray:
        return rng.standard_normal(like.shape)

    noise = rng.standard_normal((N_SAMPLES, d))
    given = mask = None
    if given_idx is not None:
        mask = np.zeros((1, d))
        mask[0, given_idx] = 1.0
        given = np.zeros((N_SAMPLES, d))
        given[:, given_idx] = z_given[given_idx]
    return sampling.generate(denoise, noise, sigmas, sampler=sampler, randn=randn,
                             given=given, mask=mask, S_churn=S_churn, resample=resample)


def max_z(samples: np.ndarray, m: np.ndarray, S: np.ndarray, idx: list[int]) -> float:
    """Largest standardised deviation of sample mean / covariance from the exact law, over
    the coordinates `idx`; standard errors sqrt(S_ii/n) and sqrt((S_ii S_jj + S_ij^2)/n)."""
    x = samples[:, idx]
    m, S = m[idx], S[np.ix_(idx, idx)]
    n = len(x)
    z_mean = np.abs(x.mean(0) - m) / np.sqrt(np.diag(S) / n)
    C = np.cov(x, rowvar=False).reshape(len(idx), len(idx))
    se = np.sqrt((np.outer(np.diag(S), np.diag(S)) + S ** 2) / n)
    return float(max(z_mean.max(), (np.abs(C - S) / se).max()))


SIGMA_1D = np.array([[0.4 ** 2]])
SIGMA_4D = np.array([[0.16, 0.08, 0.06, 0.03],
                     [0.08, 0.25, 0.05, 0.07],
                     [0.06, 0.05, 0.12, 0.04],
                     [0.03, 0.07, 0.04, 0.20]])


@pytest.mark.parametrize("sampler,S_churn,steps", [
    ("euler", 20.0, 25), ("euler", 20.0, 150), ("euler", 0.0, 10), ("heun", 0.0, 10),
    ("heun", 20.0, 25)])
def test_total_generation_matches_exact_law(sampler: str, S_churn: float, steps: int) -> None:
    sigmas = sampling.karras_sigmas(steps)
    m, S = exact_law(SIGMA_4D, sigmas, heun=sampler == "heun", S_churn=S_churn)
    x = run_sampler(SIGMA_4D, sigmas, sampler=sampler, S_churn=S_churn)
    assert max_z(x, m, S, [0, 1, 2, 3]) < Z_TOL


def test_law_approaches_data_distribution_as_steps_grow() -> None:
    """1D data N(0, 0.4^2), sigma_max = 3: the ideal output std is 0.4*3/sqrt(9.16) = 0.3965
    (the start is N(0, sigma_max^2), not N(0, sigma_max^2 + sigma_data^2))."""
    limit = 0.4 * 3 / math.sqrt(9 + 0.16)
    errs = {}
    for steps in (10, 25, 150, 1000):
        _, S = exact_law(SIGMA_1D, sampling.karras_sigmas(steps), heun=False, S_churn=20.0)
        errs[steps] = abs(math.sqrt(S[0, 0]) - limit)
    assert errs[10] > errs[25] > errs[150] > errs[1000]
    assert abs(math.sqrt(exact_law(SIGMA_1D, sampling.karras_sigmas(25), heun=False,
                                   S_churn=20.0)[1][0, 0]) - 0.348) < 0.01  # measured: 0.348
    assert errs[1000] < 0.005
    _, S = exact_law(SIGMA_1D, sampling.karras_sigmas(40), heun=True, S_churn=0.0)
    assert abs(math.sqrt(S[0, 0]) - limit) < 0.002  # 2nd order: close with few steps


def conditional_law(Sigma: np.ndarray, u: list[int], g: list[int], z: np.ndarray):
    """True conditional N(mean, cov) of block u given block g = z[g]."""
    Sgg_inv = np.linalg.inv(Sigma[np.ix_(g, g)])
    mean = Sigma[np.ix_(u, g)] @ Sgg_inv @ z[g]
    cov = Sigma[np.ix_(u, u)] - Sigma[np.ix_(u, g)] @ Sgg_inv @ Sigma[np.ix_(g, u)]
    return mean, cov


GIVEN, MISSING = [2, 3], [0, 1]  # two "stems" of two channels; the second is given
Z_GIVEN = np.array([0.0, 0.0, 0.5, -0.4])


@pytest.mark.parametrize("sampler,S_churn,steps", [
    ("euler", 20.0, 25), ("euler", 20.0, 150), ("heun", 0.0, 10), ("heun", 20.0, 20)])
def test_partial_generation_matches_exact_law(sampler: str, S_churn: float, steps: int) -> None:
    sigmas = sampling.karras_sigmas(steps)
    m, S = exact_law(SIGMA_4D, sigmas, heun=sampler == "heun", S_churn=S_churn,
                     given_idx=GIVEN, z_given=Z_GIVEN)
    x = run_sampler(SIGMA_4D, sigmas, sampler=sampler, S_churn=S_churn, given_idx=GIVEN,
                    z_given=Z_GIVEN)
    assert max_z(x, m, S, MISSING) < Z_TOL
    assert np.array_equal(x[:, GIVEN], np.broadcast_to(Z_GIVEN[GIVEN], x[:, GIVEN].shape))


def test_imputation_bias_shrinks_with_churn() -> None:
    """Imputation (Eq. 4) is an approximation. On this Gaussian the exact law of the sampler
    moves toward the true conditional mean, only part of the way with the deterministic ODE,
    further with the paper's churn (Euler, S_churn 20, 150 steps: ~56% of the shift), and
    nearly all the way with heavy churn, while the variances stay close to the conditional's."""
    true_m, true_S = conditional_law(SIGMA_4D, MISSING, GIVEN, Z_GIVEN)

    def recovered(sampler: str, churn: float, steps: int) -> tuple[float, np.ndarray]:
        m, S = exact_law(SIGMA_4D, sampling.karras_sigmas(steps), heun=sampler == "heun",
                         S_churn=churn, given_idx=GIVEN, z_given=Z_GIVEN)
        frac = float(m[MISSING] @ true_m / (true_m @ true_m))
        return frac, np.diag(S)[MISSING]

    ode, _ = recovered("heun", 0.0, 400)
    paper, var_paper = recovered("euler", 20.0, 150)
    heavy, var_heavy = recovered("euler", 1000.0, 1000)
    assert 0.1 < ode < paper < heavy
    assert 0.5 < paper < 0.7 and heavy > 0.9
    for var in (var_paper, var_heavy):
        assert np.allclose(var, np.diag(true_S), rtol=0.2)


@pytest.mark.parametrize("sampler,S_churn,steps,resample", [
    ("euler", 20.0, 10, 3), ("heun", 0.0, 6, 2)])
def test_resampled_partial_generation_matches_exact_law(sampler: str, S_churn: float, steps: int,
                                                        resample: int) -> None:
    sigmas = sampling.karras_sigmas(steps)
    m, S = exact_law(SIGMA_4D, sigmas, heun=sampler == "heun", S_churn=S_churn,
                     given_idx=GIVEN, z_given=Z_GIVEN, resample=resample)
    m1, _ = exact_law(SIGMA_4D, sigmas, heun=sampler == "heun", S_churn=S_churn,
                      given_idx=GIVEN, z_given=Z_GIVEN)
    x = run_sampler(SIGMA_4D, sigmas, sampler=sampler, S_churn=S_churn, given_idx=GIVEN,
                    z_given=Z_GIVEN, resample=resample)
    assert max_z(x, m, S, MISSING) < Z_TOL
    assert not np.allclose(m, m1, atol=0.02)  # resampling changes the law measurably
    assert np.array_equal(x[:, GIVEN], np.broadcast_to(Z_GIVEN[GIVEN], x[:, GIVEN].shape))


def test_resampling_recovers_more_of_the_conditional_at_equal_calls() -> None:
    """RePaint-style resampling lets the generated block keep adjusting to the given one.
    At the same number of denoiser calls it recovers more of the true conditional mean
    shift than more steps do (Euler, churn 20): 150 steps ~0.56 against 50 x 3 ~0.73, and
    25 steps ~0.40 against 8 x 3 ~0.47 (24 calls)."""
    true_m, _ = conditional_law(SIGMA_4D, MISSING, GIVEN, Z_GIVEN)

    def recovered(steps: int, resample: int) -> float:
        m, _ = exact_law(SIGMA_4D, sampling.karras_sigmas(steps), heun=False, S_churn=20.0,
                         given_idx=GIVEN, z_given=Z_GIVEN, resample=resample)
        return float(m[MISSING] @ true_m / (true_m @ true_m))

    assert recovered(50, 3) > recovered(150, 1) + 0.1
    assert recovered(8, 3) > recovered(25, 1) + 0.05
    assert recovered(25, 1) < recovered(25, 2) < recovered(25, 4)
    assert sampling.calls_for_sigmas("euler", sampling.karras_sigmas(8), 3) == 24 and sampling.calls_for_sigmas("heun", sampling.karras_sigmas(6), 2) == 22


def test_resample_counts_steps_once_and_needs_noise() -> None:
    calls, seen = [], []

    def denoise(x, s):
        calls.append(s)
        return x * 0.0

    partial = {"given": np.zeros((1, 2)), "mask": np.array([[1.0, 0.0]])}
    sampling.generate(denoise, np.zeros((1, 2)), sampling.karras_sigmas(4), randn=np.zeros_like, resample=3,
                      callback=lambda step, total, sigma, x, denoised: seen.append((step, total)), **partial)
    assert len(calls) == 12 and seen == [(1, 4), (2, 4), (3, 4), (4, 4)]
    calls.clear()  # total generation: nothing to fit, one take per step
    sampling.generate(denoise, np.zeros((1, 2)), sampling.karras_sigmas(4), randn=np.zeros_like, resample=3)
    assert len(calls) == 4
    with pytest.raises(ValueError, match="resample"):
        sampling.sample_euler(denoise, np.zeros(2), [1.0, 0.0], resample=2)
    with pytest.raises(ValueError, match="resample"):
        sampling.sample_euler(denoise, np.zeros(2), [1.0, 0.0], randn=np.zeros_like, resample=0)


def test_resample_tmin_resamples_only_the_high_noise_steps() -> None:
    sigmas = sampling.karras_sigmas(6)  # 3.0 ... 0.01, 0
    assert sampling.passes_per_step(sigmas, 3, 0.0) == [3] * 6
    hi = sum(s >= 0.5 for s in sigmas[:-1])
    assert 0 < hi < 6 and sampling.passes_per_step(sigmas, 3, 0.5) == [3] * hi + [1] * (6 - hi)
    calls = []

    def denoise(x, s):
        calls.append(s)
        return x * 0.5

    partial = {"given": np.zeros((1, 2)), "mask": np.array([[1.0, 0.0]])}
    sampling.generate(denoise, np.zeros((1, 2)), sigmas, randn=np.zeros_like, resample=3, resample_tmin=0.5,
                      **partial)
    assert calls == [s for s in sigmas[:hi] for _ in range(3)] + list(sigmas[hi:-1])
    assert len(calls) == sampling.calls_for_sigmas("euler", sigmas, 3, 0.5) == 3 * hi + 6 - hi
    # heun: two calls a pass, one on the last step (to sigma 0), which is never resampled here
    assert sampling.calls_for_sigmas("heun", sigmas, 3, 0.5) == 3 * 2 * hi + 2 * (5 - hi) + 1
    assert sampling.calls_for_sigmas("heun", sigmas, 3, 0.0) == 3 * (2 * 6 - 1)
    # a band at the low noise levels: the steps below 0.5, the last one (to 0) among them
    assert sampling.passes_per_step(sigmas, 2, 0.0, 0.5) == [1] * hi + [2] * (6 - hi)
    assert sampling.calls_for_sigmas("heun", sigmas, 2, 0.0, 0.5) == 2 * hi + 2 * 2 * (5 - hi) + 2 * 1
    calls.clear()
    sampling.generate(denoise, np.zeros((1, 2)), sigmas, randn=np.zeros_like, resample=2, resample_tmax=0.5,
                      **partial)
    assert calls == list(sigmas[:hi]) + [s for s in sigmas[hi:-1] for _ in range(2)]


def test_resample_tmin_zero_is_the_plain_resampler_bit_for_bit() -> None:
    def run(**kw) -> np.ndarray:
        rng = np.random.default_rng(3)
        return sampling.generate(lambda x, s: 0.7 * x, rng.standard_normal((1, 4)), sampling.karras_sigmas(8),
                                 randn=lambda like: rng.standard_normal(like.shape), S_churn=5.0,
                                 given=np.ones((1, 4)), mask=np.array([[1.0, 1.0, 0.0, 0.0]]), resample=2, **kw)

    from msldm.config import SamplerConfig

    assert np.array_equal(run(), run(resample_tmin=0.0))
    assert not np.array_equal(run(), run(resample_tmin=1.0))
    for bad in ({"resample_tmin": -1.0}, {"resample_tmin": 0.5, "resample_tmax": 0.2}):
        with pytest.raises(ValueError, match="resample_tmin"):
            SamplerConfig(**bad)
    assert SamplerConfig(resample=3, resample_tmin=0.3).sampling_kwargs()["resample_tmin"] == 0.3


def test_total_generation_churn_is_its_own_field() -> None:
    """`S_churn_total` and `S_tmax_total` set a total generation's churn (None: `S_churn`,
    `S_tmax`); a partial one, which adds its churn on every RePaint pass, keeps `S_churn` and
    `S_tmax` whatever they say."""
    from msldm.config import SamplerConfig

    base = SamplerConfig(S_churn=2.0, S_tmax=1.0, S_churn_total=10.0, S_tmax_total=3.0)
    partial, total = base.sampling_kwargs(), base.sampling_kwargs(total=True)
    assert (partial["S_churn"], partial["S_tmax"]) == (2.0, 1.0)
    assert (total["S_churn"], total["S_tmax"]) == (10.0, 3.0)
    assert {k: v for k, v in total.items() if k not in ("S_churn", "S_tmax")} == \
        {k: v for k, v in partial.items() if k not in ("S_churn", "S_tmax")}
    unset = SamplerConfig(S_churn=2.0, S_tmax=1.0)
    assert unset.sampling_kwargs(total=True) == unset.sampling_kwargs()
    only_churn = SamplerConfig(S_churn=2.0, S_tmax=1.0, S_churn_total=7.0).sampling_kwargs(total=True)
    assert (only_churn["S_churn"], only_churn["S_tmax"]) == (7.0, 1.0)
    sampling.generate(lambda x, s: 0.7 * x, np.ones((1, 2)), sampling.karras_sigmas(4),
                      randn=np.zeros_like, **total)  # every key is one `generate` takes
    assert base.with_overrides({"S_churn_total": "none"}).S_churn_total is None
    assert base.with_overrides({"S_churn_total": "6"}).S_churn_total == 6.0
    assert base.with_overrides({"S_tmax_total": "3"}).S_tmax_total == 3.0
    for bad in ({"S_churn_total": -1.0}, {"S_tmax_total": float("inf")}, {"S_tmax_total": -0.5}):
        with pytest.raises(ValueError, match=next(iter(bad))):
            SamplerConfig(**bad)
    with pytest.raises(ValueError, match="S_churn_total"):
        base.with_overrides({"S_churn_total": "lots"})


# ------------------------------------------------------------------ the tests have teeth

def test_detects_broken_churn(monkeypatch: pytest.MonkeyPatch) -> None:
    """With the churn noise left out, the samples no longer follow the exact law."""
    sigmas = sampling.karras_sigmas(25)
    m, S = exact_law(SIGMA_4D, sigmas, heun=False, S_churn=20.0)
    monkeypatch.setattr(sampling, "_churn_gamma", lambda *a: 0.0)
    x = run_sampler(SIGMA_4D, sigmas, sampler="euler", S_churn=20.0)
    assert max_z(x, m, S, [0, 1, 2, 3]) > Z_TOL


def test_detects_broken_imputation(monkeypatch: pytest.MonkeyPatch) -> None:
    """If the denoiser sees the sampler's own state instead of the given block, the law of
    the missing block is the unconditional one, and the test sees it."""
    sigmas = sampling.karras_sigmas(25)
    m, S = exact_law(SIGMA_4D, sigmas, heun=False, S_churn=20.0, given_idx=GIVEN,
                     z_given=Z_GIVEN)
    monkeypatch.setattr(sampling.Imputation, "__call__", lambda self, x, s: self.denoise(x, s))
    x = run_sampler(SIGMA_4D, sigmas, sampler="euler", S_churn=20.0, given_idx=GIVEN,
                    z_given=Z_GIVEN)
    assert max_z(x, m, S, MISSING) > Z_TOL


def test_denoiser_sees_given_block_noised_to_sigma() -> None:
    """Eq. 5 directly: at every call the given block is z + sigma * N(0, 1) (fresh noise) and
    the rest is the sampler's state. (The law test above cannot see dropped noise: on a
    linear Gaussian it changes the missing block's law by less than the sampling error.)"""
    rng = np.random.default_rng(1)
    n, d = 20000, 4
    z = np.broadcast_to(Z_GIVEN, (n, d)).copy()
    mask = np.zeros((1, d))
    mask[0, GIVEN] = 1.0
    seen = []

    def denoise(x: np.ndarray, s: float) -> np.ndarray:
        seen.append((s, x.copy()))
        return x * 0.5

    state = rng.standard_normal((n, d))
    imp = sampling.Imputation(denoise, z, mask, lambda like: rng.standard_normal(like.shape))
    for s in (2.0, 0.3):
        imp(state, s)
        x_in = seen[-1][1]
        unit = (x_in[:, GIVEN] - Z_GIVEN[GIVEN]) / s
        assert np.abs(unit.mean(0)).max() < 5 / np.sqrt(n)
        assert np.abs(unit.std(0) - 1).max() < 5 * np.sqrt(0.5 / n)
        assert np.array_equal(x_in[:, MISSING], state[:, MISSING])
    assert not np.array_equal(seen[0][1][:, GIVEN] - 2.0, seen[1][1][:, GIVEN] - 0.3)


def test_masked_noise_draws_only_the_kept_positions() -> None:
    """Row b's draw fills row b's True positions in order, zeros elsewhere; rows with
    different counts fall back to a whole draw, zeroed where unused."""
    drawn = []

    def randn(like: np.ndarray) -> np.ndarray:
        drawn.append(like.shape)
        return np.arange(1, like.size + 1, dtype=np.float32).reshape(like.shape)

    where = np.zeros((2, 3, 4), bool)
    where[:, 1] = True
    where[:, 2, :2] = True
    out = sampling.MaskedNoise(where, randn)(np.zeros((2, 3, 4), np.float32))
    assert drawn == [(2, 6)] and out.dtype == np.float32
    assert np.array_equal(out[0][where[0]], np.arange(1, 7)) and np.array_equal(out[1][where[1]], np.arange(7, 13))
    assert not out[~where].any()
    uneven = where.copy()
    uneven[1, 0, 0] = True
    out = sampling.MaskedNoise(uneven, randn)(np.zeros((2, 3, 4), np.float32))
    assert drawn[-1] == (2, 3, 4) and not out[~uneven].any() and out[uneven].all()
    empty = sampling.MaskedNoise(np.zeros((2, 3, 4), bool), randn)
    assert not empty(np.ones((2, 3, 4))).any() and drawn[-1] == (2, 3, 4)


def test_partial_generation_draws_noise_only_where_it_is_used() -> None:
    """With half the channels given, every draw after the initial noise covers half of them:
    the given half for Eq. 5, the generated half for churn and RePaint passes; the given
    part of the result is still the given latents exactly."""
    drawn = []
    rng = np.random.default_rng(0)

    def randn(like: np.ndarray) -> np.ndarray:
        drawn.append(like.size)
        return rng.standard_normal(like.shape)

    given = rng.standard_normal((2, 4, 6))
    mask = np.zeros((1, 4, 1))
    mask[:, 2:] = 1.0
    out = sampling.generate(lambda x, s: x * 0.5, rng.standard_normal((2, 4, 6)), sampling.karras_sigmas(6),
                            randn=randn, given=given, mask=mask, S_churn=5.0, resample=2)
    assert drawn and set(drawn) == {2 * 2 * 6}
    assert np.array_equal(out[:, 2:], given[:, 2:])


def test_masked_noise_works_on_torch_tensors() -> None:
    torch = pytest.importorskip("torch")
    where = torch.zeros(1, 4, 3, dtype=torch.bool)
    where[:, :2] = True
    out = sampling.MaskedNoise(where, lambda like: torch.ones(like.shape))(torch.zeros(1, 4, 3))
    assert torch.equal(out, where.float())


# ------------------------------------------------------------------ schedules, plumbing

def test_karras_schedule() -> None:
    s = sampling.karras_sigmas(25, 0.01, 3.0, 7.0)
    assert len(s) == 26 and s[-1] == 0.0
    assert s[0] == pytest.approx(3.0) and s[-2] == pytest.approx(0.01)
    assert all(a > b for a, b in zip(s, s[1:]))


def test_melody_schedule_takes_large_steps_first() -> None:
    s = sampling.melody_sigmas(6)
    assert len(s) == 7 and s[-1] == 0.0 and s[0] == pytest.approx(3.0)
    assert s[-2] == pytest.approx(0.01)
    angles = [math.atan(x / 0.4) for x in s[:-1]]
    steps = [a - b for a, b in zip(angles, angles[1:])]
    assert all(a > b for a, b in zip(steps, steps[1:]))


def test_schedule_by_name_and_in_the_config() -> None:
    from msldm.config import ModelConfig, SamplerConfig
    assert sampling.schedule_sigmas("karras", 8, rho=5.0) == sampling.karras_sigmas(8, 0.01, 3.0, 5.0)
    assert sampling.schedule_sigmas("melody", 8, sigma_data=0.5) == sampling.melody_sigmas(8, 0.01, 3.0, 0.5)
    with pytest.raises(ValueError, match="unknown schedule"):
        sampling.schedule_sigmas("cosine", 8)
    with pytest.raises(ValueError, match="unknown schedule"):
        SamplerConfig(schedule="cosine")
    sc = SamplerConfig(steps=6, schedule="melody")
    assert sc.sigmas(0.4) == sampling.melody_sigmas(6, 0.01, 3.0, 0.4)
    with pytest.raises(ValueError, match="resample"):
        SamplerConfig(resample=0)
    old = ModelConfig().to_dict()  # a checkpoint written before these fields loads with the old behaviour
    del old["sampler"]["schedule"], old["sampler"]["resample"]
    assert (ModelConfig.from_dict(old).sampler.schedule, ModelConfig.from_dict(old).sampler.resample) == ("karras", 1)


def test_callback_cancel_and_call_count() -> None:
    calls = []
    x0 = np.zeros((1, 2))

    def denoise(x, s):
        calls.append(s)
        return x * 0.5

    def stop(step, total, sigma, x, denoised):
        if step == 3:
            raise sampling.Cancelled()

    with pytest.raises(sampling.Cancelled):
        sampling.generate(denoise, x0, sampling.karras_sigmas(10), randn=np.zeros_like,
                          callback=stop)
    assert len(calls) == 3
    calls.clear()
    sampling.generate(denoise, x0, sampling.karras_sigmas(10), sampler="heun",
                      randn=np.zeros_like)
    assert len(calls) == sampling.calls_for_sigmas("heun", sampling.karras_sigmas(10))


@pytest.mark.parametrize("sampler", sorted(sampling.SAMPLERS))
def test_callback_receives_the_denoised_estimate(sampler: str) -> None:
    # The callback's `denoised` is the denoiser's output at the step's first call (sigma_hat),
    # what a DAW can play as a preview; the registry drives dispatch and call counts.
    outputs, seen = [], []

    def denoise(x, s):
        out = x * (0.4 ** 2 / (0.4 ** 2 + s ** 2)) + 0.1  # the exact denoiser of N(0.1, 0.4^2)
        outputs.append((s, out))
        return out

    sigmas = sampling.karras_sigmas(5)
    sampling.generate(denoise, np.ones((1, 3)), sigmas, sampler=sampler, randn=np.zeros_like,
                      callback=lambda step, total, sigma, x, denoised: seen.append((sigma, denoised)))
    assert len(seen) == 5 and len(outputs) == sampling.calls_for_sigmas(sampler, sampling.karras_sigmas(5))
    per_step = 1 if sampler == "euler" else 2  # Heun's second call is at the next level
    for i, (sigma_next, denoised) in enumerate(seen):
        s, expected = outputs[per_step * i]
        assert s == pytest.approx(float(sigmas[i])) and sigma_next == pytest.approx(float(sigmas[i + 1]))
        np.testing.assert_array_equal(denoised, expected)


def test_a_new_sampler_is_one_function_and_a_registry_entry(monkeypatch: pytest.MonkeyPatch) -> None:
    def midpoint(denoise, x, sigma_hat, sigma_next):
        denoised = denoise(x, sigma_hat)
        return x + (x - denoised) * ((sigma_next - sigma_hat) / sigma_hat), denoised

    monkeypatch.setitem(sampling.SAMPLERS, "mine", lambda d, x, s, **k: sampling.sample(d, x, s, midpoint, **k))
    monkeypatch.setitem(sampling.CALLS, "mine", lambda steps: steps)
    calls = []
    out = sampling.generate(lambda x, s: calls.append(s) or x * 0.0, np.ones(2), sampling.karras_sigmas(4),
                            sampler="mine", randn=np.zeros_like)
    assert len(calls) == sampling.calls_for_sigmas("mine", sampling.karras_sigmas(4)) == 4 and np.allclose(out, 0.0)


def test_sampler_module_is_framework_free() -> None:
    import ast
    import inspect

    tree = ast.parse(inspect.getsource(sampling))
    imported = {a.name.split(".")[0] for n in ast.walk(tree) if isinstance(n, ast.Import)
                for a in n.names}
    imported |= {n.module.split(".")[0] for n in ast.walk(tree)
                 if isinstance(n, ast.ImportFrom) and n.module}
    assert not imported & {"torch", "numpy", "onnxruntime"}
