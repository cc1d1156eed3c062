"""Pluggable audio embeddings for the Frechet distance (registry name -> class).

- ``"stats"`` (built-in, no weights): hand-made features pooled per 1 s window. NOT
  VGGish: its distances are NOT comparable to the paper's FAD values (Fig. 2, Table 2);
  they only compare models evaluated with the same embedding.
- ``"vggish"``: VGGish (Hershey et al. 2017) run from a user-supplied ONNX file with
  onnxruntime (we ship no weights). Input: 16 kHz log-mel patches `[n, 96, 64]` (or
  `[n, 1, 96, 64]` / `[n, 96, 64, 1]`, taken from the file's input shape), output
  `[n, 128]`; one embedding per 0.96 s patch, as in the FAD of Kilgour et al. 2019.

Every embedding maps (audio `[N]`, sr) to vectors `[n, D]`; the Frechet distance pools
all vectors of a set.
"""

from __future__ import annotations

from pathlib import Path
from typing import Callable, Protocol

import numpy as np

from msldm.audio import resample as audio_resample
from msldm.eval.dsp import EPS, as_mono, frames, mel_filterbank, stft_mag


class Embedding(Protocol):
    """(audio [N], sr) -> embeddings [n, D]."""

    name: str
    dim: int

    def __call__(self, audio: np.ndarray, sr: int) -> np.ndarray: ...


def resample(x: np.ndarray, sr: int, target: int) -> np.ndarray:
    """`x` mixed to mono and resampled from sr to target Hz (soxr, `msldm.audio.resample`)."""
    return audio_resample(as_mono(x), sr, target)


class StatsEmbedding:
    """Built-in features, mean and std over the frames of each `window_s` window.

    Frames: 2048-point Hann STFT, hop 512, at the input rate. Per frame:
    64 log-mel bands (log10 of power + 1e-8, 30 Hz - 11 kHz), a 12-bin chroma (STFT bins
    50 Hz - 5 kHz folded to their nearest pitch class, normalised to sum 1), 6 octave-band
    spectral contrast values (log10 ratio of the 80th to 20th percentile magnitude), and
    log onset strength (log-mel spectral flux, floored 60 dB below the loudest band). 83 features per frame -> mean and std -> D = 166 per window.
    `window_s=None`: one vector per clip.
    """

    name = "stats"
    dim = 166

    def __init__(self, window_s: float | None = 1.0) -> None:
        self.window_s = window_s

    def frame_features(self, audio: np.ndarray, sr: int) -> np.ndarray:
        """Per-frame features `[T, 83]`."""
        x = as_mono(audio)
        n_fft, hop = 2048, 512
        mag = stft_mag(x, n_fft, hop)  # [F, T]
        mel = np.log10(mel_filterbank(sr, n_fft, 64, 30.0, min(11000.0, sr / 2)) @ mag ** 2 + 1e-8)
        freqs = np.fft.rfftfreq(n_fft, 1.0 / sr)
        return np.concatenate([mel.T, self._chroma(mag, freqs), self._contrast(mag, freqs),
                               self._onset(mel)], axis=1)

    @staticmethod
    def _chroma(mag: np.ndarray, freqs: np.ndarray) -> np.ndarray:
        band = (freqs >= 50) & (freqs <= 5000)
        pcs = np.mod(np.rint(69 + 12 * np.log2(freqs[band] / 440.0)).astype(int), 12)
        proj = np.zeros((12, band.sum()))
        proj[pcs, np.arange(band.sum())] = 1.0
        c = proj @ mag[band]  # [12, T]
        return (c / (c.sum(axis=0, keepdims=True) + EPS)).T

    @staticmethod
    def _contrast(mag: np.ndarray, freqs: np.ndarray) -> np.ndarray:
        edges = [100, 200, 400, 800, 1600, 3200, 6400]
        out = []
        for lo, hi in zip(edges[:-1], edges[1:]):
            band = mag[(freqs >= lo) & (freqs < hi)]
            q_hi, q_lo = np.percentile(band, 80, axis=0), np.percentile(band, 20, axis=0)
            out.append(np.log10((q_hi + 1e-8) / (q_lo + 1e-8)))
        return np.stack(out, axis=1)

    @staticmethod
    def _onset(log_mel: np.ndarray) -> np.ndarray:
        # spectral flux of the log-mel frames (floored 60 dB below the clip's loudest band)
        lm = np.maximum(log_mel, log_mel.max() - 6.0)
        flux = np.maximum(np.diff(lm, axis=1, prepend=lm[:, :1]), 0.0).mean(axis=0)
        return np.log10(flux + 1e-4)[:, None]

    def __call__(self, audio: np.ndarray, sr: int) -> np.ndarray:
        """Embeddings `[n_windows, 166]` (`[1, 166]` with window_s=None)."""
        f = self.frame_features(audio, sr)  # [T, 83]
        per = len(f) if self.window_s is None else max(1, int(round(self.window_s * sr / 512)))
        n = max(1, len(f) // per)
        f = f[: n * per].reshape(n, per, -1)  # [n, per, 83]
        return np.concatenate([f.mean(axis=1), f.std(axis=1)], axis=1)


def vggish_patches(audio: np.ndarray, sr: int) -> np.ndarray:
    """VGGish input: 16 kHz, 25 ms Hann window (400 samples, FFT 512), 10 ms hop, 64 mel
    bands 125-7500 Hz, log(mel magnitude + 0.01), cut into non-overlapping 96-frame
    patches. Returns `[n, 96, 64]` float32 (n >= 1; short input is zero-padded)."""
    x = resample(audio, sr, 16000)
    x = np.pad(x, (0, max(0, 15680 - len(x))))  # at least one 0.96 s patch
    fr = frames(x, 400, 160, center=False) * np.hanning(402)[1:-1]
    mag = np.abs(np.fft.rfft(fr, 512, axis=-1))  # [T, 257]
    mel = mag @ mel_filterbank(16000, 512, 64, 125.0, 7500.0).T  # [T, 64]
    logmel = np.log(mel + 0.01)
    n = len(logmel) // 96
    return logmel[: n * 96].reshape(n, 96, 64).astype(np.float32)


class VGGishOnnxEmbedding:
    """VGGish from a local ONNX file (`weights=`), run with onnxruntime on CPU."""

    name = "vggish"
    dim = 128

    def __init__(self, weights: str | Path | None = None) -> None:
        if weights is None:
            raise ValueError("the 'vggish' embedding needs a local ONNX file of VGGish: pass "
                             "weights=PATH (CLI: --embedding vggish --embedding-weights PATH). "
                             "No weights are shipped or downloaded; use --embedding stats otherwise.")
        path = Path(weights)
        if not path.is_file():
            raise FileNotFoundError(f"VGGish ONNX file not found: {path}")
        import onnxruntime as ort

        opts = ort.SessionOptions()
        opts.log_severity_level = 3
        self.session = ort.InferenceSession(str(path), opts, providers=["CPUExecutionProvider"])
        inp = self.session.get_inputs()[0]
        self.input_name, self.input_shape = inp.name, list(inp.shape)
        self.dim = int(self.session.get_outputs()[0].shape[-1])

    def __call__(self, audio: np.ndarray, sr: int) -> np.ndarray:
        """Embeddings `[n_patches, 128]`."""
        p = vggish_patches(audio, sr)  # [n, 96, 64]
        if len(self.input_shape) == 4:
            p = p[:, None] if self.input_shape[1] == 1 else p[..., None]
        out = self.session.run(None, {self.input_name: p})[0]
        return np.asarray(out, dtype=np.float64).reshape(len(p), -1)


EMBEDDINGS: dict[str, Callable[..., Embedding]] = {"stats": StatsEmbedding, "vggish": VGGishOnnxEmbedding}


def build_embedding(name: str, **kwargs: object) -> Embedding:
    """Instantiate a registered embedding: `build_embedding("vggish", weights="vggish.onnx")`."""
    if name not in EMBEDDINGS:
        raise KeyError(f"unknown embedding {name!r}; known: {sorted(EMBEDDINGS)}")
    return EMBEDDINGS[name](**kwargs)
