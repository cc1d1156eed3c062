"""Signal-processing building blocks shared by the evaluation metrics (librosa where it has them).

Everything works on mono float audio `[N]` at a sample rate `sr` (Hz) with full scale 1.0.
Frame `t` of a centred STFT is centred on sample `t * hop` (the signal is zero-padded by
`n_fft // 2` on both sides), so its time is `t * hop / sr` seconds.
"""

from __future__ import annotations

from functools import lru_cache

import numpy as np

EPS = 1e-10


def as_mono(x: np.ndarray) -> np.ndarray:
    """Return `x` as a 1-D float64 array `[N]` (averages channels of `[N, ch]` or `[ch, N]`)."""
    a = np.asarray(x, dtype=np.float64)
    if a.ndim == 1:
        return a
    if a.ndim == 2:
        return a.mean(axis=int(np.argmin(a.shape)))
    return a.reshape(-1)


def frames(x: np.ndarray, n_fft: int, hop: int, center: bool = True) -> np.ndarray:
    """Slice `x [N]` into overlapping frames `[T, n_fft]` (zero-padded when short; float32
    input stays float32, anything else becomes float64)."""
    x = np.asarray(x)
    x = x if x.dtype == np.float32 and x.ndim == 1 else as_mono(x)
    if center:
        x = np.pad(x, (n_fft // 2, n_fft // 2))
    if len(x) < n_fft:
        x = np.pad(x, (0, n_fft - len(x)))
    view = np.lib.stride_tricks.sliding_window_view(x, n_fft)[::hop]
    return view


def stft_mag(x: np.ndarray, n_fft: int, hop: int) -> np.ndarray:
    """Magnitude STFT `[F, T]` (`librosa.stft`, centred, zero-padded), F = n_fft // 2 + 1, Hann
    window normalised so that a full-scale sinusoid peaks near 0.5."""
    import librosa

    w = librosa.filters.get_window("hann", n_fft, fftbins=True)
    spec = librosa.stft(np.asarray(x, np.float32), n_fft=n_fft, hop_length=hop, window=w, center=True,
                        pad_mode="constant")
    return np.abs(spec).astype(np.float64) / float(w.sum())


@lru_cache(maxsize=32)
def mel_filterbank(sr: int, n_fft: int, n_mels: int, fmin: float = 0.0,
                   fmax: float | None = None) -> np.ndarray:
    """Triangular HTK-mel filterbank `[n_mels, n_fft // 2 + 1]`, each filter of unit peak
    (`librosa.filters.mel` with htk=True, no area normalisation)."""
    import librosa

    fb = librosa.filters.mel(sr=sr, n_fft=n_fft, n_mels=n_mels, fmin=fmin, fmax=fmax, htk=True, norm=None)
    fb = fb.astype(np.float64)
    fb.setflags(write=False)
    return fb


def mel_spectrogram(x: np.ndarray, sr: int, n_fft: int, hop: int, n_mels: int,
                    fmin: float = 0.0, fmax: float | None = None) -> np.ndarray:
    """Mel power spectrogram `[n_mels, T]`."""
    mag = stft_mag(x, n_fft, hop)
    return mel_filterbank(sr, n_fft, n_mels, fmin, fmax) @ (mag ** 2)


def frame_rms_db(x: np.ndarray, frame: int = 2048, hop: int = 512) -> np.ndarray:
    """Frame RMS in dB relative to full scale (a full-scale sine is -3 dBFS) `[T]`."""
    fr = frames(x, frame, hop)
    rms = np.sqrt(np.mean(fr ** 2, axis=-1))
    return 20.0 * np.log10(rms + EPS)


def level_db(x: np.ndarray) -> float:
    """RMS level of a whole signal in dBFS (-120 for silence): how the evaluation measures a
    stem's loudness, and the daemon a generated stem's against the given ones."""
    return float(20 * np.log10(max(float(np.sqrt(np.mean(np.square(x, dtype=np.float64)))), 1e-6)))
