"""The one sampler: schedules, solvers (Euler, Heun) with churn, and imputation (partial generation).

Registries drive dispatch (`SCHEDULES`, `SAMPLERS`, `CALLS`); a solver is one function
`(denoise, x, sigma_hat, sigma_next) -> (x_next, denoised)`, so a third method is one
function and one registry entry each.

Framework-free on purpose: this module imports neither torch nor numpy. Arrays are
whatever the caller uses (numpy `ndarray` or `torch.Tensor`); the code only needs
`+`, `-`, `*` with arrays and Python floats, and, for partial generation, what both share
of comparison, `~`, `reshape`, `sum` and boolean-mask assignment (`MaskedNoise`).
Randomness and the denoiser are passed in:

- ``denoise(x, sigma) -> x0_hat``: the preconditioned denoiser D(x; sigma) of EDM,
  `sigma` a Python float; returns an array shaped like `x`.
- ``randn(like) -> eps``: standard normal noise shaped like `like`, same array type.

The torch pipeline (`msldm.pipeline`) and the torch-free server runtime both call these
functions; there is no second copy of the maths.
"""

from __future__ import annotations

import math
from typing import Any, Callable, Protocol, Sequence

Array = Any  # numpy.ndarray or torch.Tensor
Denoise = Callable[[Array, float], Array]
Randn = Callable[[Array], Array]


class StepCallback(Protocol):
    """Called after every step with the state `x` at `sigma` (the next level) and `denoised`,
    the denoiser's estimate of the clean latent at this step: what a DAW can play as a
    preview while sampling runs (k-diffusion hands its callback the same)."""

    def __call__(self, step: int, total: int, sigma: float, x: Array, denoised: Array) -> None: ...


class Cancelled(Exception):
    """Raised by a callback to stop sampling between steps."""


# ----------------------------------------------------------------------------- schedules

def karras_sigmas(steps: int, sigma_min: float = 0.01, sigma_max: float = 3.0,
                  rho: float = 7.0) -> list[float]:
    """Noise levels of Eq. 5 of Karras et al. 2022, `steps` values from sigma_max down to
    sigma_min, followed by a final 0.  Returns `steps + 1` floats."""
    if steps < 1:
        raise ValueError("steps must be >= 1")
    if not 0 < sigma_min <= sigma_max:
        raise ValueError("need 0 < sigma_min <= sigma_max")
    if steps == 1:
        return [float(sigma_max), 0.0]
    inv = 1.0 / rho
    lo, hi = sigma_min ** inv, sigma_max ** inv
    sig = [(hi + i / (steps - 1) * (lo - hi)) ** rho for i in range(steps)]
    return sig + [0.0]


def melody_sigmas(steps: int, sigma_min: float = 0.01, sigma_max: float = 3.0,
                  sigma_data: float = 0.4) -> list[float]:
    """Few-step schedule after MeLoDy's linear angle schedule (Sec. 4.2.1 of the MeLoDy paper).

    MeLoDy samples on angles delta in [0, pi/2] with step sizes that shrink linearly, so the
    first steps are large and the last ones refine. With the variance-preserving angle
    delta and EDM's noise level related by sigma = sigma_data * tan(delta), we take angle
    steps omega_t proportional to (T - t + 1) (larger first) and map them to sigmas.
    Returns `steps + 1` floats ending with 0.
    """
    if steps < 1:
        raise ValueError("steps must be >= 1")
    d_max = math.atan(sigma_max / sigma_data)
    d_min = math.atan(sigma_min / sigma_data)
    weights = [steps - t for t in range(steps - 1)]  # T-1 decreasing step sizes down to d_min
    total = float(sum(weights)) or 1.0
    deltas, d = [d_max], d_max
    for w in weights:
        d -= (d_max - d_min) * w / total
        deltas.append(d)
    return [sigma_data * math.tan(x) for x in deltas[:steps]] + [0.0]


SCHEDULES: dict[str, Callable[..., list[float]]] = {"karras": karras_sigmas, "melody": melody_sigmas}


def schedule_sigmas(schedule: str, steps: int, *, sigma_min: float = 0.01, sigma_max: float = 3.0,
                    rho: float = 7.0, sigma_data: float = 0.4) -> list[float]:
    """The noise levels of the named schedule of `SCHEDULES` ("karras" uses `rho`, "melody"
    `sigma_data`; each takes the keywords it names). Returns `steps + 1` floats ending with 0."""
    try:
        fn = SCHEDULES[schedule]
    except KeyError:
        raise ValueError(f"unknown schedule {schedule!r}; choose from {sorted(SCHEDULES)}") from None
    options = {"sigma_min": sigma_min, "sigma_max": sigma_max, "rho": rho, "sigma_data": sigma_data}
    names = fn.__code__.co_varnames[1:fn.__code__.co_argcount]
    return fn(steps, **{k: v for k, v in options.items() if k in names})


# ----------------------------------------------------------------------------- samplers

def _churn_gamma(sigma: float, steps: int, S_churn: float, S_tmin: float, S_tmax: float) -> float:
    if S_churn <= 0 or not S_tmin <= sigma <= S_tmax:
        return 0.0
    return min(S_churn / steps, math.sqrt(2.0) - 1.0)


Solver = Callable[[Denoise, Array, float, float], tuple[Array, Array]]
"""`solver(denoise, x, sigma_hat, sigma_next) -> (x at sigma_next, denoised at sigma_hat)`."""


def euler_step(denoise: Denoise, x: Array, sigma_hat: float, sigma_next: float) -> tuple[Array, Array]:
    """First-order step of the probability-flow ODE from sigma_hat to sigma_next (one call)."""
    denoised = denoise(x, sigma_hat)
    d = (x - denoised) * (1.0 / sigma_hat)
    return x + d * (sigma_next - sigma_hat), denoised


def heun_step(denoise: Denoise, x: Array, sigma_hat: float, sigma_next: float) -> tuple[Array, Array]:
    """Heun's second-order correction of the Euler step (Algorithm 2 of Karras et al. 2022):
    two calls, one when stepping to sigma = 0."""
    x_next, denoised = euler_step(denoise, x, sigma_hat, sigma_next)
    if sigma_next > 0:
        d = (x - denoised) * (1.0 / sigma_hat)
        d_next = (x_next - denoise(x_next, sigma_next)) * (1.0 / sigma_next)
        x_next = x + (d + d_next) * (0.5 * (sigma_next - sigma_hat))
    return x_next, denoised


def passes_per_step(sigmas: Sequence[float], resample: int = 1, resample_tmin: float = 0.0,
                    resample_tmax: float = float("inf")) -> list[int]:
    """RePaint passes of each step of `sigmas`: `resample` where the step starts at a sigma in
    [`resample_tmin`, `resample_tmax`], else 1 (the band of noise levels where the generated
    part is pulled towards the given one; the defaults put every step in it)."""
    return [resample if resample_tmin <= float(s) <= resample_tmax else 1 for s in list(sigmas)[:-1]]


def sample(denoise: Denoise, x: Array, sigmas: Sequence[float], solver: Solver, *, randn: Randn | None = None,
           S_churn: float = 0.0, S_tmin: float = 0.0, S_tmax: float = float("inf"),
           S_noise: float = 1.0, resample: int = 1, resample_tmin: float = 0.0,
           resample_tmax: float = float("inf"), callback: StepCallback | None = None,
           churn_steps: int | None = None) -> Array:
    """Any `solver` with stochastic churn and RePaint resampling (Algorithm 2 of Karras et al.).

    x: the initial noise already scaled to sigmas[0], e.g. `sigma_max * randn`. With
    S_churn > 0 each step first raises the noise level from sigma to
    sigma_hat = sigma * (1 + gamma), gamma = min(S_churn / N, sqrt(2) - 1), by adding fresh
    noise (needs `randn`). With `resample` = R > 1 every step is taken R times: after each
    of the first R - 1 takes, the result is noised from sigmas[i+1] back to sigmas[i]
    (RePaint's resampling, Lugmayr et al. 2022), so that with imputation the generated
    part keeps adjusting to the given part (R times the denoiser calls); with
    `resample_tmin` / `resample_tmax` only the steps starting at a sigma in that band take R
    passes, the rest one (`passes_per_step`). `callback` gets
    the state and the last denoised estimate after every step. `churn_steps`: the step count
    gamma divides S_churn by (default: these sigmas' steps; a span of a longer schedule passes
    the whole schedule's, so that it churns as that schedule would). Returns x at sigmas[-1]
    (0: the sample).
    """
    n = len(sigmas) - 1
    churn_n = n if churn_steps is None else int(churn_steps)
    if S_churn > 0 and randn is None:
        raise ValueError("S_churn > 0 needs a noise source (randn)")
    if resample < 1:
        raise ValueError("resample must be >= 1")
    if resample > 1 and randn is None:
        raise ValueError("resample > 1 needs a noise source (randn)")
    passes = passes_per_step(sigmas, resample, resample_tmin, resample_tmax)
    for i in range(n):
        sigma, sigma_next = float(sigmas[i]), float(sigmas[i + 1])
        gamma = _churn_gamma(sigma, churn_n, S_churn, S_tmin, S_tmax)
        sigma_hat = sigma * (1.0 + gamma)
        back = math.sqrt(sigma ** 2 - sigma_next ** 2) if passes[i] > 1 else 0.0
        for r in range(passes[i]):
            if r > 0:  # back from sigma_next to sigma, then the same step again
                x = x + randn(x) * back
            if gamma > 0:
                x = x + randn(x) * (S_noise * math.sqrt(sigma_hat ** 2 - sigma ** 2))
            x, denoised = solver(denoise, x, sigma_hat, sigma_next)
        if callback is not None:
            callback(i + 1, n, sigma_next, x, denoised)
    return x


def sample_euler(denoise: Denoise, x: Array, sigmas: Sequence[float], **kwargs: Any) -> Array:
    """`sample` with `euler_step` (one denoiser call per step and take)."""
    return sample(denoise, x, sigmas, euler_step, **kwargs)


def sample_heun(denoise: Denoise, x: Array, sigmas: Sequence[float], **kwargs: Any) -> Array:
    """`sample` with `heun_step` (two calls per step but the last, to sigma = 0)."""
    return sample(denoise, x, sigmas, heun_step, **kwargs)


SAMPLERS: dict[str, Callable[..., Array]] = {"euler": sample_euler, "heun": sample_heun}
"""The registry `generate` dispatches on: one function per sampler, all with `sample`'s keywords."""
CALLS: dict[str, Callable[[int], int]] = {"euler": lambda steps: steps, "heun": lambda steps: 2 * steps - 1}
"""Denoiser calls of one take of `steps` steps, per sampler (a new sampler adds its entry)."""
CALL_SIGMAS: dict[str, Callable[[float, float], list[float]]] = {
    "euler": lambda sigma_hat, sigma_next: [sigma_hat],
    "heun": lambda sigma_hat, sigma_next: [sigma_hat, sigma_next] if sigma_next > 0 else [sigma_hat]}
"""The noise levels one step from sigma_hat to sigma_next calls the denoiser at, per sampler:
what guidance's band is judged on (`calls_for_sigmas`)."""
MAX_RESAMPLE = 8  # more passes per step than this cost more than they bring


def calls_for_sigmas(sampler: str, sigmas: Sequence[float], resample: int = 1, resample_tmin: float = 0.0,
                     resample_tmax: float = float("inf"), *, guidance: float = 1.0, guidance_tmin: float = 0.0,
                     guidance_tmax: float = float("inf"), S_churn: float = 0.0, S_tmin: float = 0.0,
                     S_tmax: float = float("inf"), reconstruction: float = 0.0,
                     reconstruction_tmin: float = 0.0) -> int:
    """Denoiser calls of a partial generation over `sigmas` whose steps take the passes of
    `passes_per_step`. A step's calls are read off `CALLS`: the last step (to sigma 0) makes
    CALLS(1), step i before it CALLS(n - i) - CALLS(n - i - 1). With `guidance` != 1 every
    call at a noise level in [guidance_tmin, guidance_tmax] is two evaluations (`Imputation`; one
    call on a doubled batch where the caller passes `concat`, which the runtime does); the levels
    are the ones the sampler calls at (`CALL_SIGMAS`, after the churn of `S_churn`, `S_tmin`,
    `S_tmax`). So is every call at a level >= `reconstruction_tmin` with `reconstruction` > 0."""
    passes = passes_per_step(sigmas, resample, resample_tmin, resample_tmax)
    n, calls = len(passes), CALLS[sampler]
    if reconstruction > 0:  # the same count as guidance over [reconstruction_tmin, inf)
        guidance, guidance_tmin, guidance_tmax = 2.0, reconstruction_tmin, float("inf")
    if guidance == 1.0:
        per_step = [calls(n - i) - calls(n - i - 1) for i in range(n - 1)] + [calls(1)] if n else []
        return sum(c * p for c, p in zip(per_step, passes))
    if sampler not in CALL_SIGMAS:
        raise ValueError(f"guidance needs the sampler's call levels: add {sampler!r} to CALL_SIGMAS")
    total = 0
    for i, p in enumerate(passes):
        sigma, sigma_next = float(sigmas[i]), float(sigmas[i + 1])
        sigma_hat = sigma * (1.0 + _churn_gamma(sigma, n, S_churn, S_tmin, S_tmax))
        levels = CALL_SIGMAS[sampler](sigma_hat, sigma_next)
        total += p * sum(2 if guidance_tmin <= s <= guidance_tmax else 1 for s in levels)
    return total


# ----------------------------------------------------------------------------- imputation

class MaskedNoise:
    """Standard normal noise at the positions where `where` is True, zeros elsewhere, drawing
    only as many numbers as it keeps.

    `where`: a boolean array `[B, ...]`. When every row b holds the same number n of True
    positions, a call draws `randn` of a `[B, n]` array (row b of the draw from take b's
    stream, as `server.windowing.TakeNoise` keeps it) and scatters row b over row b's
    positions in order; otherwise it draws the whole shape and zeroes the rest. Partial
    generation needs fresh noise only where it is used: on the given part for Eq. 5, on the
    generated part for the sampler's churn and RePaint passes (the given part of the state is
    replaced before every denoiser call), which halves the numbers drawn for two given stems
    of four. Returns an array shaped and typed like `like` (shaped like `where`)."""

    def __init__(self, where: Array, randn: Randn):
        self.where, self.randn = where, randn
        self.rows = int(where.shape[0])
        counts = [int(c) for c in where.reshape(self.rows, -1).sum(1)]
        self.n = counts[0] if counts and all(c == counts[0] for c in counts) else -1

    def __call__(self, like: Array) -> Array:
        if self.n < 0:  # rows differ: draw everything, keep what is used
            return self.randn(like) * self.where
        out = like * 0.0
        if self.n:
            out[self.where] = self.randn(like.reshape(self.rows, -1)[:, :self.n]).reshape(-1)
        return out


def reversed_in_time(a: Array) -> Array:
    """`a` with its last axis (frames) in reverse order, by integer-list indexing (numpy and
    torch alike)."""
    return a[..., list(range(int(a.shape[-1]) - 1, -1, -1))]


class Imputation:
    """Partial generation by imputation (Eq. 4-6 of the MSLDM paper).

    Wraps a denoiser so that before every call the given part of the joint latent is
    replaced by the given latents noised to the current level,
    Z_I(t) ~ N(Z_I(0), sigma(t)^2 I) (Eq. 5), while the rest is the sampler's state.

    `given`: an array shaped like the sampler state holding Z_I(0) where `mask` is 1
    (values elsewhere are ignored). `mask`: 0/1 array broadcastable to that shape; a
    stem's channel block (imputation across stems) or a span of frames (continuation in
    time) or both. An all-zero mask is total generation. `state_randn` is the noise the
    sampler should add to its state: `randn` over the generated part only (what it adds to
    the given part is never seen).

    `conditional`: the denoiser also reads the given part clean (given-stem conditioning,
    `msldm.edm.EDMDenoiser`): it is then called as `denoise(x, sigma, given, mask)`, with
    `given` zero where `mask` is 0 and `mask` at the state's shape.

    `guidance` w != 1: given-part guidance, after classifier-free guidance (Ho and Salimans
    2022) with the given part in the place of the condition. On calls at a noise level in
    [`guidance_tmin`, `guidance_tmax`] the denoiser runs twice, on the state with the given
    part (D) and with a contrast in its place (U): the given latents played backwards in
    time, scaled by `guidance_reverse` (1: the given stems' level, timbre and key without
    their timing; 0: no signal at all), noised alike; the estimate is U + w (D - U), which
    pushes the generated part further towards what fits the given part's timing than the
    joint model's own pull does. Costs one more denoiser evaluation per guided call
    (`calls_for_sigmas`). `concat` (optional): joins arrays along the batch axis
    (`numpy.concatenate` or `torch.cat` of a list); given, a guided call's two evaluations run
    as one call on a batch of twice the rows (D's rows first), which costs the runtime less than
    two calls; the noise is drawn in the same order either way, so only the float rounding of a
    batched call can differ.

    `reconstruction` w_r > 0: reconstruction guidance (Ho et al. 2022, "Video Diffusion
    Models", Sec. 3.1) on calls at sigma >= `reconstruction_tmin`: imputation replaces the given
    part but never corrects the generated part for what the denoiser made of the given one, so
    the generated part is moved along the gradient that would bring the denoiser's estimate of
    the given part to the given latents, D_gen += w_r * J_gen<-given e with e = given - D_given.
    No gradient is taken: a denoiser's Jacobian is symmetric (D = x + sigma^2 * score, and the
    score's Jacobian is a Hessian), so J_given<-gen^T e = J_gen<-given e, read off one more call
    with the given part of the input moved by e: D_gen(z + e) - D_gen(z) (a finite difference
    of step 1). Costs one more denoiser evaluation per call in the band; runs on any runtime.
    Not with `guidance`. `reconstruction_mask` (0/1, broadcastable to the state; None: the whole
    given part): the given positions whose error counts in e, for example one given stem's
    channel block, so that the pull follows that stem's reconstruction and not the others'.

    `given_noise` r < 1: the given part is noised to r * sigma instead of sigma, for a denoiser
    trained to read it so (`msldm.edm.edm_loss`'s `given_noise`): at the high levels where a
    part's key and rhythm are decided the given stems are then still heard. 1: Eq. 5.
    """

    def __init__(self, denoise: Denoise, given: Array, mask: Array, randn: Randn, conditional: bool = False,
                 guidance: float = 1.0, guidance_tmin: float = 0.0, guidance_tmax: float = float("inf"),
                 guidance_reverse: float = 1.0, concat: Callable[[list[Array]], Array] | None = None,
                 given_noise: float = 1.0, reconstruction: float = 0.0, reconstruction_tmin: float = 0.0,
                 reconstruction_mask: Array | None = None):
        self.denoise, self.given, self.mask, self.concat = denoise, given, mask, concat
        self.given_noise = float(given_noise)
        self.reconstruction, self.reconstruction_tmin = float(reconstruction), float(reconstruction_tmin)
        if self.reconstruction > 0 and float(guidance) != 1.0:
            raise ValueError("reconstruction guidance and given-part guidance are two ways to pull towards the "
                             "given stems: use one")
        self.keep = 1.0 - mask
        # the given positions whose reconstruction error pulls (outside the given part it would be 0 anyway)
        self.error_mask = mask if reconstruction_mask is None else mask * reconstruction_mask
        full = mask + given * 0.0  # the mask at the state's shape
        at = full > 0.5  # given positions
        self.given_randn = MaskedNoise(at, randn)
        self.state_randn = MaskedNoise(~at, randn)
        self.guidance, self.band = float(guidance), (float(guidance_tmin), float(guidance_tmax))
        self.contrast = reversed_in_time(given) * float(guidance_reverse) if self.guidance != 1.0 else None
        # a conditional denoiser's clean inputs, computed once: (given part, mask) of each branch
        self.cond = (given * full, full) if conditional else None
        self.contrast_cond = (self.contrast * full, full) if conditional and self.contrast is not None else None

    def combine(self, x: Array, z_given: Array) -> Array:
        """mask * z_given + (1 - mask) * x: exact in the given part for finite x."""
        return z_given * self.mask + x * self.keep

    def _noised(self, x: Array, sigma: float, given: Array) -> Array:
        """The state with `given`, noised to `given_noise * sigma` (fresh noise), in the given part."""
        return self.combine(x, given + self.given_randn(given) * (sigma * self.given_noise))

    def _denoise(self, x: Array, sigma: float, given: Array, cond: tuple[Array, Array] | None) -> Array:
        """The denoiser on the state with `given`, noised to `sigma`, in the given part (and
        `cond`, a conditional denoiser's clean inputs)."""
        z = self._noised(x, sigma, given)
        return self.denoise(z, sigma) if cond is None else self.denoise(z, sigma, *cond)

    def guided(self, sigma: float) -> bool:
        """Whether a call at `sigma` is guided (two denoiser calls)."""
        return self.contrast is not None and self.band[0] <= sigma <= self.band[1]

    def _reconstructed(self, x: Array, sigma: float) -> Array:
        """The estimate with reconstruction guidance: D + w_r * (D(z + e) - D(z)) on the
        generated part, e = (given - D(z)) on the given part (where `reconstruction_mask` is 1)."""
        z = self._noised(x, sigma, self.given)
        cond = () if self.cond is None else self.cond

        def run(a: Array) -> Array:
            return self.denoise(a, sigma, *cond)

        d = run(z)
        e = (self.given - d) * self.error_mask
        return d + (run(z + e) - d) * self.keep * self.reconstruction

    def __call__(self, x: Array, sigma: float) -> Array:
        if self.reconstruction > 0 and sigma >= self.reconstruction_tmin:
            return self._reconstructed(x, sigma)
        if not self.guided(sigma):
            return self._denoise(x, sigma, self.given, self.cond)
        if self.concat is None:
            d = self._denoise(x, sigma, self.given, self.cond)
            u = self._denoise(x, sigma, self.contrast, self.contrast_cond)
        else:  # one call on both branches, D's rows first (the noise drawn in the same order)
            zd = self._noised(x, sigma, self.given)
            z = self.concat([zd, self._noised(x, sigma, self.contrast)])
            rows = int(zd.shape[0])
            if self.cond is None:
                both = self.denoise(z, sigma)
            else:
                at = zd * 0.0  # each branch's clean inputs at the state's rows, then joined
                both = self.denoise(z, sigma, *(self.concat([a + at, b + at]) for a, b in zip(self.cond, self.contrast_cond)))
            d, u = both[:rows], both[rows:]
        return u + (d - u) * self.guidance

    def finish(self, x: Array) -> Array:
        """The final sample with the given part put back bit-exact."""
        return self.combine(x, self.given)


def generate(denoise: Denoise, noise: Array, sigmas: Sequence[float], *, sampler: str = "euler",
             randn: Randn, given: Array | None = None, mask: Array | None = None,
             S_churn: float = 0.0, S_tmin: float = 0.0, S_tmax: float = float("inf"),
             S_noise: float = 1.0, resample: int = 1, resample_tmin: float = 0.0,
             resample_tmax: float = float("inf"), callback: StepCallback | None = None,
             conditional: bool = False, guidance: float = 1.0, guidance_tmin: float = 0.0,
             guidance_tmax: float = float("inf"), guidance_reverse: float = 1.0,
             concat: Callable[[list[Array]], Array] | None = None, given_noise: float = 1.0,
             reconstruction: float = 0.0, reconstruction_tmin: float = 0.0,
             reconstruction_mask: Array | None = None, churn_steps: int | None = None) -> Array:
    """Total (mask None) or partial generation of a joint latent `[B, K*C, T]`.

    `noise`: standard normal, shaped like the latent; it is scaled by sigmas[0] here.
    `resample` applies to partial generation only: with nothing given there is nothing for
    the extra takes to fit; so do the `guidance` fields (`Imputation`). In partial generation
    the sampler's churn and RePaint noise is drawn over the generated part only
    (`Imputation.state_randn`), so a seed's draws differ
    from a total generation's after the initial noise. Returns the sampled latent; where
    `mask` is 1 it equals `given` exactly. `conditional`: the denoiser takes the given part
    too (`Imputation`); in total generation it is called as `denoise(x, sigma)` either way.
    `concat`: the array type's join along the batch axis; guided calls then run both branches
    as one batched call (`Imputation`). `given_noise`: the given part's noise as a share of
    sigma (`Imputation`; 1: Eq. 5). `reconstruction`, `reconstruction_tmin`: reconstruction
    guidance's weight (0: off) and lowest noise level, `reconstruction_mask` the given positions
    whose error counts (`Imputation`; None: all). `churn_steps`: see `sample` (sampling a span
    of a schedule: `noise` is then the state at sigmas[0] divided by sigmas[0]).
    """
    if sampler not in SAMPLERS:
        raise ValueError(f"unknown sampler {sampler!r}; choose from {sorted(SAMPLERS)}")
    fn = SAMPLERS[sampler]
    x = noise * float(sigmas[0])
    kwargs = dict(randn=randn, S_churn=S_churn, S_tmin=S_tmin, S_tmax=S_tmax,
                  S_noise=S_noise, resample=resample if mask is not None else 1, resample_tmin=resample_tmin,
                  resample_tmax=resample_tmax, callback=callback, churn_steps=churn_steps)
    if mask is None:
        return fn(denoise, x, sigmas, **kwargs)
    if given is None:
        raise ValueError("a mask needs the given latents")
    imp = Imputation(denoise, given, mask, randn, conditional, guidance, guidance_tmin, guidance_tmax,
                     guidance_reverse, concat, given_noise, reconstruction, reconstruction_tmin,
                     reconstruction_mask)
    return imp.finish(fn(imp, x, sigmas, **dict(kwargs, randn=imp.state_randn)))
