"""Frechet distance between two sets of embeddings (Frechet Audio Distance, Kilgour et al. 2019).

    FD = ||mu_a - mu_b||^2 + tr(S_a + S_b - 2 (S_a S_b)^(1/2))

with mu, S the mean and covariance of the embeddings `[n, D]` of each set (all windows of
all clips pooled). The matrix square root is scipy.linalg.sqrtm; when it is not finite
or its imaginary part is not negligible (singular / ill-conditioned covariances, e.g.
fewer vectors than dimensions), eps * I is added to both covariances and it is retried.
"""

from __future__ import annotations

import warnings
from typing import Sequence

import numpy as np
from scipy import linalg

from msldm.eval.embeddings import Embedding


def gaussian_stats(embeddings: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Mean `[D]` and covariance `[D, D]` of embeddings `[n, D]` (n >= 2)."""
    e = np.asarray(embeddings, dtype=np.float64)
    if e.ndim != 2 or e.shape[0] < 2:
        raise ValueError(f"need embeddings [n >= 2, D], got shape {e.shape}")
    return e.mean(axis=0), np.cov(e, rowvar=False).reshape(e.shape[1], e.shape[1])


def frechet_distance(mu_a: np.ndarray, sigma_a: np.ndarray, mu_b: np.ndarray, sigma_b: np.ndarray,
                     eps: float = 1e-6) -> float:
    """Frechet distance of two Gaussians N(mu_a, sigma_a), N(mu_b, sigma_b) (>= 0)."""
    diff = mu_a - mu_b
    covmean = _sqrtm_product(sigma_a, sigma_b, eps)
    fd = float(diff @ diff + np.trace(sigma_a) + np.trace(sigma_b) - 2.0 * np.trace(covmean))
    return max(fd, 0.0)


def _sqrtm_product(sigma_a: np.ndarray, sigma_b: np.ndarray, eps: float) -> np.ndarray:
    with warnings.catch_warnings():  # singular products are handled below
        warnings.simplefilter("ignore", linalg.LinAlgWarning)
        covmean = linalg.sqrtm(sigma_a @ sigma_b)
    if not np.all(np.isfinite(covmean)) or _imag_too_large(covmean):
        offset = np.eye(sigma_a.shape[0]) * eps
        covmean = linalg.sqrtm((sigma_a + offset) @ (sigma_b + offset))
    return np.real(covmean)


def _imag_too_large(m: np.ndarray, tol: float = 1e-3) -> bool:
    if not np.iscomplexobj(m):
        return False
    return float(np.max(np.abs(m.imag))) > tol * max(1.0, float(np.max(np.abs(m.real))))


def frechet_from_embeddings(a: np.ndarray, b: np.ndarray, eps: float = 1e-6) -> float:
    """Frechet distance between embedding sets a `[n, D]` and b `[m, D]`."""
    return frechet_distance(*gaussian_stats(a), *gaussian_stats(b), eps=eps)


def embed_set(clips: Sequence[np.ndarray], sr: int, embedding: Embedding) -> np.ndarray:
    """Embeddings of all clips stacked `[sum n_i, D]`."""
    return np.concatenate([embedding(c, sr) for c in clips], axis=0)


def frechet_audio_distance(generated: Sequence[np.ndarray], real: Sequence[np.ndarray], sr: int,
                           embedding: Embedding) -> float:
    """Frechet distance between a generated and a real set of clips (each `[N]`)."""
    return frechet_from_embeddings(embed_set(generated, sr, embedding), embed_set(real, sr, embedding))


def noise_floor(real_embeddings: Sequence[np.ndarray], seed: int = 0) -> float:
    """Frechet distance between two disjoint random halves of the real set (per-clip
    embeddings `[n_i, D]` each): what 'as good as real data' reads at this set size."""
    idx = np.random.default_rng(seed).permutation(len(real_embeddings))
    half = len(idx) // 2
    if half < 1:
        return float("nan")
    a = np.concatenate([real_embeddings[i] for i in idx[:half]])
    b = np.concatenate([real_embeddings[i] for i in idx[half:2 * half]])
    if len(a) < 2 or len(b) < 2:
        return float("nan")
    return frechet_from_embeddings(a, b)
