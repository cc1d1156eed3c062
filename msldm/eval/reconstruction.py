"""Reconstruction metrics between a reference stem and an estimate of it.

Used for the VAE round trip (encode -> decode) and any paired comparison. All take
`reference [N]`, `estimate [N']` (cut to the shorter length) and return floats:
lower is better for the distances, higher is better for SI-SDR, note / onset F1 and chroma.

What hears pitch and rhythm (`musical_metrics`): for pitched stems the onset-only note F1
between the Basic Pitch transcriptions of reference and estimate (mir_eval, 50 ms, 50
cents), the cosine of their mean `librosa.feature.chroma_cqt`, and the share of the
estimate's note time at the latent frame-rate pitch (`comb_share`; the reference's beside
it); for drums the onset F1 of librosa onsets (mir_eval.onset, 50 ms window).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from msldm.eval.dsp import EPS, as_mono, mel_spectrogram, stft_mag

MEL_SCALES: tuple[tuple[int, int, int], ...] = ((512, 128, 64), (1024, 256, 80), (2048, 512, 128))
"""(n_fft, hop, n_mels) of the multi-scale log-mel distance."""

STFT_SIZES: tuple[int, ...] = (512, 1024, 2048)
"""FFT sizes of the multi-resolution STFT distance (hop = n_fft // 4)."""


def _align(reference: np.ndarray, estimate: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    r, e = as_mono(reference), as_mono(estimate)
    n = min(len(r), len(e))
    return r[:n], e[:n]


def multiscale_logmel_l1(reference: np.ndarray, estimate: np.ndarray, sr: int,
                         scales: tuple[tuple[int, int, int], ...] = MEL_SCALES,
                         floor: float = 1e-5) -> float:
    """Mean over scales of mean |log10 max(M_ref, floor) - log10 max(M_est, floor)|.

    M is the mel power spectrogram `[n_mels, T]` at each (n_fft, hop, n_mels) scale;
    `floor` (-100 dB power) keeps silence finite. 0 for identical audio.
    """
    r, e = _align(reference, estimate)
    dists = []
    for n_fft, hop, n_mels in scales:
        mr = np.log10(np.maximum(mel_spectrogram(r, sr, n_fft, hop, n_mels), floor))
        me = np.log10(np.maximum(mel_spectrogram(e, sr, n_fft, hop, n_mels), floor))
        dists.append(float(np.mean(np.abs(mr - me))))
    return float(np.mean(dists))


@dataclass(frozen=True)
class STFTDistance:
    """Multi-resolution STFT distance, each term averaged over resolutions."""

    spectral_convergence: float  # ||S_ref - S_est||_F / ||S_ref||_F
    log_magnitude: float  # mean |log(S_ref + eps) - log(S_est + eps)|

    @property
    def total(self) -> float:
        """spectral_convergence + log_magnitude (the usual MR-STFT loss)."""
        return self.spectral_convergence + self.log_magnitude


def multiresolution_stft(reference: np.ndarray, estimate: np.ndarray,
                         sizes: tuple[int, ...] = STFT_SIZES, eps: float = 1e-5) -> STFTDistance:
    """Spectral convergence and log-magnitude distance of |STFT| `[F, T]` at each
    size (Hann, hop n_fft // 4), averaged over sizes. Both 0 for identical audio."""
    r, e = _align(reference, estimate)
    sc, lm = [], []
    for n_fft in sizes:
        sr_, se = stft_mag(r, n_fft, n_fft // 4), stft_mag(e, n_fft, n_fft // 4)
        sc.append(np.linalg.norm(sr_ - se) / (np.linalg.norm(sr_) + EPS))
        lm.append(np.mean(np.abs(np.log(sr_ + eps) - np.log(se + eps))))
    return STFTDistance(float(np.mean(sc)), float(np.mean(lm)))


def si_sdr(reference: np.ndarray, estimate: np.ndarray, eps: float = 1e-12) -> float:
    """Scale-invariant SDR in dB (Le Roux et al. 2019).

    With zero-mean signals, the target is the projection alpha * ref, alpha =
    <est, ref> / ||ref||^2, and SI-SDR = 10 log10(||target||^2 / ||est - target||^2).
    Identical audio gives a very large value (bounded by `eps`); a silent reference gives -inf.
    """
    r, e = _align(reference, estimate)
    r, e = r - r.mean(), e - e.mean()
    energy = float(np.dot(r, r))
    if energy <= eps:
        return float("-inf")
    target = (np.dot(e, r) / energy) * r
    noise = e - target
    return float(10.0 * np.log10((np.dot(target, target) + eps) / (np.dot(noise, noise) + eps)))


def chroma_cosine(reference: np.ndarray, estimate: np.ndarray, sr: int) -> float:
    """Cosine of the time-averaged `librosa.feature.chroma_cqt` of the two (NaN if one is silent)."""
    import librosa

    r, e = _align(reference, estimate)
    if not (np.any(r) and np.any(e)):
        return float("nan")
    cr = librosa.feature.chroma_cqt(y=r.astype(np.float32), sr=sr, hop_length=512).mean(axis=1)
    ce = librosa.feature.chroma_cqt(y=e.astype(np.float32), sr=sr, hop_length=512).mean(axis=1)
    return float(cr @ ce / (np.linalg.norm(cr) * np.linalg.norm(ce) + EPS))


def onset_f1(reference: np.ndarray, estimate: np.ndarray, sr: int, window: float = 0.05) -> float:
    """F-measure of the estimate's onsets against the reference's (mir_eval.onset, `window` s)."""
    import mir_eval

    from msldm.eval.rhythm import detect_onsets

    r, e = _align(reference, estimate)
    ro, eo = detect_onsets(r, sr)[0], detect_onsets(e, sr)[0]
    if ro.size == 0 and eo.size == 0:
        return 1.0
    if ro.size == 0 or eo.size == 0:
        return 0.0
    return float(mir_eval.onset.f_measure(ro, eo, window=window)[0])


def musical_metrics(reference: np.ndarray, estimate: np.ndarray, sr: int, stem: str,
                    frame_rate_hz: float) -> dict[str, float]:
    """Note F1, chroma cosine and comb share (pitched stems) or onset F1 (drums); module docstring."""
    from msldm.eval.harmony import PITCHED_STEMS, stem_notes
    from msldm.eval.transcribe import note_f1, pitch_diagnostics

    r, e = _align(reference, estimate)
    if stem not in PITCHED_STEMS:
        return {"onset_f1": onset_f1(r, e, sr)}
    nr, ne = stem_notes(r, sr), stem_notes(e, sr)
    seconds = len(r) / sr
    return {"note_f1": note_f1(nr, ne), "chroma_cos": chroma_cosine(r, e, sr),
            "comb_share": pitch_diagnostics(ne, seconds, frame_rate_hz)["comb_share"],
            "comb_share_ref": pitch_diagnostics(nr, seconds, frame_rate_hz)["comb_share"]}


def reconstruction_metrics(reference: np.ndarray, estimate: np.ndarray, sr: int, stem: str | None = None,
                           frame_rate_hz: float = 22050 / 320) -> dict[str, float]:
    """All reconstruction metrics as a flat dict (the record written to metrics.json); with
    `stem`, also the `musical_metrics` of that stem."""
    stft = multiresolution_stft(reference, estimate)
    out = {"logmel_l1": multiscale_logmel_l1(reference, estimate, sr),
           "stft_sc": stft.spectral_convergence, "stft_logmag": stft.log_magnitude,
           "stft_total": stft.total, "si_sdr": si_sdr(reference, estimate)}
    if stem is not None:
        out.update(musical_metrics(reference, estimate, sr, stem, frame_rate_hz))
    return out
